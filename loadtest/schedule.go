package loadtest

import (
	"container/heap"
	"time"
)

// A rate-driven scenario's sends keep a timetable, as wrk2 does: each
// sender's message k is due at its first slot plus k periods, carries
// that due time as its stamp, and is timed from it. A send the loop gets
// to late (the client stalled, or the socket's backlog was over maxOut
// because the server stopped reading) still goes out, and its wait is in
// its latency instead of being left out of the histogram: coordinated
// omission. A due send that never goes out is counted, skipped when the
// backlog held it back, unsent when the run or the connection ended
// first.
//
// l.senders is the timetable: a min-heap on conn.due (container/heap), with
// conn.sendPos each sender's index. A parked sender (backlog over the
// bound) is out of the heap until its socket drains, so the heap's top is
// always a sender that can send.

// timetabled reports whether each sender sends on a timetable: broadcast,
// echo with --msg-rate, idle pings. Wake keeps one for the loop, since
// each connection sends once.
func (c *Config) timetabled() bool {
	switch c.Scenario {
	case Broadcast:
		return true
	case Echo:
		return c.MsgRate > 0
	case Idle:
		return c.PingEvery > 0
	}
	return false
}

// period is a sender's time between messages, in nanoseconds.
func (w *worker) period() int64 {
	if w.cfg.Scenario == Idle {
		return max(int64(w.cfg.PingEvery), 1)
	}
	return max(int64(1e9/w.cfg.MsgRate), 1)
}

// startTimetable spreads the senders' first slots over one period from
// now, so the loop's sends are even rather than in one burst per period,
// and the client's loops' sends between each other.
func (l *loop) startTimetable(now int64) {
	l.period = l.w.period()
	l.timetable = true
	n := float64(len(l.senders))
	// The loops take turns too: loop j's senders start j/loops of a
	// sender's share later, so that loops with one sender each do not all
	// send at the same moment, one burst per period.
	turn := float64(l.index) / float64(l.w.totalLoops)
	for i, c := range l.senders {
		// In index order the dues ascend: the slice stays a heap.
		c.due = now + int64((float64(i)+turn)*float64(l.period)/n)
	}
}

// sendDue sends every timetabled message due by until.
func (l *loop) sendDue(until int64) {
	for len(l.senders) > 0 && l.senders[0].due <= until {
		c := l.senders[0]
		l.unschedule(c)
		l.catchUp(c, until)
	}
}

// catchUp sends c's messages due by until, oldest first, each stamped
// with its slot, and puts c back on the timetable: parked if its backlog
// went over maxOut, left off once it has sent --messages. c must be off
// the heap.
func (l *loop) catchUp(c *conn, until int64) {
	limit := int32(l.w.cfg.Messages)
	for c.due <= until && (limit == 0 || c.sent < limit) {
		if len(c.out) > maxOut {
			c.parked = true
			l.parked++
			return
		}
		if !l.sendSlot(c) {
			// The connection failed; release wrote off what it owed.
			return
		}
	}
	if limit == 0 || c.sent < limit {
		l.schedule(c)
	}
}

// sendSlot sends c's message due at c.due and moves c to its next slot.
// It reports false if the connection failed.
func (l *loop) sendSlot(c *conn) bool {
	at := c.due
	if l.w.cfg.Scenario == Idle {
		if !l.sendData(c, []byte(l.w.cfg.PingText)) {
			return false
		}
		l.await(c, at)
	} else if !l.sendData(c, l.payload(at, c.n)) {
		return false
	}
	l.stats.recordLag(time.Now().UnixNano() - at)
	l.stats.scheduled.Add(1)
	c.sent++
	c.due += l.period
	return true
}

// unpark puts a parked sender whose backlog is back within maxOut on the
// timetable, first sending what came due while it waited.
func (l *loop) unpark(c *conn) {
	c.parked = false
	l.parked--
	l.catchUp(c, time.Now().UnixNano())
}

// owed is how many slots a sender at due that has had sent of them
// still has through until.
func (l *loop) owed(due int64, sent int32, until int64) int64 {
	if due > until {
		return 0
	}
	n := (until-due)/l.period + 1
	if limit := int64(l.w.cfg.Messages); limit > 0 {
		n = min(n, limit-int64(sent))
	}
	return max(n, 0)
}

// writeOff counts c's messages due by until as never sent, and takes c
// off the timetable. It returns how many it counted.
func (l *loop) writeOff(c *conn, until int64) int64 {
	n := l.owed(c.due, c.sent, until)
	if n > 0 {
		l.stats.scheduled.Add(n)
		if c.parked {
			l.stats.skipped.Add(n)
		} else {
			l.stats.unsent.Add(n)
		}
	}
	if c.parked {
		c.parked = false
		l.parked--
	}
	l.unschedule(c)
	return n
}

