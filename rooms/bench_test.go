package rooms_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/rooms"
	"github.com/den-rooms/den/storage"
)

// postLoad runs senders goroutines, each posting to a room that pick
// chooses, until b.N requests are done, and reports requests per second
// and latency percentiles. Every request is one durable event: its answer
// comes only after its commit.
func postLoad(b *testing.B, n *node, senders int, path func(i int) string, body string, want int) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	var next atomic.Int64
	lat := make([][]time.Duration, senders)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				resp, err := client.Post(n.url(path(int(i))), "application/json", strings.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				// Read to the end, or the client will not reuse the
				// connection.
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
				lat[s] = append(lat[s], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkChatDurableEvents posts chat messages into one room from 100
// senders, fsync on: group commit at work.
//
//	go test ./rooms -run '^$' -bench ChatDurableEvents -benchtime 100000x
func BenchmarkChatDurableEvents(b *testing.B) {
	n := startNode(b, b.TempDir(), rooms.Config{})
	postLoad(b, n, 100, func(int) string { return "/rooms/chat/bench/messages" }, `{"user":"b","text":"hello"}`, http.StatusCreated)
}

// BenchmarkChatDurableEvents1000Rooms spreads the same load over 1,000
// rooms.
func BenchmarkChatDurableEvents1000Rooms(b *testing.B) {
	n := startNode(b, b.TempDir(), rooms.Config{})
	postLoad(b, n, 100, func(i int) string { return fmt.Sprintf("/rooms/chat/r%d/messages", i%1000) },
		`{"user":"b","text":"hello"}`, http.StatusCreated)
}

// BenchmarkCounterIncrements is POST /increment on one counter from 100
// clients.
func BenchmarkCounterIncrements(b *testing.B) {
	n := startNode(b, b.TempDir(), rooms.Config{})
	postLoad(b, n, 100, func(int) string { return "/rooms/counter/bench/increment" }, "", http.StatusOK)
}

// BenchmarkRoomsTouched wakes b.N counter rooms, one increment each, and
// reports what an active room costs: memory, and the descriptors the
// handle pool lets the process hold (it never nears 20,000).
//
//	go test ./rooms -run '^$' -bench RoomsTouched -benchtime 20000x
func BenchmarkRoomsTouched(b *testing.B) {
	n := startNode(b, b.TempDir(), rooms.Config{})
	runtime.GC()
	debug.FreeOSMemory()
	rss0 := rss()
	maxFiles := 0
	client := &http.Client{}
	b.ResetTimer()
	for i := range b.N {
		resp, err := client.Post(n.url(fmt.Sprintf("/rooms/counter/t%d/increment", i)), "", nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i%500 == 0 {
			maxFiles = max(maxFiles, openFiles())
		}
	}
	b.StopTimer()
	runtime.GC()
	debug.FreeOSMemory()
	b.ReportMetric(float64(rss()-rss0)/float64(b.N), "B/room")
	b.ReportMetric(float64(maxFiles), "max-fds")
	b.ReportMetric(float64(n.store.OpenHandles()), "open-handles")
	b.ReportMetric(float64(n.rt.Stats().Rooms), "active-rooms")
}

func openFiles() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkWake wakes hibernated chat rooms one at a time: a message to
// a sleeping room, its storage reopened and constructor run, the message
// stored and broadcast, and the reply read. It reports the latency of
// that round trip and, apart, of the wake itself. Paced, each message
// waits 5 ms after the last reply, as `den loadtest wake --wake-rate 200`
// spaces them: the CPU goes idle between wakes, as on a node whose rooms
// wake now and then, and each wake starts on caches gone cold.
//
//	go test ./rooms -run '^$' -bench Wake -benchtime 2000x
func BenchmarkWake(b *testing.B) {
	for _, c := range []struct {
		name string
		sync string
		gap  time.Duration
	}{
		{"full", storage.SyncFull, 0},
		{"normal", storage.SyncNormal, 0},
		{"full-paced", storage.SyncFull, 5 * time.Millisecond},
		{"normal-paced", storage.SyncNormal, 5 * time.Millisecond},
	} {
		b.Run(c.name, func(b *testing.B) {
			fake := clock.NewFake(time.Now())
			obs := &wakeRecorder{}
			n := startNodeSync(b, b.TempDir(), c.sync, rooms.Config{Clock: fake, Observer: obs})
			const nrooms = 200
			conns := make([]*websocket.Conn, nrooms)
			for i := range conns {
				conns[i] = n.dial(b, fmt.Sprintf("/rooms/chat/w%d?user=u", i))
				read(b, conns[i]) // history
				read(b, conns[i]) // join
			}
			obs.take()
			var lat []time.Duration
			var faults int64
			b.ResetTimer()
			for done := 0; done < b.N; {
				b.StopTimer()
				deadline := time.Now().Add(time.Minute)
				for n.rt.Stats().Rooms > 0 {
					if time.Now().After(deadline) {
						b.Fatal("rooms do not hibernate")
					}
					fake.Advance(11 * time.Second)
					time.Sleep(time.Millisecond)
				}
				b.StartTimer()
				faults -= minorFaults(b)
				for i := 0; i < nrooms && done < b.N; i, done = i+1, done+1 {
					// Inside the timer: StopTimer would stop the world
					// right before the wake, and ns/op means little here.
					time.Sleep(c.gap)
					t0 := time.Now()
					send(b, conns[i], `{"type":"message","text":"wake"}`)
					read(b, conns[i])
					lat = append(lat, time.Since(t0))
				}
				faults += minorFaults(b)
			}
			b.StopTimer()
			wakes := obs.take()
			pct := func(d []time.Duration, p int) float64 {
				slices.Sort(d)
				return float64(d[len(d)*p/100].Microseconds()) / 1000
			}
			b.ReportMetric(pct(lat, 50), "p50-ms")
			b.ReportMetric(pct(lat, 99), "p99-ms")
			b.ReportMetric(pct(wakes, 50), "wake-p50-ms")
			b.ReportMetric(pct(wakes, 99), "wake-p99-ms")
			b.ReportMetric(float64(faults)/float64(b.N), "faults/wake")
		})
	}
}

// minorFaults is the page faults the process has taken that the kernel
// served without reading a disk: in a wake, mostly memory that sleeping
// rooms handed back and the waking room writes to again.
func minorFaults(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Minflt
}

// wakeRecorder keeps the wake times a runtime reports.
type wakeRecorder struct {
	mu    sync.Mutex
	wakes []time.Duration
}

func (w *wakeRecorder) Wake(d time.Duration) {
	w.mu.Lock()
	w.wakes = append(w.wakes, d)
	w.mu.Unlock()
}

func (*wakeRecorder) Event(string, time.Duration) {}
func (*wakeRecorder) Commit(int, time.Duration)   {}
func (*wakeRecorder) AlarmLate(time.Duration)     {}

// take returns the wakes so far and forgets them.
func (w *wakeRecorder) take() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	wakes := w.wakes
	w.wakes = nil
	return wakes
}
