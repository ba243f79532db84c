package loadtest

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

func sampleReportResult() *Result {
	return &Result{
		Scenario: Broadcast,
		// A URL that would end the script element if embedded unescaped.
		Config:         Config{Scenario: Broadcast, URLs: []string{"ws://127.0.0.1:8080/r/{room}?a=</script><b>&c=1"}},
		Started:        time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Seconds:        12.5,
		RampSeconds:    2.25,
		TrafficSeconds: 10,
		Workers:        2,
		Loops:          4,
		Target:         10000,
		PeakOpen:       9991,
		Counters: Counters{
			Dials: 10000, Opened: 9991, Failed: 9, Lost: 3, Closed: 9988,
			Sent: 1234, Received: 12_340_000, Delivered: 12_339_000, Echoed: 0,
			SentBytes: 98765, RecvBytes: 987_654_321,
		},
		ConnectRate: 4440.444,
		MessageRate: 1_234_000.5,
		SendRate:    123.4,
		Expected:    12_340_000,
		Latency:     Percentiles{Count: 12_339_000, P50: 0.412, P90: 1.5, P99: 7.25, P999: 21.0625, Max: 153.6, Mean: 0.9},
		Connect:     Percentiles{Count: 9991, P50: 0.25, P90: 0.5, P99: 3.125, P999: 8, Max: 12.75, Mean: 0.3},
		Errors:      map[string]int64{"http_503": 7, "timeout": 2},
		CloseCodes:  map[string]int64{"1001": 3},
		StoppedBy:   "http_503",
		Client:      ClientMemory{RSSBytes: 300 << 20, GrowthBytes: 200 << 20, BytesPerConn: 20990.3},
		Server: &ServerSample{
			Source: "pid 1234", BaseRSS: 10 << 20, HoldRSS: 90 << 20, PeakRSS: 95 << 20,
			OpenAtHold: 9991, BytesPerConn: 8396.1, CPUSeconds: 3.5, NanosPerMessage: 283.6,
		},
		Steadiness: &Steadiness{Samples: 3000, P50: 21, P99: 88, Max: 130, SlowFraction: 0.0125},
		Series: []Point{
			{T: 1, Open: 4000, Failed: 0, ConnectRate: 4000, P50: 0.3, P99: 2, Max: 5, ServerRSS: 40 << 20},
			{T: 2, Open: 9991, Failed: 9, ConnectRate: 5991, SendRate: 100, RecvRate: 1e6, P50: 0.4, P99: 7, Max: 150, ServerRSS: 90 << 20},
			{T: 3, Open: 9991, Failed: 9, SendRate: 123, RecvRate: 1.23e6, P50: 0.41, P99: 7.3, Max: 153.6, ServerRSS: 90 << 20},
		},
		Thresholds: []ThresholdResult{{Expr: "p99<10ms", Value: 7.25, Pass: true}},
	}
}

