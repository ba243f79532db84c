package rooms

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	evAlarm
)

var evNames = [...]string{"connect", "message", "close", "request", "deferred", "delete", "alarm"}

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
	done chan struct{} // request: closed when rec holds the response; delete: when it is done
	fn   func() error  // deferred
	at   time.Time     // when it reached the room

	// Set while the event runs.
	alarmAt    time.Time // alarm: the one that came due, and its retries
	alarmRetry int
	alarmRan   bool          // its handler ran
	alarmLate  time.Duration // how long after its time the handler began
	accepted   *Sock
	refuse     int
	reason     string
	err        error
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

// room is one room the runtime knows: awake, with its goroutine, object
// and storage handle, or asleep, with only its sockets and queue. Its
// sockets and auto-response outlive each object; the rest is rebuilt on
// every wake.
type room struct {
	rt   *Runtime
	id   ID
	kind *Kind
	name string

	mu        sync.Mutex
	queue     []*event
	droppable int           // queued events that may be refused when the mailbox is full
	running   bool          // a goroutine serves the room: awake or waking
	notify    chan struct{} // wakes the serving goroutine; nil while asleep
	stopped   bool          // no more events: shut down or deleted
	dead      bool          // out of the index: evicted or deleted
	sleep     bool          // the sweep found it idle: sleep once the queue is empty
	busy      bool          // a batch is running
	last      time.Time     // when the last batch ended, or the room woke
	// held are closes and deferred work a failed wake could not run: they
	// go first at the next wake, which the sweep retries.
	held      []*event
	failed    time.Time // when a wake last failed, or an event was held
	wakeFails int       // wakes failed in a row, for the sweep's backoff
	// hibernated: asleep in the index with sockets open, and counted so
	// in the runtime's hibernated until the room starts again.
	hibernated bool

	// The scheduled events State.Due has handed the running alarm
	// handler: how many, and the time of the last call (or of the run's
	// start, before any).
	dueHanded int
	dueAt     time.Time

	auto   atomic.Pointer[[2]string] // auto-response: request, response
	nsocks atomic.Int32              // len(socks), for the sweep and the admin API

	// Owned by the serving goroutine. Sockets stay while the room sleeps.
	socks []*Sock

	// The object and what serves it: set by wake, dropped by retire.
	store    *storage.Room
	st       *State
	h        Handler
	ctx      context.Context
	cancel   context.CancelFunc
	log      *zap.Logger
	out      []output
	deleting *event         // an evDelete was in the batch
	deferred []func() error // Defer calls of the batch's events, run once it commits
	// The room's alarm as the scheduler knows it; popped once it fired.
	// alarmWrites is the storage handle's AlarmWrites when it was synced.
	alarmAt     time.Time
	alarmKnown  bool
	alarmPopped bool
	indexLate   bool // the batch's alarm is indexed once it commits
	alarmWrites uint64
	// undoAttach holds the attachments the current event replaced, and
	// autoBefore the held auto-response it started with: a failed event
	// restores them.
	undoAttach []attachUndo
	autoBefore autoChange
	// inBatch is set while a batch's events run: an auto-response they set
	// is held in autoHeld, like their output, until the batch commits.
	inBatch  bool
	autoHeld autoChange
}

// autoChange is an auto-response a batch set, held until it commits.
type autoChange struct {
	set  bool       // an event of the batch set one
	pair *[2]string // request and response; nil turns it off
}

// droppable reports whether ev may be refused when the mailbox is full:
// joins, messages and requests. Closes, deferred work, deletions and
// alarms are never dropped, so every socket gets its one close event.
func (ev *event) droppable() bool {
	return ev.kind == evConnect || ev.kind == evMessage || ev.kind == evRequest
}

