package gateway

import (
	"os"
	"runtime"
	"testing"
)

// A server leaves the process a P per CPU beside its event loops, which
// hold theirs while they wait in epoll_wait: goroutines the loops ready
// (rooms, timers) are not left waiting for sysmon to take a P back.
func TestLoopsLeaveProcsForTheRest(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set by hand, and den keeps it")
	}
	const loops = 3
	startServer(t, Config{EventLoops: loops})
	if got, want := runtime.GOMAXPROCS(0), baseProcs+loops; got < want {
		t.Fatalf("GOMAXPROCS %d with %d loops on %d CPUs' worth, want at least %d", got, loops, baseProcs, want)
	}
}
