package loadtest

import (
	"fmt"
	"math"
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

// unit is what a threshold's value is measured in.
type unit int

const (
	unitCount  unit = iota // a plain number
	unitMillis             // a latency: bare numbers are ms, or 5ms, 200us, 1.5s
	unitNanos              // a CPU time: bare numbers are ns, or 2us
	unitBytes              // bare numbers are bytes, or 2KiB, 1.5MiB
)

type metric struct {
	unit unit
	read func(*Result) float64
}

// thresholdMetrics reads each metric a threshold may name from a Result.
var thresholdMetrics = map[string]metric{
	"p50":                   {unitMillis, func(r *Result) float64 { return r.Latency.P50 }},
	"p90":                   {unitMillis, func(r *Result) float64 { return r.Latency.P90 }},
	"p99":                   {unitMillis, func(r *Result) float64 { return r.Latency.P99 }},
	"p999":                  {unitMillis, func(r *Result) float64 { return r.Latency.P999 }},
	"max":                   {unitMillis, func(r *Result) float64 { return r.Latency.Max }},
	"connect_p50":           {unitMillis, func(r *Result) float64 { return r.Connect.P50 }},
	"connect_p99":           {unitMillis, func(r *Result) float64 { return r.Connect.P99 }},
	"connect_max":           {unitMillis, func(r *Result) float64 { return r.Connect.Max }},
	"opened":                {unitCount, func(r *Result) float64 { return float64(r.Counters.Opened) }},
	"peak_open":             {unitCount, func(r *Result) float64 { return float64(r.PeakOpen) }},
	"failed":                {unitCount, func(r *Result) float64 { return float64(r.Counters.Failed) }},
	"lost":                  {unitCount, func(r *Result) float64 { return float64(r.Counters.Lost) }},
	"errors":                {unitCount, func(r *Result) float64 { return float64(r.Counters.Failed + r.Counters.Lost) }},
	"sent":                  {unitCount, func(r *Result) float64 { return float64(r.Counters.Sent) }},
	"received":              {unitCount, func(r *Result) float64 { return float64(r.Counters.Received) }},
	"delivered":             {unitCount, func(r *Result) float64 { return float64(r.Counters.Delivered) }},
	"skipped":               {unitCount, func(r *Result) float64 { return float64(r.Counters.Skipped) }},
	"unsent":                {unitCount, func(r *Result) float64 { return float64(r.Counters.Unsent) }},
	"missing":               {unitCount, func(r *Result) float64 { return float64(r.missing()) }},
	"connect_rate":          {unitCount, func(r *Result) float64 { return r.ConnectRate }},
	"message_rate":          {unitCount, func(r *Result) float64 { return r.MessageRate }},
	"client_bytes_per_conn": {unitBytes, func(r *Result) float64 { return r.Client.BytesPerConn }},
	"server_bytes_per_conn": {unitBytes, func(r *Result) float64 { return r.serverField(func(s *ServerSample) float64 { return s.BytesPerConn }) }},
	"server_cpu_ns_per_message": {unitNanos, func(r *Result) float64 {
		return r.serverField(func(s *ServerSample) float64 { return s.NanosPerMessage })
	}},
	// A run on a host that took its CPU away now and then can be failed:
	// --fail-on 'steadiness_slow_fraction>0.01'.
	"steadiness_slow_fraction": {unitCount, func(r *Result) float64 {
		if r.Steadiness == nil {
			return 0
		}
		return r.Steadiness.SlowFraction
	}},
}

func (r *Result) serverField(f func(*ServerSample) float64) float64 {
	if r.Server == nil {
		return 0
	}
	return f(r.Server)
}

// missing is how many expected deliveries or echoes never came.
func (r *Result) missing() int64 {
	want, got := expected(r.Scenario, r.Config.Members, &r.Counters)
	return max(want-got, 0)
}

// ParseThreshold parses "METRIC OP VALUE". A latency's value may take a
// unit (ns, us, µs, ms, s; bare numbers are milliseconds), a CPU time's
// too (bare numbers are nanoseconds), a size B, KiB, MiB or GiB.
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
	m, ok := thresholdMetrics[t.Metric]
	if !ok {
		names := make([]string, 0, len(thresholdMetrics))
		for n := range thresholdMetrics {
			names = append(names, n)
		}
		sort.Strings(names)
		return Threshold{}, fmt.Errorf("--fail-on %q: unknown metric %q (known: %s)", expr, t.Metric, strings.Join(names, ", "))
	}
	v, err := parseValue(rest, m.unit)
	if err != nil {
		return Threshold{}, fmt.Errorf("--fail-on %q: %v", expr, err)
	}
	t.Value = v
	return t, nil
}

// parseValue reads a number, with a unit where u allows one.
func parseValue(s string, u unit) (float64, error) {
	bad := fmt.Errorf("bad value %q", s)
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, bad
		}
		return v, nil
	}
	switch u {
	case unitMillis, unitNanos:
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, bad
		}
		if u == unitNanos {
			return float64(d), nil
		}
		return float64(d) / float64(time.Millisecond), nil
	case unitBytes:
		for _, sz := range []struct {
			suffix string
			mult   float64
		}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
			if num, ok := strings.CutSuffix(s, sz.suffix); ok {
				v, err := strconv.ParseFloat(num, 64)
				if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
					return 0, bad
				}
				return v * sz.mult, nil
			}
		}
	}
	return 0, bad
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
		v := thresholdMetrics[t.Metric].read(r)
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
