package loadtest

import (
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/den-rooms/den/internal/wsframe"
)

// connState is where a connection is in its life.
type connState uint8

const (
	stConnecting connState = iota // TCP connect in flight
	stHandshake                   // request sent, waiting for the 101
	stOpen                        // WebSocket open
	stGone                        // descriptor closed
)

// maxOut is how many unwritten bytes a connection may hold before its
// sends wait (timetabled ones) or are skipped (the rest): a server that
// does not read is measured, not buffered.
const maxOut = 256 << 10

// conn is one client connection. It is owned by its loop; nothing else
// touches it. Idle, it holds no buffers.
type conn struct {
	fd      int32
	slot    int32  // index in loop.slots, carried in epoll events
	gen     uint32 // tells this connection's events from a slot's last owner's
	state   connState
	sender  bool  // sends timed messages in the traffic phase
	parked  bool  // timetabled, and waiting for its backlog to drain
	room    int32 // room number
	openPos int32 // index in loop.open, or -1
	sendPos int32 // index in loop.senders, or -1
	sent    int32
	// unanswered is the timed sends whose replies have not come; awaitAt
	// is when the oldest of them went out or, timetabled, was due (0 if
	// none). Replies come in order, so the next one's is a period later.
	unanswered int32
	awaitAt    int64
	due        int64 // timetabled: when the next message is due
	n          int64 // connection number
	started    int64 // when the dial started (unix nanoseconds)
	hs         *handshake
	in         []byte // an incomplete frame header or control frame
	out        []byte // bytes the socket would not take yet
	dec        wsframe.Decoder
}

// handshake is a connection's state between connect and 101.
type handshake struct {
	accept string
	buf    []byte
}

// loop is one event loop: an epoll set and the connections in it. Only its
// own goroutine touches its fields, except stats.
type loop struct {
	w    *worker
	epfd int
	// timer is a timerfd in the epoll set, armed for the next timed send:
	// epoll_wait's timeout counts whole milliseconds, and a send made up
	// to a tick late would be timed from its due time with the tick in it.
	timer   int
	timerAt int64 // when timer is armed for (0: disarmed)
	// slots holds the loop's connections; free lists empty slots. Events
	// carry a slot and a generation, not a descriptor, so the table is
	// the loop's own size and a reused slot never sees stale events.
	slots []*conn
	free  []int32
	gen   uint32
	open  []*conn
	// senders are the open connections that send in the traffic phase:
	// the timetable when the scenario keeps one (see schedule.go).
	senders []*conn
	parked  int          // senders parked off the timetable
	lost    []lostSender // senders whose connections ended in traffic
	pending []*conn      // connecting or handshaking, oldest first
	// maxPending is this loop's share of Config.Concurrency.
	maxPending int
	connecting int // connections in stConnecting or stHandshake
	rng        *rand.Rand
	zipf       *rand.Zipf
	rbuf       []byte
	wbuf       []byte // a frame or request on its way out
	pbuf       []byte // a payload or path being built
	events     [256]unix.EpollEvent
	stats      *loopStats
	seen       atomic.Int32 // the phase this loop has finished a tick in

	next, stride int64 // the next connection number to dial, and the step
	index        int64 // this loop's place among the client's loops: its first number
	firstWave    int64 // numbers below this are the first wave
	waveDone     bool  // the first wave has all opened or failed
	done         bool  // the traffic phase has nothing left to do here

	lastTick                int64
	dialBudget, churnBudget float64
	toWake                  []*conn
	wakeCursor              int
	woken                   int64 // wakes sent, skipped or written off: the next's slot
	trafficAt               int64 // when this loop saw the traffic phase begin
	awaiting                int   // connections with timed replies outstanding
	period                  int64 // timetabled: a sender's nanoseconds between messages
	timetable               bool  // the senders' heap is the timetable, and running
	ended                   bool  // traffic is over and the schedule's account closed
}

func newLoop(w *worker, first, stride int64) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	timer, err := unix.TimerfdCreate(unix.CLOCK_REALTIME, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err == nil {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, timer, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: timerSlot})
	}
	if err != nil {
		unix.Close(epfd)
		if timer >= 0 {
			unix.Close(timer)
		}
		return nil, err
	}
	return &loop{
		w: w, epfd: epfd, timer: timer, next: first, stride: stride, index: first, firstWave: int64(w.cfg.Count),
		rng:        rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(first))),
		rbuf:       make([]byte, 64<<10),
		maxPending: shareOf(w.cfg.Concurrency, w.totalLoops, int(first)),
		stats:      newLoopStats(),
	}, nil
}

