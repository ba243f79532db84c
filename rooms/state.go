package rooms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/den-rooms/den/storage"
)

// Socket is a client connection as rooms see it; the gateway's sockets
// satisfy it. Send and Close are safe from any goroutine; the rest belong
// to the room that accepted the socket.
type Socket interface {
	ID() uint64
	Send(text bool, payload []byte) error
	Close(code int, reason string)
	Tags() []string
	SetTags([]string)
	Attachment() []byte
	SetAttachment([]byte)
	Value() any
	SetValue(any)
}

// JoinRequest is a WebSocket handshake waiting for its room's answer.
type JoinRequest interface {
	// Request is the handshake request (headers, URL with query).
	Request() *http.Request
	// Accept lets the client in with v as its Value; nil if it has gone.
	Accept(v any) Socket
	// Refuse turns it away with an HTTP status.
	Refuse(status int, reason string)
	// Identity is who the client proved to be before the room was asked
	// (a verified token, the connect webhook's answer), or nil.
	Identity() *Identity
}

// Identity is who a connecting client is, as the node's auth established
// it before the room is asked: from a verified JWT, the connect webhook's
// answer, or both. A room without auth configured sees none.
type Identity struct {
	// Subject is the token's sub claim.
	Subject string
	// Name is a display name: the token's name, preferred_username or
	// sub claim.
	Name string
	// Claims are the token's claims merged with the webhook's (the
	// webhook's win).
	Claims map[string]any
	// Tags are tags the webhook gave the socket; Accept adds them to the
	// room's own.
	Tags []string
}

// identityKey is the context key WithIdentity stores a request's identity
// under: unexported, so only WithIdentity can set it and a client cannot.
type identityKey struct{}

// WithIdentity returns r carrying id, for Handler.Request to read with
// RequestIdentity. Whatever stands in front of the runtime and checks who
// a client is calls it before Runtime.ServeHTTP (den's server does, from
// the token and the connect webhook, as it sets a join's Identity).
func WithIdentity(r *http.Request, id *Identity) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
}

// RequestIdentity is who the client of an HTTP request proved to be, as
// Connect.Identity is for a join: the same checks made it, so a room
// knows its HTTP callers as it knows its members. Nil when the request
// carries no identity (no auth configured, or none the client offered).
// Any goroutine may call it.
func RequestIdentity(r *http.Request) *Identity {
	id, _ := r.Context().Value(identityKey{}).(*Identity)
	return id
}

// Limits of a room's sockets.
const (
	MaxTags          = 10
	MaxTagBytes      = 256
	MaxAttachment    = 16 << 10
	MaxAutoResponse  = 2 << 10
	DefaultMailbox   = 4096
	DefaultMaxBatch  = 256
	DefaultMaxSocket = 32768
)

var (
	// ErrTooManyTags and friends are limits a handler hit.
	ErrTooManyTags   = fmt.Errorf("rooms: more than %d tags", MaxTags)
	ErrTagTooLong    = fmt.Errorf("rooms: a tag over %d bytes", MaxTagBytes)
	ErrAttachment    = fmt.Errorf("rooms: attachment over %d bytes", MaxAttachment)
	ErrAutoResponse  = fmt.Errorf("rooms: auto-response over %d bytes", MaxAutoResponse)
	ErrRoomFull      = errors.New("rooms: the room holds its most sockets")
	ErrSocketGone    = errors.New("rooms: the socket has closed")
	errMailboxFull   = errors.New("rooms: mailbox full")
	errNodeFull      = errors.New("rooms: the node holds its most active rooms")
	errStorageFailed = errors.New("rooms: storage failed")
	errTxEnded       = errors.New("rooms: a handler ended the room's transaction (Storage.Commit, Rollback or Begin inside an event)")
)

// State is what a room object works with: its identity, storage and
// sockets. Only the room's own handlers may use it.
type State struct {
	ID      ID
	Kind    string
	Name    string
	Storage *storage.Room
	r       *room
}

// Context ends when the room goes away.
func (st *State) Context() context.Context { return st.r.ctx }

// Sockets returns the room's open sockets, those with tag if it is not
// empty, in the order they joined.
func (st *State) Sockets(tag string) []*Sock {
	var out []*Sock
	for _, s := range st.r.socks {
		if tag == "" || slices.Contains(s.tags, tag) {
			out = append(out, s)
		}
	}
	return out
}

// Broadcast sends a message to every open socket but those in except,
// once the event is durable.
func (st *State) Broadcast(text bool, data []byte, except ...*Sock) {
	to := make([]*Sock, 0, len(st.r.socks))
	for _, s := range st.r.socks {
		if !slices.Contains(except, s) {
			to = append(to, s)
		}
	}
	if len(to) == 0 {
		return
	}
	// One copy of the message for every recipient; the runtime's
	// broadcaster encodes it once.
	st.r.hold(output{to: to, text: text, data: append([]byte(nil), data...)})
}