// enqueue adds ev to the mailbox, waking the room if it sleeps.
func (r *room) enqueue(ev *event) error {
	droppable := ev.droppable()
	ev.at = time.Now()
	r.mu.Lock()
	switch {
	case r.dead:
		r.mu.Unlock()
		return errRetired
	case r.stopped && (droppable || !r.running):
		// A stopping room still takes closes and deferred work while its
		// goroutine drains the queue; it starts no goroutine.
		r.mu.Unlock()
		return errStopped
	case droppable && r.droppable >= r.rt.mailbox:
		r.mu.Unlock()
		return errMailboxFull
	}
	if !r.running {
		switch {
		case ev.kind == evDelete:
			// A deletion goes ahead past the room limit: its caller waits
			// for it.
			r.rt.awake.Add(1)
		case r.rt.claimActive():
		case droppable:
			r.mu.Unlock()
			r.rt.nodeFull.Add(1)
			return errNodeFull
		default:
			// A close or an alarm must not be lost, and must not wake a
			// room past the limit either: it waits, held, and the sweep
			// wakes the room once the node has room for it (see
			// offerSleep).
			r.holdLocked(ev)
			r.mu.Unlock()
			return nil
		}
	}
	r.queue = append(r.queue, ev)
	if droppable {
		r.droppable++
	}
	if !r.running {
		r.startLocked()
		r.mu.Unlock()
		return nil
	}
	notify := r.notify
	r.mu.Unlock()
	select {
	case notify <- struct{}{}:
	default:
	}
	return nil
}

// startLocked starts the room's goroutine to wake it; r.mu is held, and
// the caller has counted the room awake. Events a failed wake held go
// first: they came before those queued since.
func (r *room) startLocked() {
	if len(r.held) > 0 {
		r.queue = append(r.held, r.queue...)
		r.held = nil
	}
	if r.hibernated {
		r.hibernated = false
		r.rt.hibernated.Add(-1)
	}
	r.running = true
	r.watch(true)
	r.notify = make(chan struct{}, 1)
	r.rt.serving.Add(1)
	go r.run(time.Now())
}

// take waits for events and returns up to max of them; nil once the room
// is stopped, or asked to sleep, and its queue is empty.
func (r *room) take(max int) []*event {
	for {
		r.mu.Lock()
		if r.busy {
			r.busy, r.last = false, r.rt.clock.Now()
		}
		if len(r.queue) > 0 && len(r.held) > 0 {
			// What a batch that could not begin held: a room kept busy
			// would not sleep and wake to run them. They go with the next
			// batch, which storage failing still cannot make a loop of.
			r.queue = append(r.held, r.queue...)
			r.held = nil
		}
		if n := min(len(r.queue), max); n > 0 {
			batch := slices.Clone(r.queue[:n])
			clear(r.queue[:n])
			r.queue = r.queue[n:]
			for _, ev := range batch {
				if ev.droppable() {
					r.droppable--
				}
			}
			r.busy, r.sleep = true, false
			r.mu.Unlock()
			return batch
		}
		if r.stopped || r.sleep {
			r.mu.Unlock()
			return nil
		}
		notify := r.notify
		r.mu.Unlock()
		<-notify
	}
}

// offerSleep asks an awake room with nothing to do for long enough to
// sleep: to hibernate if it has sockets, else to leave memory.
func (r *room) offerSleep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running {
		if len(r.held) == 0 || r.dead {
			// Asleep, or gone, with nothing owed: the sweep is done with
			// it until it starts or holds an event again.
			r.watch(false)
			return
		}
		// A wake failed, or the node was at its room limit, with closes or
		// alarms to deliver: try again when there is room, a second later,
		// or after failed wakes twice as long each time up to maxWakeWait,
		// so that a room that cannot wake (a constructor that panics on
		// its data) does not take a slot and a storage open every second.
		if !r.stopped && now.Sub(r.failed) >= wakeWait(r.wakeFails) && r.rt.claimActive() {
			r.startLocked()
		}
		return
	}
	if r.busy || r.sleep || r.stopped || len(r.queue) > 0 {
		return
	}
	after := r.rt.evictAfter
	if r.nsocks.Load() > 0 {
		after = r.rt.hibernateAfter
	}
	if now.Sub(r.last) < after {
		return
	}
	r.sleep = true
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// maxWakeWait bounds the wait between retries of a room's failed wakes.
const maxWakeWait = 5 * time.Minute

// wakeWait is how long the sweep waits before it wakes a room that holds
// events again, after fails failed wakes in a row: a second, doubled for
// each failure, at most maxWakeWait.
func wakeWait(fails int) time.Duration {
	return min(time.Second<<min(fails, 16), maxWakeWait)
}

// holdLocked keeps ev for the room's next wake, which the sweep retries;
// r.mu is held.
func (r *room) holdLocked(ev *event) {
	r.held = append(r.held, ev)
	r.failed = r.rt.clock.Now()
	r.watch(true)
}

// watch puts the room in the sweep's set, or takes it out; r.mu is held.
func (r *room) watch(on bool) {
	rt := r.rt
	rt.watchMu.Lock()
	if on {
		rt.watched[r] = struct{}{}
	} else {
		delete(rt.watched, r)
	}
	rt.watchMu.Unlock()
}

