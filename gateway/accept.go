package gateway

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// acceptor owns the accept path. gnet's own acceptor shuts its engine down
// on the first accept error, so one EMFILE would drop every socket; den
// accepts here instead and enrolls each connection into gnet's loops.
// Keeping accept separate also leaves room to hand the listener to a new
// process on restart.
//
// gnet's enroll waits for the loop to register each connection, so several
// goroutines accept from the one listener and their waits overlap; a loop
// then registers several connections per wake-up (see acceptorsPerLoop).
//
// At the open-file limit the acceptor keeps serving: each goroutine holds
// one spare descriptor, and when accept fails for lack of descriptors it
// gives the spare up to accept the waiting client, answers 503 and closes
// it, then takes the spare back. Existing sockets are never touched;
// accepting resumes as soon as descriptors free up.
//
// gnet's enroll duplicates each accepted descriptor, which would fail one
// descriptor short of the limit and drop that client without an answer.
// Near the limit the acceptor is "tight" and lends the spare's slot to
// every enroll: near means within tightSlack of RLIMIT_NOFILE counting
// connections alone, or once the limit was actually met (other parts of
// the process hold descriptors too) until connections fall well below
// that count. Away from the limit this saves two system calls per
// connection.
type acceptor struct {
	srv     *Server
	ln      *net.TCPListener
	stopped atomic.Bool
	limit   int64        // RLIMIT_NOFILE when the acceptor started
	workers int64        // accepting goroutines, each holding a spare descriptor
	tightAt atomic.Int64 // connections held when the limit was met; 0 when not tight
	// tightMu makes accepting one goroutine's job while tight: another
	// goroutine's accept could take the slot an enroll's duplicate needs.
	tightMu sync.Mutex
	wg      sync.WaitGroup

	logMu      sync.Mutex
	lastLog    time.Time
	suppressed int
}

func newAcceptor(srv *Server, ln *net.TCPListener) *acceptor {
	a := &acceptor{srv: srv, ln: ln}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < 1<<40 {
		a.limit = int64(rl.Cur)
	}
	return a
}

// run accepts on n goroutines until stop, and returns when all are done.
func (a *acceptor) run(n int) {
	a.workers = int64(max(n, 1))
	for range a.workers {
		w := &acceptWorker{a: a, reserve: -1}
		w.takeReserve()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			w.run()
		}()
	}
	a.wg.Wait()
}

func (a *acceptor) stop() {
	if a.stopped.CompareAndSwap(false, true) {
		_ = a.ln.Close()
	}
}

// acceptorsPerLoop is how many goroutines accept per event loop, up to
// maxAcceptors in all. Measured on two cores: 1 costs 45-47 µs of server
// CPU per connection, 4 costs 38-43, 16 costs 36-38. Each holds one spare
// descriptor.
const (
	acceptorsPerLoop = 8
	maxAcceptors     = 16
)

// tightSlack is the margin, in descriptors, that counts as near the limit.
const tightSlack = 256

// tight reports whether the process is near its descriptor limit. Besides
// connections it counts the spare descriptors and each loop's epoll and
// eventfd, so with many loops the limit is not met before tight is.
func (a *acceptor) tight() bool {
	conns := a.srv.stats.conns.Load()
	at := a.tightAt.Load()
	if at > 0 && conns < at-tightSlack {
		a.tightAt.CompareAndSwap(at, 0)
		at = 0
	}
	fixed := a.workers + 2*int64(a.srv.cfg.EventLoops)
	return at > 0 || (a.limit > 0 && conns+fixed+tightSlack >= a.limit)
}

func (a *acceptor) metLimit() { a.tightAt.Store(max(a.srv.stats.conns.Load(), 1)) }

// acceptWorker is one accepting goroutine with its spare descriptor.
type acceptWorker struct {
	a       *acceptor
	reserve int // the spare descriptor, or -1
}

func (w *acceptWorker) run() {
	a := w.a
	defer w.releaseReserve()
	backoff := time.Duration(0)
	for !a.stopped.Load() {
		tight := a.tight()
		if tight {
			a.tightMu.Lock()
		}
		backoff = w.acceptOne(tight, backoff)
		if tight {
			a.tightMu.Unlock()
		}
	}
}

