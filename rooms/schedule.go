package rooms

import (
	"fmt"
	"strconv"
	"time"

	"github.com/den-rooms/den/storage"
)

// Scheduled is an event stored with State.Schedule, come due.
type Scheduled struct {
	At      time.Time
	Payload []byte
}

// The queue lives in the room's KV store under this prefix, keyed by due
// time then a sequence number, so a listing is in time order.
const (
	schedPrefix = "den.schedule/"
	schedSeq    = "den.schedule.seq"
)

// Now is the time on the runtime's clock (the one alarms keep).
func (st *State) Now() time.Time { return st.r.rt.clock.Now() }

// Schedule stores payload to come back at at: any number may be pending.
// They ride on the room's one alarm, which Schedule sets to the soonest;
// Handler.Alarm takes those due with Due. A kind that uses Schedule
// leaves the alarm to it.
func (st *State) Schedule(at time.Time, payload []byte) error {
	if st.Storage == nil {
		return errNoAlarms
	}
	b, _, err := st.Storage.Get(schedSeq)
	if err != nil {
		return err
	}
	seq, _ := strconv.ParseUint(string(b), 10, 64)
	seq++
	key := fmt.Sprintf("%s%016x/%016x", schedPrefix, max(at.UnixMilli(), 0), seq)
	if err := st.Storage.PutMany([]storage.Entry{{Key: schedSeq, Value: strconv.AppendUint(nil, seq, 10)}, {Key: key, Value: payload}}); err != nil {
		return err
	}
	return st.armNext()
}

// Due takes the scheduled events due now, soonest first (at most 128 a
// call; the alarm fires again at once for the rest), and sets the alarm
// to the next one.
func (st *State) Due() ([]Scheduled, error) {
	if st.Storage == nil {
		return nil, errNoAlarms
	}
	now := st.Now().UnixMilli()
	es, err := st.Storage.List(storage.ListOptions{Prefix: schedPrefix, End: fmt.Sprintf("%s%016x/~", schedPrefix, max(now, 0)), Limit: 128})
	if err != nil {
		return nil, err
	}
	out := make([]Scheduled, 0, len(es))
	keys := make([]string, 0, len(es))
	for _, e := range es {
		ms, err := strconv.ParseInt(e.Key[len(schedPrefix):len(schedPrefix)+16], 16, 64)
		if err != nil {
			continue
		}
		out = append(out, Scheduled{At: time.UnixMilli(ms), Payload: e.Value})
		keys = append(keys, e.Key)
	}
	if len(keys) > 0 {
		if _, err := st.Storage.DeleteMany(keys); err != nil {
			return nil, err
		}
	}
	return out, st.armNext()
}

// armNext sets the alarm to the soonest scheduled event, or unsets it.
func (st *State) armNext() error {
	es, err := st.Storage.List(storage.ListOptions{Prefix: schedPrefix, Limit: 1})
	if err != nil {
		return err
	}
	if len(es) == 0 {
		return st.DeleteAlarm()
	}
	ms, err := strconv.ParseInt(es[0].Key[len(schedPrefix):len(schedPrefix)+16], 16, 64)
	if err != nil {
		return fmt.Errorf("rooms: bad scheduled key %q", es[0].Key)
	}
	at := time.UnixMilli(ms)
	if cur, ok, err := st.Alarm(); err != nil || (ok && cur.Equal(at)) {
		return err
	}
	return st.SetAlarm(at)
}
