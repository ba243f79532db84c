package rooms

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

// scKind schedules an event an hour ahead outside a batch: from its
// constructor (ctor), or from Error after a request fails. Its alarm
// handler records the payloads Due hands it.
type scKind struct {
	fake *clock.Fake
	ctor bool
	mu   sync.Mutex
	got  []string
}

type scRoom struct {
	Base
	k  *scKind
	st *State
}

func (k *scKind) kind() Kind {
	return Kind{Name: "sc", New: func(st *State) Handler {
		// After the restart the room wakes with its event still pending.
		if _, pending, _ := st.Storage.NextScheduled(); k.ctor && !pending {
			_ = st.Schedule(k.fake.Now().Add(time.Hour), []byte("from the constructor"))
		}
		return &scRoom{k: k, st: st}
	}}
}

func (r *scRoom) Request(http.ResponseWriter, *http.Request) error {
	return errors.New("the upstream is down")
}

func (r *scRoom) Error(*Sock, error) {
	_ = r.st.Schedule(r.k.fake.Now().Add(time.Hour), []byte("from Error"))
}

func (r *scRoom) Alarm(AlarmInfo) error {
	due, err := r.st.Due()
	if err != nil {
		return err
	}
	r.k.mu.Lock()
	defer r.k.mu.Unlock()
	for _, d := range due {
		r.k.got = append(r.k.got, string(d.Payload))
	}
	return nil
}

func (k *scKind) payloads() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.got...)
}

// TestScheduleCrashChild is den, killed as soon as a Schedule outside a
// batch has stored its event (DEN_SCHEDULE_CRASH: "ctor" or "error").
func TestScheduleCrashChild(t *testing.T) {
	dir, mode := os.Getenv("DEN_SCHEDULE_CRASH_DIR"), os.Getenv("DEN_SCHEDULE_CRASH")
	if dir == "" {
		t.Skip("run by TestScheduleOutsideBatchSurvivesCrash")
	}
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	scheduleStored = KillSelf
	k := &scKind{fake: clock.NewFake(time.UnixMilli(indexTestStart)), ctor: mode == "ctor"}
	rt, err := New(Config{Store: store, Kinds: []Kind{k.kind()}, Clock: k.fake})
	if err != nil {
		t.Fatal(err)
	}
	// The request wakes the room (its constructor runs), then fails.
	rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/rooms/sc/a", nil), "sc", "a")
	t.Fatal("not killed")
}

// A Schedule outside a batch stores its event and the alarm that fires it
// in one step: den killed right after the event is stored fires it once
// it starts again, with nothing else to wake the room.
func TestScheduleOutsideBatchSurvivesCrash(t *testing.T) {
	for _, mode := range []string{"ctor", "error"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			RunKilledChild(t, "TestScheduleCrashChild", "DEN_SCHEDULE_CRASH_DIR="+dir, "DEN_SCHEDULE_CRASH="+mode)
			store, err := storage.Open(storage.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			// Restarted two hours on: the event is an hour overdue.
			k := &scKind{fake: clock.NewFake(time.UnixMilli(indexTestStart).Add(2 * time.Hour)), ctor: mode == "ctor"}
			rt, err := New(Config{Store: store, Kinds: []Kind{k.kind()}, Clock: k.fake})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = rt.Shutdown(t.Context()) }()
			waitUntil(t, "the event scheduled before the crash to fire", func() bool { return len(k.payloads()) > 0 })
			if got := k.payloads(); len(got) != 1 {
				t.Fatalf("after the restart the handler was handed %q, want the one event", got)
			}
		})
	}
}
