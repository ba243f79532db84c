package rooms_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// schedKind's rooms schedule events on request and report each event's
// lateness (fired - scheduled) when it comes due.
type schedKind struct {
	mu    sync.Mutex
	late  []time.Duration
	fired atomic.Int64
}

type schedRoom struct {
	rooms.Base
	st *rooms.State
	k  *schedKind
}

func (k *schedKind) kind() rooms.Kind {
	return rooms.Kind{Name: "sched", New: func(st *rooms.State) rooms.Handler { return &schedRoom{st: st, k: k} }}
}

// Request schedules one event at each unix-ms time in the query's "at".
func (s *schedRoom) Request(w http.ResponseWriter, r *http.Request) error {
	for _, v := range r.URL.Query()["at"] {
		ms, _ := strconv.ParseInt(v, 10, 64)
		if err := s.st.Schedule(time.UnixMilli(ms), nil); err != nil {
			return err
		}
	}
	return nil
}

func (s *schedRoom) Alarm(rooms.AlarmInfo) error {
	due, err := s.st.Due()
	if err != nil {
		return err
	}
	now := time.Now()
	s.k.mu.Lock()
	for _, d := range due {
		s.k.late = append(s.k.late, now.Sub(d.At))
	}
	s.k.mu.Unlock()
	s.k.fired.Add(int64(len(due)))
	return nil
}

// BenchmarkAlarms schedules 10 events in each of 1,000 × N rooms (the
// issue's 100,000 over 10,000 rooms is -benchtime 10x) and waits for all
// to fire. "spread": due evenly over 100 s (1,000 a second at 10x), it
// reports their lateness (fired - scheduled), all of them pending at the
// start. "burst": all due at one instant, it reports alarms fired per
// second.
//
//	go test ./rooms -run '^$' -bench Alarms -benchtime 10x -timeout 30m
func BenchmarkAlarms(b *testing.B) {
	b.Run("spread", func(b *testing.B) { alarmLoad(b, 100*time.Second) })
	b.Run("burst", func(b *testing.B) { alarmLoad(b, 0) })
}

func alarmLoad(b *testing.B, spread time.Duration) {
	k := &schedKind{}
	n := startNodeSync(b, b.TempDir(), storage.SyncNormal, rooms.Config{Kinds: []rooms.Kind{k.kind()}})
	nrooms := 1000 * b.N
	const perRoom = 10
	// Room for making the rooms (a few ms each) before the first is due.
	start := time.Now().Add(10*time.Second + time.Duration(nrooms)*3*time.Millisecond)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= nrooms {
					return
				}
				q := ""
				for j := range perRoom {
					at := start.Add(spread * time.Duration(i*perRoom+j) / time.Duration(nrooms*perRoom))
					q += fmt.Sprintf("&at=%d", at.UnixMilli())
				}
				w := httptest.NewRecorder()
				n.rt.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/rooms/sched/r?"+q[1:], nil), "sched", fmt.Sprintf("r%d", i))
				if w.Code != http.StatusOK {
					b.Errorf("room %d: %d %s", i, w.Code, w.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
	if time.Now().After(start) {
		b.Fatalf("scheduling took past the first alarm: raise the lead")
	}
	pending := n.rt.Stats().AlarmsPending
	b.ResetTimer()
	total := int64(nrooms * perRoom)
	for k.fired.Load() < total {
		if time.Now().After(start.Add(spread + 5*time.Minute)) {
			b.Fatalf("%d of %d fired", k.fired.Load(), total)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	k.mu.Lock()
	defer k.mu.Unlock()
	slices.Sort(k.late)
	if spread == 0 {
		b.ReportMetric(float64(total)/elapsed.Seconds(), "alarms/s")
	}
	b.ReportMetric(float64(pending), "room-alarms-pending")
	b.ReportMetric(float64(total), "events")
	b.ReportMetric(float64(k.late[len(k.late)/2].Microseconds())/1000, "late-p50-ms")
	b.ReportMetric(float64(k.late[len(k.late)*99/100].Microseconds())/1000, "late-p99-ms")
	b.ReportMetric(float64(k.late[len(k.late)-1].Microseconds())/1000, "late-max-ms")
}
