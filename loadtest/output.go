package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// progress prints one line per interval: rewritten in place on a
// terminal, appended otherwise.
type progress struct {
	out      io.Writer
	terminal bool
	wrote    bool
}

var phaseNames = [...]string{"connect", "traffic", "drain", "close"}

func (p *progress) print(pt *Point, phase int32) {
	line := fmt.Sprintf("%6.1fs %-7s open %s  failed %s  +%s/s  sent %s/s  recv %s/s  p99 %s",
		pt.T, phaseNames[phase], group(pt.Open), group(pt.Failed), group(int64(pt.ConnectRate)),
		group(int64(pt.SendRate)), group(int64(pt.RecvRate)), ms(pt.P99))
	if p.terminal {
		fmt.Fprintf(p.out, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.out, line)
	}
	p.wrote = true
}

// done ends a line left open on a terminal.
func (p *progress) done() {
	if p.terminal && p.wrote {
		fmt.Fprintln(p.out)
	}
}

// group formats n with thousands separators.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func ms(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v < 1:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 100:
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

func bytesText(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.2f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// limitText says in words what each error kind means when it stops a ramp.
var limitText = map[string]string{
	kindClientFiles:  "the client's open-file limit (EMFILE): use more --workers",
	kindSystemFiles:  "the system's open-file limit (ENFILE, fs.file-max)",
	kindPorts:        "local ports (EADDRNOTAVAIL): spread connections over more --source addresses",
	kindMemory:       "memory (ENOMEM/ENOBUFS)",
	kindRefused:      "the server refusing TCP connections (ECONNREFUSED)",
	kindReset:        "the server resetting connections",
	kindTimeout:      "connections timing out (the server's accept queue, or a server too slow to answer)",
	kindEOF:          "the server hanging up without a close frame",
	kindBadHandshake: "the server answering the upgrade wrongly",
	kindUnreachable:  "the network (host or net unreachable)",
}

// stoppedBy names the limit that kept the run from its target, from the
// commonest reason connections failed or were lost.
func stoppedBy(r *Result) string {
	if r.PeakOpen >= int64(r.Target) {
		return ""
	}
	kind, n := "", int64(0)
	for k, v := range r.Errors {
		if v > n || v == n && k < kind {
			kind, n = k, v
		}
	}
	for code, v := range r.CloseCodes {
		if v > n {
			kind, n = "close_"+code, v
		}
	}
	switch {
	case r.Interrupted && r.Counters.Dials < int64(r.Target):
		return "interrupted before the target was reached"
	case r.Counters.Dials < int64(r.Target):
		return fmt.Sprintf("time: --duration ended with %s of %s connections tried (raise --rate, --concurrency or --duration)",
			group(r.Counters.Dials), group(int64(r.Target)))
	case kind == "" && r.Counters.Aborted > 0:
		return fmt.Sprintf("%s connections still opening when the run ended (interrupted, or raise --duration or --connect-timeout)",
			group(r.Counters.Aborted))
	case kind == "":
		return "unknown: no connection failed, yet the target was not reached"
	case strings.HasPrefix(kind, "http_"):
		return fmt.Sprintf("the server refusing upgrades with HTTP %s (%s times)", kind[5:], group(n))
	case strings.HasPrefix(kind, "close_"):
		return fmt.Sprintf("the server closing connections with code %s (%s times)", kind[6:], group(n))
	}
	text, ok := limitText[kind]
	if !ok {
		text = kind
	}
	return fmt.Sprintf("%s (%s connections)", text, group(n))
}

// WriteSummary writes the result as a table for people.
func (r *Result) WriteSummary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	c := &r.Counters
	row("scenario", fmt.Sprintf("%s, %d worker(s) × %d loop(s), %.1fs", r.Scenario, r.Workers, r.Loops, r.Seconds))
	row("connections", fmt.Sprintf("target %s, peak open %s, opened %s, failed %s, lost %s",
		group(int64(r.Target)), group(r.PeakOpen), group(c.Opened), group(c.Failed), group(c.Lost)))
	row("ramp", fmt.Sprintf("%.2fs, %s connections/s", r.RampSeconds, group(int64(r.ConnectRate))))
	if r.StoppedBy != "" {
		row("stopped by", r.StoppedBy)
	}
	if r.Interrupted {
		row("interrupted", "yes")
	}
	if c.Sent+c.Received > 0 {
		row("messages", fmt.Sprintf("sent %s, received %s (delivered %s, echoed %s), %s/s received",
			group(c.Sent), group(c.Received), group(c.Delivered), group(c.Echoed), group(int64(r.MessageRate))))
	}
	if r.Expected > 0 {
		row("expected", fmt.Sprintf("%s, missing %s", group(r.Expected), group(r.missing())))
	}
	if c.Skipped > 0 {
		row("skipped sends", group(c.Skipped)+" (the server was not reading)")
	}
	if c.Scheduled > 0 {
		row("scheduled", scheduleText(c))
	}
	pct := func(p Percentiles) string {
		if p.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%s)",
			ms(p.P50), ms(p.P90), ms(p.P99), ms(p.P999), ms(p.Max), group(p.Count))
	}
	row("latency", pct(r.Latency))
	if r.SendLag != nil {
		row("send lag", pct(*r.SendLag)+" (how late the client sent timed messages: part of the latency)")
	}
	switch r.LatencyFrom {
	case LatencyFromSchedule:
		row("latency from", "when each message was due by its rate: a send held up by the client or the server counts its wait")
	case LatencyFromSend:
		row("latency from", "when each message was sent, the next when it is back (closed loop: a stall delays sends, not counted as latency; --msg-rate times from the schedule)")
	}
	row("connect", pct(r.Connect))
	row("errors", countsText(r.Errors))
	row("close codes", countsText(r.CloseCodes))
	mem := fmt.Sprintf("%s RSS, %s per connection", bytesText(float64(r.Client.RSSBytes)), bytesText(r.Client.BytesPerConn))
	if r.Client.InProcess {
		mem += " (in-process: includes whatever else this process holds)"
	}
	row("client memory", mem)
	switch s := r.Server; {
	case s == nil:
	case s.HoldRSS == 0:
		row("server memory", fmt.Sprintf("%s before; not sampled at the end of the hold (%s)", bytesText(float64(s.BaseRSS)), s.Source))
	default:
		row("server memory", fmt.Sprintf("%s → %s with %s open: %s per connection (%s)",
			bytesText(float64(s.BaseRSS)), bytesText(float64(s.HoldRSS)), group(s.OpenAtHold), bytesText(s.BytesPerConn), s.Source))
		if s.NanosPerMessage > 0 {
			row("server cpu", fmt.Sprintf("%.2fs in traffic, %.3f µs per message received", s.CPUSeconds, s.NanosPerMessage/1000))
		}
	}
	if st := r.Steadiness; st != nil {
		row("steadiness", fmt.Sprintf("a fixed CPU task every %s took p50 %.0f µs, p99 %.0f µs, max %.0f µs; %.1f%% of %s over twice the median",
			steadyEvery, st.P50, st.P99, st.Max, 100*st.SlowFraction, group(st.Samples)))
	}
	for _, t := range r.Thresholds {
		verdict := "pass"
		if !t.Pass {
			verdict = "FAIL"
		}
		row("threshold", fmt.Sprintf("%s: %s (value %g)", t.Expr, verdict, t.Value))
	}
	tw.Flush()
}

// scheduleText accounts for the timetable's sends.
func scheduleText(c *Counters) string {
	s := group(c.Scheduled) + " sends due"
	if c.Skipped == 0 && c.Unsent == 0 {
		return s + ", all sent"
	}
	return fmt.Sprintf("%s: %s skipped (the server was not reading), %s unsent (the run or the connection ended first), so not timed",
		s, group(c.Skipped), group(c.Unsent))
}

func countsText(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range reportSortedCounts(m) {
		parts = append(parts, c.Key+" "+group(c.N))
	}
	return strings.Join(parts, ", ")
}

// WriteJSON writes the result as one JSON document.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
