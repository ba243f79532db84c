package rooms

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/den-rooms/den/storage"
)

type evKind uint8

const (
	evConnect evKind = iota
	evMessage
	evClose
	evRequest
	evDeferred
	evDelete // the admin API deletes the room
)

var evNames = [...]string{"connect", "message", "close", "request", "deferred", "delete"}

// event is one thing for a room to handle.
type event struct {
	kind evKind
	join JoinRequest   // connect
	req  *http.Request // connect, request
	sock Socket        // message, close
	text bool
	data []byte
	code int
	why  string
	ok   bool // close: clean
	rec  *recorder
	done chan struct{} // request: closed when rec holds the response
	fn   func() error  // deferred

	// Set while the event runs.
	accepted *Sock
	refuse   int
	reason   string
	err      error
}

// output is a frame or close held until its event is durable.
type output struct {
	sock   *Sock
	to     []*Sock // a broadcast: the recipients, sock is nil
	text   bool
	data   []byte
	close  bool
	code   int
	reason string
}

// room is one active room: its goroutine, mailbox, object and sockets.
type room struct {
	rt     *Runtime
	id     ID
	kind   *Kind
	name   string
	store  *storage.Room
	st     *State
	h      Handler
	ctx    context.Context
	cancel context.CancelFunc
	log    *zap.Logger

	mu        sync.Mutex
	queue     []*event
	droppable int // queued events that may be refused when the mailbox is full
	notify    chan struct{}
	stopped   bool

	auto atomic.Pointer[[2]string] // auto-response: request, response

	// Owned by the room's goroutine.
	socks    []*Sock
	out      []output
	done     chan struct{}  // closed when run returns
	ready    chan struct{}  // closed once the room is woken, or failed to wake
	openErr  error          // why it failed to wake; set before ready closes
	deleting bool           // an evDelete was in the batch
	nsocks   atomic.Int32   // len(socks), for the admin API
	deferred []func() error // Defer calls of the batch's events, run once it commits
	// undoAttach holds the attachments the current event replaced, and
	// auto the auto-response it started with: a failed event restores them.
	undoAttach []attachUndo
	autoBefore *[2]string
}

