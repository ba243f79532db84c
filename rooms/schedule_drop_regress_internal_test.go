package rooms

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
)

type al3Kind struct {
	fake *clock.Fake
	mu   sync.Mutex
	seen map[string]bool
	runs int
}

type al3Room struct {
	Base
	k  *al3Kind
	st *State
}

func (r *al3Room) Message(s *Sock, _ bool, data []byte) error {
	var err error
	switch string(data) {
	case "load":
		if err = r.st.Schedule(r.k.fake.Now().Add(time.Second), []byte("poison")); err == nil {
			for i := 0; i < 200 && err == nil; i++ {
				err = r.st.Schedule(r.k.fake.Now().Add(time.Second), []byte(strconv.Itoa(i)))
			}
		}
	}
	s.SendText("ok " + string(data) + " " + errStr(err))
	return nil
}

func errStr(err error) string {
	if err != nil {
		return err.Error()
	}
	return ""
}

func (r *al3Room) Alarm(AlarmInfo) error {
	due, err := r.st.Due()
	if err != nil {
		return err
	}
	r.k.mu.Lock()
	defer r.k.mu.Unlock()
	r.k.runs++
	for _, d := range due {
		r.k.seen[string(d.Payload)] = true
	}
	for _, d := range due {
		if string(d.Payload) == "poison" {
			return errors.New("poison")
		}
	}
	return nil
}

// An alarm dropped after its last retry takes only the scheduled events
// its failing handler was handed: the rest still come.
func TestRegressDropTakesNeverDelivered(t *testing.T) {
	k := &al3Kind{seen: map[string]bool{}}
	rt, _, fake := fakeRuntime(t, Kind{Name: "al3", New: func(st *State) Handler { return &al3Room{k: k, st: st} }})
	k.fake = fake
	s := join(t, rt, "al3", "a")
	revCmd(t, s, "load")
	fake.Advance(time.Second)
	id := IDFromName("al3", "a")
	for rt.Stats().AlarmsDropped == 0 {
		waitUntil(t, "a retry or the drop", func() bool {
			_, ok := rt.alarms.get(id)
			return ok || rt.Stats().AlarmsDropped == 1
		})
		fake.Advance(100 * time.Second)
	}
	// The events past the batch the failing handler was handed still come.
	waitUntil(t, "the rest", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return len(k.seen) == 201 // the poison and 0..199
	})
	k.mu.Lock()
	defer k.mu.Unlock()
	never := 0
	for i := range 200 {
		if !k.seen[strconv.Itoa(i)] {
			never++
		}
	}
	if never > 0 {
		t.Fatalf("alarm dropped after %d runs; %d of 200 scheduled events were dropped without ever being handed to the handler", k.runs, never)
	}
}
