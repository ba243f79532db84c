package loadtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// WriteReport writes r as one self-contained HTML page: a summary, the
// errors, the thresholds, SVG charts of the series and the whole Result as
// JSON in <script type="application/json" id="den-result">. The page needs
// no network and no JavaScript, so it can be archived with the run and
// opened anywhere. Every summary value carries data-metric and data-value
// attributes so scripts can read the page without parsing display text.
func (r *Result) WriteReport(w io.Writer) error {
	// Marshal first: a non-finite float makes this fail, and a report whose
	// embedded data is missing would mislead more than no report.
	js, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("loadtest: report: %w", err)
	}
	started := "start time unknown"
	if !r.Started.IsZero() {
		started = r.Started.Format("2006-01-02 15:04:05 MST")
	}
	d := reportData{
		R:        r,
		Title:    fmt.Sprintf("den loadtest: %s, %s", r.Scenario, started),
		Headline: reportHeadline(r),
		Metrics:  reportMetrics(r),
		Errors:   reportSortedCounts(r.Errors),
		Closes:   reportSortedCounts(r.CloseCodes),
		Charts:   reportCharts(r),
		// json.Marshal escapes <, > and & as \u003c and so on, so the text
		// cannot end the script element; template.JS keeps html/template
		// from quoting it as a JavaScript string.
		JSON: template.JS(js),
	}
	return reportTmpl.Execute(w, d)
}

type reportData struct {
	R               *Result
	Title, Headline string
	Metrics         []reportMetric
	Errors, Closes  []reportCount
	Charts          []template.HTML
	JSON            template.JS
}

// reportMetric is one summary row: Raw is for machines, Text for people.
type reportMetric struct{ Name, Label, Raw, Text string }

type reportCount struct {
	Key string
	N   int64
}

func reportInt(name, label string, v int64) reportMetric {
	return reportMetric{name, label, strconv.FormatInt(v, 10), group(v)}
}

func reportFloat(name, label string, v float64, text string) reportMetric {
	return reportMetric{name, label, strconv.FormatFloat(v, 'g', -1, 64), text}
}

func reportMS(name, label string, v float64) reportMetric {
	return reportFloat(name, label, v, reportNum(v)+" ms")
}

func reportMetrics(r *Result) []reportMetric {
	c := &r.Counters
	m := []reportMetric{
		reportInt("target", "Target connections", int64(r.Target)),
		reportInt("peak_open", "Peak open", r.PeakOpen),
		reportInt("opened", "Opened", c.Opened),
		reportInt("failed", "Failed", c.Failed),
		reportInt("lost", "Lost", c.Lost),
		reportInt("closed", "Closed by client", c.Closed),
		reportInt("sent", "Messages sent", c.Sent),
		reportInt("received", "Messages received", c.Received),
		reportInt("delivered", "Delivered", c.Delivered),
		reportInt("echoed", "Echoed", c.Echoed),
	}
	if r.Expected != 0 {
		m = append(m, reportInt("expected", "Expected deliveries or echoes", r.Expected))
	}
	if c.Scheduled != 0 {
		m = append(m,
			reportInt("scheduled", "Sends due by the rate", c.Scheduled),
			reportInt("skipped", "Skipped (server not reading)", c.Skipped),
			reportInt("unsent", "Unsent (run or connection ended first)", c.Unsent),
		)
	}
	m = append(m,
		reportFloat("connect_rate", "Connect rate (ramp)", r.ConnectRate, reportNum(r.ConnectRate)+" conn/s"),
		reportFloat("message_rate", "Message rate (traffic)", r.MessageRate, reportNum(r.MessageRate)+" msg/s"),
		reportMS("p50", "Latency p50", r.Latency.P50),
		reportMS("p90", "Latency p90", r.Latency.P90),
		reportMS("p99", "Latency p99", r.Latency.P99),
		reportMS("p999", "Latency p99.9", r.Latency.P999),
		reportMS("max", "Latency max", r.Latency.Max),
		reportMS("connect_p50", "Connect p50", r.Connect.P50),
		reportMS("connect_p99", "Connect p99", r.Connect.P99),
		reportMS("connect_max", "Connect max", r.Connect.Max),
		reportFloat("client_bytes_per_conn", "Client memory per connection", r.Client.BytesPerConn, reportBytes(r.Client.BytesPerConn)),
	)
	if l := r.SendLag; l != nil {
		m = append(m,
			reportMS("send_lag_p99", "Send lag p99 (client)", l.P99),
			reportMS("send_lag_max", "Send lag max (client)", l.Max),
		)
	}
	if s := r.Server; s != nil {
		m = append(m,
			reportFloat("server_bytes_per_conn", "Server memory per connection", s.BytesPerConn, reportBytes(s.BytesPerConn)),
			reportMetric{"server_hold_rss", "Server RSS at hold", strconv.FormatInt(s.HoldRSS, 10), reportBytes(float64(s.HoldRSS))},
		)
		if s.NanosPerMessage != 0 {
			m = append(m, reportFloat("server_cpu_ns_per_message", "Server CPU per message", s.NanosPerMessage, reportNum(s.NanosPerMessage)+" ns"))
		}
	}
	if st := r.Steadiness; st != nil {
		m = append(m,
			reportFloat("steadiness_p99_us", "Fixed CPU task p99 (steadiness)", st.P99, reportNum(st.P99)+" µs"),
			reportFloat("steadiness_slow_fraction", "Fixed CPU task over twice its median", st.SlowFraction, reportNum(100*st.SlowFraction)+" %"),
		)
	}
	return m
}

