package loadtest

import (
	"strconv"
	"sync"
	"sync/atomic"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 100 s; slower ones
// count as 100 s.
const (
	histMin    = 1
	histMax    = 100_000_000
	histDigits = 3
)

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histDigits) }

func record(h *hdr.Histogram, nanos int64) {
	us := max(min(nanos/1000, histMax), histMin)
	_ = h.RecordValue(us)
}

// Counters are a run's event counts. Open connections are
// Opened - Lost - Closed.
type Counters struct {
	Dials     int64 `json:"dials"`     // connection attempts started
	Opened    int64 `json:"opened"`    // handshakes completed
	Failed    int64 `json:"failed"`    // attempts that never opened (Errors says why)
	Aborted   int64 `json:"aborted"`   // attempts still connecting when the run closed
	Lost      int64 `json:"lost"`      // open connections the server or network ended
	Closed    int64 `json:"closed"`    // open connections the client ended
	Sent      int64 `json:"sent"`      // data messages sent
	Received  int64 `json:"received"`  // data messages received
	Delivered int64 `json:"delivered"` // timestamped messages received from another connection
	Echoed    int64 `json:"echoed"`    // timestamped messages received back by their sender
	Skipped   int64 `json:"skipped"`   // sends skipped: the server was not reading
	// Scheduled is the timed sends a rate-driven scenario's timetable
	// had due in its traffic phase: each was sent (late or not), skipped
	// (the backlog stayed over its bound, the server not reading) or
	// Unsent (the run or its connection ended first).
	Scheduled int64 `json:"scheduled"`
	Unsent    int64 `json:"unsent"`
	SentBytes int64 `json:"sent_bytes"`
	RecvBytes int64 `json:"received_bytes"`
}

// Open is the connections open now.
func (c Counters) Open() int64 { return c.Opened - c.Lost - c.Closed }

func (c *Counters) add(o *Counters) {
	c.Dials += o.Dials
	c.Opened += o.Opened
	c.Failed += o.Failed
	c.Aborted += o.Aborted
	c.Lost += o.Lost
	c.Closed += o.Closed
	c.Sent += o.Sent
	c.Received += o.Received
	c.Delivered += o.Delivered
	c.Echoed += o.Echoed
	c.Skipped += o.Skipped
	c.Scheduled += o.Scheduled
	c.Unsent += o.Unsent
	c.SentBytes += o.SentBytes
	c.RecvBytes += o.RecvBytes
}

// Error kinds: why a connection failed or was lost. HTTP refusals are
// counted as http_<status>, server closes by code in CloseCodes.
const (
	kindRefused      = "refused"       // ECONNREFUSED: nothing listening, or the backlog overflowed
	kindReset        = "reset"         // ECONNRESET or EPIPE
	kindTimeout      = "timeout"       // connect plus handshake took longer than --connect-timeout
	kindEOF          = "eof"           // the server closed TCP without a close frame
	kindClientFiles  = "client_files"  // EMFILE: this process's open-file limit
	kindSystemFiles  = "system_files"  // ENFILE: the system's open-file limit
	kindPorts        = "ports"         // EADDRNOTAVAIL: no free local port for the source address
	kindMemory       = "memory"        // ENOMEM or ENOBUFS
	kindUnreachable  = "unreachable"   // EHOSTUNREACH, ENETUNREACH
	kindBadHandshake = "bad_handshake" // a 101 that is not a valid WebSocket upgrade
	kindProtocol     = "protocol"      // the server sent frames that break RFC 6455
	kindOther        = "other"
)

// loopStats is what one event loop counts. The loop writes the counters
// atomically so a snapshot may read them at any time; histograms and maps
// are under mu.
type loopStats struct {
	dials, opened, failed, aborted, lost, closed atomic.Int64
	sent, received, delivered, echoed            atomic.Int64
	skipped, sentBytes, recvBytes                atomic.Int64
	scheduled, unsent                            atomic.Int64
	mu                                           sync.Mutex
	errors                                       map[string]int64
	closes                                       map[string]int64
	latency, connect, lag                        *hdr.Histogram // since the last snapshot
}

