package rooms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/den-rooms/den/storage"
)

// Config configures a Runtime. Store and Kinds are required.
type Config struct {
	Store  *storage.Store
	Kinds  []Kind
	Logger *zap.Logger
	// Mailbox bounds a room's queued connects, messages and requests; when
	// it is full a handshake gets 503, a message closes its socket with
	// 1013 and a request gets 503. MaxBatch bounds the events that share
	// one commit. MaxSockets bounds a room's sockets.
	Mailbox    int
	MaxBatch   int
	MaxSockets int
	// CommitHook, if set, runs before every commit; an error from it fails
	// the commit as a failed disk would. It is for fault-injection tests.
	CommitHook func(ID) error
	// Broadcast, if set, sends one message to many sockets, as the
	// gateway does by encoding it once (gateway.RoomsBroadcast). Without
	// it each socket is sent to in turn.
	Broadcast func(to []Socket, text bool, payload []byte)
}

// Runtime runs rooms: one goroutine per active room, its events one at a
// time inside the room's storage transaction, and what they send held
// until it is durable. Join, Message, Closed and ServeHTTP are its
// entry points from the gateway; they never block on a room.
type Runtime struct {
	store      *storage.Store
	kinds      map[string]*Kind
	log        *zap.Logger
	mailbox    int
	maxBatch   int
	maxSockets int
	hook       func(ID) error
	broadcast  func(to []Socket, text bool, payload []byte)

	mu     sync.Mutex
	rooms  map[ID]*room         // active rooms, and rooms being woken (ready not yet closed)
	gone   map[ID]chan struct{} // rooms being deleted; closed when the deletion is done
	closed bool

	eventsFailed, commitsFailed, refused atomic.Int64
}

// New builds a Runtime.
func New(cfg Config) (*Runtime, error) {
	if cfg.Store == nil {
		return nil, errors.New("rooms: no store")
	}
	rt := &Runtime{
		store: cfg.Store, kinds: map[string]*Kind{}, log: cfg.Logger,
		mailbox: cfg.Mailbox, maxBatch: cfg.MaxBatch, maxSockets: cfg.MaxSockets,
		hook: cfg.CommitHook, rooms: map[ID]*room{}, gone: map[ID]chan struct{}{},
		broadcast: cfg.Broadcast,
	}
	if rt.broadcast == nil {
		rt.broadcast = func(to []Socket, text bool, payload []byte) {
			for _, s := range to {
				_ = s.Send(text, payload)
			}
		}
	}
	if rt.log == nil {
		rt.log = zap.NewNop()
	}
	rt.mailbox = max(rt.mailbox, 0)
	if rt.mailbox == 0 {
		rt.mailbox = DefaultMailbox
	}
	if rt.maxBatch <= 0 {
		rt.maxBatch = DefaultMaxBatch
	}
	if rt.maxSockets <= 0 {
		rt.maxSockets = DefaultMaxSocket
	}
	for i := range cfg.Kinds {
		k := &cfg.Kinds[i]
		if k.Name == "" || k.New == nil {
			return nil, fmt.Errorf("rooms: kind %d needs a name and a constructor", i)
		}
		if _, dup := rt.kinds[k.Name]; dup {
			return nil, fmt.Errorf("rooms: kind %q registered twice", k.Name)
		}
		rt.kinds[k.Name] = k
	}
	return rt, nil
}

func (rt *Runtime) commitHook(id ID) error {
	if rt.hook == nil {
		return nil
	}
	return rt.hook(id)
}

// HasKind reports whether kind is registered.
func (rt *Runtime) HasKind(kind string) bool { return rt.kinds[kind] != nil }

var errNoKind = errors.New("rooms: no such room kind")

// room returns the active room for kind and name, waking it if needed.
func (rt *Runtime) room(kind, name string) (*room, error) {
	k := rt.kinds[kind]
	if k == nil {
		return nil, errNoKind
	}
	id := IDFromName(kind, name)
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil, errors.New("rooms: shutting down")
	}
	if rt.gone[id] != nil {
		rt.mu.Unlock()
		return nil, errors.New("rooms: the room is being deleted")
	}
	if r := rt.rooms[id]; r != nil {
		rt.mu.Unlock()
		<-r.ready
		if r.openErr != nil {
			return nil, r.openErr
		}
		return r, nil
	}
	// Woken outside rt.mu: opening storage and running the constructor
	// take time, and other rooms must not wait for them.
	ctx, cancel := context.WithCancel(context.Background())
	r := &room{
		rt: rt, id: id, kind: k, name: name, ctx: ctx, cancel: cancel,
		notify: make(chan struct{}, 1), done: make(chan struct{}), ready: make(chan struct{}),
		log: rt.log.With(zap.String("kind", kind), zap.String("room", name)),
	}
	rt.rooms[id] = r
	rt.mu.Unlock()
	if err := r.open(); err != nil {
		r.openErr = err
		rt.mu.Lock()
		if rt.rooms[id] == r {
			delete(rt.rooms, id)
		}
		rt.mu.Unlock()
		close(r.ready)
		return nil, err
	}
	close(r.ready)
	go r.run()
	return r, nil
}

// open gives a room being woken its storage (none for a stateless kind)
// and its object.
func (r *room) open() error {
	if !r.kind.Stateless {
		sr, err := r.rt.store.Room(r.id.String(), r.kind.Name, r.name)
		if err != nil {
			return fmt.Errorf("%w: %w", errStorageFailed, err)
		}
		r.store = sr
	}
	r.st = &State{ID: r.id, Kind: r.kind.Name, Name: r.name, Storage: r.store, r: r}
	h, err := r.construct()
	if err != nil {
		if r.store != nil {
			_ = r.store.Close()
		}
		return err
	}
	r.h = h
	return nil
}