func TestWriteReport(t *testing.T) {
	r := sampleReportResult()
	doc, _ := renderReport(t, r)

	c := &r.Counters
	want := map[string]float64{
		"target": float64(r.Target), "peak_open": float64(r.PeakOpen),
		"opened": float64(c.Opened), "failed": float64(c.Failed), "lost": float64(c.Lost),
		"closed": float64(c.Closed), "sent": float64(c.Sent), "received": float64(c.Received),
		"delivered": float64(c.Delivered), "echoed": float64(c.Echoed), "expected": float64(r.Expected),
		"connect_rate": r.ConnectRate, "message_rate": r.MessageRate,
		"p50": r.Latency.P50, "p90": r.Latency.P90, "p99": r.Latency.P99, "p999": r.Latency.P999, "max": r.Latency.Max,
		"connect_p50": r.Connect.P50, "connect_p99": r.Connect.P99, "connect_max": r.Connect.Max,
		"client_bytes_per_conn":     r.Client.BytesPerConn,
		"server_bytes_per_conn":     r.Server.BytesPerConn,
		"server_hold_rss":           float64(r.Server.HoldRSS),
		"server_cpu_ns_per_message": r.Server.NanosPerMessage,
		"steadiness_p99_us":         r.Steadiness.P99,
		"steadiness_slow_fraction":  r.Steadiness.SlowFraction,
	}
	got := reportAttrs(t, doc, "data-metric")
	checkReportMetrics(t, got, want)

	errs := reportAttrs(t, doc, "data-error")
	if len(errs) != 2 || errs["http_503"].text != "7" || errs["timeout"].text != "2" {
		t.Errorf("error counts = %v, want http_503=7 timeout=2", errs)
	}
	closes := reportAttrs(t, doc, "data-close")
	if len(closes) != 1 || closes["1001"].text != "3" {
		t.Errorf("close codes = %v, want 1001=3", closes)
	}
	if pass := reportAttrs(t, doc, "data-pass"); len(pass) != 1 || pass["true"].text != "pass" {
		t.Errorf("thresholds = %v, want one pass", pass)
	}

	for _, id := range []string{"chart-connections", "chart-messages", "chart-latency", "chart-server"} {
		svg := htmlByID(doc, id)
		if svg == nil || svg.Data != "svg" {
			t.Errorf("no <svg id=%q>", id)
			continue
		}
		if htmlFind(svg, func(n *html.Node) bool { return n.Type == html.ElementNode && n.Data == "polyline" }) == nil {
			t.Errorf("%s has no polyline", id)
		}
	}

	back := decodeReportResult(t, doc)
	if back.Counters != r.Counters || back.Latency != r.Latency || back.Connect != r.Connect {
		t.Errorf("embedded JSON numbers differ:\n got %+v %+v\nwant %+v %+v", back.Counters, back.Latency, r.Counters, r.Latency)
	}
	if !slices.Equal(back.Config.URLs, r.Config.URLs) {
		t.Errorf("embedded URLs = %q, want %q", back.Config.URLs, r.Config.URLs)
	}
	if !maps.Equal(back.Errors, r.Errors) || !maps.Equal(back.CloseCodes, r.CloseCodes) {
		t.Errorf("embedded JSON maps = %v %v, want %v %v", back.Errors, back.CloseCodes, r.Errors, r.CloseCodes)
	}
}

// TestWriteReportEmpty covers runs that measured nothing: no points, one
// point of zeros, and no server, which must not divide by zero anywhere.
func TestWriteReportEmpty(t *testing.T) {
	for name, r := range map[string]*Result{
		"zero":      {Scenario: Idle},
		"one point": {Scenario: Echo, Series: []Point{{T: 1}}},
		"same time": {Scenario: Echo, Series: []Point{{T: 2}, {T: 2}}},
	} {
		t.Run(name, func(t *testing.T) {
			doc, out := renderReport(t, r)
			for _, bad := range []string{"NaN", "Inf"} {
				if strings.Contains(out, bad) {
					t.Errorf("output contains %q", bad)
				}
			}
			got := reportAttrs(t, doc, "data-metric")
			for _, absent := range []string{"expected", "server_bytes_per_conn", "server_hold_rss", "server_cpu_ns_per_message", "steadiness_p99_us"} {
				if _, ok := got[absent]; ok {
					t.Errorf("metric %s shown for a zero result", absent)
				}
			}
			if v, ok := got["p99"]; !ok || v.value != "0" {
				t.Errorf("p99 = %+v, want data-value 0", v)
			}
			if htmlByID(doc, "chart-server") != nil {
				t.Error("server chart without server samples")
			}
			for _, id := range []string{"chart-connections", "chart-messages", "chart-latency"} {
				svg := htmlByID(doc, id)
				if svg == nil {
					t.Fatalf("no <svg id=%q>", id)
				}
				if empty := len(r.Series) == 0; empty != strings.Contains(htmlText(svg), "no data") {
					t.Errorf("%s: \"no data\" shown = %v, want %v", id, !empty, empty)
				}
			}
			if n := strings.Count(out, `class="none">none<`); n != 2 {
				t.Errorf("%d empty-table notes, want 2 (errors, close codes)", n)
			}
			back := decodeReportResult(t, doc)
			if back.Scenario != r.Scenario || back.Counters != r.Counters {
				t.Errorf("embedded JSON = %+v, want %+v", back, r)
			}
		})
	}
}

