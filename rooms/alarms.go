package rooms

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

// AlarmInfo describes an alarm that came due.
type AlarmInfo struct {
	// Scheduled is the time the alarm was set for (or, on a retry, the
	// time the retry was due).
	Scheduled time.Time
	// RetryCount is how many times the handler already failed for this
	// alarm; IsRetry is RetryCount > 0.
	RetryCount int
	IsRetry    bool
}

// Retries of a failed alarm: after 2, 4, ... 64 s, then it is dropped.
const (
	alarmRetries   = 6
	alarmFirstWait = 2 * time.Second
)

var errNoAlarms = errors.New("rooms: a stateless kind has no alarms")

// SetAlarm sets the room's one alarm to at, replacing any. A time in the
// past fires at once; times before 1970 or after 9999 are refused
// (storage.ErrTimeRange). It is written with the event: if the event
// fails, the alarm is as it was.
func (st *State) SetAlarm(at time.Time) error {
	if st.Storage == nil {
		return errNoAlarms
	}
	if !st.r.inBatch {
		return st.r.setAlarmNow(at)
	}
	return st.Storage.SetAlarm(at, 0)
}

// Alarm returns the room's alarm and whether one is set.
func (st *State) Alarm() (time.Time, bool, error) {
	if st.Storage == nil {
		return time.Time{}, false, nil
	}
	at, _, ok, err := st.Storage.Alarm()
	return at, ok, err
}

// DeleteAlarm unsets the room's alarm.
func (st *State) DeleteAlarm() error {
	if st.Storage == nil {
		return errNoAlarms
	}
	if !st.r.inBatch {
		return st.r.deleteAlarmNow()
	}
	return st.Storage.DeleteAlarm()
}

// setAlarmNow sets the alarm outside a batch (in the constructor, or in
// Error), where no commit follows to index and schedule it.
func (r *room) setAlarmNow(at time.Time) error {
	if err := storage.CheckTime(at); err != nil {
		return err
	}
	cur, _, had, err := r.store.Alarm()
	if err != nil {
		return err
	}
	return r.writeAlarmNow(at, had && at.After(cur), func() error { return r.store.SetAlarm(at, 0) })
}

// writeAlarmNow runs write, which sets the alarm to at outside a batch and
// is durable as it returns; later says at is after the room's alarm. As a
// batch does, a new or earlier alarm is indexed before it is written, so
// that a crash between the two leaves the index ahead of the room; a later
// one after, so that the room's earlier alarm stays indexed until the room
// no longer has it. Then it is scheduled.
func (r *room) writeAlarmNow(at time.Time, later bool, write func() error) error {
	if !later {
		if err := r.rt.store.IndexAlarm(r.id.String(), r.kind.Name, r.name, at); err != nil {
			return err
		}
	}
	err := write()
	r.alarmWrites = r.store.AlarmWrites()
	if err != nil {
		// Any index written is ahead of the room, which a fire puts right.
		return err
	}
	if later {
		if err := r.rt.store.IndexAlarm(r.id.String(), r.kind.Name, r.name, at); err != nil {
			r.log.Error("alarm index not updated", zap.Error(err))
		}
	}
	r.syncAlarm(at, true)
	return nil
}

// deleteAlarmNow unsets the alarm outside a batch: the room first, so
// that a crash leaves the index ahead of it, then the index and the
// scheduler.
func (r *room) deleteAlarmNow() error {
	err := r.store.DeleteAlarm()
	r.alarmWrites = r.store.AlarmWrites()
	if err != nil {
		return err
	}
	r.syncAlarm(time.Time{}, false)
	return nil
}

// retryWait is how long a failed alarm waits before its retry-th retry:
// 2^retry s plus up to 25%.
func retryWait(retry int) time.Duration {
	d := alarmFirstWait << (retry - 1)
	return d + time.Duration(rand.Int64N(int64(d/4)+1))
}

// scheduler fires the rooms' alarms: one heap and one timer on the
// runtime's clock for all of them, never a timer per room.
type scheduler struct {
	rt    *Runtime
	mu    sync.Mutex
	heap  alarmHeap
	byID  map[ID]*alarmItem
	timer clock.Timer
	kick  chan struct{}
	quit  chan struct{}
	done  chan struct{}
	// firing counts, per room, the alarms taken from the heap and not yet
	// delivered; fired tells (on mu) of each delivery.
	firing map[ID]int
	fired  *sync.Cond
}

type alarmItem struct {
	id         ID
	kind, name string
	at         time.Time
	index      int
}

type alarmHeap []*alarmItem

