package loadtest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Threshold is one --fail-on check, such as "p99>50ms" or "failed>0": the
// run fails when the metric compares to the value as written.
type Threshold struct {
	Expr   string
	Metric string
	Op     string // >, >=, <, <=, ==, !=
	Value  float64
}

// thresholdMetrics reads each metric a threshold may name from a Result.
// Latencies are in milliseconds, sizes in bytes, rates per second.
var thresholdMetrics = map[string]func(*Result) float64{
	"p50":                   func(r *Result) float64 { return r.Latency.P50 },
	"p90":                   func(r *Result) float64 { return r.Latency.P90 },
	"p99":                   func(r *Result) float64 { return r.Latency.P99 },
	"p999":                  func(r *Result) float64 { return r.Latency.P999 },
	"max":                   func(r *Result) float64 { return r.Latency.Max },
	"connect_p50":           func(r *Result) float64 { return r.Connect.P50 },
	"connect_p99":           func(r *Result) float64 { return r.Connect.P99 },
	"connect_max":           func(r *Result) float64 { return r.Connect.Max },
	"opened":                func(r *Result) float64 { return float64(r.Counters.Opened) },
	"peak_open":             func(r *Result) float64 { return float64(r.PeakOpen) },
	"failed":                func(r *Result) float64 { return float64(r.Counters.Failed) },
	"lost":                  func(r *Result) float64 { return float64(r.Counters.Lost) },
	"errors":                func(r *Result) float64 { return float64(r.Counters.Failed + r.Counters.Lost) },
	"sent":                  func(r *Result) float64 { return float64(r.Counters.Sent) },
	"received":              func(r *Result) float64 { return float64(r.Counters.Received) },
	"delivered":             func(r *Result) float64 { return float64(r.Counters.Delivered) },
	"skipped":               func(r *Result) float64 { return float64(r.Counters.Skipped) },
	"missing":               func(r *Result) float64 { return float64(r.missing()) },
	"connect_rate":          func(r *Result) float64 { return r.ConnectRate },
	"message_rate":          func(r *Result) float64 { return r.MessageRate },
	"client_bytes_per_conn": func(r *Result) float64 { return r.Client.BytesPerConn },
	"server_bytes_per_conn": func(r *Result) float64 { return r.serverField(func(s *ServerSample) float64 { return s.BytesPerConn }) },
	"server_cpu_ns_per_message": func(r *Result) float64 {
		return r.serverField(func(s *ServerSample) float64 { return s.NanosPerMessage })
	},
}

func (r *Result) serverField(f func(*ServerSample) float64) float64 {
	if r.Server == nil {
		return 0
	}
	return f(r.Server)
}

// missing is how many expected deliveries or echoes never came.
func (r *Result) missing() int64 {
	if r.Expected == 0 {
		return 0
	}
	return max(r.Expected-r.Counters.Delivered-r.Counters.Echoed, 0)
}

// ParseThreshold parses "METRIC OP VALUE". Latency values take a unit (ns,
// us, µs, ms, s; bare numbers are milliseconds); sizes may end in B, KiB,
// MiB or GiB.
func ParseThreshold(expr string) (Threshold, error) {
	s := strings.ReplaceAll(expr, " ", "")
	i := strings.IndexAny(s, "<>=!")
	if i <= 0 {
		return Threshold{}, fmt.Errorf("--fail-on %q: want METRIC OP VALUE, like p99>50ms", expr)
	}
	t := Threshold{Expr: expr, Metric: strings.ToLower(s[:i])}
	rest := s[i:]
	for _, op := range []string{">=", "<=", "==", "!=", ">", "<"} {
		if strings.HasPrefix(rest, op) {
			t.Op, rest = op, rest[len(op):]
			break
		}
	}
	if t.Op == "" {
		return Threshold{}, fmt.Errorf("--fail-on %q: unknown comparison", expr)
	}
	if _, ok := thresholdMetrics[t.Metric]; !ok {
		names := make([]string, 0, len(thresholdMetrics))
		for n := range thresholdMetrics {
			names = append(names, n)
		}
		sort.Strings(names)
		return Threshold{}, fmt.Errorf("--fail-on %q: unknown metric %q (known: %s)", expr, t.Metric, strings.Join(names, ", "))
	}
	v, err := parseValue(rest)
	if err != nil {
		return Threshold{}, fmt.Errorf("--fail-on %q: %v", expr, err)
	}
	t.Value = v
	return t, nil
}

// parseValue reads a number with an optional unit; durations come out in
// milliseconds and sizes in bytes.
func parseValue(s string) (float64, error) {
	sizes := []struct {
		unit string
		mult float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	for _, u := range sizes {
		if num, ok := strings.CutSuffix(s, u.unit); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("bad value %q", s)
			}
			return v * u.mult, nil
		}
	}
	if v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64); err == nil {
		return v, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return float64(d) / float64(time.Millisecond), nil
}

func (t Threshold) breached(v float64) bool {
	switch t.Op {
	case ">":
		return v > t.Value
	case ">=":
		return v >= t.Value
	case "<":
		return v < t.Value
	case "<=":
		return v <= t.Value
	case "==":
		return v == t.Value
	}
	return v != t.Value
}

func checkThresholds(ts []Threshold, r *Result) []ThresholdResult {
	var out []ThresholdResult
	for _, t := range ts {
		v := thresholdMetrics[t.Metric](r)
		out = append(out, ThresholdResult{Expr: t.Expr, Value: v, Pass: !t.breached(v)})
	}
	return out
}

// Failed reports whether any threshold was breached.
func (r *Result) Failed() bool {
	for _, t := range r.Thresholds {
		if !t.Pass {
			return true
		}
	}
	return false
}
