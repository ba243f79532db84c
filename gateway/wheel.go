package gateway

// wheelSlots is the number of ticks a wheel spans; later deadlines sit in
// the last slot and are re-filed when it comes round.
const wheelSlots = 512

// wheel is a hashed timing wheel holding every socket of one event loop,
// owned by that loop's goroutine. A socket sits in exactly one slot, at
// or before its next deadline; deadlines move later without touching the
// wheel (a read only records its tick), and the socket is re-filed when
// its slot comes round. Idle sockets thus cost no timer and no work
// between deadlines.
type wheel struct {
	slots [wheelSlots]*Socket
	now   uint32 // the last tick processed
	count int
}

// file puts s in the slot for tick at (or the farthest one), replacing its
// current place.
func (w *wheel) file(s *Socket, at uint32) {
	if s.flags.has(flagInWheel) {
		w.remove(s)
	}
	if int32(at-w.now) < 1 {
		at = w.now + 1
	}
	if at-w.now >= wheelSlots {
		at = w.now + wheelSlots - 1
	}
	i := at % wheelSlots
	s.wprev, s.wnext = nil, w.slots[i]
	if s.wnext != nil {
		s.wnext.wprev = s
	}
	w.slots[i] = s
	s.wslot = at
	s.flags |= flagInWheel
	w.count++
}

func (w *wheel) remove(s *Socket) {
	if !s.flags.has(flagInWheel) {
		return
	}
	if s.wprev != nil {
		s.wprev.wnext = s.wnext
	} else {
		w.slots[s.wslot%wheelSlots] = s.wnext
	}
	if s.wnext != nil {
		s.wnext.wprev = s.wprev
	}
	s.wnext, s.wprev = nil, nil
	s.flags &^= flagInWheel
	w.count--
}

// advance processes every tick up to and including to, calling due for
// each socket whose slot came round. due must re-file the socket (or
// leave it out when it is gone).
func (w *wheel) advance(to uint32, due func(*Socket)) {
	for int32(to-w.now) > 0 {
		w.now++
		i := w.now % wheelSlots
		s := w.slots[i]
		w.slots[i] = nil
		for s != nil {
			next := s.wnext
			s.wnext, s.wprev = nil, nil
			s.flags &^= flagInWheel
			w.count--
			due(s)
			s = next
		}
	}
}

// each calls f for every socket in the wheel; f must not change the wheel.
func (w *wheel) each(f func(*Socket)) {
	for _, s := range w.slots {
		for ; s != nil; s = s.wnext {
			f(s)
		}
	}
}
