package rooms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/den-rooms/den/internal/clock"
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
	// MaxActive bounds the rooms awake at once: a join, message or request
	// that would wake one more is refused (503, or close 1013) until the
	// sweep puts an idle room to sleep. 0 means no limit.
	MaxActive int
	// HibernateAfter is how long a room with sockets and nothing to do
	// stays in memory (DefaultHibernateAfter); EvictAfter is the same for
	// a room without sockets (DefaultEvictAfter).
	HibernateAfter time.Duration
	EvictAfter     time.Duration
	// KeepEmptyRooms keeps the file and node.db record of a room evicted
	// with nothing stored (storage.Room.Empty). By default they are
	// deleted as it leaves memory, so that a client visiting ever new
	// names cannot fill the disk: the room is absent again, and its next
	// join makes it anew.
	KeepEmptyRooms bool
	// Clock drives hibernation; tests pass a clock.Fake.
	Clock clock.Clock
	// Observer, if set, is told how long wakes, events and commits took,
	// for metrics.
	Observer Observer
	// CommitHook, if set, runs before every commit; an error from it fails
	// the commit as a failed disk would. It is for fault-injection tests.
	CommitHook func(ID) error
	// Broadcast, if set, sends one message to many sockets, as the
	// gateway does by encoding it once (gateway.RoomsBroadcast). Without
	// it each socket is sent to in turn.
	Broadcast func(to []Socket, text bool, payload []byte)
}

// Observer is told what the rooms do, for metrics. Its methods are called
// from room goroutines, often: they must be cheap and must not block.
type Observer interface {
	// Wake: from the event that found a room asleep to its object being
	// ready (storage open, constructor run).
	Wake(d time.Duration)
	// Event: one event of the given type (one of EventTypes), from its
	// arrival at the room to its outputs being released (or its failure),
	// so queueing, the handler and the commit are all inside it.
	Event(typ string, d time.Duration)
	// Commit: one batch's commit of events, fsync included.
	Commit(events int, d time.Duration)
	// AlarmLate: how long after its scheduled time an alarm's handler
	// began (first attempts only; retries are late by design).
	AlarmLate(d time.Duration)
}

// EventTypes are the event types an Observer is told of.
func EventTypes() []string { return evNames[:] }

// nopObserver is the Observer of a Runtime without one.
type nopObserver struct{}

func (nopObserver) Wake(time.Duration)          {}
func (nopObserver) Event(string, time.Duration) {}
func (nopObserver) Commit(int, time.Duration)   {}
func (nopObserver) AlarmLate(time.Duration)     {}

// Defaults of Config.
const (
	DefaultHibernateAfter = 10 * time.Second
	DefaultEvictAfter     = 60 * time.Second
)

// Runtime runs rooms: one goroutine per awake room, its events one at a
// time inside the room's storage transaction, and what they send held
// until it is durable. A room idle for HibernateAfter leaves memory but
// for its sockets, which stay open; its next event wakes it. Join,
// Message, Closed and ServeHTTP are its entry points from the gateway;
// they never block on a room.
type Runtime struct {
	store          *storage.Store
	kinds          map[string]*Kind
	log            *zap.Logger
	mailbox        int
	maxBatch       int
	maxSockets     int
	maxActive      int64
	hibernateAfter time.Duration
	evictAfter     time.Duration
	keepEmpty      bool
	clock          clock.Clock
	observe        Observer
	hook           func(ID) error
	broadcast      func(to []Socket, text bool, payload []byte)

	mu     sync.Mutex
	rooms  map[ID]*room     // every room with sockets, events or an object in memory
	gone   map[ID]*deletion // rooms being deleted
	closed bool
	sweep  clock.Ticker
	quit   chan struct{} // closed by Shutdown: the sweep ends

	serving sync.WaitGroup // room goroutines
	awake   atomic.Int64   // rooms with a goroutine
	// hibernated counts the rooms asleep with sockets open, kept as rooms
	// start and sleep, so that Stats need not visit every room: a room
	// asleep that holds only a close or an alarm for a wake is not one.
	hibernated atomic.Int64
	// watched are the rooms the sweep visits: those awake and those
	// holding events for a wake. A room enters it under its own lock when
	// it starts or holds an event, and leaves it, under the same lock, on
	// the sweep that finds it asleep with nothing held; hibernated rooms
	// cost the sweep nothing. watchMu is taken under a room's lock, never
	// the other way round.
	watchMu sync.Mutex
	watched map[*room]struct{}

	alarms *scheduler

	wakes, hibernations, evictions, reclaims  atomic.Int64
	alarmsFired, alarmsRetried, alarmsDropped atomic.Int64
	eventsFailed, commitsFailed, refused      atomic.Int64
	roomFull, nodeFull                        atomic.Int64
}

