package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/den-rooms/den/internal/wsframe"
)

// Server is den's network layer: it accepts TCP connections, speaks
// HTTP/1.1 and WebSocket on them from gnet event loops, and hands room
// traffic to Rooms.
//
// New builds a Server without starting anything; Start listens and runs;
// Shutdown stops it. All methods are safe for concurrent use.
type Server struct {
	cfg           Config
	log           *zap.Logger
	rooms         Rooms
	handler       http.Handler
	limits        wsframe.Limits
	limitsDeflate wsframe.Limits
	ticks         ticks
	start         time.Time
	monoStart     time.Time

	cli      *gnet.Client
	acceptor *acceptor
	baseCtx  context.Context
	cancel   context.CancelFunc
	// releaseProcs gives back the Ps Start reserved for the event loops.
	releaseProcs func()

	loopsMu sync.Mutex // serializes adding to loopSet
	loopSet atomic.Pointer[[]*loop]

	ips *ipLimits // nil without per-address limits
	// The message rate limit in rateUnits: the interval between messages
	// at the sustained rate (0: no limit), and the burst's credit.
	msgInterval, msgSlack uint32

	half halfClosedConns

	nextID    atomic.Uint64
	draining  atomic.Bool
	spreading atomic.Bool // a Shutdown is closing the sockets
	stopOnce  sync.Once
	bg        sync.WaitGroup
	stats     stats
}

// ticks are Config's durations in wheel ticks.
type ticks struct {
	handshake, idle, ping, pong, close uint32
}

// New checks cfg and builds a Server. It starts nothing.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	srv := &Server{
		cfg:           cfg,
		log:           cfg.Logger.Named("gateway"),
		rooms:         cfg.Rooms,
		limits:        wsframe.Limits{MaxMessage: cfg.MaxMessageBytes},
		limitsDeflate: wsframe.Limits{MaxMessage: cfg.MaxMessageBytes, Deflate: true},
	}
	tk := func(d time.Duration) uint32 { return uint32(max(1, (d+cfg.Tick-1)/cfg.Tick)) }
	srv.ticks = ticks{
		handshake: tk(cfg.HandshakeTimeout), idle: tk(cfg.HTTPIdleTimeout),
		ping: tk(cfg.PingInterval), pong: tk(cfg.PongTimeout), close: tk(cfg.CloseTimeout),
	}
	srv.ips = newIPLimits(&srv.cfg)
	if cfg.MessageRate > 0 {
		srv.msgInterval = uint32(max(1, rateUnitsPerSecond/cfg.MessageRate))
		srv.msgSlack = uint32(float64(cfg.MessageBurst-1) * float64(srv.msgInterval)) // Validate keeps it under 2^30
	}
	srv.handler = srv.routes()
	srv.loopSet.Store(new([]*loop))
	return srv, nil
}

// Start listens on cfg.Listen and serves until Shutdown. A listen error
// (address in use, no permission) is returned here.
func (srv *Server) Start() error {
	lc := net.ListenConfig{KeepAlive: -1} // den pings; TCP keepalive would only cost syscalls
	ln, err := lc.Listen(context.Background(), "tcp", srv.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	srv.releaseProcs = reserveLoopProcs(srv.cfg.EventLoops)
	srv.cli, err = gnet.NewClient(&events{srv: srv},
		gnet.WithNumEventLoop(srv.cfg.EventLoops),
		// Go's accept already set TCP_NODELAY on the socket gnet duplicates;
		// TCPDelay here only keeps gnet from setting it a second time.
		gnet.WithTCPNoDelay(gnet.TCPDelay),
		gnet.WithLogger(srv.log.Named("gnet").WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)).Sugar()),
	)
	if err == nil {
		err = srv.cli.Start()
	}
	if err != nil {
		ln.Close()
		srv.releaseProcs()
		return fmt.Errorf("gateway: start event loops: %w", err)
	}
	srv.baseCtx, srv.cancel = context.WithCancel(context.Background())
	srv.start = srv.cfg.Clock.Now()
	srv.monoStart = time.Now()
	srv.acceptor = newAcceptor(srv, ln.(*net.TCPListener))
	srv.bg.Add(2)
	go func() { defer srv.bg.Done(); srv.acceptor.run(min(acceptorsPerLoop*srv.cfg.EventLoops, maxAcceptors)) }()
	go func() { defer srv.bg.Done(); srv.runTicker() }()
	srv.log.Info("listening", zap.Stringer(logAddr, ln.Addr()), zap.Int(logEventLoops, srv.cfg.EventLoops))
	return nil
}

