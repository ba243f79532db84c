package gateway

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
)

var echoSizes = []int{0, 1, 125, 126, 127, 65535, 65536, 1<<20 - 1}

func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// TestEchoGorilla runs echo through gorilla/websocket, with and without
// permessage-deflate.
func TestEchoGorilla(t *testing.T) {
	srv := startServer(t, Config{})
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("deflate=%v", compress), func(t *testing.T) {
			d := websocket.Dialer{EnableCompression: compress}
			c, resp, err := d.Dial(wsURL(srv, "/rooms/echo/g"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			negotiated := resp.Header.Get("Sec-WebSocket-Extensions") != ""
			if negotiated != compress {
				t.Fatalf("permessage-deflate negotiated = %v, offered %v (%q)", negotiated, compress, resp.Header.Get("Sec-WebSocket-Extensions"))
			}
			c.SetReadLimit(2 << 20)
			for _, n := range echoSizes {
				for _, typ := range []int{websocket.TextMessage, websocket.BinaryMessage} {
					msg := payloadOf(n)
					if err := c.WriteMessage(typ, msg); err != nil {
						t.Fatal(err)
					}
					gotType, got, err := c.ReadMessage()
					if err != nil {
						t.Fatalf("size %d: %v", n, err)
					}
					if gotType != typ || !bytes.Equal(got, msg) {
						t.Fatalf("size %d type %d: got type %d, %d bytes", n, typ, gotType, len(got))
					}
				}
			}
			// A message written in fragments comes back whole.
			w, err := c.NextWriter(websocket.TextMessage)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				w.Write(payloadOf(3000))
				if fw, ok := w.(interface{ Flush() error }); ok {
					fw.Flush()
				}
			}
			w.Close()
			_, got, err := c.ReadMessage()
			if err != nil || len(got) != 15000 {
				t.Fatalf("fragmented: %d bytes, %v", len(got), err)
			}
		})
	}
}

// TestEchoCoder runs echo through coder/websocket, a second independent
// client, with compression off and on.
func TestEchoCoder(t *testing.T) {
	srv := startServer(t, Config{})
	for _, mode := range []coder.CompressionMode{coder.CompressionDisabled, coder.CompressionNoContextTakeover} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, _, err := coder.Dial(ctx, wsURL(srv, "/rooms/echo/c"), &coder.DialOptions{CompressionMode: mode, HTTPClient: http.DefaultClient})
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadLimit(2 << 20)
		for _, n := range echoSizes {
			msg := payloadOf(n)
			if err := c.Write(ctx, coder.MessageBinary, msg); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil || typ != coder.MessageBinary || !bytes.Equal(got, msg) {
				t.Fatalf("mode %v size %d: type %v len %d err %v", mode, n, typ, len(got), err)
			}
		}
		c.Close(coder.StatusNormalClosure, "bye")
		cancel()
	}
}
