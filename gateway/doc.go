// Package gateway is den's network layer: one TCP port serving HTTP/1.1
// and WebSocket (RFC 6455, with permessage-deflate) from gnet event loops,
// handing room traffic to a Rooms implementation.
//
// # Goroutines
//
// gnet runs one event loop per CPU; each connection belongs to one loop
// for life. Everything about reading a connection, its state machine
// (reading a request → joining a room → open → closing → closed) and its
// deadlines runs on that loop and never blocks. Rooms.Join, Rooms.Message
// and Rooms.Closed are called on the loop and must not block either;
// Rooms.ServeHTTP runs on a goroutine of its own per request.
//
// Any goroutine may call Socket.Send, Socket.SendFrame, Socket.Close,
// Broadcast, Join.Accept and Join.Refuse: they queue work under the
// loop's lock, and the loop writes it, one writev per socket, when its
// current poll round ends (paced under heavy broadcast, see
// Config.FlushPace). A socket's tags, attachment and value belong to the
// room that accepted it.
//
// # Accepting
//
// den accepts on its own goroutines and enrolls each connection into
// gnet, instead of letting gnet accept: gnet stops its whole engine on the
// first accept error, so one EMFILE would drop every socket. At the
// open-file limit den keeps every open socket, answers newcomers 503 and
// accepts again when descriptors free up.
//
// # Deadlines
//
// Each loop keeps a hashed timing wheel of its sockets, driven by one
// ticker for the whole server on the injected clock: handshake and
// keep-alive timeouts, keepalive pings, the wait for a peer's close frame.
// An idle socket costs no timer, goroutine or buffer.
package gateway
