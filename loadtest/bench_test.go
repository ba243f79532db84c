package loadtest

import (
	"testing"
	"time"

	"github.com/den-rooms/den/internal/wsframe"
)

// BenchmarkReceive is the client's cost per timestamped message read from
// a server, 100 frames to a read as in a busy broadcast: decoding,
// finding the stamp, counting and recording latency.
func BenchmarkReceive(b *testing.B) {
	l := testLoop(b, "ws://127.0.0.1:1/x")
	c := &conn{fd: -1, state: stOpen, openPos: -1, sendPos: -1, n: 1}
	var read []byte
	for range 100 {
		read = wsframe.AppendFrame(read, wsframe.OpText, 0, l.payload(time.Now().UnixNano(), 2))
	}
	b.SetBytes(int64(len(read) / 100))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 100 {
		l.received(c, read, time.Now().UnixNano())
	}
	b.StopTimer()
	if got := l.stats.delivered.Load(); got < int64(b.N) {
		b.Fatalf("delivered %d of %d", got, b.N)
	}
}

// BenchmarkPayload is the cost of building one timestamped message.
func BenchmarkPayload(b *testing.B) {
	l := testLoop(b, "ws://127.0.0.1:1/x")
	b.ReportAllocs()
	for i := range b.N {
		l.payload(int64(i), 7)
	}
}