// stop ends the room's goroutine once its queue is empty; it takes no
// more events but its own closes and deferred work.
func (r *room) stop() {
	r.mu.Lock()
	if !r.stopped && !r.dead && len(r.held) > 0 {
		// Closes and deferred work held for a wake or for the room's next
		// batch are owed: one more try to run them, as the node is
		// stopping and neither will come. A room asleep wakes for them,
		// past the room limit; one awake runs them before it ends.
		if r.running {
			r.queue = append(r.held, r.queue...)
			r.held = nil
		} else {
			r.rt.awake.Add(1)
			r.startLocked()
		}
	}
	r.stopped = true
	notify := r.notify
	r.mu.Unlock()
	if notify != nil {
		select {
		case notify <- struct{}{}:
		default:
		}
	}
}

func (r *room) hold(o output) { r.out = append(r.out, o) }

// run is the room's goroutine while it is awake: it wakes the room, runs
// batches of events (each batch one transaction, each event a savepoint
// inside it) until the room may sleep, and puts it to sleep. woke is when
// the event that woke it arrived.
func (r *room) run(woke time.Time) {
	defer r.rt.serving.Done()
	if !r.kind.Stateless {
		growStack()
	}
	// cut is set when retire tore an object down but events came before
	// the room could leave memory (wakeAgain): to the counters the room
	// never slept, so the wake that follows is not counted either, unless
	// it fails and the room does leave.
	awake, cut := false, false
	for {
		if !awake {
			if err := r.wake(woke, !cut); err != nil {
				r.failWake(err)
			} else {
				awake, cut = true, false
				r.mu.Lock()
				r.wakeFails = 0
				r.mu.Unlock()
			}
		}
		if awake {
			r.serve()
		}
		switch r.retire(awake, awake || cut) {
		case stayAwake:
		case wakeAgain:
			awake, cut, woke = false, awake || cut, time.Now()
		case asleep:
			return
		}
	}
}

// roomStack is about what the goroutine of a room with storage comes to
// need: SQLite's code, Go translated from C, calls deep, and a wake took
// a new goroutine's 2 KiB stack to 16 KiB in three steps, each copying
// the stack and walking every frame on it.
const roomStack = 12 << 10

// growStack grows the calling goroutine's stack to fit roomStack more
// bytes in one step, taken while the stack is a frame or two deep and
// cheap to copy.
//
//go:noinline
func growStack() {
	var pad [roomStack]byte
	keepStack(pad[:])
}

// keepStack keeps growStack's frame from being optimized away.
//
//go:noinline
func keepStack([]byte) {}

// What retire did.
const (
	stayAwake = iota // events came before it began: the room serves them
	wakeAgain        // events came while it went to sleep: the room wakes
	asleep           // the goroutine ends
)

// wake builds the room's object: its storage (none for a stateless kind),
// then its constructor. counted tells whether it counts as a wake.
func (r *room) wake(woke time.Time, counted bool) error {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.log = r.rt.log.With(zap.String("kind", r.kind.Name), zap.String("room", r.name))
	switch {
	case r.kind.Stateless:
	case r.store != nil:
		// It hibernated: its Room is known, only the file reopens.
		if err := r.store.Wake(); err != nil {
			return fmt.Errorf("%w: %w", errStorageFailed, err)
		}
	default:
		sr, err := r.rt.store.Room(r.id.String(), r.kind.Name, r.name)
		if err != nil {
			return fmt.Errorf("%w: %w", errStorageFailed, err)
		}
		r.store = sr
	}
	r.st = &State{ID: r.id, Kind: r.kind.Name, Name: r.name, Storage: r.store, r: r}
	// Before the constructor: an alarm it sets is a write the first
	// batch sees.
	r.loadAlarm()
	h, err := r.construct()
	if err != nil {
		return err
	}
	r.h = h
	if counted {
		r.rt.wakes.Add(1)
		r.rt.observe.Wake(time.Since(woke))
	}
	r.mu.Lock()
	r.last = r.rt.clock.Now()
	r.mu.Unlock()
	return nil
}

// construct runs the kind's constructor; a panic in it fails the wake,
// not the node, and takes back the auto-response it set: the gateway
// answers that pair at once, and would go on answering it for a room that
// never came up.
func (r *room) construct() (h Handler, err error) {
	auto := r.auto.Load()
	defer func() {
		if p := recover(); p != nil {
			r.auto.Store(auto)
			err = fmt.Errorf("rooms: %s's constructor panicked: %v", r.kind.Name, p)
		}
	}()
	return r.kind.New(r.st), nil
}

