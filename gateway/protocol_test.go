package gateway

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/den-rooms/den/internal/wsframe"
)

// Each rule of RFC 6455 that den enforces, sent as raw bytes.

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func TestProtocolRules(t *testing.T) {
	srv := startServer(t, Config{MaxMessageBytes: 1000})
	cases := []struct {
		name string
		send func(c *rawClient)
		want wsframe.StatusCode
	}{
		{"unmasked frame", func(c *rawClient) {
			c.send(wsframe.AppendFrame(nil, wsframe.OpText, 0, []byte("hi")))
		}, wsframe.CloseProtocolError},
		{"rsv1 without extension", func(c *rawClient) { c.frame(true, wsframe.Rsv1, wsframe.OpText, []byte("hi")) }, wsframe.CloseProtocolError},
		{"rsv2", func(c *rawClient) { c.frame(true, wsframe.Rsv2, wsframe.OpText, []byte("hi")) }, wsframe.CloseProtocolError},
		{"rsv3", func(c *rawClient) { c.frame(true, wsframe.Rsv3, wsframe.OpBinary, []byte("hi")) }, wsframe.CloseProtocolError},
		{"opcode 3", func(c *rawClient) { c.frame(true, 0, 3, nil) }, wsframe.CloseProtocolError},
		{"opcode 0xF", func(c *rawClient) { c.frame(true, 0, 0xF, nil) }, wsframe.CloseProtocolError},
		{"ping of 126 bytes", func(c *rawClient) { c.frame(true, 0, wsframe.OpPing, make([]byte, 126)) }, wsframe.CloseProtocolError},
		{"fragmented ping", func(c *rawClient) { c.frame(false, 0, wsframe.OpPing, []byte("a")) }, wsframe.CloseProtocolError},
		{"fragmented close", func(c *rawClient) { c.frame(false, 0, wsframe.OpClose, nil) }, wsframe.CloseProtocolError},
		{"continuation without message", func(c *rawClient) { c.frame(true, 0, wsframe.OpContinuation, []byte("x")) }, wsframe.CloseProtocolError},
		{"new message inside fragments", func(c *rawClient) {
			c.frame(false, 0, wsframe.OpText, []byte("a"))
			c.frame(true, 0, wsframe.OpBinary, []byte("b"))
		}, wsframe.CloseProtocolError},
		{"invalid UTF-8", func(c *rawClient) { c.frame(true, 0, wsframe.OpText, []byte{'o', 'k', 0xc0, 0xaf}) }, wsframe.CloseInvalidPayload},
		{"invalid UTF-8 across fragments", func(c *rawClient) {
			c.frame(false, 0, wsframe.OpText, []byte{0xf0, 0x9f})
			c.frame(true, 0, wsframe.OpContinuation, []byte{0x41})
		}, wsframe.CloseInvalidPayload},
		{"message over the limit", func(c *rawClient) { c.frame(true, 0, wsframe.OpBinary, make([]byte, 1001)) }, wsframe.CloseMessageTooBig},
		{"fragments over the limit", func(c *rawClient) {
			c.frame(false, 0, wsframe.OpBinary, make([]byte, 600))
			c.frame(true, 0, wsframe.OpContinuation, make([]byte, 600))
		}, wsframe.CloseMessageTooBig},
		{"close with one byte", func(c *rawClient) { c.frame(true, 0, wsframe.OpClose, []byte{3}) }, wsframe.CloseProtocolError},
		{"close with code 1005", func(c *rawClient) { c.frame(true, 0, wsframe.OpClose, closePayload(1005, "")) }, wsframe.CloseProtocolError},
		{"close with code 2000", func(c *rawClient) { c.frame(true, 0, wsframe.OpClose, closePayload(2000, "")) }, wsframe.CloseProtocolError},
		{"close with non-UTF-8 reason", func(c *rawClient) { c.frame(true, 0, wsframe.OpClose, closePayload(1000, "\xff")) }, wsframe.CloseProtocolError},
		{"close 1000 echoed", func(c *rawClient) { c.frame(true, 0, wsframe.OpClose, closePayload(1000, "bye")) }, wsframe.CloseNormal},
		{"close 4001 echoed", func(c *rawClient) { c.frame(true, 0, wsframe.OpClose, closePayload(4001, "app")) }, 4001},
		{"close without code answered 1000", func(c *rawClient) { c.frame(true, 0, wsframe.OpClose, nil) }, wsframe.CloseNormal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, srv)
			c.upgrade("/rooms/echo/rules")
			tc.send(c)
			c.expectClose(tc.want)
		})
	}
}

// TestOversizeFailsBeforePayload sends only the header of a too-large
// frame: den must answer 1009 without waiting for (or buffering) the body.
func TestOversizeFailsBeforePayload(t *testing.T) {
	srv := startServer(t, Config{MaxMessageBytes: 1 << 20})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/big")
	hdr := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpBinary, make([]byte, 2<<20), testMask)[:14]
	c.send(hdr)
	c.expectClose(wsframe.CloseMessageTooBig)
}