func (h alarmHeap) Len() int           { return len(h) }
func (h alarmHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h alarmHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *alarmHeap) Push(x any) {
	it := x.(*alarmItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *alarmHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

func newScheduler(rt *Runtime) *scheduler {
	s := &scheduler{
		rt: rt, byID: map[ID]*alarmItem{}, timer: rt.clock.NewTimer(rt.clock.Now().Add(time.Hour)),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	s.timer.Stop()
	s.firing, s.fired = map[ID]int{}, sync.NewCond(&s.mu)
	return s
}

// set schedules id's alarm at at, replacing any.
func (s *scheduler) set(id ID, kind, name string, at time.Time) {
	s.mu.Lock()
	if it := s.byID[id]; it != nil {
		it.at = at
		heap.Fix(&s.heap, it.index)
	} else {
		it = &alarmItem{id: id, kind: kind, name: name, at: at}
		s.byID[id] = it
		heap.Push(&s.heap, it)
	}
	s.mu.Unlock()
	s.poke()
}

// drop unschedules the alarm of a room being deleted, and waits for one
// already taken from the heap to be delivered (and turned away, as the
// deletion holds the room's id).
func (s *scheduler) drop(id ID) {
	s.mu.Lock()
	for s.firing[id] > 0 {
		s.fired.Wait()
	}
	s.mu.Unlock()
	s.remove(id)
}

// remove unschedules id's alarm.
func (s *scheduler) remove(id ID) {
	s.mu.Lock()
	if it := s.byID[id]; it != nil {
		heap.Remove(&s.heap, it.index)
		delete(s.byID, id)
	}
	s.mu.Unlock()
	s.poke()
}

// get returns id's scheduled alarm.
func (s *scheduler) get(id ID) (time.Time, bool) {
	at, ok, _ := s.lookup(id)
	return at, ok
}

// lookup returns id's scheduled alarm, and whether one of id's alarms is
// taken from the heap and not yet delivered.
func (s *scheduler) lookup(id ID) (at time.Time, ok, firing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if it := s.byID[id]; it != nil {
		at, ok = it.at, true
	}
	return at, ok, s.firing[id] > 0
}

func (s *scheduler) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heap)
}

func (s *scheduler) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run fires due alarms until stop: each goes to its room as an event,
// waking the room if it sleeps. The room schedules it again if it still
// stands after that event (a retry, or a new alarm).
func (s *scheduler) run() {
	defer close(s.done)
	for {
		for _, it := range s.due(s.rt.clock.Now()) {
			s.fire(it)
		}
		select {
		case <-s.quit:
			return
		case <-s.timer.C():
		case <-s.kick:
		}
	}
}

// due takes the alarms due at now from the heap, counted as firing until
// fire delivers them, and sets the timer for the next.
func (s *scheduler) due(now time.Time) []*alarmItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*alarmItem
	for len(s.heap) > 0 && !s.heap[0].at.After(now) {
		it := heap.Pop(&s.heap).(*alarmItem)
		delete(s.byID, it.id)
		s.firing[it.id]++
		due = append(due, it)
	}
	if len(s.heap) > 0 {
		s.timer.ResetAt(s.heap[0].at)
	} else {
		s.timer.Stop()
	}
	return due
}

// fire delivers an alarm due takes.
func (s *scheduler) fire(it *alarmItem) {
	s.rt.alarmsFired.Add(1)
	// An error means shutting down, or the room being deleted: node.db
	// keeps the alarm for the next start, or the deletion drops it.
	_ = s.rt.deliver(it.kind, it.name, &event{kind: evAlarm})
	s.mu.Lock()
	if s.firing[it.id]--; s.firing[it.id] == 0 {
		delete(s.firing, it.id)
	}
	s.fired.Broadcast()
	s.mu.Unlock()
}

func (s *scheduler) stop() {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
	s.timer.Stop()
}

// runAlarm handles an alarm event: the stored alarm, if it is due, is
// unset and the handler runs. A stored alarm not yet due (the index was
// ahead of the room) or none (dropped since) makes the event a no-op; the
// commit puts the index right.
func (r *room) runAlarm(ev *event) error {
	// The scheduler let go of the alarm to fire it: the commit gives it
	// back whatever the room's alarm is then.
	r.alarmPopped = true
	r.dueHanded, r.dueAt = 0, r.rt.clock.Now()
	if r.store == nil {
		return nil
	}
	at, retry, ok, err := r.store.Alarm()
	if err != nil || !ok || at.After(r.rt.clock.Now()) {
		return err
	}
	ev.alarmAt, ev.alarmRetry, ev.alarmRan = at, retry, true
	ev.alarmLate = r.rt.clock.Now().Sub(at)
	if err := r.store.DeleteAlarm(); err != nil {
		return err
	}
	return r.h.Alarm(AlarmInfo{Scheduled: at, RetryCount: retry, IsRetry: retry > 0})
}