// serve runs batches until the room is stopped, deleted or asked to sleep
// with nothing queued.
func (r *room) serve() {
	for {
		batch := r.take(r.rt.maxBatch)
		if batch == nil {
			return
		}
		r.runBatch(batch)
		r.nsocks.Store(int32(len(r.socks)))
		if r.deleting != nil {
			r.remove()
			return
		}
	}
}

// failWake answers what is queued for a room that could not be woken:
// joins and requests get 503, its sockets that sent something are closed
// with 1011, closes and deferred work wait for the next wake (the sweep
// retries it), and a deletion goes ahead without the object.
func (r *room) failWake(err error) {
	r.log.Error("room unavailable", zap.Error(err))
	r.mu.Lock()
	r.wakeFails++
	queued := r.queue
	r.queue, r.droppable = nil, 0
	r.mu.Unlock()
	var ended []*event
	for _, ev := range queued {
		if turnAway(ev, "the room is unavailable") {
			ended = append(ended, ev)
			continue
		}
		switch ev.kind {
		case evMessage:
			ended = append(ended, ev)
			if s := r.sockOf(ev.sock); s != nil && s.s != nil {
				s.refused.Store(true)
				s.s.Close(1011, "room unavailable")
			}
		case evClose, evDeferred, evAlarm:
			// Owed to the room: they run at its next wake.
			r.mu.Lock()
			r.holdLocked(ev)
			r.mu.Unlock()
		case evDelete:
			r.deleting = ev
		}
	}
	r.observeEvents(ended)
	if r.deleting != nil {
		r.remove()
	}
}

// turnAway answers a join or request that will not run with 503 and
// reason; it reports false for other events.
func turnAway(ev *event, reason string) bool {
	switch ev.kind {
	case evConnect:
		ev.join.Refuse(http.StatusServiceUnavailable, reason)
	case evRequest:
		ev.rec.reset(http.StatusServiceUnavailable, reason+"\n")
		close(ev.done)
	default:
		return false
	}
	return true
}

// retire puts the room to sleep: its object, goroutine and storage handle
// go. Events queued before it begins keep the room awake; events that
// come while it tears down wake it again. A room left with no sockets
// leaves the index. uncounted tells whether an object went down since the
// last sleep counted: the sleep is counted once the room does leave
// memory, not when events bring it back at once.
func (r *room) retire(awake, uncounted bool) int {
	rt := r.rt
	r.mu.Lock()
	if awake && len(r.queue) > 0 && !r.dead {
		r.mu.Unlock()
		return stayAwake
	}
	// Under the lock: Shutdown's stop writes r.stopped.
	hibernating := awake && len(r.socks) > 0 && !r.dead && !r.stopped
	r.mu.Unlock()
	switch {
	case r.store == nil:
	case hibernating:
		// Hibernating: the file closes, the Room stays for the wake.
		_ = r.store.Sleep()
	default:
		if !r.reclaim(awake) {
			_ = r.store.Close()
		}
		r.store = nil
	}
	if r.cancel != nil {
		r.cancel()
	}
	r.st, r.h, r.ctx, r.cancel, r.log = nil, nil, nil, nil, nil
	r.out, r.deferred, r.undoAttach = nil, nil, nil
	r.autoBefore, r.autoHeld = autoChange{}, autoChange{}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) > 0 && !r.dead {
		// What a failed wake held came before what is queued now.
		r.queue = append(r.held, r.queue...)
		r.held = nil
		return wakeAgain
	}
	if uncounted {
		// A deleted room has left memory without its sockets, too.
		if len(r.socks) > 0 && !r.dead {
			rt.hibernations.Add(1)
		} else {
			rt.evictions.Add(1)
		}
	}
	r.running, r.sleep, r.busy, r.notify = false, false, false, nil
	rt.awake.Add(-1)
	switch {
	case r.dead:
	case len(r.socks) > 0:
		r.hibernated = true
		rt.hibernated.Add(1)
	case len(r.held) == 0:
		if rt.rooms[r.id] == r {
			delete(rt.rooms, r.id)
		}
		r.dead = true
	}
	return asleep
}