// TestUTF8FailsFast: the first invalid byte of a long text frame ends the
// connection before the rest of the frame is sent.
func TestUTF8FailsFast(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/utf8")
	frame := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpText, append([]byte("ab\xff"), make([]byte, 5000)...), testMask)
	c.send(frame[:4+4+3]) // 16-bit length header, mask, 3 payload bytes
	c.expectClose(wsframe.CloseInvalidPayload)
}

func TestPingPongAndInterleaving(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/ping")

	c.frame(true, 0, wsframe.OpPing, []byte("are you there"))
	if f := c.mustRead(); f.op != wsframe.OpPong || string(f.payload) != "are you there" {
		t.Fatalf("got op %v %q, want pong with the ping's payload", f.op, f.payload)
	}
	// An unsolicited pong gets no answer; the echo after it proves the
	// connection is still fine and nothing came in between.
	c.frame(true, 0, wsframe.OpPong, []byte("unasked"))
	// A ping between the fragments of a message is answered at once, and
	// the message still arrives whole.
	c.frame(false, 0, wsframe.OpText, []byte("hel"))
	c.frame(true, 0, wsframe.OpPing, []byte("mid"))
	c.frame(false, 0, wsframe.OpContinuation, []byte("lo "))
	c.frame(true, 0, wsframe.OpContinuation, []byte("world"))
	if f := c.mustRead(); f.op != wsframe.OpPong || string(f.payload) != "mid" {
		t.Fatalf("got op %v %q, want pong \"mid\"", f.op, f.payload)
	}
	if f := c.mustRead(); f.op != wsframe.OpText || string(f.payload) != "hello world" {
		t.Fatalf("got op %v %q, want text \"hello world\"", f.op, f.payload)
	}
}

// TestNothingAfterClose: frames after the client's close are not
// processed; den answers the close and ends the connection.
func TestNothingAfterClose(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/after")
	var b []byte
	b = wsframe.AppendMaskedFrame(b, true, 0, wsframe.OpClose, closePayload(1000, ""), testMask)
	b = wsframe.AppendMaskedFrame(b, true, 0, wsframe.OpText, []byte("ignored"), testMask)
	c.send(b)
	f := c.mustRead()
	if f.op != wsframe.OpClose {
		t.Fatalf("first frame after close is %v %q, want the close reply", f.op, f.payload)
	}
	c.expectEOF()
}

// TestCompressedFrames sends permessage-deflate frames by hand.
func TestCompressedFrames(t *testing.T) {
	srv := startServer(t, Config{MaxMessageBytes: 4096})
	c := dialRaw(t, srv)
	resp := c.upgrade("/rooms/echo/z", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
	ext := resp.Header.Get("Sec-WebSocket-Extensions")
	if ext == "" || !bytes.Contains([]byte(ext), []byte("server_no_context_takeover")) || !bytes.Contains([]byte(ext), []byte("client_no_context_takeover")) {
		t.Fatalf("extensions %q: want permessage-deflate without context takeover both ways", ext)
	}
	msg := bytes.Repeat([]byte("compress me "), 50)
	c.frame(true, wsframe.Rsv1, wsframe.OpText, wsframe.Deflate(nil, msg))
	f := c.mustRead()
	if f.rsv != wsframe.Rsv1 {
		t.Fatalf("reply rsv %x: want compressed", f.rsv)
	}
	got, err := wsframe.Inflate(nil, f.payload, 1<<20)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("reply inflates to %q, %v", got, err)
	}
	// A compressed message that inflates past the limit is 1009, though its
	// compressed form is small.
	bomb := wsframe.Deflate(nil, make([]byte, 100000))
	if len(bomb) > 4096 {
		t.Fatalf("bomb is %d bytes compressed", len(bomb))
	}
	c.frame(true, wsframe.Rsv1, wsframe.OpBinary, bomb)
	c.expectClose(wsframe.CloseMessageTooBig)
}

// A bomb refused with 1009 does not leave its loop holding the megabyte
// it inflated to before the limit stopped it.
func TestCompressedBombBufferNotKept(t *testing.T) {
	srv := startServer(t, Config{MaxMessageBytes: 1 << 20, EventLoops: 1})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/b", "Sec-WebSocket-Extensions: permessage-deflate")
	c.frame(true, wsframe.Rsv1, wsframe.OpBinary, wsframe.Deflate(nil, make([]byte, 2<<20)))
	c.expectClose(wsframe.CloseMessageTooBig)
	for _, l := range *srv.loopSet.Load() {
		var held int
		onLoop(l, func() { held = cap(l.inflate) })
		if held > 64<<10 {
			t.Errorf("the loop keeps a %d-byte inflate buffer after the bomb", held)
		}
	}
}

func TestCompressedInvalidUTF8(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/z", "Sec-WebSocket-Extensions: permessage-deflate")
	c.frame(true, wsframe.Rsv1, wsframe.OpText, wsframe.Deflate(nil, []byte("bad \xff text")))
	c.expectClose(wsframe.CloseInvalidPayload)
}
