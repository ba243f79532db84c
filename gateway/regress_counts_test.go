package gateway

import (
	"testing"

	"github.com/den-rooms/den/internal/wsframe"
)

// TestRegressExactCounts: each refusal, close, message and byte is counted
// once.
func TestRegressExactCounts(t *testing.T) {
	srv := startServer(t, Config{AllowedOrigins: []string{"https://ok.example"}})
	req := func(path string, extra ...string) string {
		s := "GET " + path + " HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n"
		for _, e := range extra {
			s += e + "\r\n"
		}
		return s + "\r\n"
	}
	for _, r := range []string{req("/rooms/x"), req("/rooms/echo/a", "Origin: https://evil.example"), req("/rooms/nokind/a")} {
		c := dialRaw(t, srv)
		c.send([]byte(r))
		c.response()
	}
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/a")
	c.frame(true, 0, wsframe.OpText, []byte("hi")) // 8 bytes masked
	c.mustRead()
	c.frame(true, 0, wsframe.OpClose, closePayload(4001, "")) // 8 bytes masked
	c.expectClose(4001)
	waitFor(t, "the socket closed", func() bool { return srv.Stats().Sockets == 0 })
	st := srv.Stats()
	if want := [len(RefusalReasons)]uint64{0, 1, 1, 1, 0, 0}; st.Refused != want || st.Upgrades != 1 {
		t.Errorf("refused %v upgrades %d, want %v and 1", st.Refused, st.Upgrades, want)
	}
	if st.ClosesSent[closeLabel(4001)] != 1 || st.ClosesReceived[closeLabel(4001)] != 1 || st.ClosesReceived[closeLabel(1006)] != 0 {
		t.Errorf("closes sent %v received %v", st.ClosesSent, st.ClosesReceived)
	}
	if st.MessagesIn != 1 || st.MessagesOut != 1 || st.BytesOut != 4+4 {
		t.Errorf("messages in %d out %d, bytes out %d; want 1, 1, 8", st.MessagesIn, st.MessagesOut, st.BytesOut)
	}
	if st.BytesIn != 8+8 {
		t.Errorf("bytes in %d, want 16: the read that held the client's close frame was not counted", st.BytesIn)
	}
}

// TestRegressBytesInCoalesced: a message and the close frame in one write.
func TestRegressBytesInCoalesced(t *testing.T) {
	srv := startServer(t, Config{})
	c := dialRaw(t, srv)
	c.upgrade("/rooms/echo/a")
	waitFor(t, "the socket open", func() bool { return srv.Stats().Sockets == 1 })
	b := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpText, []byte("hi"), testMask)
	b = wsframe.AppendMaskedFrame(b, true, 0, wsframe.OpClose, closePayload(1000, ""), testMask)
	c.send(b)
	waitFor(t, "the socket closed", func() bool { return srv.Stats().Sockets == 0 })
	if st := srv.Stats(); st.MessagesIn != 1 || st.BytesIn != uint64(len(b)) {
		t.Fatalf("messages in %d, bytes in %d; want 1 and %d", st.MessagesIn, st.BytesIn, len(b))
	}
}
