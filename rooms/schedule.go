package rooms

import (
	"time"

	"github.com/den-rooms/den/storage"
)

// Scheduled is an event stored with State.Schedule, come due.
type Scheduled struct {
	At      time.Time
	Payload []byte
}

// dueBatch bounds the events one Due call takes; the alarm fires again at
// once for the rest.
const dueBatch = 128

// Now is the time on the runtime's clock (the one alarms keep).
func (st *State) Now() time.Time { return st.r.rt.clock.Now() }

// Schedule stores payload to come back at at (1970 to 9999): any number
// may be pending. They ride on the room's one alarm, which Schedule moves
// earlier when at is sooner (but not a failed alarm waiting to retry);
// Handler.Alarm takes those due with Due. A kind that uses Schedule leaves
// the alarm to it. Outside an event (in the constructor, or in Error) the
// event and the alarm are written together, durable as Schedule returns.
func (st *State) Schedule(at time.Time, payload []byte) error {
	if st.Storage == nil {
		return errNoAlarms
	}
	if !st.r.inBatch {
		return st.r.scheduleNow(at, payload)
	}
	if err := st.Storage.Schedule(at, payload); err != nil {
		return err
	}
	return st.armAt(at)
}

// scheduleStored, if set, runs as soon as a Schedule outside a batch has
// made its event durable: the crash test kills den there.
var scheduleStored func()

// scheduleNow stores a scheduled event outside a batch (in the
// constructor, or in Error), where no commit follows. The event and the
// alarm it moves earlier are one transaction: stored apart, a crash
// between them left an event that nothing would fire.
func (r *room) scheduleNow(at time.Time, payload []byte) error {
	if err := storage.CheckTime(at); err != nil {
		return err
	}
	cur, retry, had, err := r.store.Alarm()
	if err != nil {
		return err
	}
	if alarmStays(at, cur, retry, had) {
		// The alarm left as it is fires the event.
		return r.store.Schedule(at, payload)
	}
	return r.writeAlarmNow(at, false, func() error {
		err := r.store.Transaction(func() error {
			if err := r.store.Schedule(at, payload); err != nil {
				return err
			}
			return r.store.SetAlarm(at, 0)
		})
		if err == nil && scheduleStored != nil {
			scheduleStored()
		}
		return err
	})
}

// armAt moves the alarm to at if that is sooner, unless a failed alarm
// waits for its retry (in the alarm handler the alarm reads as unset, so
// it is set).
func (st *State) armAt(at time.Time) error {
	cur, retry, ok, err := st.Storage.Alarm()
	if err != nil || alarmStays(at, cur, retry, ok) {
		return err
	}
	return st.SetAlarm(at)
}

// alarmStays reports whether an event scheduled at at leaves the room's
// alarm (cur, its retry count, whether set) as it is: the alarm only moves
// earlier, and not while a failed one waits for its retry.
func alarmStays(at, cur time.Time, retry int, set bool) bool {
	return set && (!at.Before(cur) || retry > 0)
}

// Due takes the scheduled events due now, soonest first (at most 128 a
// call; the alarm fires again at once for the rest), and sets the alarm
// to the next one.
func (st *State) Due() ([]Scheduled, error) {
	if st.Storage == nil {
		return nil, errNoAlarms
	}
	now := st.Now()
	es, err := st.Storage.TakeDue(now, dueBatch)
	if err != nil {
		return nil, err
	}
	// What this alarm's handler was handed, for retryAlarm to drop after
	// the last retry: exactly these, not what came due since.
	st.r.dueAt, st.r.dueHanded = now, st.r.dueHanded+len(es)
	out := make([]Scheduled, len(es))
	for i, e := range es {
		out[i] = Scheduled(e)
	}
	return out, st.armNext()
}

// armNext sets the alarm to the soonest scheduled event, if there is one.
func (st *State) armNext() error {
	at, ok, err := st.Storage.NextScheduled()
	if err != nil || !ok {
		return err
	}
	return st.armAt(at)
}
