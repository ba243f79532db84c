package gateway

import (
	"os"
	"runtime"
	"sync"
)

// baseProcs is GOMAXPROCS as the process started: the CPUs Go found for
// it, a container's quota included.
var baseProcs = runtime.GOMAXPROCS(0)

var procsMu sync.Mutex

// reserveLoopProcs gives the process a P per event loop on top of the
// ones Go chose for its CPUs, unless GOMAXPROCS was set by hand. A gnet
// loop waits for I/O in a plain epoll_wait system call, and the runtime
// lets a goroutine in a system call keep its P until sysmon takes it back,
// up to 10 ms later on a quiet process. With no more Ps than loops, a
// goroutine a loop readies before it waits again (a room that a message
// wakes) waits that long for a P: den serve's wake p99.9 went from 15–16
// ms to 6–7 ms with the extra Ps. Waiting loops use no CPU, so their Ps
// cost nothing; everything else still has the CPUs' worth.
func reserveLoopProcs(loops int) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	procsMu.Lock()
	defer procsMu.Unlock()
	if want := baseProcs + loops; runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
}