// SetAutoResponse makes an exact text message request be answered with
// response without running the room's handlers; empty request turns it
// off. Set by an event, it is output like any other: it takes effect once
// the event's batch commits, and not at all if the event fails.
func (st *State) SetAutoResponse(request, response string) error {
	if len(request) > MaxAutoResponse || len(response) > MaxAutoResponse {
		return ErrAutoResponse
	}
	if request == "" {
		st.r.setAuto(nil)
		return nil
	}
	st.r.setAuto(&[2]string{request, response})
	return nil
}

// Defer runs f later in the room's own loop, as an event of its own with
// its own transaction.
func (st *State) Defer(f func() error) {
	// Held like output: it runs only if this event commits.
	st.r.deferred = append(st.r.deferred, f)
}

// Connect is a handshake being decided in Handler.Connect.
type Connect struct {
	// Request is the handshake request.
	Request *http.Request
	// Identity is who the client proved to be, or nil: a room may store
	// it in the socket's attachment to know its members after a wake.
	Identity *Identity
	r        *room
	ev       *event
	decided  bool
}

// Accept lets the socket in with tags (at most 10, each at most 256
// bytes) and returns it, so the handler can send it its first messages.
// The last of Accept and Refuse wins.
func (c *Connect) Accept(tags ...string) *Sock {
	c.decided = true
	ev := c.ev
	ev.refuse = 0
	if ev.accepted == nil {
		ev.accepted = &Sock{r: c.r}
		c.r.socks = append(c.r.socks, ev.accepted)
	}
	if c.Identity != nil && len(c.Identity.Tags) > 0 {
		tags = append(slices.Clone(c.Identity.Tags), tags...)
	}
	ev.accepted.tags = slices.Clone(tags)
	return ev.accepted
}

// Refuse turns the socket away with an HTTP status (4xx or 5xx).
func (c *Connect) Refuse(status int, reason string) {
	c.decided = true
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	ev := c.ev
	ev.refuse, ev.reason = status, reason
	if ev.accepted != nil {
		c.r.dropSock(ev.accepted)
		ev.accepted = nil
	}
}

func checkTags(tags []string) error {
	if len(tags) > MaxTags {
		return ErrTooManyTags
	}
	for _, t := range tags {
		if len(t) > MaxTagBytes {
			return ErrTagTooLong
		}
	}
	return nil
}

// Sock is one of the room's sockets.
type Sock struct {
	s      Socket // nil until the handshake is answered
	r      *room
	tags   []string
	attach []byte // until s is set
	closed bool   // its close event has been handled
	gone   bool   // the client left before it was accepted
	// failed: closed with 1011 by a failed commit; its close event is
	// still owed, what it sent since is dropped.
	failed bool
	// refused is set, off the room's goroutine too, once a message of its
	// was turned away and the socket told to close: messages the gateway
	// read behind that one are dropped, so that none reaches the room
	// with an earlier one missing. In what would be padding.
	refused atomic.Bool
	autoAt  atomic.Int64 // unix ns of the last auto-response, set off the room's goroutine
}

// live reports whether frames may go to s: accepted, and not left before.
func (s *Sock) live() bool { return s.s != nil && !s.gone }

// ID is the socket's ID, unique in this process; 0 until its handshake
// has been answered.
func (s *Sock) ID() uint64 {
	if s.s == nil {
		return 0
	}
	return s.s.ID()
}

// AutoResponseAt is when the room's auto-response last answered this
// socket, which the room did not see; zero if it never did.
func (s *Sock) AutoResponseAt() time.Time {
	ns := s.autoAt.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Tags are the socket's tags.
func (s *Sock) Tags() []string { return s.tags }

// Attachment is what the room stored with SetAttachment.
func (s *Sock) Attachment() []byte {
	if s.s == nil {
		return s.attach
	}
	return s.s.Attachment()
}

// SetAttachment stores up to 16 KiB with the socket, for as long as it is
// open.
func (s *Sock) SetAttachment(b []byte) error {
	if len(b) > MaxAttachment {
		return ErrAttachment
	}
	b = append([]byte(nil), b...)
	// Remembered so a failed event can put the old one back.
	s.r.undoAttach = append(s.r.undoAttach, attachUndo{s, s.Attachment()})
	if s.s == nil {
		s.attach = b
		return nil
	}
	s.s.SetAttachment(b)
	return nil
}

// attachUndo is an attachment as it was before an event changed it.
type attachUndo struct {
	s   *Sock
	old []byte
}

func (u attachUndo) restore() {
	if u.s.s == nil {
		u.s.attach = u.old
		return
	}
	u.s.s.SetAttachment(u.old)
}

// Send sends a message once the event is durable.
func (s *Sock) Send(text bool, data []byte) {
	s.r.hold(output{sock: s, text: text, data: append([]byte(nil), data...)})
}

// SendText is Send of a text message.
func (s *Sock) SendText(text string) { s.Send(true, []byte(text)) }

// Close closes the socket with code and reason once the event is durable.
func (s *Sock) Close(code int, reason string) {
	s.r.hold(output{sock: s, close: true, code: code, reason: reason})
}