// run is the loop's goroutine. It returns once the worker's phase is
// phaseClosed and every connection is gone.
func (l *loop) run() {
	for {
		n, err := unix.EpollWait(l.epfd, l.events[:], 2)
		if err != nil && !errors.Is(err, unix.EINTR) {
			panic("loadtest: epoll_wait: " + err.Error())
		}
		for i := range max(n, 0) {
			ev := &l.events[i]
			if ev.Fd == timerSlot {
				var expirations [8]byte
				_, _ = unix.Read(l.timer, expirations[:])
				continue
			}
			if int(ev.Fd) < len(l.slots) {
				if c := l.slots[ev.Fd]; c != nil && c.gen == uint32(ev.Pad) {
					l.event(c, ev.Events)
				}
			}
		}
		// The batch took time: the tick's sends and dials are stamped after
		// it, not before.
		if !l.tick(time.Now().UnixNano()) {
			return
		}
		l.armTimer()
	}
}

// timerSlot marks the timer's events: no connection has a negative slot.
const timerSlot = -1

// armTimer sets the timer for the loop's next timed send, if that moved.
func (l *loop) armTimer() {
	at := l.nextDue()
	if at == l.timerAt {
		return
	}
	l.timerAt = at
	// Zero disarms; a time already past fires at once.
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(at)}
	_ = unix.TimerfdSettime(l.timer, unix.TFD_TIMER_ABSTIME, &spec, nil)
}

func (l *loop) event(c *conn, ev uint32) {
	if c.state == stConnecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
		if err != nil {
			l.fail(c, errKind(err))
			return
		}
		l.startHandshake(c)
		return
	}
	if ev&unix.EPOLLOUT != 0 && len(c.out) > 0 {
		l.flush(c)
	}
	if c.state != stGone && ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.readable(c)
	}
}

// dial starts connection number n.
func (l *loop) dial(n int64, now int64) {
	w := l.w
	room := l.roomOf(n)
	t := &w.targets[int(room)%len(w.targets)]
	l.stats.dials.Add(1)
	domain := unix.AF_INET
	if t.addr.Addr().Is6() {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.stats.failed.Add(1)
		l.stats.countError(errKind(err))
		return
	}
	c := &conn{fd: int32(fd), n: n, room: room, started: now, openPos: -1, sendPos: -1,
		sender: w.isSender(n)}
	if err := l.connect(fd, t, w.sourceFor(n, t)); err != nil {
		unix.Close(fd)
		l.stats.failed.Add(1)
		l.stats.countError(errKind(err))
		return
	}
	if n := len(l.free); n > 0 {
		c.slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		c.slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.gen++
	c.gen = l.gen
	l.slots[c.slot] = c
	l.connecting++
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, l.epollEvent(c, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP)); err != nil {
		l.fail(c, errKind(err))
		return
	}
	l.pending = append(l.pending, c)
}

func (l *loop) connect(fd int, t *target, src netip.Addr) error {
	if src.IsValid() {
		// Without this, bind picks a port per source address at once and
		// a source runs out at ~28,000 connections whatever the target;
		// with it the port is chosen at connect, per destination.
		_ = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(src, 0))); err != nil {
			return err
		}
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	err := unix.Connect(fd, sockaddr(t.addr))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	return nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func (l *loop) startHandshake(c *conn) {
	w := l.w
	var raw [16]byte
	for i := range raw {
		raw[i] = byte(l.rng.Uint32())
	}
	key := base64.StdEncoding.EncodeToString(raw[:])
	t := &w.targets[int(c.room)%len(w.targets)]
	l.pbuf = t.appendPath(l.pbuf[:0], w.cfg.RoomPrefix, c.room, c.n)
	l.wbuf = w.head.appendRequest(l.wbuf[:0], l.pbuf, t.host, key)
	c.hs = &handshake{accept: acceptFor(key)}
	c.state = stHandshake
	l.modify(c, unix.EPOLLIN|unix.EPOLLRDHUP)
	l.write(c, l.wbuf)
}

// write sends b now, or keeps what the socket would not take and asks to be
// told when it will.
func (l *loop) write(c *conn, b []byte) {
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	k, err := unix.Write(int(c.fd), b)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		l.fail(c, errKind(err))
		return
	}
	k = max(k, 0)
	if k < len(b) {
		c.out = append([]byte(nil), b[k:]...)
		l.modify(c, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLOUT)
	}
}

func (l *loop) flush(c *conn) {
	k, err := unix.Write(int(c.fd), c.out)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		l.fail(c, errKind(err))
		return
	}
	c.out = c.out[max(k, 0):]
	if len(c.out) == 0 {
		c.out = nil
		l.modify(c, unix.EPOLLIN|unix.EPOLLRDHUP)
	}
	if c.parked && len(c.out) <= maxOut {
		l.unpark(c)
	}
}