// Addr returns the address the server listens on, once started.
func (srv *Server) Addr() net.Addr { return srv.acceptor.ln.Addr() }

// Ready reports whether the server accepts new work: false once Shutdown
// has begun.
func (srv *Server) Ready() bool { return !srv.draining.Load() }

// monotonic is nanoseconds on the monotonic clock since the server
// started; flush pacing measures sub-millisecond waits with it.
func (srv *Server) monotonic() int64 { return int64(time.Since(srv.monoStart)) }

// nowTick is the current wheel tick.
func (srv *Server) nowTick() uint32 {
	return uint32(srv.cfg.Clock.Now().Sub(srv.start) / srv.cfg.Tick)
}

// runTicker drives every loop's wheel: one ticker for the whole server.
func (srv *Server) runTicker() {
	t := srv.cfg.Clock.NewTicker(srv.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-srv.baseCtx.Done():
			return
		case <-t.C():
			for _, l := range *srv.loopSet.Load() {
				_ = l.el.Execute(context.Background(), (*tickTask)(l))
			}
			if srv.ips != nil {
				srv.ips.sweep(srv.monotonic())
			}
		}
	}
}

// loopOf returns den's state for a gnet event loop, creating it on first
// sight: gnet's client does not list its loops up front.
func (srv *Server) loopOf(el gnet.EventLoop) *loop {
	// A handful of loops: a scan without a lock beats a map behind one.
	find := func() *loop {
		for _, l := range *srv.loopSet.Load() {
			if l.el == el {
				return l
			}
		}
		return nil
	}
	if l := find(); l != nil {
		return l
	}
	srv.loopsMu.Lock()
	defer srv.loopsMu.Unlock()
	l := find()
	if l == nil {
		l = &loop{srv: srv, el: el, requests: make(map[*Socket]context.CancelFunc), bodies: make(map[*Socket]*pendingBody),
			reasons: make(map[*Socket]string), draining: make(map[*Socket]drainState), dropped: make(map[*Socket]int64)}
		l.hs = newHandshaker(l)
		l.pacer = time.AfterFunc(time.Hour, l.execFlush)
		l.pacer.Stop()
		l.wheel.now = srv.nowTick()
		set := append(append([]*loop(nil), *srv.loopSet.Load()...), l)
		srv.loopSet.Store(&set)
	}
	return l
}

// events adapts gnet's callbacks; each runs on the connection's loop.
type events struct {
	gnet.BuiltinEventEngine
	srv *Server
}

func (e *events) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	s := c.Context().(*Socket)
	s.conn = c
	s.loop = e.srv.loopOf(c.EventLoop())
	s.state = stateHTTP
	s.since = s.loop.wheel.now
	s.loop.wheel.file(s, s.since+e.srv.ticks.handshake)
	e.srv.stats.conns.Add(1)
	return nil, gnet.None
}

func (e *events) OnTraffic(c gnet.Conn) (action gnet.Action) {
	s := c.Context().(*Socket)
	l := s.loop
	l.holdFlush()
	defer l.deferFlush()
	switch s.state {
	case stateHTTP:
		action = l.guard(s, l.readHTTP)
	case stateOpen, stateClosing:
		s.lastRead = l.wheel.now
		s.flags &^= flagPinged
		action = l.guard(s, l.readFrames)
	case stateLinger:
		if n, _ := c.Discard(-1); l.drop(s, n) {
			action = gnet.Close
		}
	case stateClosed:
		_, _ = c.Discard(-1)
	case stateJoining, stateHTTPBusy:
		// Input waits for the room's answer or the handler's response,
		// within bounds: a client may send frames right behind its
		// handshake, but not megabytes.
		if int64(c.InboundBuffered()) > int64(e.srv.cfg.MaxHeaderBytes)+e.srv.cfg.MaxBodyBytes {
			action = gnet.Close
		}
	}
	return action
}

