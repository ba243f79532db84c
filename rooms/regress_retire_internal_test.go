package rooms

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// roomFilesOpen counts the rooms of ids whose .db file this process holds
// open. It reads /proc, which orders nothing between goroutines: the race
// detector sees no synchronisation with the rooms' goroutines through it.
func roomFilesOpen(t *testing.T, ids []ID) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	open := 0
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		for _, id := range ids {
			if strings.HasSuffix(l, id.String()+".db") {
				open++
			}
		}
	}
	return open
}

// Shutdown stops every room under rt.mu while rooms may be going to sleep.
// retire once read r.stopped, to choose store.Sleep or store.Close, after
// it had let go of r.mu, so a stop() that landed while a room went to
// sleep wrote r.stopped with nothing ordering it against that read: a
// data race. The test holds rt.mu, as Shutdown does, so each
// retiring room parks at retire's rt.mu.Lock() after the read, then runs
// Shutdown's loop of r.stop(). Run it with -race. (Several rooms: the race
// detector keeps a bounded history per word, so any one room's read may be
// forgotten; one report is enough.)
func TestRegressRetireReadsStoppedUnderLock(t *testing.T) {
	rt, _, fake := fakeRuntime(t, Kind{Name: "plain", New: func(*State) Handler { return &Base{} }})
	const n = 16
	var rs []*room
	var ids []ID
	for i := range n {
		join(t, rt, "plain", fmt.Sprintf("r%d", i))
		r := rt.entry("plain", fmt.Sprintf("r%d", i))
		rs, ids = append(rs, r), append(ids, r.id)
	}
	if got := roomFilesOpen(t, ids); got != n {
		t.Fatalf("setup: %d of %d awake rooms have their file open", got, n)
	}

	rt.mu.Lock() // what Shutdown holds while it stops each room
	locked := true
	defer func() {
		if locked {
			rt.mu.Unlock()
		}
	}()
	// The sweep takes no rt.mu. The clock moves until it has asked every
	// room to sleep, then no more.
	waitUntil(t, "the sweep to ask every room to sleep", func() bool {
		for _, r := range rs {
			r.mu.Lock()
			asked := r.sleep || !r.running
			r.mu.Unlock()
			if !asked {
				fake.Advance(11 * time.Second)
				return false
			}
		}
		return true
	})
	// Each room's retire reads r.stopped, then store.Sleep closes its
	// file, then it waits for rt.mu.
	deadline := time.Now().Add(10 * time.Second)
	for roomFilesOpen(t, ids) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the rooms to close their files")
		}
		time.Sleep(time.Millisecond)
	}
	for _, r := range rt.rooms { // Shutdown's loop, under rt.mu
		r.stop()
	}
	rt.mu.Unlock()
	locked = false
	waitUntil(t, "the rooms to stop", func() bool { return rt.awake.Load() == 0 })
}