func (l *loop) modify(c *conn, events uint32) {
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, int(c.fd), l.epollEvent(c, events))
}

func (l *loop) epollEvent(c *conn, events uint32) *unix.EpollEvent {
	return &unix.EpollEvent{Events: events, Fd: c.slot, Pad: int32(c.gen)}
}

func (l *loop) readable(c *conn) {
	for c.state != stGone {
		k, err := unix.Read(int(c.fd), l.rbuf)
		now := time.Now().UnixNano()
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			l.fail(c, errKind(err))
			return
		}
		if k == 0 {
			l.fail(c, kindEOF)
			return
		}
		l.received(c, l.rbuf[:k], now)
		if k < len(l.rbuf) {
			return
		}
	}
}

func (l *loop) received(c *conn, p []byte, now int64) {
	if c.state == stHandshake {
		c.hs.buf = append(c.hs.buf, p...)
		n, err := parseResponse(c.hs.buf, c.hs.accept, l.w.cfg.Subprotocol)
		if err != nil {
			var he *handshakeError
			errors.As(err, &he)
			l.fail(c, he.kind())
			return
		}
		if n == 0 {
			return
		}
		p = c.hs.buf[n:]
		c.hs = nil
		l.opened(c, now)
	}
	buf := p
	if len(c.in) > 0 {
		c.in = append(c.in, p...)
		buf = c.in
	}
	for len(buf) > 0 && c.state == stOpen {
		k, m, ok, err := c.dec.Decode(buf, &l.w.lim)
		buf = buf[k:]
		if err != nil {
			// Decode's errors are all *CloseError.
			l.closeWith(c, err.(*wsframe.CloseError).Code)
			l.lose(c, kindProtocol)
			return
		}
		if !ok {
			break
		}
		l.message(c, m, now)
	}
	if c.state != stOpen || len(buf) == 0 {
		c.in = nil
		return
	}
	// Only an incomplete header or control frame is left (the decoder
	// takes data payloads as they come): keep it in a buffer its size, not
	// in one that grew to a whole read.
	if len(c.in) > 0 && cap(c.in) <= 256 {
		c.in = c.in[:copy(c.in, buf)]
	} else {
		c.in = append([]byte(nil), buf...)
	}
}

func (l *loop) message(c *conn, m wsframe.Message, now int64) {
	switch m.Op {
	case wsframe.OpPing:
		l.sendFrame(c, wsframe.OpPong, m.Payload)
		return
	case wsframe.OpPong:
		return
	case wsframe.OpClose:
		code, _ := wsframe.ParseClose(m.Payload)
		l.stats.countClose(uint16(code))
		if code == wsframe.CloseNoStatus {
			code = wsframe.CloseNormal
		}
		l.closeWith(c, code)
		l.lose(c, "")
		return
	}
	l.stats.received.Add(1)
	l.stats.recvBytes.Add(int64(len(m.Payload)))
	ts, from, stamped := parseStamp(m.Payload)
	if stamped && ts < l.w.started {
		// An earlier run's message, in a durable room's history: neither
		// a delivery nor a reply.
		return
	}
	if stamped {
		if from != c.n {
			l.stats.delivered.Add(1)
		} else {
			l.stats.echoed.Add(1)
		}
	}
	switch {
	case c.awaitAt != 0 && (stamped && from == c.n && ts == c.awaitAt || !stamped && l.w.cfg.Scenario == Idle):
		// A timed send is answered by its own message back (wake,
		// closed-loop echo: an ack or a presence frame is not the
		// answer), or, for an idle ping, whose text carries no stamp, by
		// the first reply without one.
		l.stats.recordLatency(now - c.awaitAt)
		c.unanswered--
		if c.unanswered > 0 {
			c.awaitAt += l.period
			break
		}
		c.awaitAt = 0
		l.awaiting--
		if l.w.cfg.closedLoop() && l.w.phase.Load() == phaseTraffic {
			l.sendNext(c, now)
		}
	case stamped && (l.w.cfg.Scenario != Echo || from == c.n):
		// An echo times its own message's round trip; another member's
		// message in its room is a delivery, not an echo.
		l.stats.recordLatency(now - ts)
	}
}

// shareOf is loop i's part of n spread over total loops: the parts sum
// to n, so --concurrency caps every connection in flight together.
func shareOf(n, total, i int) int {
	share := n / total
	if i < n%total {
		share++
	}
	return share
}

