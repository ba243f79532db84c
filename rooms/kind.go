package rooms

import (
	"net/http"
)

// Kind is a class of rooms, registered by name. New builds a room's
// object each time the room wakes; the object keeps nothing that the room
// needs across wakes except through State (storage, sockets).
type Kind struct {
	Name string
	New  func(st *State) Handler
	// Stateless kinds store nothing: their events run without a
	// transaction and what they send goes out at once (echo).
	Stateless bool
}

// Handler is a room object: the runtime calls it one event at a time,
// never two at once, in the room's transaction. Returning an error (or
// panicking) rolls back that event's writes and drops its output; the room
// goes on. Embed Base for defaults.
type Handler interface {
	// Connect decides on a WebSocket handshake: c.Accept (with tags) or
	// c.Refuse. One that does neither is accepted without tags.
	Connect(c *Connect) error
	// Message is a data message from s.
	Message(s *Sock, text bool, data []byte) error
	// Close is s's end: the peer's code and reason, or 1006 (not clean)
	// when the connection dropped. It comes exactly once per socket.
	Close(s *Sock, code int, reason string, clean bool) error
	// Request is an HTTP request to /rooms/{kind}/{name}[/...] that is not
	// a handshake. Its response goes out once the event is durable.
	// RequestIdentity(r) is who the client is, as Connect.Identity is for
	// a join.
	Request(w http.ResponseWriter, r *http.Request) error
	// Alarm is the room's alarm (State.SetAlarm) come due. While it runs
	// the alarm reads as unset, and one it sets stands. If it fails (an
	// error or a panic) its writes roll back and it runs again after 2, 4,
	// 8, 16, 32 and 64 s (plus up to 25%), then the alarm is dropped.
	Alarm(a AlarmInfo) error
	// Error is told of a failed event (a handler's error or panic, or a
	// commit that failed) for logging or cleanup; s is nil for events
	// without a socket. It runs outside the transaction, after the
	// batch's commit: what it sends, closes or defers goes out at once.
	Error(s *Sock, err error)
}

// Base is a Handler that accepts every socket, ignores messages and
// closes, answers 404 to requests and ignores errors.
type Base struct{}

// Connect accepts without tags.
func (Base) Connect(c *Connect) error { c.Accept(); return nil }

// Message ignores the message.
func (Base) Message(*Sock, bool, []byte) error { return nil }

// Close ignores the close.
func (Base) Close(*Sock, int, string, bool) error { return nil }

// Request answers 404.
func (Base) Request(w http.ResponseWriter, r *http.Request) error {
	http.NotFound(w, r)
	return nil
}

// Alarm ignores the alarm.
func (Base) Alarm(AlarmInfo) error { return nil }

// Error ignores the error.
func (Base) Error(*Sock, error) {}