func reportHeadline(r *Result) string {
	s := fmt.Sprintf("%s run: %s target connections, %d workers × %d loops, %s s (ramp %s s, traffic %s s).",
		r.Scenario, group(int64(r.Target)), r.Workers, r.Loops,
		reportNum(r.Seconds), reportNum(r.RampSeconds), reportNum(r.TrafficSeconds))
	if r.StoppedBy != "" {
		s += " Stopped short of the target by " + r.StoppedBy + "."
	}
	if r.Interrupted {
		s += " Interrupted by a signal."
	}
	return s
}

// reportSortedCounts puts the commonest first, so the cause of most failures is
// the first row read; names break ties so the order is stable.
func reportSortedCounts(m map[string]int64) []reportCount {
	out := make([]reportCount, 0, len(m))
	for k, v := range m {
		out = append(out, reportCount{k, v})
	}
	slices.SortFunc(out, func(a, b reportCount) int {
		return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// reportNum keeps about three significant digits below 100 and whole,
// grouped numbers above: enough to compare runs, few enough to read.
func reportNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case a == 0:
		return "0"
	case a >= 100:
		return group(int64(math.Round(v)))
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func reportBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return reportNum(v) + " B"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}

// chartSeries is one line of a chart.
type chartSeries struct {
	name, color string
	y           []float64
}

func reportCharts(r *Result) []template.HTML {
	col := func(f func(p *Point) float64) []float64 {
		ys := make([]float64, len(r.Series))
		for i := range r.Series {
			ys[i] = f(&r.Series[i])
		}
		return ys
	}
	xs := col(func(p *Point) float64 { return p.T })
	out := []template.HTML{
		svgChart("chart-connections", "Connections", xs,
			chartSeries{"open", chartColors[0], col(func(p *Point) float64 { return float64(p.Open) })},
			chartSeries{"failed", chartColors[1], col(func(p *Point) float64 { return float64(p.Failed) })}),
		svgChart("chart-messages", "Rates, per second", xs,
			chartSeries{"sent", chartColors[0], col(func(p *Point) float64 { return p.SendRate })},
			chartSeries{"received", chartColors[2], col(func(p *Point) float64 { return p.RecvRate })},
			chartSeries{"connects", chartColors[3], col(func(p *Point) float64 { return p.ConnectRate })}),
		svgChart("chart-latency", "Latency, ms", xs,
			chartSeries{"p50", chartColors[0], col(func(p *Point) float64 { return p.P50 })},
			chartSeries{"p99", chartColors[3], col(func(p *Point) float64 { return p.P99 })},
			chartSeries{"max", chartColors[1], col(func(p *Point) float64 { return p.Max })}),
	}
	if slices.ContainsFunc(r.Series, func(p Point) bool { return p.ServerRSS > 0 }) {
		out = append(out, svgChart("chart-server", "Server RSS, MiB", xs,
			chartSeries{"rss", chartColors[2], col(func(p *Point) float64 { return float64(p.ServerRSS) / (1 << 20) })}))
	}
	return out
}

var chartColors = []string{"#2563eb", "#dc2626", "#16a34a", "#9333ea"}

const (
	chartW, chartH                 = 760.0, 250.0
	chartL, chartR, chartT, chartB = 60.0, 12.0, 30.0, 30.0
)

// svgChart draws ss against xs (seconds) as an SVG line chart. The y
// scale starts at zero so heights compare across runs. Values are finite:
// WriteReport fails on NaN and Inf before it draws.
func svgChart(id, title string, xs []float64, ss ...chartSeries) template.HTML {
	var b strings.Builder
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	fmt.Fprintf(&b, `<svg id="%s" class="chart" viewBox="0 0 %g %g" role="img" aria-label="%s">`,
		id, chartW, chartH, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%g" y="16" class="title">%s</text>`, chartL, template.HTMLEscapeString(title))
	if len(xs) == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" class="nodata">no data</text></svg>`, chartW/2, chartH/2)
		return template.HTML(b.String())
	}
	x0, x1, ymax := slices.Min(xs), slices.Max(xs), 0.0
	if x1 <= x0 { // one point, or all at one time: centre it
		x0, x1 = x0-0.5, x1+0.5
	}
	for _, s := range ss {
		for _, v := range s.y {
			ymax = max(ymax, v)
		}
	}
	ystep := chartStep(ymax / 4)
	ymax = max(ystep*math.Ceil(ymax/ystep), ystep)
	pw, ph := chartW-chartL-chartR, chartH-chartT-chartB
	px := func(x float64) float64 { return chartL + (x-x0)/(x1-x0)*pw }
	py := func(y float64) float64 { return chartT + ph - max(y, 0)/ymax*ph }

	for i := 0; float64(i)*ystep <= ymax*(1+1e-9); i++ {
		v := float64(i) * ystep
		fmt.Fprintf(&b, `<line class="grid" x1="%g" x2="%g" y1="%s" y2="%s"/>`, chartL, chartW-chartR, f(py(v)), f(py(v)))
		fmt.Fprintf(&b, `<text x="%g" y="%s" text-anchor="end">%s</text>`, chartL-6, f(py(v)+4), chartTick(v))
	}
	// Index from a whole multiple of the step so float drift cannot stall
	// the loop when the times are large and the span small.
	xstep := chartStep((x1 - x0) / 6)
	k := math.Ceil(x0 / xstep)
	for i := 0.0; i < 12 && (k+i)*xstep <= x1; i++ {
		v := (k + i) * xstep
		fmt.Fprintf(&b, `<text x="%s" y="%g" text-anchor="middle">%ss</text>`, f(px(v)), chartH-chartB+16, chartTick(v))
	}
	fmt.Fprintf(&b, `<path class="axis" fill="none" d="M%g %g V%g H%g"/>`, chartL, chartT, chartH-chartB, chartW-chartR)

	for i, s := range ss {
		pts := make([]string, 0, len(s.y))
		for j, v := range s.y {
			pts = append(pts, f(px(xs[j]))+","+f(py(v)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(pts, " "))
		if len(pts) == 1 { // a lone point draws no line
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`, f(px(xs[0])), f(py(s.y[0])), s.color)
		}
		lx := chartW - chartR - float64(len(ss)-i)*90
		fmt.Fprintf(&b, `<rect x="%g" y="8" width="10" height="10" fill="%s"/><text x="%g" y="17">%s</text>`,
			lx, s.color, lx+14, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// chartStep is the smallest 1, 2 or 5 times a power of ten at least x, so
// tick labels are round numbers.
func chartStep(x float64) float64 {
	if !(x > 0) || math.IsInf(x, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func chartTick(v float64) string {
	suffix := ""
	for _, u := range []string{"k", "M", "G"} {
		if math.Abs(v) < 1000 {
			break
		}
		v, suffix = v/1000, u
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + suffix
}

var reportTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:62em;margin:2em auto;padding:0 1em}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}th,td{padding:.2em .9em;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#b45309}.pass{color:#16a34a}.fail{color:#dc2626;font-weight:bold}.none{color:#888}
svg.chart{display:block;width:100%;height:auto;margin:1em 0;font-size:11px}
svg text{fill:#444}svg .title{font-weight:bold;font-size:12px}svg .nodata{fill:#999;text-anchor:middle}
svg .grid{stroke:#eee}svg .axis{stroke:#888}
</style></head>
<body>
<h1>{{.Title}}</h1>
<p{{if or .R.StoppedBy .R.Interrupted}} class="warn"{{end}}>{{.Headline}}</p>
{{with .R.Server}}<p>Server sampled from {{.Source}}.</p>{{end}}
{{if .R.Client.InProcess}}<p>The workers ran in the calling process; client memory includes it.</p>{{end}}
<h2>Summary</h2>
<table>
{{range .Metrics}}<tr><th>{{.Label}}</th><td class="n" data-metric="{{.Name}}" data-value="{{.Raw}}">{{.Text}}</td></tr>
{{end}}</table>
<h2>Errors</h2>
{{if .Errors}}<table><tr><th>Kind</th><th>Count</th></tr>
{{range .Errors}}<tr><td>{{.Key}}</td><td class="n" data-error="{{.Key}}">{{.N}}</td></tr>
{{end}}</table>{{else}}<p class="none">none</p>{{end}}
<h2>Close codes</h2>
{{if .Closes}}<table><tr><th>Code</th><th>Count</th></tr>
{{range .Closes}}<tr><td>{{.Key}}</td><td class="n" data-close="{{.Key}}">{{.N}}</td></tr>
{{end}}</table>{{else}}<p class="none">none</p>{{end}}
{{if .R.Thresholds}}<h2>Thresholds</h2>
<table><tr><th>Check</th><th>Value</th><th>Result</th></tr>
{{range .R.Thresholds}}<tr><td>{{.Expr}}</td><td class="n">{{.Value}}</td>{{if .Pass}}<td class="pass" data-pass="true">pass</td>{{else}}<td class="fail" data-pass="false">FAIL</td>{{end}}</tr>
{{end}}</table>{{end}}
<h2>Over time</h2>
{{range .Charts}}{{.}}{{end}}
<script type="application/json" id="den-result">{{.JSON}}</script>
</body></html>
`))