// remove ends a deleted room: its sockets are closed with 1000, what is
// queued is answered, its handle released and it leaves the index, so
// the admin API can delete its files.
func (r *room) remove() {
	r.closeSockets(1000, "room deleted")
	r.nsocks.Store(0)
	r.mu.Lock()
	r.stopped = true
	left := r.queue
	r.queue, r.droppable, r.held = nil, 0, nil
	r.mu.Unlock()
	for _, ev := range left {
		if !turnAway(ev, "the room was deleted") && ev.kind == evDelete && ev != r.deleting {
			close(ev.done)
		}
	}
	r.observeEvents(left)
	if r.store != nil {
		_ = r.store.Close()
		r.store = nil
	}
	r.rt.mu.Lock()
	if r.rt.rooms[r.id] == r {
		delete(r.rt.rooms, r.id)
	}
	r.mu.Lock()
	r.dead = true
	r.mu.Unlock()
	r.rt.mu.Unlock()
	close(r.deleting.done)
}

func (r *room) runBatch(batch []*event) {
	if r.kind.Stateless {
		r.inBatch = true
		for _, ev := range batch {
			r.runEvent(ev, func() error { return r.handle(ev) })
		}
		r.inBatch = false
		r.release(batch)
		return
	}
	if err := r.store.Begin(); err != nil {
		r.failBatch(batch, err, false)
		return
	}
	tx := r.store.Tx()
	r.inBatch = true
	for _, ev := range batch {
		r.runEvent(ev, func() error { return r.store.Transaction(func() error { return r.handle(ev) }) })
	}
	r.inBatch = false
	var err error
	if r.store.Tx() != tx {
		// A handler ended the batch's transaction (State.Storage's
		// Commit, Rollback or Begin): what the events before it wrote is
		// gone or already committed apart, and nothing of theirs may go
		// out as if this commit had made it durable.
		err = errTxEnded
	}
	var alarmAt time.Time
	var alarmSet bool
	if err == nil {
		alarmAt, alarmSet, err = r.indexAlarm()
	}
	if err == nil {
		err = r.rt.commitHook(r.id)
	}
	if err == nil {
		began := time.Now()
		if err = r.store.Commit(); err == nil {
			r.rt.observe.Commit(len(batch), time.Since(began))
		}
	} else {
		_ = r.store.Rollback()
	}
	if err != nil {
		r.failBatch(batch, err, true)
		return
	}
	r.syncAlarm(alarmAt, alarmSet)
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
			r.rt.roomFull.Add(1)
			ev.refuse, ev.reason = http.StatusServiceUnavailable, "the room is full"
			return nil
		}
		c := &Connect{Request: ev.req, Identity: ev.join.Identity(), r: r, ev: ev}
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
		if s == nil || s.failed {
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
		r.deleting = ev
	case evAlarm:
		return r.runAlarm(ev)
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
	r.autoBefore = r.autoHeld
	if err := run(); err != nil {
		ev.err = err
		r.out, r.deferred = r.out[:start], r.deferred[:deferred]
		r.undo(ev)
		r.rt.eventsFailed.Add(1)
		r.log.Warn("event failed", zap.String("event", evNames[ev.kind]), zap.Error(err))
		if ev.kind == evAlarm {
			r.retryAlarm(ev)
		}
	}
}

// dropSock takes s out of the room's sockets.
func (r *room) dropSock(s *Sock) {
	r.socks = slices.DeleteFunc(r.socks, func(o *Sock) bool { return o == s })
}

// closeSockets closes every socket of the room now (not held: the room is
// ending) and forgets them: a deleted room gets no close events.
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
	r.autoHeld = r.autoBefore
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

// setAuto sets the room's auto-response. An event's is held with its
// output and answers clients only once the batch commits; one set outside
// a batch (by the constructor, which a wake runs) answers at once.
func (r *room) setAuto(pair *[2]string) {
	if r.inBatch {
		r.autoHeld = autoChange{set: true, pair: pair}
		return
	}
	r.auto.Store(pair)
}

// queueDeferred queues the work Defer held as events of their own.
func (r *room) queueDeferred() {
	for _, f := range r.deferred {
		r.enqueue(&event{kind: evDeferred, fn: f})
	}
	r.deferred = nil
}

// holdDeferred holds the work Defer held for the room's next batch or
// wake, as events of their own.
func (r *room) holdDeferred() {
	r.mu.Lock()
	for _, f := range r.deferred {
		r.holdLocked(&event{kind: evDeferred, fn: f, at: time.Now()})
	}
	r.mu.Unlock()
	r.deferred = nil
}