// opened moves a handshaken connection into the open set.
func (l *loop) opened(c *conn, now int64) {
	l.connecting--
	c.state = stOpen
	l.stats.opened.Add(1)
	l.stats.recordConnect(now - c.started)
	c.openPos = int32(len(l.open))
	l.open = append(l.open, c)
	if c.sender {
		// A sender that opens once the timetable runs starts on it now,
		// not owing every slot since the epoch; earlier ones are given
		// their slots as traffic starts.
		c.due = now
		l.schedule(c)
		if l.w.cfg.closedLoop() && l.w.phase.Load() == phaseTraffic {
			l.sendNext(c, now)
		}
	}
}

// fail ends a connection for the error kind: a failed attempt if it had
// not opened, a lost connection if it had.
func (l *loop) fail(c *conn, kind string) {
	if c.state == stOpen {
		l.lose(c, kind)
		return
	}
	if c.state == stGone {
		return
	}
	l.stats.failed.Add(1)
	l.stats.countError(kind)
	l.release(c)
}

// lose ends an open connection the client did not choose to end. kind is
// empty when the server closed it with a close frame.
func (l *loop) lose(c *conn, kind string) {
	if c.state == stGone {
		return
	}
	l.stats.lost.Add(1)
	if kind != "" {
		l.stats.countError(kind)
	}
	l.release(c)
}

// hangUp ends an open connection by the client's choice, with a close
// frame the server is not waited for.
func (l *loop) hangUp(c *conn) {
	if c.state != stOpen {
		l.release(c)
		return
	}
	l.closeWith(c, wsframe.CloseNormal)
	l.stats.closed.Add(1)
	l.release(c)
}

func (l *loop) release(c *conn) {
	if c.state == stGone {
		return
	}
	if c.state < stOpen {
		l.connecting--
	}
	if c.unanswered > 0 {
		l.awaiting--
		c.unanswered, c.awaitAt = 0, 0
	}
	if c.sender && l.timetable {
		l.dropSender(c, time.Now().UnixNano())
	}
	if c.openPos >= 0 {
		l.open = removeAt(l.open, c.openPos, func(o *conn, i int32) { o.openPos = i })
		c.openPos = -1
	}
	l.unschedule(c)
	l.slots[c.slot] = nil
	l.free = append(l.free, c.slot)
	unix.Close(int(c.fd))
	c.state, c.hs, c.in, c.out, c.dec = stGone, nil, nil, nil, wsframe.Decoder{}
}

// removeAt swap-removes s[i], telling the moved element its new index.
func removeAt(s []*conn, i int32, moved func(*conn, int32)) []*conn {
	last := int32(len(s) - 1)
	if i != last {
		s[i] = s[last]
		moved(s[i], i)
	}
	s[last] = nil
	return s[:last]
}

func (l *loop) maskKey() [4]byte {
	v := l.rng.Uint32()
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

func (l *loop) sendFrame(c *conn, op wsframe.Opcode, payload []byte) {
	l.wbuf = wsframe.AppendMaskedFrame(l.wbuf[:0], true, 0, op, payload, l.maskKey())
	l.write(c, l.wbuf)
}

// closeWith writes a close frame on the way out, as a courtesy: the
// connection is being released, so a write that fails is not counted as
// a second ending.
func (l *loop) closeWith(c *conn, code wsframe.StatusCode) {
	if len(c.out) > 0 {
		return
	}
	l.wbuf = wsframe.AppendMaskedClose(l.wbuf[:0], code, "", l.maskKey())
	_, _ = unix.Write(int(c.fd), l.wbuf)
}

// sendData sends a text message and counts it. It reports false when the
// message was not sent: the server is not reading (counted skipped), or
// the connection failed.
func (l *loop) sendData(c *conn, payload []byte) bool {
	if len(c.out) > maxOut {
		l.stats.skipped.Add(1)
		return false
	}
	l.sendFrame(c, wsframe.OpText, payload)
	if c.state != stOpen {
		return false
	}
	l.stats.sent.Add(1)
	l.stats.sentBytes.Add(int64(len(payload)))
	return true
}

// errKind names a system error for the counts.
func errKind(err error) string {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return kindOther
	}
	switch errno {
	case unix.ECONNREFUSED:
		return kindRefused
	case unix.ECONNRESET, unix.EPIPE, unix.ECONNABORTED:
		return kindReset
	case unix.ETIMEDOUT:
		return kindTimeout
	case unix.EMFILE:
		return kindClientFiles
	case unix.ENFILE:
		return kindSystemFiles
	case unix.EADDRNOTAVAIL, unix.EADDRINUSE:
		return kindPorts
	case unix.ENOMEM, unix.ENOBUFS:
		return kindMemory
	case unix.EHOSTUNREACH, unix.ENETUNREACH:
		return kindUnreachable
	}
	return "errno_" + strconv.Itoa(int(errno))
}