// acceptOne accepts and enrolls one connection, or handles the failure;
// it returns the backoff for the next failure. tight says whether the
// caller holds tightMu.
func (w *acceptWorker) acceptOne(tight bool, backoff time.Duration) time.Duration {
	a := w.a
	c, err := a.ln.AcceptTCP()
	switch {
	case err == nil:
		if !tight && a.tight() {
			// The limit came near while this goroutine waited in accept:
			// lend the spare as a tight enroll does.
			a.tightMu.Lock()
			defer a.tightMu.Unlock()
			tight = true
		}
		w.enroll(c, tight)
		return 0
	case a.stopped.Load() || errors.Is(err, net.ErrClosed):
		return 0
	case errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE):
		w.refuseAtLimit()
		return 0
	}
	a.srv.stats.acceptErrors.Add(1)
	a.logLimited("accept failed", zap.Error(err))
	backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
	time.Sleep(backoff)
	return backoff
}

// enroll hands a connection to gnet, which duplicates its descriptor; near
// the limit the spare's slot is lent for the duplicate.
func (w *acceptWorker) enroll(c *net.TCPConn, tight bool) {
	a := w.a
	var ip netip.Addr
	if ips := a.srv.ips; ips != nil {
		ip = addrIP(c.RemoteAddr())
		if lim, ok := ips.admit(ip, a.srv.monotonic()); !ok {
			a.srv.stats.hit(lim)
			refuse(c, tooManyResponse)
			return
		}
	}
	s := &Socket{id: a.srv.nextID.Add(1)}
	if tight {
		w.releaseReserve()
	}
	_, err := a.srv.cli.EnrollContext(c, s)
	if tight {
		w.takeReserve()
	}
	if err != nil {
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			a.metLimit()
		}
		if a.srv.ips != nil {
			a.srv.ips.release(ip, a.srv.monotonic())
		}
		a.srv.stats.acceptErrors.Add(1)
		a.logLimited("enrolling a connection failed", zap.Error(err))
		return
	}
	a.srv.stats.accepted.Add(1)
}

// refuseAtLimit accepts one waiting client on the spare descriptor and
// turns it away with 503.
func (w *acceptWorker) refuseAtLimit() {
	a := w.a
	a.srv.stats.refusedAtLimit.Add(1)
	a.metLimit()
	a.logLimited("open-file limit reached: refusing new connections with 503; open sockets are unaffected")
	if w.reserve < 0 {
		w.takeReserve()
		if w.reserve < 0 {
			// Someone else holds every descriptor; wait for one to free.
			time.Sleep(10 * time.Millisecond)
			return
		}
	}
	w.releaseReserve()
	if c, err := a.ln.AcceptTCP(); err == nil {
		refuse(c, limitResponse)
	}
	w.takeReserve()
}

var (
	limitResponse   = errorResponse(503, "server at its connection limit", map[string][]string{"Retry-After": {"1"}})
	tooManyResponse = errorResponse(429, "too many connections from your address", map[string][]string{"Retry-After": {"1"}})
)

// refuse answers with response and closes. Request bytes already received
// are read first, so that closing sends FIN rather than a reset that
// could discard the response.
func refuse(c *net.TCPConn, response []byte) {
	if rc, err := c.SyscallConn(); err == nil {
		var buf [4096]byte
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_DONTWAIT)
				if n <= 0 || err != nil {
					return true
				}
			}
		})
	}
	_, _ = c.Write(response)
	_ = c.Close()
}

func (w *acceptWorker) takeReserve() {
	if w.reserve >= 0 {
		return
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		w.reserve = fd
	}
}

func (w *acceptWorker) releaseReserve() {
	if w.reserve >= 0 {
		_ = unix.Close(w.reserve)
		w.reserve = -1
	}
}

// logLimited logs at most once per interval, counting what it held back.
func (a *acceptor) logLimited(msg string, fields ...zap.Field) {
	const interval = 10 * time.Second
	a.logMu.Lock()
	defer a.logMu.Unlock()
	now := time.Now()
	if now.Sub(a.lastLog) < interval {
		a.suppressed++
		return
	}
	if a.suppressed > 0 {
		fields = append(fields, zap.Int(logSuppressed, a.suppressed))
	}
	a.srv.log.Warn(msg, fields...)
	a.lastLog, a.suppressed = now, 0
}