// lostSender is what the timetable keeps of a sender whose connection
// ended in the traffic phase: it was due to send from due on, having
// had sent of its slots.
type lostSender struct {
	due  int64
	sent int32
}

// dropSender takes c, whose connection is ending, off the timetable. What
// its backlog held back by now was skipped; the slots it would have had
// from now to the end of traffic are unsent, counted once that end is
// known: the rate called for them.
func (l *loop) dropSender(c *conn, now int64) {
	if c.parked {
		n := l.writeOff(c, now)
		c.due += n * l.period
		c.sent += int32(n)
	}
	l.unschedule(c)
	l.lost = append(l.lost, lostSender{due: c.due, sent: c.sent})
}

// endSchedule closes the timetable once traffic is over: what came due
// before the end is sent late if replies are still counted (the drain)
// and written off otherwise, or if the backlog still holds it back.
func (l *loop) endSchedule(phase int32) {
	if l.trafficAt == 0 || l.ended {
		return
	}
	l.ended = true
	end := l.w.trafficEnd.Load()
	switch {
	case l.w.cfg.Scenario == Wake:
		if phase == phaseDrain {
			l.wake(end)
		}
		for l.wakeDue() <= end && l.nextToWake() != nil {
			l.woken++
			l.stats.scheduled.Add(1)
			l.stats.unsent.Add(1)
		}
	case l.timetable:
		if phase == phaseDrain {
			l.sendDue(end)
		}
		for _, c := range l.open {
			if c.sender {
				l.writeOff(c, end)
			}
		}
		for _, ls := range l.lost {
			if n := l.owed(ls.due, ls.sent, end); n > 0 {
				l.stats.scheduled.Add(n)
				l.stats.unsent.Add(n)
			}
		}
		l.lost = nil
		l.timetable = false
	}
}

// wakeDue is when the loop's next wake is due: --wake-rate spread over
// the loops, from the end of --wake-idle. The loops take turns, each
// its slot in every round, as connection numbers are dealt to them: a
// loop that started its share of the rate with the others woke a room
// with each of them at once.
func (l *loop) wakeDue() int64 {
	w := l.w
	slot := l.woken*int64(w.totalLoops) + l.index
	return l.trafficAt + int64(w.cfg.WakeIdle) + int64(float64(slot)*1e9/w.cfg.WakeRate)
}

// wake sends the wakes due by until, each stamped with its slot.
func (l *loop) wake(until int64) {
	for l.wakeDue() <= until {
		c := l.nextToWake()
		if c == nil {
			return
		}
		due := l.wakeDue()
		l.woken++
		l.stats.scheduled.Add(1)
		switch {
		case l.sendData(c, l.payload(due, c.n)):
			l.await(c, due)
			l.stats.recordLag(time.Now().UnixNano() - due)
		case c.state != stOpen:
			l.stats.unsent.Add(1)
		}
	}
}

// nextToWake takes the next connection to wake that is still open, nil
// when none is left. A room whose connection has gone takes no slot.
func (l *loop) nextToWake() *conn {
	for l.wakeCursor < len(l.toWake) {
		c := l.toWake[l.wakeCursor]
		l.toWake[l.wakeCursor] = nil
		l.wakeCursor++
		if c.state == stOpen {
			return c
		}
	}
	return nil
}

// timetable is the senders' heap on conn.due for container/heap, each
// sender's index kept in conn.sendPos so that one can leave it at once.
type timetable []*conn

func (t timetable) Len() int           { return len(t) }
func (t timetable) Less(i, j int) bool { return t[i].due < t[j].due }

func (t timetable) Swap(i, j int) {
	t[i], t[j] = t[j], t[i]
	t[i].sendPos, t[j].sendPos = int32(i), int32(j)
}

func (t *timetable) Push(x any) {
	c := x.(*conn)
	c.sendPos = int32(len(*t))
	*t = append(*t, c)
}

func (t *timetable) Pop() any {
	old := *t
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*t = old[:len(old)-1]
	c.sendPos = -1
	return c
}

// schedule adds c to the senders' heap.
func (l *loop) schedule(c *conn) { heap.Push((*timetable)(&l.senders), c) }

// unschedule takes c out of the senders' heap, if it is in it.
func (l *loop) unschedule(c *conn) {
	if c.sendPos >= 0 {
		heap.Remove((*timetable)(&l.senders), int(c.sendPos))
	}
}

// nextDue is when the loop's next timed send is due, 0 if none is.
func (l *loop) nextDue() int64 {
	switch {
	case l.timetable && len(l.senders) > 0:
		return l.senders[0].due
	case l.w.cfg.Scenario == Wake && l.trafficAt != 0 && !l.ended && l.wakeCursor < len(l.toWake):
		return l.wakeDue()
	}
	return 0
}