// A non-finite number cannot go into the embedded JSON, so the report
// refuses it rather than write a page without its data.
func TestWriteReportNonFinite(t *testing.T) {
	r := &Result{Scenario: Echo, MessageRate: math.Inf(1)}
	if err := r.WriteReport(io.Discard); err == nil {
		t.Error("WriteReport accepted an infinite rate")
	}
}

func renderReport(tb testing.TB, r *Result) (*html.Node, string) {
	tb.Helper()
	var buf bytes.Buffer
	if err := r.WriteReport(&buf); err != nil {
		tb.Fatalf("WriteReport: %v", err)
	}
	out := buf.String()
	doc, err := html.Parse(strings.NewReader(out))
	if err != nil {
		tb.Fatalf("parse report: %v", err)
	}
	return doc, out
}

type reportCell struct{ value, text string }

// reportAttrs maps each value of attr in the document to its element's
// data-value and text; a key seen twice fails the test.
func reportAttrs(tb testing.TB, doc *html.Node, attr string) map[string]reportCell {
	tb.Helper()
	out := map[string]reportCell{}
	htmlWalk(doc, func(n *html.Node) {
		if k, ok := htmlAttr(n, attr); ok {
			if _, dup := out[k]; dup {
				tb.Errorf("%s=%q appears twice", attr, k)
			}
			v, _ := htmlAttr(n, "data-value")
			out[k] = reportCell{v, strings.TrimSpace(htmlText(n))}
		}
	})
	return out
}

func checkReportMetrics(tb testing.TB, got map[string]reportCell, want map[string]float64) {
	tb.Helper()
	for name, w := range want {
		c, ok := got[name]
		if !ok {
			tb.Errorf("metric %s missing", name)
			continue
		}
		v, err := strconv.ParseFloat(c.value, 64)
		if err != nil || v != w {
			tb.Errorf("metric %s data-value=%q, want %v", name, c.value, w)
		}
		if c.text == "" {
			tb.Errorf("metric %s has no visible text", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			tb.Errorf("unexpected metric %s", name)
		}
	}
}

func decodeReportResult(tb testing.TB, doc *html.Node) Result {
	tb.Helper()
	n := htmlByID(doc, "den-result")
	if n == nil || n.Data != "script" {
		tb.Fatal("no <script id=den-result>")
	}
	if typ, _ := htmlAttr(n, "type"); typ != "application/json" {
		tb.Errorf("den-result type = %q", typ)
	}
	var r Result
	if err := json.Unmarshal([]byte(htmlText(n)), &r); err != nil {
		tb.Fatalf("den-result JSON: %v", err)
	}
	return r
}

func htmlWalk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		htmlWalk(c, f)
	}
}

func htmlFind(n *html.Node, match func(*html.Node) bool) *html.Node {
	var hit *html.Node
	htmlWalk(n, func(c *html.Node) {
		if hit == nil && match(c) {
			hit = c
		}
	})
	return hit
}

func htmlByID(doc *html.Node, id string) *html.Node {
	return htmlFind(doc, func(n *html.Node) bool {
		v, ok := htmlAttr(n, "id")
		return ok && v == id
	})
}

func htmlAttr(n *html.Node, key string) (string, bool) {
	if n.Type != html.ElementNode {
		return "", false
	}
	for _, a := range n.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func htmlText(n *html.Node) string {
	var b strings.Builder
	htmlWalk(n, func(c *html.Node) {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	})
	return b.String()
}
