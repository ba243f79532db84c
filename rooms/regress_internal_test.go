package rooms

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/storage"
)

func newRuntime(t *testing.T) *Runtime {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rt, err := New(Config{Store: store, Kinds: []Kind{{Name: "b", New: func(*State) Handler { return Base{} }}}})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// wake brings room b/x into memory with a request and returns it.
func wake(t *testing.T, rt *Runtime) *room {
	t.Helper()
	rt.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/rooms/b/x", nil), "b", "x")
	rt.mu.Lock()
	defer rt.mu.Unlock()
	r := rt.rooms[IDFromName("b", "x")]
	if r == nil || r.store == nil {
		t.Fatal("room b/x is not awake after a request")
	}
	return r
}

// deleteEnds reports whether Delete returns within 10 s.
func deleteEnds(rt *Runtime) bool {
	done := make(chan struct{})
	go func() { _, _ = rt.Delete("b", "x"); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

func TestRegressDeleteAfterFailedBegin(t *testing.T) {
	rt := newRuntime(t)
	r := wake(t, rt)
	_ = r.store.Close() // every Begin fails from now on
	w := httptest.NewRecorder()
	rt.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/rooms/b/x", nil), "b", "x")
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("request to a room that cannot begin: %d", w.Code)
	}
	if !deleteEnds(rt) {
		t.Fatal("Delete hangs on a room whose batches fail")
	}
}

func TestRegressDeleteAfterShutdown(t *testing.T) {
	rt := newRuntime(t)
	wake(t, rt)
	_ = rt.Shutdown(context.Background())
	if !deleteEnds(rt) {
		t.Fatal("Delete hangs after Shutdown")
	}
}

func TestRegressTwoDeletesBothEnd(t *testing.T) {
	rt := newRuntime(t)
	wake(t, rt)
	ends := make(chan bool, 2)
	for range 2 {
		go func() { ends <- deleteEnds(rt) }()
	}
	if !<-ends || !<-ends {
		t.Fatal("one of two Deletes of a room hangs")
	}
}

// BenchmarkSchedulerMemory is what one pending alarm costs in memory: the
// scheduler's heap entry and index (the alarm itself is on disk).
func BenchmarkSchedulerMemory(b *testing.B) {
	const n = 100_000
	rt := &Runtime{clock: clock.Real{}}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := newScheduler(rt)
	for i := range n {
		s.set(IDFromName("k", strconv.Itoa(i)), "k", "room-"+strconv.Itoa(i), time.Now().Add(time.Hour))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/alarm")
	runtime.KeepAlive(s)
}