func (e *events) OnClose(c gnet.Conn, err error) gnet.Action {
	s, ok := c.Context().(*Socket)
	if !ok {
		return gnet.None
	}
	l := s.loop
	// The end of the client's input, not of the connection: a client
	// that half-closes after its request or handshake still waits for the
	// answer.
	kept := false
	if errors.Is(err, io.EOF) {
		switch s.state {
		case stateHTTPBusy:
			kept = e.srv.keepHalfClosed(s, c, l.requests[s], nil)
		case stateJoining:
			kept = e.srv.keepHalfClosed(s, c, nil, s.join)
		}
	}
	l.wheel.remove(s)
	if !kept {
		e.srv.forget(c.RemoteAddr())
	}
	owed := s.flags.has(flagOpened)
	if s.state == stateJoining {
		switch {
		case kept && s.join.halfClose():
			if e.srv.draining.Load() {
				// Off the loop, the spread cannot reach it, and Shutdown's
				// sweep of the kept joins may be past.
				e.srv.refuseAtShutdown(s, s.join)
			}
		case s.join.abandon():
		case s.join.state.Load() == joinTaken:
			// Accepted, but the client left before the loop wrote the
			// 101: the room has the socket and is owed its end.
			owed = true
			if kept {
				e.srv.answerHalfClosed(s, nil) // no refusal is coming
			}
		}
	}
	s.state = stateClosed
	s.flags |= flagGone
	if s.dec != nil {
		*s.dec = wsframe.Decoder{}
		decoders.Put(s.dec)
		s.dec = nil
	}
	if cancel := l.requests[s]; cancel != nil {
		if !kept {
			cancel() // the handler's request context ends with its connection
		}
		delete(l.requests, s)
	}
	delete(l.bodies, s)
	delete(l.draining, s)
	delete(l.dropped, s)
	if !owed {
		delete(l.reasons, s)
	}
	var refusal []byte
	l.mu.Lock()
	if kept && s.joinAns == joinRefused {
		// Refused before the FIN, but not written yet.
		refusal, s.joinAns = s.q.response, joinPending
	}
	l.putQueue(s.q)
	s.q = nil
	s.mflags |= mRefuse
	l.mu.Unlock()
	if refusal != nil {
		e.srv.answerHalfClosed(s, refusal)
	}
	if owed {
		if s.flags.has(flagOpened) {
			e.srv.stats.open.Add(-1)
		}
		if s.flags.has(flagOpened) && !s.flags.has(flagPeerClosed) {
			e.srv.stats.closesReceived[closeLabel(uint16(wsframe.CloseAbnormal))].Add(1)
		}
		both := flagPeerClosed | flagSentClose
		code, clean := int(s.closeCode), s.flags&both == both
		if code == 0 {
			code = int(wsframe.CloseAbnormal)
		}
		reason := l.reasons[s]
		delete(l.reasons, s)
		l.closed(s, code, reason, clean)
	}
	c.SetContext(nil)
	return gnet.None
}

// Shutdown stops accepting and turns readiness off, closes every WebSocket
// with 1012 in batches spread over Config.ShutdownSpread, then closes idle
// HTTP connections, lets running HTTP handlers finish, and returns when
// every connection is gone or ctx ends, whichever is first. Kept-alive
// HTTP connections are served (with "Connection: close") until the
// WebSockets are gone, so a load balancer polling /readyz on one sees 503.
// It is safe to call more than once.
func (srv *Server) Shutdown(ctx context.Context) error {
	if srv.acceptor == nil {
		// Never started, or its Start failed: nothing runs.
		return nil
	}
	srv.draining.Store(true)
	srv.acceptor.stop()
	srv.refuseHalfClosedJoins()
	srv.spreadCloses(ctx)
	err := srv.waitUntil(ctx, func() bool { return srv.stats.open.Load() == 0 })
	if err == nil {
		srv.eachLoop(func(l *loop) gnet.Runnable { return (*closeIdleTask)(l) })
		err = srv.waitUntil(ctx, func() bool { return srv.stats.conns.Load() == 0 })
	}
	srv.stopOnce.Do(func() {
		srv.cancel()
		srv.bg.Wait()
		if e := srv.cli.Stop(); e != nil && !errors.Is(e, context.Canceled) {
			srv.log.Debug("stopping event loops", zap.Error(e))
		}
		srv.releaseProcs()
		srv.closeHalfClosed()
	})
	return err
}

func (srv *Server) eachLoop(task func(*loop) gnet.Runnable) {
	for _, l := range *srv.loopSet.Load() {
		_ = l.el.Execute(context.Background(), task(l))
	}
}