// construct runs the kind's constructor; a panic in it fails the wake,
// not the node.
func (r *room) construct() (h Handler, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("rooms: %s's constructor panicked: %v", r.kind.Name, p)
		}
	}()
	return r.kind.New(r.st), nil
}

// active returns kind's room called name if it is active.
func (rt *Runtime) active(kind, name string) *room {
	id := IDFromName(kind, name)
	rt.mu.Lock()
	r := rt.rooms[id]
	rt.mu.Unlock()
	if r == nil {
		return nil
	}
	select {
	case <-r.ready:
		if r.openErr != nil {
			return nil
		}
		return r
	default:
		// Still waking: the caller takes the path that waits for it.
		return nil
	}
}

// Join asks the room whether a handshake may join. A room that is not
// active is woken on a goroutine of its own: opening its storage must not
// hold up the caller's event loop.
func (rt *Runtime) Join(kind, name string, j JoinRequest) {
	if rt.kinds[kind] == nil {
		j.Refuse(http.StatusNotFound, "no such room kind")
		return
	}
	req := j.Request()
	if r := rt.active(kind, name); r != nil {
		rt.offer(r, j, req)
		return
	}
	go func() {
		r, err := rt.room(kind, name)
		if err != nil {
			rt.log.Error("room unavailable", zap.String("kind", kind), zap.String("room", name), zap.Error(err))
			j.Refuse(http.StatusServiceUnavailable, "the room is unavailable")
			return
		}
		rt.offer(r, j, req)
	}()
}

func (rt *Runtime) offer(r *room, j JoinRequest, req *http.Request) {
	if !r.enqueue(&event{kind: evConnect, join: j, req: req}, true) {
		rt.refused.Add(1)
		j.Refuse(http.StatusServiceUnavailable, "the room is busy")
	}
}

// Message hands a data message to the socket's room. payload is copied.
func (rt *Runtime) Message(s Socket, text bool, payload []byte) {
	sk, _ := s.Value().(*Sock)
	if sk == nil {
		return
	}
	r := sk.r
	if text {
		if a := r.auto.Load(); a != nil && a[0] == string(payload) {
			_ = s.Send(true, []byte(a[1]))
			return
		}
	}
	if !r.enqueue(&event{kind: evMessage, sock: s, text: text, data: bytes.Clone(payload)}, true) {
		rt.refused.Add(1)
		s.Close(1013, "room busy")
	}
}

// Closed tells the socket's room it is gone.
func (rt *Runtime) Closed(s Socket, code int, reason string, clean bool) {
	sk, _ := s.Value().(*Sock)
	if sk == nil {
		return
	}
	sk.r.enqueue(&event{kind: evClose, sock: s, code: code, why: reason, ok: clean}, false)
}

// maxRequestBody bounds a request body a room reads; the gateway's own
// limit is usually lower.
const maxRequestBody = 32 << 20

// ServeHTTP runs a request in its room and writes the response once the
// room's writes for it are durable.
func (rt *Runtime) ServeHTTP(w http.ResponseWriter, req *http.Request, kind, name string) {
	r, err := rt.room(kind, name)
	switch {
	case errors.Is(err, errNoKind):
		http.NotFound(w, req)
		return
	case err != nil:
		http.Error(w, "the room is unavailable", http.StatusServiceUnavailable)
		return
	}
	// The body is read here, not in the room: a slow client must not
	// stall the room.
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRequestBody+1))
	if err != nil || len(body) > maxRequestBody {
		http.Error(w, "bad request body", http.StatusBadRequest)
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	ev := &event{kind: evRequest, req: req, rec: newRecorder(), done: make(chan struct{})}
	if !r.enqueue(ev, true) {
		rt.refused.Add(1)
		http.Error(w, "the room is busy", http.StatusServiceUnavailable)
		return
	}
	select {
	case <-ev.done:
		ev.rec.writeTo(w)
	case <-req.Context().Done():
		// The client left; the room still runs the request.
	}
}

// Stats are the runtime's counters.
type Stats struct {
	Rooms         int   // active rooms
	EventsFailed  int64 // handler errors and panics
	CommitsFailed int64
	Refused       int64 // events refused for a full mailbox
}

// Stats returns the counters.
func (rt *Runtime) Stats() Stats {
	rt.mu.Lock()
	n := len(rt.rooms)
	rt.mu.Unlock()
	return Stats{Rooms: n, EventsFailed: rt.eventsFailed.Load(), CommitsFailed: rt.commitsFailed.Load(), Refused: rt.refused.Load()}
}

// Shutdown stops every room once its queued events are handled, or when
// ctx ends.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	rt.mu.Lock()
	rt.closed = true
	rooms := make([]*room, 0, len(rt.rooms))
	for _, r := range rt.rooms {
		rooms = append(rooms, r)
	}
	rt.mu.Unlock()
	for _, r := range rooms {
		<-r.ready
		if r.openErr != nil {
			continue
		}
		r.stop()
	}
	for _, r := range rooms {
		if r.openErr != nil {
			continue
		}
		select {
		case <-r.done:
			r.cancel()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// recorder holds a room's HTTP response until it may go out.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (rc *recorder) Header() http.Header { return rc.header }

func (rc *recorder) WriteHeader(status int) {
	if rc.status == 0 {
		rc.status = status
	}
}

func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	return rc.body.Write(b)
}

func (rc *recorder) reset(status int, body string) {
	rc.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
	rc.status = status
	rc.body.Reset()
	rc.body.WriteString(body)
}

func (rc *recorder) writeTo(w http.ResponseWriter) {
	for k, v := range rc.header {
		w.Header()[k] = v
	}
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	w.WriteHeader(rc.status)
	_, _ = w.Write(rc.body.Bytes())
}
