package loadtest

import (
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Result is everything a run measured. It is the --json document and the
// data behind the HTML report.
type Result struct {
	Scenario Scenario  `json:"scenario"`
	Config   Config    `json:"config"`
	Started  time.Time `json:"started"`
	// Seconds is the run's length; RampSeconds the time from start until
	// the first wave of connections had all opened or failed.
	Seconds     float64 `json:"seconds"`
	RampSeconds float64 `json:"ramp_seconds"`
	// TrafficSeconds is the length of the traffic or hold phase.
	TrafficSeconds float64 `json:"traffic_seconds"`
	Interrupted    bool    `json:"interrupted,omitempty"` // stopped by a signal
	Workers        int     `json:"workers"`
	Loops          int     `json:"loops"`

	Target   int      `json:"target"`    // connections wanted open at once
	PeakOpen int64    `json:"peak_open"` // most connections open at once
	Counters Counters `json:"counters"`
	// ConnectRate is connections opened per second during the ramp;
	// MessageRate data messages received per second during traffic.
	ConnectRate float64 `json:"connect_rate"`
	MessageRate float64 `json:"message_rate"`
	SendRate    float64 `json:"send_rate"`
	// Expected is the deliveries (broadcast) or echoes (echo) the sent
	// messages should have produced; 0 where it does not apply.
	Expected int64 `json:"expected,omitempty"`

	// Latency is the scenario's measured delay: delivery (broadcast),
	// round trip (echo), first reply (wake, and idle pings); Connect is TCP
	// connect plus handshake.
	Latency Percentiles `json:"latency"`
	Connect Percentiles `json:"connect"`
	// LatencyFrom says where Latency starts: LatencyFromSchedule or
	// LatencyFromSend; "" when the scenario times no messages.
	LatencyFrom string `json:"latency_from,omitempty"`
	// SendLag is how late the client sent each timed message after it was
	// due (rate-driven scenarios): the client's own share of Latency, from
	// its timer's wake-up to a stall. Nil when nothing was sent on a
	// timetable.
	SendLag *Percentiles `json:"send_lag,omitempty"`

	Errors     map[string]int64 `json:"errors"`      // failed and lost connections by kind
	CloseCodes map[string]int64 `json:"close_codes"` // close frames from the server, by code
	// StoppedBy says, when fewer connections opened than wanted, which
	// limit stopped them; "" when the target was reached.
	StoppedBy string `json:"stopped_by,omitempty"`

	Client ClientMemory  `json:"client"`
	Server *ServerSample `json:"server,omitempty"`
	// Steadiness is how steadily the client's machine ran during traffic.
	Steadiness *Steadiness `json:"steadiness,omitempty"`

	Series     []Point           `json:"series"`
	Thresholds []ThresholdResult `json:"thresholds,omitempty"`
}

// Where a run's latency is measured from.
const (
	// LatencyFromSchedule: from the time each message was due by its
	// rate (broadcast, echo with --msg-rate, wake, idle pings), so a send
	// the client or the server held up counts its wait.
	LatencyFromSchedule = "schedule"
	// LatencyFromSend: from the time each message was sent, the next one
	// going out when the last one is back (closed-loop echo). A stall
	// delays the sends rather than showing in the latency.
	LatencyFromSend = "send"
)

// latencyFrom is where cfg's latency is measured from.
func latencyFrom(cfg *Config) string {
	switch {
	case cfg.closedLoop():
		return LatencyFromSend
	case cfg.timetabled(), cfg.Scenario == Wake:
		return LatencyFromSchedule
	}
	return ""
}

// Percentiles summarise a latency histogram, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func percentiles(h *hdr.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}

// ClientMemory is the load client's own cost, measured at the end of the
// hold after a garbage collection.
type ClientMemory struct {
	RSSBytes     int64   `json:"rss_bytes"`      // all workers' resident memory
	GrowthBytes  int64   `json:"growth_bytes"`   // growth since before the first connection
	BytesPerConn float64 `json:"bytes_per_conn"` // GrowthBytes / open connections
	// InProcess: the workers ran inside the calling process, so RSS
	// includes whatever else it holds.
	InProcess bool `json:"in_process,omitempty"`
}

// ServerSample is the server's memory and CPU, from /proc or its metrics.
type ServerSample struct {
	Source       string  `json:"source"`         // "pid 1234" or the metrics URL(s)
	BaseRSS      int64   `json:"base_rss_bytes"` // before the first connection
	HoldRSS      int64   `json:"hold_rss_bytes"` // at the end of the hold
	PeakRSS      int64   `json:"peak_rss_bytes"`
	OpenAtHold   int64   `json:"open_at_hold"`
	BytesPerConn float64 `json:"bytes_per_conn"` // (HoldRSS-BaseRSS)/OpenAtHold
	// CPUSeconds is the server's CPU time during traffic; NanosPerMessage
	// that divided by the messages received in it (the server's cost per
	// delivered frame).
	CPUSeconds      float64 `json:"cpu_seconds"`
	NanosPerMessage float64 `json:"cpu_ns_per_message,omitempty"`
}

// Point is one interval of the run, for the report's charts.
type Point struct {
	T           float64 `json:"t"` // seconds since the start
	Open        int64   `json:"open"`
	Failed      int64   `json:"failed"`
	ConnectRate float64 `json:"connect_rate"` // opened per second in the interval
	SendRate    float64 `json:"send_rate"`
	RecvRate    float64 `json:"recv_rate"`
	// Latency percentiles of the interval alone, in milliseconds.
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	// ServerRSS, when the server is sampled.
	ServerRSS int64 `json:"server_rss,omitempty"`
}

// ThresholdResult is one --fail-on check.
type ThresholdResult struct {
	Expr  string  `json:"expr"`
	Value float64 `json:"value"`
	Pass  bool    `json:"pass"`
}
