// Package rooms runs room objects: Kinds registered by name, rooms
// addressed by ID, and for each active room one goroutine that handles its
// events one at a time.
//
// Every event runs inside the room's storage transaction, as a savepoint
// of its own: a handler that fails or panics rolls back its event alone.
// Events queued together share one commit. What a handler sends (frames,
// closes, an HTTP response) is held until that commit is durable and then
// released in order; if the commit fails, nothing held goes out, the
// room's sockets are closed with 1011 and the room starts over from disk,
// its new object with no sockets (and no close events for the old ones).
//
// The gateway calls Join, Message, Closed and ServeHTTP; they never block
// on a room. Handlers run on the room's goroutine and may use its State
// and Socks; nothing else may.
package rooms
