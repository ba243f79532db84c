package loadtest

import (
	"bytes"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Phases of a run, set by the run on every worker and read by every loop
// on each tick.
const (
	phaseConnect int32 = iota // open the first wave; idle pings
	phaseTraffic              // the scenario's traffic, or the hold
	phaseDrain                // no new sends or dials; replies still count
	phaseClose                // close everything and stop
)

// tick runs the scenario for the time since the last tick. It reports
// false once the loop has closed everything and should stop.
func (l *loop) tick(now int64) bool {
	dt := 0.0
	if l.lastTick != 0 {
		// A stalled loop catches up at most 100 ms of dialling and churn,
		// so a pause does not turn into a burst of connections. Timed
		// sends keep their timetable instead.
		dt = min(float64(now-l.lastTick)/1e9, 0.1)
	}
	l.lastTick = now
	l.expire(now)
	w := l.w
	phase := w.phase.Load()
	// Published after this tick's work, so a snapshot that shows the new
	// phase counts everything sent under the old one.
	defer l.seen.Store(phase)
	if phase == phaseClose {
		l.endSchedule(phase)
		l.closeAll()
		return false
	}
	share := 1 / float64(w.totalLoops)
	if phase <= phaseTraffic && l.next < l.firstWave {
		l.dialBudget = min(l.dialBudget+w.cfg.Rate*share*dt, max(w.cfg.Rate*share*0.1, 1))
		for l.dialBudget >= 1 && l.next < l.firstWave && l.connecting < l.maxPending {
			l.dialBudget--
			l.dial(l.next, now)
			l.next += l.stride
		}
	}
	if !l.waveDone && (l.next >= l.firstWave || phase >= phaseDrain) && l.connecting == 0 {
		l.waveDone = true
		if int(w.waveDone.Add(1)) == len(w.loops) {
			w.connectedAt.Store(now)
			w.kickNow()
		}
	}
	if phase != phaseTraffic {
		l.endSchedule(phase)
		return true
	}
	if l.trafficAt == 0 {
		l.startTraffic(now)
	}
	switch w.cfg.Scenario {
	case Broadcast, Echo, Idle:
		if l.timetable {
			l.sendDue(now)
		}
	case Churn:
		l.churnBudget = min(l.churnBudget+w.cfg.ChurnRate*share*dt, max(w.cfg.ChurnRate*share*0.1, 1))
		for l.churnBudget >= 1 && l.connecting < l.maxPending {
			l.churnBudget--
			if len(l.open) > 0 {
				l.hangUp(l.open[l.rng.IntN(len(l.open))])
			}
			l.dial(l.next, now)
			l.next += l.stride
		}
	case Wake:
		l.wake(now)
	}
	if !l.done && l.trafficDone() {
		l.done = true
		if int(w.doneLoops.Add(1)) == len(w.loops) {
			w.kickNow()
		}
	}
	return true
}

// startTraffic begins the traffic phase on this loop. Idle pings begin
// here too, not during the ramp, whose joins bring presence frames that
// a ping's wait would take for its answer.
func (l *loop) startTraffic(now int64) {
	l.trafficAt = now
	switch {
	case l.w.cfg.closedLoop():
		for i := len(l.senders) - 1; i >= 0; i-- {
			l.sendNext(l.senders[i], now)
		}
	case l.w.cfg.timetabled():
		l.startTimetable(now)
	case l.w.cfg.Scenario == Wake:
		l.toWake = append([]*conn(nil), l.open...)
	}
}

// trafficDone reports whether this loop has nothing left to send or await.
func (l *loop) trafficDone() bool {
	w := l.w
	switch w.cfg.Scenario {
	case Broadcast, Echo:
		return w.cfg.Messages > 0 && len(l.senders) == 0 && l.parked == 0 && l.awaiting == 0
	case Wake:
		return l.wakeCursor == len(l.toWake) && l.awaiting == 0
	}
	return false
}

// sendNext sends a closed-loop echo's next timestamped message; a sender
// that has sent --messages leaves the senders.
func (l *loop) sendNext(c *conn, now int64) {
	limit := int32(l.w.cfg.Messages)
	if limit > 0 && c.sent >= limit {
		return
	}
	// Stamped now, not at the start of the event batch, so the time spent
	// on the batch's earlier events is not counted as latency.
	stamp := time.Now().UnixNano()
	if !l.sendData(c, l.payload(stamp, c.n)) {
		return
	}
	c.sent++
	l.await(c, stamp)
	if limit > 0 && c.sent >= limit {
		l.unschedule(c)
	}
}

// await times a reply to c's send made, or due, at t. Replies are taken
// in the order of the sends.
func (l *loop) await(c *conn, t int64) {
	if c.unanswered == 0 {
		c.awaitAt = t
		l.awaiting++
	}
	c.unanswered++
}

// expire fails connections that took too long to open and forgets those
// that opened or failed.
func (l *loop) expire(now int64) {
	timeout := int64(l.w.cfg.ConnectTimeout)
	i := 0
	for ; i < len(l.pending); i++ {
		c := l.pending[i]
		if c.state == stOpen || c.state == stGone {
			continue
		}
		if now-c.started < timeout {
			break
		}
		l.fail(c, kindTimeout)
	}
	if i > 0 {
		n := copy(l.pending, l.pending[i:])
		clear(l.pending[n:])
		l.pending = l.pending[:n]
	}
}

// closeAll ends every connection: open ones with a close frame, ones still
// opening silently.
func (l *loop) closeAll() {
	for len(l.open) > 0 {
		l.hangUp(l.open[len(l.open)-1])
	}
	for _, c := range l.slots {
		if c != nil {
			// Still connecting: neither opened nor failed.
			l.stats.aborted.Add(1)
			l.release(c)
		}
	}
	l.pending = nil
	_ = unix.Close(l.epfd)
	_ = unix.Close(l.timer)
	l.epfd, l.timer = -1, -1
}

// stampPrefix marks a timestamped message: "den:<unix nanos>:<conn>:" then
// padding. It is found anywhere in a message, so a server may wrap it.
var stampPrefix = []byte("den:")

// payload builds a timestamped message from connection n in l's scratch
// buffer, wrapped in the template if there is one.
func (l *loop) payload(now, n int64) []byte {
	w := l.w
	b := append(l.pbuf[:0], w.tmplHead...)
	start := len(b)
	b = append(b, stampPrefix...)
	b = strconv.AppendInt(b, now, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, n, 10)
	b = append(b, ':')
	if pad := w.cfg.Size - (len(b) - start); pad > 0 {
		b = append(b, w.pad[:pad]...)
	}
	b = append(b, w.tmplTail...)
	l.pbuf = b
	return b
}

// parseStamp finds a timestamp in a message.
func parseStamp(p []byte) (ts, from int64, ok bool) {
	i := bytes.Index(p, stampPrefix)
	if i < 0 {
		return 0, 0, false
	}
	p = p[i+len(stampPrefix):]
	ts, p, ok = parseInt(p)
	if !ok {
		return 0, 0, false
	}
	if from, _, ok = parseInt(p); !ok {
		return 0, 0, false
	}
	return ts, from, true
}

// parseInt reads decimal digits up to a ':'.
func parseInt(p []byte) (int64, []byte, bool) {
	var v int64
	for i, b := range p {
		if b == ':' {
			return v, p[i+1:], i > 0
		}
		if b < '0' || b > '9' || i >= 19 {
			return 0, nil, false
		}
		v = v*10 + int64(b-'0')
	}
	return 0, nil, false
}