func newLoopStats() *loopStats {
	return &loopStats{
		errors: map[string]int64{}, closes: map[string]int64{},
		latency: newHist(), connect: newHist(), lag: newHist(),
	}
}

func (s *loopStats) countError(kind string) {
	s.mu.Lock()
	s.errors[kind]++
	s.mu.Unlock()
}

func (s *loopStats) countClose(code uint16) {
	s.mu.Lock()
	s.closes[strconv.Itoa(int(code))]++
	s.mu.Unlock()
}

func (s *loopStats) recordLatency(nanos int64) {
	s.mu.Lock()
	record(s.latency, nanos)
	s.mu.Unlock()
}

// recordLag records how late a timed send went out after it was due.
func (s *loopStats) recordLag(nanos int64) {
	s.mu.Lock()
	record(s.lag, nanos)
	s.mu.Unlock()
}

func (s *loopStats) recordConnect(nanos int64) {
	s.mu.Lock()
	record(s.connect, nanos)
	s.mu.Unlock()
}

// collect adds the loop's counts to c, errs and closes, and moves its
// histograms into latency, connect and lag.
func (s *loopStats) collect(c *Counters, errs, closes map[string]int64, latency, connect, lag *hdr.Histogram) {
	// Effects are read before their causes (lost before opened, echoed
	// before sent, dials last), so a snapshot taken while the loop runs
	// never shows more endings than beginnings.
	var o Counters
	o.Lost, o.Closed, o.Failed, o.Aborted = s.lost.Load(), s.closed.Load(), s.failed.Load(), s.aborted.Load()
	o.Delivered, o.Echoed, o.Received, o.RecvBytes = s.delivered.Load(), s.echoed.Load(), s.received.Load(), s.recvBytes.Load()
	o.Skipped, o.Unsent, o.Sent, o.SentBytes = s.skipped.Load(), s.unsent.Load(), s.sent.Load(), s.sentBytes.Load()
	o.Scheduled = s.scheduled.Load()
	o.Opened = s.opened.Load()
	o.Dials = s.dials.Load()
	c.add(&o)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.errors {
		errs[k] += v
	}
	for k, v := range s.closes {
		closes[k] += v
	}
	latency.Merge(s.latency)
	connect.Merge(s.connect)
	lag.Merge(s.lag)
	s.latency.Reset()
	s.connect.Reset()
	s.lag.Reset()
}

// Snapshot is one worker's state, sent to the run every interval: counts
// and maps are totals since the start, histograms hold what was recorded
// since the worker's previous snapshot (V2-compressed HdrHistogram).
type Snapshot struct {
	Worker     int              `json:"worker"`
	Counters   Counters         `json:"counters"`
	Errors     map[string]int64 `json:"errors"`
	CloseCodes map[string]int64 `json:"close_codes"`
	Latency    []byte           `json:"latency"`
	Connect    []byte           `json:"connect"`
	SendLag    []byte           `json:"send_lag"`
	// RSS is the worker's resident memory now; BaseRSS before it opened
	// its first connection.
	RSS     int64 `json:"rss"`
	BaseRSS int64 `json:"base_rss"`
	// Connected: every connection of the first wave has opened or failed.
	// Done: the traffic phase has nothing left to send or await.
	// Final: the worker has closed everything; this is its last word.
	Connected bool `json:"connected"`
	// ConnectedAt is when Connected became true, in unix nanoseconds.
	ConnectedAt int64 `json:"connected_at,omitempty"`
	Done        bool  `json:"done"`
	Final       bool  `json:"final"`
	// Phase is the worker's phase when the snapshot was taken.
	Phase int32 `json:"phase"`
}

func encodeHist(h *hdr.Histogram) []byte {
	b, err := h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		// Encoding a histogram built by newHist cannot fail short of memory.
		panic(err)
	}
	return b
}

func decodeHist(b []byte) (*hdr.Histogram, error) {
	if len(b) == 0 {
		return newHist(), nil
	}
	return hdr.Decode(b)
}