// waitUntil polls cond until it holds or ctx ends.
func (srv *Server) waitUntil(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// spreadStep is the time between two batches of closes while Shutdown
// spreads them.
const spreadStep = 50 * time.Millisecond

// spreadCloses closes the WebSockets (and answers pending joins with 503)
// in batches, one every spreadStep, over the shutdown spread: each loop
// closes its share of what it still holds, so the batches stay even however
// the sockets are spread across loops. It returns once the last batch is
// queued, every socket is gone (the joins left are then refused at once),
// or ctx ends. A second Shutdown does not spread again.
func (srv *Server) spreadCloses(ctx context.Context) {
	if !srv.spreading.CompareAndSwap(false, true) {
		return
	}
	spread := srv.cfg.ShutdownSpread
	if dl, ok := ctx.Deadline(); ok {
		spread = min(spread, time.Until(dl)/2) // ctx deadlines are wall-clock time
	}
	steps := max(int(spread/spreadStep), 1)
	tick := srv.cfg.Clock.NewTicker(spreadStep)
	defer tick.Stop()
	// The spread's clock may be a test's; whether the sockets are all gone
	// is checked on real time.
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for left := steps; left > 0; left-- {
		srv.eachLoop(func(l *loop) gnet.Runnable { return &drainTask{l: l, stepsLeft: left} })
		if left == 1 {
			return
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C():
				break wait
			case <-poll.C:
				if srv.stats.open.Load() == 0 {
					// Nothing left to spread; joins still waiting for
					// their rooms are refused now, not at their timeout.
					srv.eachLoop(func(l *loop) gnet.Runnable { return &drainTask{l: l, stepsLeft: 1} })
					return
				}
			}
		}
	}
}

// drainBatch is how many sockets a loop closes per task during shutdown,
// so the loop keeps serving its other sockets in between.
const drainBatch = 512

// drainTask closes the loop's share of a shutdown step: its open
// WebSockets and pending joins divided by the steps left (all of them at
// the last), drainBatch at a time.
type drainTask struct {
	l         *loop
	stepsLeft int
	quota     int // set when the task first runs
	counted   bool
}

func (t *drainTask) Run(context.Context) error {
	l := t.l
	if !t.counted {
		t.counted = true
		held := 0
		l.wheel.each(func(s *Socket) {
			if s.state == stateOpen || s.state == stateJoining {
				held++
			}
		})
		t.quota = (held + t.stepsLeft - 1) / t.stepsLeft
	}
	limit := min(drainBatch, t.quota)
	n := 0
	l.wheel.each(func(s *Socket) {
		if n < limit && (s.state == stateOpen || s.state == stateJoining) {
			l.drain = append(l.drain, s)
			n++
		}
	})
	for _, s := range l.drain {
		switch s.state {
		case stateOpen:
			l.startClose(s, wsframe.CloseServiceRestart, "server shutting down")
		case stateJoining:
			if !s.join.abandon() {
				break
			}
			l.srv.stats.refused(refusedShutdown)
			if l.writeNow(s, errorResponse(503, "server shutting down", nil)) {
				l.linger(s, false)
			}
		}
	}
	clear(l.drain)
	l.drain = l.drain[:0]
	l.flush()
	t.quota -= n
	if n == limit && t.quota > 0 {
		_ = l.el.Execute(context.Background(), t)
	}
	return nil
}

// closeIdleTask closes HTTP connections that wait for a next request,
// none of which has come: one whose head or body is arriving is let finish
// (the handshake timeout bounds it), and closes after its answer, as
// draining answers say Connection: close. One whose last answer has not
// all left lingers (linger.go).
type closeIdleTask loop

func (t *closeIdleTask) Run(context.Context) error {
	l := (*loop)(t)
	l.wheel.each(func(s *Socket) {
		if s.state == stateHTTP && !s.flags.has(flagReading) && l.bodies[s] == nil && s.conn.InboundBuffered() == 0 {
			l.drain = append(l.drain, s)
		}
	})
	for _, s := range l.drain {
		if s.conn.OutboundBuffered() > 0 {
			// The last answer is still leaving, and gnet's close would
			// drop what the kernel has not taken.
			l.linger(s, false)
			continue
		}
		l.closeConn(s)
	}
	clear(l.drain)
	l.drain = l.drain[:0]
	return nil
}

const debugLevel = zapcore.DebugLevel

func socketField(s *Socket) zap.Field { return zap.Uint64(logSocket, s.id) }
