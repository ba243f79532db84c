package gateway

import (
	"sync"

	"github.com/den-rooms/den/internal/wsframe"
)

// Frame is one message encoded once for any number of sockets: a
// broadcast builds one Frame and every recipient's queue shares its bytes.
// The compressed form, for clients that negotiated permessage-deflate, is
// made on first use and also shared.
type Frame struct {
	plain    []byte
	hdrLen   int
	op       wsframe.Opcode
	once     sync.Once
	deflated []byte
}

// NewFrame encodes a text or binary message; it copies payload.
func NewFrame(text bool, payload []byte) *Frame {
	plain, op := encode(text, payload)
	return &Frame{plain: plain, hdrLen: len(plain) - len(payload), op: op}
}

// encode makes one final unmasked frame in a buffer of its exact size.
func encode(text bool, payload []byte) ([]byte, wsframe.Opcode) {
	op := opcode(text)
	b := make([]byte, 0, wsframe.HeaderLen(len(payload))+len(payload))
	return wsframe.AppendFrame(b, op, 0, payload), op
}

func opcode(text bool) wsframe.Opcode {
	if text {
		return wsframe.OpText
	}
	return wsframe.OpBinary
}

// bytes returns the encoding for a recipient.
func (f *Frame) bytes(deflate bool, threshold int) []byte {
	payload := f.plain[f.hdrLen:]
	if !deflate || len(payload) < threshold {
		return f.plain
	}
	f.once.Do(func() {
		f.deflated = deflatedFrame(f.op, payload)
		if f.deflated == nil {
			f.deflated = f.plain // incompressible: plain is smaller
		}
	})
	return f.deflated
}

// deflatedFrame is payload compressed into a frame (RSV1 set), or nil when
// compressing does not make it smaller.
func deflatedFrame(op wsframe.Opcode, payload []byte) []byte {
	c := wsframe.Deflate(nil, payload)
	if len(c) >= len(payload) {
		return nil
	}
	return wsframe.AppendFrame(make([]byte, 0, wsframe.HeaderLen(len(c))+len(c)), op, wsframe.Rsv1, c)
}

// Broadcast queues f for every socket in to. Sockets that are closing are
// skipped. It takes each event loop's lock once, not once per socket.
func Broadcast(f *Frame, to []*Socket) {
	broadcast(f, len(to), func(i int) *Socket { return to[i] })
}

// broadcast is Broadcast over n sockets that at gives, nil for one to skip:
// callers holding sockets in another kind of slice need no copy of it.
func broadcast(f *Frame, n int, at func(int) *Socket) {
	var srv *Server
	var deflate bool
	for i := range n {
		if s := at(i); s != nil {
			srv = s.loop.srv
			deflate = deflate || s.deflate
		}
	}
	if srv == nil {
		return
	}
	threshold := srv.cfg.CompressThreshold
	if deflate {
		// Compress before taking any loop's lock.
		f.bytes(true, threshold)
	}
	// A walk over the recipients per loop (there are a handful) rather
	// than a list of the rest for each: no allocation per broadcast.
	for _, l := range *srv.loopSet.Load() {
		first := -1
		for i := range n {
			if s := at(i); s != nil && s.loop == l {
				first = i
				break
			}
		}
		if first < 0 {
			continue
		}
		var wake bool
		l.mu.Lock()
		for i := first; i < n; i++ {
			if s := at(i); s != nil && s.loop == l && s.queueLocked(f.bytes(s.deflate, threshold)) {
				wake = l.markDirty(s) || wake
			}
		}
		l.mu.Unlock()
		l.wakeIf(wake)
	}
}