// enqueue adds ev to the mailbox. A droppable event is refused when the
// mailbox is full; the others (closes, deferred work) are never dropped,
// so every socket gets its one close event.
func (r *room) enqueue(ev *event, droppable bool) bool {
	r.mu.Lock()
	if r.stopped || droppable && r.droppable >= r.rt.mailbox {
		r.mu.Unlock()
		return false
	}
	r.queue = append(r.queue, ev)
	if droppable {
		r.droppable++
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return true
}

// take waits for events and returns up to max of them; nil once the room
// is stopped and empty.
func (r *room) take(max int) []*event {
	for {
		r.mu.Lock()
		if n := min(len(r.queue), max); n > 0 {
			batch := slices.Clone(r.queue[:n])
			clear(r.queue[:n])
			r.queue = r.queue[n:]
			for _, ev := range batch {
				if ev.kind == evConnect || ev.kind == evMessage || ev.kind == evRequest {
					r.droppable--
				}
			}
			r.mu.Unlock()
			return batch
		}
		stopped := r.stopped
		r.mu.Unlock()
		if stopped {
			return nil
		}
		<-r.notify
	}
}

func (r *room) hold(o output) { r.out = append(r.out, o) }

// run is the room's goroutine: batches of events, each batch one
// transaction, each event a savepoint inside it.
func (r *room) run() {
	defer close(r.done)
	defer func() {
		if r.store != nil {
			_ = r.store.Close()
		}
	}()
	for {
		batch := r.take(r.rt.maxBatch)
		if batch == nil {
			return
		}
		r.runBatch(batch)
		r.nsocks.Store(int32(len(r.socks)))
		if r.deleting {
			r.remove()
			return
		}
	}
}

// stop ends the room's goroutine once its queue is empty.
func (r *room) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// remove ends a deleted room: its sockets are closed with 1000, its
// handle released and it leaves the runtime, so the admin API can delete
// its files.
func (r *room) remove() {
	r.closeSockets(1000, "room deleted")
	r.nsocks.Store(0)
	// What is still queued will not run: answer it.
	r.mu.Lock()
	r.stopped = true
	left := r.queue
	r.queue = nil
	r.mu.Unlock()
	for _, ev := range left {
		switch ev.kind {
		case evConnect:
			ev.join.Refuse(http.StatusServiceUnavailable, "the room was deleted")
		case evRequest:
			ev.rec.reset(http.StatusServiceUnavailable, "the room was deleted\n")
			close(ev.done)
		}
	}
	if r.store != nil {
		_ = r.store.Close()
	}
	r.rt.mu.Lock()
	if r.rt.rooms[r.id] == r {
		delete(r.rt.rooms, r.id)
	}
	r.rt.mu.Unlock()
	r.cancel()
}

func (r *room) runBatch(batch []*event) {
	if r.kind.Stateless {
		for _, ev := range batch {
			r.runEvent(ev, func() error { return r.handle(ev) })
		}
		r.release(batch)
		return
	}
	if err := r.store.Begin(); err != nil {
		r.failBatch(batch, err)
		return
	}
	for _, ev := range batch {
		r.runEvent(ev, func() error { return r.store.Transaction(func() error { return r.handle(ev) }) })
	}
	err := r.rt.commitHook(r.id)
	if err == nil {
		err = r.store.Commit()
	} else {
		_ = r.store.Rollback()
	}
	if err != nil {
		r.failBatch(batch, err)
		return
	}
	r.release(batch)
}

// handle runs one event's handler; a panic is its error.
func (r *room) handle(ev *event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("rooms: handler panicked: %v", p)
		}
	}()
	switch ev.kind {
	case evConnect:
		if len(r.socks) >= r.rt.maxSockets {
			ev.refuse, ev.reason = http.StatusServiceUnavailable, "the room is full"
			return nil
		}
		c := &Connect{Request: ev.req, r: r, ev: ev}
		if err := r.h.Connect(c); err != nil {
			return err
		}
		if !c.decided {
			c.Accept()
		}
		if ev.accepted == nil {
			return nil
		}
		return checkTags(ev.accepted.tags)
	case evMessage:
		s := r.sockOf(ev.sock)
		if s == nil {
			return nil
		}
		return r.h.Message(s, ev.text, ev.data)
	case evClose:
		s := r.sockOf(ev.sock)
		if s == nil {
			return nil
		}
		s.closed = true
		r.dropSock(s)
		return r.h.Close(s, ev.code, ev.why, ev.ok)
	case evRequest:
		return r.h.Request(ev.rec, ev.req)
	case evDeferred:
		return ev.fn()
	case evDelete:
		r.deleting = true
	}
	return nil
}

// sockOf finds the room's Sock for a gateway socket.
func (r *room) sockOf(s Socket) *Sock {
	sk, _ := s.Value().(*Sock)
	if sk == nil || sk.r != r || sk.closed {
		return nil
	}
	return sk
}

// runEvent runs one event; if it fails, what it held and deferred is
// dropped and what it changed outside storage is taken back.
func (r *room) runEvent(ev *event, run func() error) {
	start, deferred := len(r.out), len(r.deferred)
	r.undoAttach = r.undoAttach[:0]
	r.autoBefore = r.auto.Load()
	if err := run(); err != nil {
		ev.err = err
		r.out, r.deferred = r.out[:start], r.deferred[:deferred]
		r.undo(ev)
		r.rt.eventsFailed.Add(1)
		r.log.Warn("event failed", zap.String("event", evNames[ev.kind]), zap.Error(err))
	}
}

// dropSock takes s out of the room's sockets.
func (r *room) dropSock(s *Sock) {
	r.socks = slices.DeleteFunc(r.socks, func(o *Sock) bool { return o == s })
}

// closeSockets closes every socket of the room now (not held: the room is
// ending or starting over) and forgets them.
func (r *room) closeSockets(code int, reason string) {
	for _, s := range r.socks {
		if s.s != nil {
			s.s.Close(code, reason)
		}
		s.closed = true
	}
	r.socks = nil
}

// undo takes back what a failed event did outside storage.
func (r *room) undo(ev *event) {
	for i := len(r.undoAttach) - 1; i >= 0; i-- {
		r.undoAttach[i].restore()
	}
	r.undoAttach = r.undoAttach[:0]
	r.auto.Store(r.autoBefore)
	if ev.accepted != nil {
		r.dropSock(ev.accepted)
		ev.accepted = nil
	}
	if ev.kind == evClose {
		// The socket is gone whatever the handler said.
		if s, _ := ev.sock.Value().(*Sock); s != nil && s.r == r {
			s.closed = true
			r.dropSock(s)
		}
	}
}

