package gateway

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/den-rooms/den/internal/clock"
	"github.com/den-rooms/den/internal/wsframe"
)

// closeAfterBig accepts, shrinks the server side's kernel buffer so den
// holds most of what it writes, queues one large message and then asks to
// close. Both are queued before the loop's flush: one writev, then the
// close frame right behind.
type closeAfterBig struct {
	Echo
	size int
}

func (r closeAfterBig) Join(j *Join) {
	s := j.Accept()
	_ = s.conn.SetWriteBuffer(16 << 10)
	_ = s.Send(false, bytes.Repeat([]byte("d"), r.size))
	s.Close(4000, "bye")
}

// A room sends a large message and closes. The client reads steadily (a
// tick of den's fake clock per 32 KiB read, never pausing a whole close
// timeout, though reading all takes several): it gets the whole message,
// then den's close frame 4000. The close timeout counts from its last
// read, not from when den queued its close frame.
func TestCloseTimeoutLetsASteadyReaderFinish(t *testing.T) {
	const (
		size    = 2 << 20
		tick    = 20 * time.Millisecond
		perTick = 32 << 10
	)
	fake := clock.NewFake(time.Unix(0, 0))
	srv := startServer(t, Config{Rooms: closeAfterBig{size: size}, Clock: fake, EventLoops: 1,
		Tick: tick, CloseTimeout: 10 * tick, HandshakeTimeout: 10 * tick})
	c := dialRaw(t, srv)
	c.conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	c.upgrade("/rooms/echo/x")

	// Read until the message and a close frame are in, or the connection
	// ends: den waits for the client's close frame after its own, on its
	// clock, which stops moving when the reading does.
	var got []byte
	buf := make([]byte, 8<<10)
	sinceTick := 0
	var rerr error
	whole := func() bool {
		_, hn, _ := wsframe.ParseHeader(got)
		if hn == 0 || len(got) < hn+size {
			return false
		}
		ch, cn, _ := wsframe.ParseHeader(got[hn+size:])
		return cn > 0 && len(got) >= hn+size+cn+int(ch.Length)
	}
	for !whole() {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.br.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			rerr = err
			break
		}
		if sinceTick += n; sinceTick >= perTick {
			sinceTick = 0
			advanceTick(t, srv, fake, tick)
		}
	}
	h, hn, _ := wsframe.ParseHeader(got)
	if hn == 0 || h.Op != wsframe.OpBinary || h.Length != size || len(got) < hn+size {
		t.Fatalf("got %d bytes then %v; want a binary frame of %d bytes and a close frame", len(got), rerr, size)
	}
	rest := got[hn+size:]
	ch, cn, _ := wsframe.ParseHeader(rest)
	if cn == 0 || ch.Op != wsframe.OpClose || len(rest) < cn+int(ch.Length) {
		t.Fatalf("after the message: %x (%v), want close 4000", rest, rerr)
	}
	if code, _ := wsframe.ParseClose(rest[cn : cn+int(ch.Length)]); code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
}

// bigThenHold sends one large message on Accept (one frame always fits an
// empty queue) and hands the socket to the test.
type bigThenHold struct {
	Echo
	size int
	got  chan *Socket
}

func (r bigThenHold) Join(j *Join) {
	s := j.Accept()
	_ = s.conn.SetWriteBuffer(16 << 10)
	_ = s.Send(false, bytes.Repeat([]byte("d"), r.size))
	r.got <- s
}

// The room closes a socket with 4000 while a large message it sent
// earlier is still in den's buffer, over the write-queue limit: the close
// adds nothing to it, and goes out with the room's code, not as 1008
// "slow consumer".
func TestCloseBehindALargeMessageKeepsItsCode(t *testing.T) {
	room := bigThenHold{size: 2 << 20, got: make(chan *Socket, 1)}
	srv := startServer(t, Config{Rooms: room, EventLoops: 1})
	c := dialRaw(t, srv)
	c.conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	c.upgrade("/rooms/echo/x")
	s := <-room.got
	l := s.loop
	waitFor(t, "the message written to den's buffer", func() bool {
		var b int
		onLoop(l, func() {
			if s.state == stateOpen {
				b = s.conn.OutboundBuffered()
			}
		})
		return b > 0
	})
	s.Close(4000, "bye")
	waitFor(t, "close acted on", func() bool {
		var st connState
		onLoop(l, func() { st = s.state })
		return st != stateOpen
	})
	// Read everything at full speed now.
	f := c.mustRead()
	if f.op != wsframe.OpBinary || len(f.payload) != room.size {
		t.Fatalf("first frame %v of %d bytes", f.op, len(f.payload))
	}
	f = c.mustRead()
	code, reason := wsframe.ParseClose(f.payload)
	if f.op != wsframe.OpClose || code != 4000 {
		t.Fatalf("then %v %d %q (slow consumers counted: %d), want close 4000 \"bye\"", f.op, code, reason, srv.Stats().SlowConsumers)
	}
}