// retryAlarm schedules the retry of an alarm whose handler failed, or
// drops the alarm after the last retry. It runs in the batch's
// transaction, after the failed event rolled back.
func (r *room) retryAlarm(ev *event) {
	if !ev.alarmRan {
		return
	}
	next := ev.alarmRetry + 1
	var err error
	if next > alarmRetries {
		r.rt.alarmsDropped.Add(1)
		// The scheduled events Due handed the failing handler go too (its
		// takes rolled back with it: they are the soonest due when it
		// last called Due), or, if it never called Due, those due as its
		// run began, which it failed on; events due since keep the alarm
		// going.
		n := dueBatch
		if r.dueHanded > 0 {
			n = r.dueHanded
		}
		var dropped []storage.ScheduledEntry
		if err = r.store.DeleteAlarm(); err == nil {
			dropped, err = r.store.TakeDue(r.dueAt, n)
		}
		if err == nil {
			var at time.Time
			var ok bool
			if at, ok, err = r.store.NextScheduled(); err == nil && ok {
				err = r.store.SetAlarm(at, 0)
			}
		}
		r.log.Error("alarm dropped after its last retry", zap.Time("scheduled", ev.alarmAt),
			zap.Int("retries", alarmRetries), zap.Int("scheduled_events_dropped", len(dropped)))
	} else {
		r.rt.alarmsRetried.Add(1)
		err = r.store.SetAlarm(r.rt.clock.Now().Add(retryWait(next)), next)
	}
	if err != nil {
		r.log.Error("alarm retry not stored", zap.Error(err))
	}
}

// indexAlarm is called before a batch commits: an alarm the batch set is
// written to node.db's index first, so a crash between the two leaves
// the index ahead of the room, never behind. An alarm moved later (or set
// after one fired) is indexed by syncAlarm once the batch is durable
// instead: until then the room keeps the earlier one, which a crash must
// find indexed. It returns the room's alarm for syncAlarm.
func (r *room) indexAlarm() (at time.Time, ok bool, err error) {
	// Most batches leave the alarm alone: then it is what the room last
	// synced, and reading it back would cost every batch a query.
	writes := r.store.AlarmWrites()
	if !r.alarmPopped && writes == r.alarmWrites {
		return r.alarmAt, r.alarmKnown, nil
	}
	r.alarmWrites = writes
	at, _, ok, err = r.store.Alarm()
	if err != nil || !ok || (r.alarmKnown && r.alarmAt.Equal(at)) {
		return at, ok, err
	}
	if r.alarmPopped || (r.alarmKnown && at.After(r.alarmAt)) {
		r.indexLate = true
		return at, ok, nil
	}
	return at, ok, r.rt.store.IndexAlarm(r.id.String(), r.kind.Name, r.name, at)
}

// syncAlarm, once the batch is durable, makes the scheduler (and, for an
// alarm unset, the index) agree with the room.
func (r *room) syncAlarm(at time.Time, ok bool) {
	switch {
	case ok && (!r.alarmKnown || !r.alarmAt.Equal(at) || r.alarmPopped):
		if r.indexLate {
			if err := r.rt.store.IndexAlarm(r.id.String(), r.kind.Name, r.name, at); err != nil {
				r.log.Error("alarm index not updated", zap.Error(err))
			}
		}
		r.rt.alarms.set(r.id, r.kind.Name, r.name, at)
	case !ok && (r.alarmKnown || r.alarmPopped):
		// Known to the index: set before, or fired from it (a sleeping
		// room wakes knowing none).
		r.rt.alarms.remove(r.id)
		if err := r.rt.store.UnindexAlarm(r.id.String()); err != nil {
			r.log.Error("alarm index not updated", zap.Error(err))
		}
	}
	r.alarmAt, r.alarmKnown, r.alarmPopped, r.indexLate = at, ok, false, false
}

// resyncAlarm makes the index and the scheduler agree with what the room
// has on disk, after a batch that failed to commit.
func (r *room) resyncAlarm() {
	if r.store == nil {
		return
	}
	r.alarmKnown, r.alarmPopped = false, true
	at, ok, err := r.indexAlarm()
	if err == nil && ok && r.indexLate {
		err = r.rt.store.IndexAlarm(r.id.String(), r.kind.Name, r.name, at)
	}
	r.indexLate = false
	if err != nil {
		r.log.Error("alarm index not updated", zap.Error(err))
		return
	}
	if !ok {
		r.syncAlarm(at, ok)
		return
	}
	// An alarm the failed batch fired is due again: not at once, or a
	// commit that keeps failing would run its handler in a loop.
	r.rt.alarms.set(r.id, r.kind.Name, r.name, later(at, r.rt.clock.Now().Add(alarmFirstWait)))
	r.alarmAt, r.alarmKnown, r.alarmPopped = at, true, false
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// loadAlarm learns, at a wake, the alarm the scheduler holds for the room.
// One the scheduler has let go of to fire (on its way to the room, or in
// its mailbox, held or queued) is still in the room's file until that
// event runs: the room wakes as if it had run, so that an event before it
// that moves the alarm later indexes the later time only once its commit
// is durable, and a crash meanwhile finds the due alarm indexed.
func (r *room) loadAlarm() {
	var firing bool
	r.alarmAt, r.alarmKnown, firing = r.rt.alarms.lookup(r.id)
	// The scheduler first: an alarm it delivers is in the mailbox before
	// it stops counting it as firing.
	r.alarmPopped = !r.alarmKnown && (firing || r.alarmQueued())
	if r.store != nil {
		r.alarmWrites = r.store.AlarmWrites()
	}
}

// alarmQueued reports whether an alarm event waits in the room's mailbox.
func (r *room) alarmQueued() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, evs := range [][]*event{r.queue, r.held} {
		for _, ev := range evs {
			if ev.kind == evAlarm {
				return true
			}
		}
	}
	return false
}