// release hands out what the batch's events held, in order, now that
// their writes are durable.
func (r *room) release(batch []*event) {
	out := r.out
	r.out = nil
	for _, f := range r.deferred {
		r.enqueue(&event{kind: evDeferred, fn: f}, false)
	}
	r.deferred = nil
	// Joins are answered first in their order, so a new socket exists
	// before frames for it go out.
	for _, ev := range batch {
		switch {
		case ev.kind == evConnect && ev.err != nil:
			ev.join.Refuse(http.StatusInternalServerError, "the room failed")
			r.tellError(nil, ev.err)
		case ev.kind == evConnect && ev.accepted == nil:
			ev.join.Refuse(ev.refuse, ev.reason)
		case ev.kind == evConnect:
			s := ev.join.Accept(ev.accepted)
			if s == nil {
				// The client left before the answer: it gets its close
				// event like any socket.
				ev.accepted.gone = true
				r.enqueue(&event{kind: evClose, sock: ghost{ev.accepted}, code: 1006}, false)
				continue
			}
			ev.accepted.s = s
			s.SetTags(ev.accepted.tags)
			if ev.accepted.attach != nil {
				s.SetAttachment(ev.accepted.attach)
				ev.accepted.attach = nil
			}
		case ev.err != nil:
			var sk *Sock
			if ev.sock != nil {
				sk = r.sockOf(ev.sock)
			}
			r.tellError(sk, ev.err)
		}
	}
	var to []Socket
	for _, o := range out {
		if o.to != nil {
			to = to[:0]
			for _, s := range o.to {
				if s.live() {
					to = append(to, s.s)
				}
			}
			r.rt.broadcast(to, o.text, o.data)
			continue
		}
		if !o.sock.live() {
			continue
		}
		if o.close {
			o.sock.s.Close(o.code, o.reason)
		} else {
			_ = o.sock.s.Send(o.text, o.data)
		}
	}
	for _, ev := range batch {
		if ev.kind == evRequest {
			if ev.err != nil {
				ev.rec.reset(http.StatusInternalServerError, "the room failed\n")
			}
			close(ev.done)
		}
	}
}

// failBatch ends a batch whose transaction could not begin or commit:
// nothing it held goes out, its joins and requests are refused, every
// socket is closed with 1011 (its clients saw state that is gone), and
// the room starts over from what is on disk.
func (r *room) failBatch(batch []*event, err error) {
	r.rt.commitsFailed.Add(1)
	r.log.Error("commit failed: closing the room's sockets and reopening it", zap.Error(err))
	r.out, r.deferred = nil, nil
	for _, ev := range batch {
		switch ev.kind {
		case evDelete:
			r.deleting = true
		case evConnect:
			ev.join.Refuse(http.StatusServiceUnavailable, "the room failed to save")
		case evRequest:
			ev.rec.reset(http.StatusServiceUnavailable, "the room failed to save\n")
			close(ev.done)
		}
	}
	r.closeSockets(1011, "room failed")
	r.tellError(nil, fmt.Errorf("%w: %w", errStorageFailed, err))
	if h, cerr := r.construct(); cerr == nil {
		r.h = h
	} else {
		r.log.Error("the room could not be rebuilt", zap.Error(cerr))
	}
}

// tellError hands an error to the handler's Error; a panic there is
// logged, not the node's end.
func (r *room) tellError(s *Sock, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("Error handler panicked", zap.Any("panic", p))
		}
	}()
	r.h.Error(s, err)
}

// ghost stands for a socket the client left before it was accepted.
type ghost struct{ s *Sock }

func (g ghost) ID() uint64              { return 0 }
func (g ghost) Send(bool, []byte) error { return ErrSocketGone }
func (g ghost) Close(int, string)       {}
func (g ghost) Tags() []string          { return g.s.tags }
func (g ghost) SetTags([]string)        {}
func (g ghost) Attachment() []byte      { return nil }
func (g ghost) SetAttachment([]byte)    {}
func (g ghost) Value() any              { return g.s }
func (g ghost) SetValue(any)            {}