// release hands out what the batch's events held, in order, now that
// their writes are durable.
func (r *room) release(batch []*event) {
	if r.autoHeld.set {
		r.auto.Store(r.autoHeld.pair)
	}
	r.autoHeld = autoChange{}
	r.queueDeferred()
	// The batch is over before its output goes: a client that has seen the
	// output finds the room idle since then, and a sweep that runs at once
	// does not take it for busy and pass it over, nor, the count of its
	// sockets not yet taken, for a room without sockets to evict.
	r.nsocks.Store(int32(len(r.socks)))
	r.mu.Lock()
	r.busy, r.last = false, r.rt.clock.Now()
	r.mu.Unlock()
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
				r.enqueue(&event{kind: evClose, sock: ghost{ev.accepted}, code: 1006})
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
	// Taken after Error ran: what it sent, closed or deferred goes too, as
	// no later batch may come before the room sleeps.
	out := r.out
	r.out = nil
	r.queueDeferred()
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
	// Alarms first: once an event is observed, all its batch told is in.
	r.observeAlarms(batch)
	r.observeEvents(batch)
}

// observeEvents tells the Observer how long each event of a finished
// batch took since it reached the room.
func (r *room) observeEvents(batch []*event) {
	now := time.Now()
	for _, ev := range batch {
		r.rt.observe.Event(evNames[ev.kind], now.Sub(ev.at))
	}
}

// observeAlarms tells the Observer how late the first attempts of the
// batch's alarms began, once their batch committed: an attempt whose
// commit failed runs again as a first attempt, and counts then.
func (r *room) observeAlarms(batch []*event) {
	for _, ev := range batch {
		if ev.kind == evAlarm && ev.alarmRan && ev.alarmRetry == 0 {
			r.rt.observe.AlarmLate(ev.alarmLate)
		}
	}
}

// failBatch ends a batch whose transaction could not begin or commit:
// nothing it held goes out, its joins and requests are refused, every
// socket is closed with 1011 (its clients saw state that is gone), and
// the room starts over from what is on disk. The sockets stay the room's
// until their close events come, each socket's one, which the rebuilt
// object gets as a woken object gets those of sockets it never saw join;
// what they sent after the failure is dropped. began tells whether the
// batch's handlers ran: if its transaction could not begin, none did, and
// its closes and deferred work are still owed, and held.
func (r *room) failBatch(batch []*event, err error, began bool) {
	r.rt.commitsFailed.Add(1)
	r.log.Error("commit failed: closing the room's sockets and reopening it", zap.Error(err))
	r.out, r.deferred, r.autoHeld = nil, nil, autoChange{}
	var ended []*event
	for _, ev := range batch {
		switch ev.kind {
		case evDelete:
			r.deleting = ev
		case evConnect:
			// Refused, it never was a socket: no close event is owed.
			if ev.accepted != nil {
				r.dropSock(ev.accepted)
			}
			turnAway(ev, "the room failed to save")
		case evClose, evDeferred:
			// In a batch whose transaction could not begin, its handler
			// never ran: the event is owed, and held for the room's next
			// batch or wake as a failed wake holds one. Queued again at
			// once, it would fail in a loop for as long as storage does.
			// One whose handler ran is done: its writes went with the
			// batch, and running it again would run it twice.
			if !began && (ev.kind == evDeferred || r.sockOf(ev.sock) != nil) {
				r.mu.Lock()
				r.holdLocked(ev)
				r.mu.Unlock()
				continue
			}
		default:
			turnAway(ev, "the room failed to save")
		}
		ended = append(ended, ev)
	}
	for _, s := range r.socks {
		if s.s != nil {
			s.failed = true
			s.refused.Store(true)
			s.s.Close(1011, "room failed")
		}
	}
	r.observeEvents(ended)
	r.resyncAlarm()
	r.tellError(nil, fmt.Errorf("%w: %w", errStorageFailed, err))
	if h, cerr := r.construct(); cerr == nil {
		r.h = h
	} else {
		r.log.Error("the room could not be rebuilt", zap.Error(cerr))
	}
	// Its sockets are closed: only what Error and the rebuilt object's
	// constructor deferred is left to do. Queued now, as a wake's first
	// batch queues what its constructor deferred: no release follows to.
	// Held if the batch could not begin: the next could not either, and
	// Error, deferring again each time, would make a loop of it.
	r.out = nil
	if began {
		r.queueDeferred()
	} else {
		r.holdDeferred()
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
