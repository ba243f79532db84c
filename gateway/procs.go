package gateway

import (
	"os"
	"runtime"
	"sync"
)

// baseProcs is GOMAXPROCS as the process started: the CPUs Go found for
// it, a container's quota included.
var baseProcs = runtime.GOMAXPROCS(0)

var (
	procsMu sync.Mutex
	// running counts the started servers by their event loops: the Ps den
	// adds are those of the largest, and go when the last server stops.
	running = map[int]int{}
	// procsSet is GOMAXPROCS as den last set it (0: never), so that den
	// only ever moves a value of its own making.
	procsSet int
)

// reserveLoopProcs gives the process a P per event loop on top of the
// ones Go chose for its CPUs, unless GOMAXPROCS was set by hand (in the
// environment, or by the program before the server started). A gnet loop
// waits for I/O in a plain epoll_wait system call, and the runtime lets a
// goroutine in a system call keep its P until sysmon takes it back, up to
// 10 ms later on a quiet process. With no more Ps than loops, a goroutine
// a loop readies before it waits again (a room that a message wakes)
// waits that long for a P: den serve's wake p99.9 went from 15–16 ms to
// 6–7 ms with the extra Ps. Waiting loops use no CPU, so their Ps cost
// nothing; everything else still has the CPUs' worth. The release it
// returns, called once the loops have stopped, gives the Ps back when no
// other server needs them, so a program (or a benchmark) that stops its
// server is left as it was.
func reserveLoopProcs(loops int) (release func()) {
	if os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	procsMu.Lock()
	defer procsMu.Unlock()
	running[loops]++
	setLoopProcs()
	return sync.OnceFunc(func() {
		procsMu.Lock()
		defer procsMu.Unlock()
		if running[loops]--; running[loops] == 0 {
			delete(running, loops)
		}
		setLoopProcs()
	})
}

// setLoopProcs sets GOMAXPROCS for the servers running; procsMu is held.
// A value den did not set is the program's choice, and stands.
func setLoopProcs() {
	if cur := runtime.GOMAXPROCS(0); cur != procsSet && (procsSet != 0 || cur != baseProcs) {
		return
	}
	if len(running) == 0 {
		// Go's own choice again, following the CPUs it may be given.
		runtime.SetDefaultGOMAXPROCS()
		procsSet = runtime.GOMAXPROCS(0)
		return
	}
	most := 0
	for loops := range running {
		most = max(most, loops)
	}
	procsSet = baseProcs + most
	runtime.GOMAXPROCS(procsSet)
}
