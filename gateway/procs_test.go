package gateway

import (
	"context"
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

// A server that stops gives its loops' Ps back, and only once no other
// server needs them: a program (or a benchmark) that stops its servers is
// left with the GOMAXPROCS it had.
func TestStoppedServersGiveTheirProcsBack(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set by hand, and den keeps it")
	}
	before := runtime.GOMAXPROCS(0)
	stop := func(srv *Server) {
		t.Helper()
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	big := startServer(t, Config{EventLoops: 3})
	small := startServer(t, Config{EventLoops: 1})
	stop(big)
	if got, want := runtime.GOMAXPROCS(0), baseProcs+1; got != want {
		t.Fatalf("with one loop still running GOMAXPROCS is %d, want %d", got, want)
	}
	stop(small)
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("with every server stopped GOMAXPROCS is %d, want %d as before", got, before)
	}

	// A value the program chose stands.
	runtime.GOMAXPROCS(before + 5)
	defer runtime.GOMAXPROCS(before)
	stop(startServer(t, Config{EventLoops: 2}))
	if got := runtime.GOMAXPROCS(0); got != before+5 {
		t.Fatalf("GOMAXPROCS the program set to %d is %d after a server ran", before+5, got)
	}
}