// New builds a Runtime and starts its sweep, which puts idle rooms to
// sleep; Shutdown stops it.
func New(cfg Config) (*Runtime, error) {
	if cfg.Store == nil {
		return nil, errors.New("rooms: no store")
	}
	if cfg.HibernateAfter < 0 || cfg.EvictAfter < 0 {
		return nil, errors.New("rooms: negative hibernate or evict time")
	}
	rt := &Runtime{
		store: cfg.Store, kinds: map[string]*Kind{}, log: cfg.Logger,
		mailbox: cfg.Mailbox, maxBatch: cfg.MaxBatch, maxSockets: cfg.MaxSockets, maxActive: int64(cfg.MaxActive),
		hibernateAfter: cfg.HibernateAfter, evictAfter: cfg.EvictAfter, keepEmpty: cfg.KeepEmptyRooms,
		clock: cfg.Clock, observe: cfg.Observer,
		hook: cfg.CommitHook, rooms: map[ID]*room{}, gone: map[ID]*deletion{}, watched: map[*room]struct{}{},
		broadcast: cfg.Broadcast, quit: make(chan struct{}),
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
	if rt.clock == nil {
		rt.clock = clock.Real{}
	}
	if rt.observe == nil {
		rt.observe = nopObserver{}
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
	if rt.hibernateAfter == 0 {
		rt.hibernateAfter = DefaultHibernateAfter
	}
	if rt.evictAfter == 0 {
		rt.evictAfter = DefaultEvictAfter
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
	// A room sleeps within a sixty-fourth of its timeout of it, and the
	// sweep runs at most every 10 ms and at least every second. The finer
	// the sweep, the fewer rooms each one finds idle: rooms that went
	// quiet over a second do not all go to sleep in the same instant, and
	// the sweep visits only awake rooms, so running often is cheap.
	period := min(rt.hibernateAfter, rt.evictAfter) / 64
	rt.sweep = rt.clock.NewTicker(min(max(period, 10*time.Millisecond), time.Second))
	// Alarms set before this start, the node's own or a crashed run's,
	// fire from node.db's index; those already due fire at once.
	rt.alarms = newScheduler(rt)
	pending, err := rt.store.Alarms()
	if err != nil {
		return nil, fmt.Errorf("rooms: alarms: %w", err)
	}
	for _, a := range pending {
		id, err := ParseID(a.ID)
		if err != nil || rt.kinds[a.Kind] == nil {
			rt.log.Warn("alarm for an unknown room kind left unfired", zap.String("kind", a.Kind), zap.String("room", a.Name))
			continue
		}
		rt.alarms.set(id, a.Kind, a.Name, a.At)
	}
	go rt.alarms.run()
	go rt.sweepLoop()
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

var (
	errNoKind    = errors.New("rooms: no such room kind")
	errShutdown  = errors.New("rooms: shutting down")
	errDeleting  = errors.New("rooms: the room is being deleted")
	errStopped   = errors.New("rooms: the room has stopped")
	errRetired   = errors.New("rooms: the room left memory")
	errUnwakable = errors.New("rooms: the room could not be woken")
)

// room returns kind's room called name, known to the runtime from now on
// if it was not: awake or asleep, it takes events.
func (rt *Runtime) room(kind, name string) (*room, error) {
	k := rt.kinds[kind]
	if k == nil {
		return nil, errNoKind
	}
	id := IDFromName(kind, name)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return nil, errShutdown
	}
	if rt.gone[id] != nil {
		return nil, errDeleting
	}
	r := rt.rooms[id]
	if r == nil {
		r = &room{rt: rt, id: id, kind: k, name: name}
		rt.rooms[id] = r
	}
	return r, nil
}

// deliver queues ev for kind's room called name, waking the room if it
// sleeps.
func (rt *Runtime) deliver(kind, name string, ev *event) error {
	for {
		r, err := rt.room(kind, name)
		if err != nil {
			return err
		}
		// A room evicted between the lookup and the enqueue has left the
		// index: the next lookup makes it anew.
		err = r.enqueue(ev)
		if errors.Is(err, errNodeFull) {
			rt.dropIfEmpty(r)
		}
		if !errors.Is(err, errRetired) {
			return err
		}
	}
}

// claimActive counts one more room awake, unless MaxActive rooms are.
// The check and the count are one step, so that rooms woken at once from
// different event loops cannot pass the limit together.
func (rt *Runtime) claimActive() bool {
	for {
		n := rt.awake.Load()
		if rt.maxActive > 0 && n >= rt.maxActive {
			return false
		}
		if rt.awake.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// dropIfEmpty takes a room out of the index if it holds nothing: no
// sockets, no events, no goroutine. A lookup for a room the node refused
// to wake left it there, and a client asking for ever new rooms must not
// grow the index.
func (rt *Runtime) dropIfEmpty(r *room) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running || r.dead || len(r.queue) > 0 || len(r.held) > 0 || r.nsocks.Load() > 0 || rt.rooms[r.id] != r {
		return
	}
	delete(rt.rooms, r.id)
	r.dead = true
}

// sweepLoop puts rooms that have been idle long enough to sleep.
func (rt *Runtime) sweepLoop() {
	var rooms []*room
	for {
		select {
		case <-rt.quit:
			return
		case <-rt.sweep.C():
			// The clock, not the tick: a tick waiting in the channel may be old.
			now := rt.clock.Now()
			// The set is copied, not walked under its lock: rooms that
			// start or hold an event take that lock.
			rt.watchMu.Lock()
			rooms = slices.AppendSeq(rooms[:0], maps.Keys(rt.watched))
			rt.watchMu.Unlock()
			for _, r := range rooms {
				r.offerSleep(now)
			}
			clear(rooms)
		}
	}
}

// Join asks the room whether a handshake may join, waking the room if it
// sleeps.
func (rt *Runtime) Join(kind, name string, j JoinRequest) {
	if rt.kinds[kind] == nil {
		j.Refuse(http.StatusNotFound, "no such room kind")
		return
	}
	err := rt.deliver(kind, name, &event{kind: evConnect, join: j, req: j.Request()})
	switch {
	case err == nil:
	case errors.Is(err, errMailboxFull):
		rt.refused.Add(1)
		j.Refuse(http.StatusServiceUnavailable, "the room is busy")
	case errors.Is(err, errNodeFull):
		j.Refuse(http.StatusServiceUnavailable, "the server is at its room limit")
	default:
		j.Refuse(http.StatusServiceUnavailable, "the room is unavailable")
	}
}

// Message hands a data message to the socket's room. payload is copied.
// A message that matches the room's auto-response is answered here,
// without waking the room.
func (rt *Runtime) Message(s Socket, text bool, payload []byte) {
	sk, _ := s.Value().(*Sock)
	if sk == nil || sk.refused.Load() {
		return
	}
	r := sk.r
	if text {
		if a := r.auto.Load(); a != nil && a[0] == string(payload) {
			_ = s.Send(true, []byte(a[1]))
			sk.autoAt.Store(rt.clock.Now().UnixNano())
			return
		}
	}
	switch err := r.enqueue(&event{kind: evMessage, sock: s, text: text, data: bytes.Clone(payload)}); {
	case errors.Is(err, errMailboxFull):
		rt.refused.Add(1)
		sk.refused.Store(true)
		s.Close(1013, "room busy")
	case errors.Is(err, errNodeFull):
		sk.refused.Store(true)
		s.Close(1013, "server at its room limit")
	}
}

// Closed tells the socket's room it is gone, waking the room if it
// sleeps.
func (rt *Runtime) Closed(s Socket, code int, reason string, clean bool) {
	sk, _ := s.Value().(*Sock)
	if sk == nil {
		return
	}
	_ = sk.r.enqueue(&event{kind: evClose, sock: s, code: code, why: reason, ok: clean})
}

// maxRequestBody bounds a request body a room reads; the gateway's own
// limit is usually lower.
const maxRequestBody = 32 << 20

// ServeHTTP runs a request in its room and writes the response once the
// room's writes for it are durable.
func (rt *Runtime) ServeHTTP(w http.ResponseWriter, req *http.Request, kind, name string) {
	if rt.kinds[kind] == nil {
		http.NotFound(w, req)
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
	switch err := rt.deliver(kind, name, ev); {
	case errors.Is(err, errMailboxFull):
		rt.refused.Add(1)
		http.Error(w, "the room is busy", http.StatusServiceUnavailable)
		return
	case errors.Is(err, errNodeFull):
		http.Error(w, "the server is at its room limit", http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, "the room is unavailable", http.StatusServiceUnavailable)
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
	Rooms         int   // awake rooms: an object and a goroutine in memory
	Hibernated    int   // rooms asleep with sockets open (a room asleep without sockets, holding a close or an alarm for a wake, is not)
	Wakes         int64 // rooms brought into memory, the first time included
	Hibernations  int64 // rooms put to sleep with their sockets open
	Evictions     int64 // rooms without sockets dropped from memory
	Reclaims      int64 // evicted rooms whose storage, holding nothing, was deleted
	EventsFailed  int64 // handler errors and panics
	CommitsFailed int64
	Refused       int64 // events refused for a full mailbox
	RoomFull      int64 // joins refused: the room held MaxSockets
	NodeFull      int64 // joins, messages and requests refused: MaxActive rooms awake
	AlarmsPending int   // alarms scheduled, not yet fired
	AlarmsFired   int64 // alarm events sent to rooms
	AlarmsRetried int64 // failed alarm handlers scheduled again
	AlarmsDropped int64 // alarms dropped after their last retry
}

// Stats returns the counters.
func (rt *Runtime) Stats() Stats {
	return Stats{
		Rooms: int(rt.awake.Load()), Hibernated: int(rt.hibernated.Load()),
		Wakes: rt.wakes.Load(), Hibernations: rt.hibernations.Load(), Evictions: rt.evictions.Load(),
		Reclaims: rt.reclaims.Load(), EventsFailed: rt.eventsFailed.Load(), CommitsFailed: rt.commitsFailed.Load(), Refused: rt.refused.Load(),
		RoomFull: rt.roomFull.Load(), NodeFull: rt.nodeFull.Load(),
		AlarmsPending: rt.alarms.pending(), AlarmsFired: rt.alarmsFired.Load(),
		AlarmsRetried: rt.alarmsRetried.Load(), AlarmsDropped: rt.alarmsDropped.Load(),
	}
}

// Shutdown stops the sweep and every room once its queued events are
// handled, or when ctx ends. Sleeping rooms have nothing to stop.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	rt.mu.Lock()
	stopAlarms := !rt.closed
	if !rt.closed {
		rt.closed = true
		rt.sweep.Stop()
		close(rt.quit)
	}
	for _, r := range rt.rooms {
		r.stop()
	}
	rt.mu.Unlock()
	if stopAlarms {
		rt.alarms.stop()
	}
	done := make(chan struct{})
	go func() {
		rt.serving.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recorder holds a room's HTTP response until it may go out.
type recorder struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	dropBody bool // the handler's status was invalid: its body is not sent
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (rc *recorder) Header() http.Header { return rc.header }

func (rc *recorder) WriteHeader(status int) {
	switch {
	case rc.status != 0:
	case status >= 100 && status < 200:
		// Informational: den sends the final answer only.
	case status < 100 || status > 999:
		// No status line can carry it (net/http would panic): the
		// handler's answer is dropped for a 500.
		rc.reset(http.StatusInternalServerError, "the room answered with a bad status\n")
		rc.dropBody = true
	default:
		rc.status = status
	}
}

func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	if rc.dropBody {
		return len(b), nil
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
