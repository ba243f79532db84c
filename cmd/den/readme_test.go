package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/server"
)

// The README sections whose tables these tests hold to the code.
const (
	readmePath           = "../../README.md"
	readmeFlagsHeading   = "### Configuration"
	readmeMetricsHeading = "### Metrics"
	serviceUnitPath      = "../../deploy/den.service"
)

// TestReadmeFlags: the README's flag table lists exactly the flags `den
// serve` defines, each with its DEN_ variable, and a default written as a
// value (in backticks) is the flag's real default.
func TestReadmeFlags(t *testing.T) {
	flags := serveFlags(t)
	rows := readmeTable(t, readmeFlagsHeading)
	flagCol, envCol, defCol := mdColumn(t, rows, "flag"), mdColumn(t, rows, "environment"), mdColumn(t, rows, "default")

	documented := map[string]bool{}
	var extra, badEnv, badDefault []string
	for _, row := range rows.body {
		name := strings.TrimPrefix(mdCell(row[flagCol]), "--")
		documented[name] = true
		def, ok := flags[name]
		if !ok {
			extra = append(extra, "--"+name)
			continue
		}
		if want := envName(name); mdCell(row[envCol]) != want {
			badEnv = append(badEnv, fmt.Sprintf("--%s: README says %q, want %q", name, mdCell(row[envCol]), want))
		}
		if msg := checkFlagDefault(name, def, row[defCol]); msg != "" {
			badDefault = append(badDefault, msg)
		}
	}
	var missing []string
	for name := range flags {
		if !documented[name] {
			missing = append(missing, fmt.Sprintf("--%s (%s)", name, envName(name)))
		}
	}
	slices.Sort(missing)
	reportNames(t, "README.md, "+readmeFlagsHeading+": flags den serve defines that the table lacks", missing)
	reportNames(t, "README.md, "+readmeFlagsHeading+": flags in the table that den serve does not define", extra)
	reportNames(t, "README.md, "+readmeFlagsHeading+": wrong environment variables", badEnv)
	reportNames(t, "README.md, "+readmeFlagsHeading+": wrong defaults", badDefault)
}

// TestReadmeMetrics: the README's metrics table lists exactly the den_
// metrics a running node exposes on GET /metrics, each with its type, and
// no den_ metric carries a room's name or id as a label.
func TestReadmeMetrics(t *testing.T) {
	exposed, labels := scrapeMetrics(t)
	rows := readmeTable(t, readmeMetricsHeading)
	nameCol, typeCol := mdColumn(t, rows, "metric"), mdColumn(t, rows, "type")

	documented := map[string]bool{}
	var extra, badType, noName []string
	metricName := regexp.MustCompile(`den_[a-zA-Z0-9_]+`)
	for _, row := range rows.body {
		name := metricName.FindString(row[nameCol])
		if name == "" {
			noName = append(noName, row[nameCol])
			continue
		}
		documented[name] = true
		typ, ok := exposed[name]
		if !ok {
			extra = append(extra, name)
			continue
		}
		if got := mdCell(row[typeCol]); got != typ {
			badType = append(badType, fmt.Sprintf("%s: README says %q, /metrics says %q", name, got, typ))
		}
	}
	var missing []string
	for name, typ := range exposed {
		if !documented[name] {
			missing = append(missing, name+" ("+typ+")")
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	reportNames(t, "README.md, "+readmeMetricsHeading+": metrics GET /metrics exposes that the table lacks", missing)
	reportNames(t, "README.md, "+readmeMetricsHeading+": metrics in the table that GET /metrics does not expose "+
		"(a vector with no label values set is not exposed: set its known values to 0 when it is made)", extra)
	reportNames(t, "README.md, "+readmeMetricsHeading+": wrong types", badType)
	reportNames(t, "README.md, "+readmeMetricsHeading+": rows that name no den_ metric", noName)

	var perRoom []string
	for name, ls := range labels {
		for _, l := range ls {
			if l == "room" || l == "room_id" || l == "name" || l == "id" || l == "socket" {
				perRoom = append(perRoom, name+"{"+l+"}")
			}
		}
	}
	slices.Sort(perRoom)
	reportNames(t, "metrics labelled per room or socket (unbounded series)", perRoom)
}

// TestServiceUnit: deploy/den.service runs flags den defines and gives
// den's default shutdown time room to finish before systemd kills it.
func TestServiceUnit(t *testing.T) {
	b, err := os.ReadFile(serviceUnitPath)
	if err != nil {
		t.Fatal(err)
	}
	flags := serveFlags(t)
	keys := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			keys[k] = v
		}
	}
	for _, f := range regexp.MustCompile(`--([a-z0-9-]+)`).FindAllStringSubmatch(keys["ExecStart"], -1) {
		if _, ok := flags[f[1]]; !ok {
			t.Errorf("%s: ExecStart uses --%s, which den serve does not define", serviceUnitPath, f[1])
		}
	}
	stop, err := time.ParseDuration(keys["TimeoutStopSec"])
	if err != nil {
		t.Fatalf("%s: TimeoutStopSec %q: %v", serviceUnitPath, keys["TimeoutStopSec"], err)
	}
	if stop <= gateway.DefaultShutdownTimeout {
		t.Errorf("%s: TimeoutStopSec %v is not above den's --shutdown-timeout default %v", serviceUnitPath, stop, gateway.DefaultShutdownTimeout)
	}
	for k, want := range map[string]string{"KillSignal": "SIGTERM", "LimitNOFILE": "1048576", "StateDirectory": "den", "User": "den"} {
		if keys[k] != want {
			t.Errorf("%s: %s=%q, want %q", serviceUnitPath, k, keys[k], want)
		}
	}
}

// serveFlags returns every flag `den serve` defines with its default as
// -h prints it ("" for a zero default), read from the usage text that
// parseServe writes, so it sees the flag set exactly as den builds it.
func serveFlags(t *testing.T) map[string]string {
	t.Helper()
	var usage bytes.Buffer
	if _, err := parseServe([]string{"-h"}, &usage, func(string) string { return "" }); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("den serve -h: %v, want flag.ErrHelp", err)
	}
	// flag.PrintDefaults: "  -name type" then the indented help, which
	// ends "(default VALUE)" unless the default is the zero value.
	head := regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_-]*)`)
	def := regexp.MustCompile(`\(default (.*)\)$`)
	flags := map[string]string{}
	var last string
	for _, line := range strings.Split(usage.String(), "\n") {
		if m := head.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = ""
		} else if m := def.FindStringSubmatch(line); m != nil && last != "" {
			flags[last] = strings.Trim(m[1], `"`)
		}
	}
	if len(flags) == 0 {
		t.Fatalf("no flags found in den serve -h:\n%s", usage.String())
	}
	return flags
}

// envName is the DEN_ variable parseServe reads for a flag.
func envName(flagName string) string {
	return "DEN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// checkFlagDefault compares a README default cell with the flag's. A
// value in backticks must configure den exactly as leaving the flag out
// does (so `60s` matches a printed 1m0s); words ("off", "any") are
// allowed only where the default is the zero value.
func checkFlagDefault(name, def, cell string) string {
	if !strings.HasPrefix(cell, "`") {
		if def != "" {
			return fmt.Sprintf("--%s: README gives the default in words (%q); den's is %q: write it in backticks", name, cell, def)
		}
		return ""
	}
	none := func(string) string { return "" }
	base, err := parseServe(nil, io.Discard, none)
	if err != nil {
		return fmt.Sprintf("den serve with no flags: %v", err)
	}
	withREADME, err := parseServe([]string{"--" + name + "=" + mdCell(cell)}, io.Discard, none)
	if err != nil {
		return fmt.Sprintf("--%s: README's default %s is not accepted: %v (den's default is %q)", name, cell, err, def)
	}
	if !reflect.DeepEqual(base, withREADME) {
		return fmt.Sprintf("--%s: README says %s, den's default is %q", name, cell, def)
	}
	return ""
}

// scrapeMetrics starts a node, gives it a little traffic (a chat room's
// join, message and clean close; a join refused for an unknown kind; a
// counter increment over HTTP) so that vectors keyed by what happened
// have children, and reads GET /metrics: each den_ metric family with
// its type, and the label names its samples carry. A histogram's
// _bucket, _sum and _count are its family.
func scrapeMetrics(t *testing.T) (types map[string]string, labels map[string][]string) {
	t.Helper()
	srv, err := server.New(server.Config{Data: t.TempDir(), Gateway: gateway.Config{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	addr := srv.Addr().String()
	readmeChatRoundTrip(t, addr)
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/rooms/no-such-kind/readme", nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("joining an unknown kind: %v, want a 404", err)
	}
	resp, err := http.Post("http://"+addr+"/rooms/counter/readme/increment", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	types, labels = map[string]string{}, map[string][]string{}
	labelName := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		line := lines.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE den_"); ok {
			name, typ, _ := strings.Cut(rest, " ")
			types["den_"+name] = typ
			continue
		}
		if !strings.HasPrefix(line, "den_") {
			continue
		}
		series, _, _ := strings.Cut(line, " ")
		name, ls, _ := strings.Cut(series, "{")
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && (types[base] == "histogram" || types[base] == "summary") {
				family = base
			}
		}
		if _, ok := types[family]; !ok {
			types[family] = "untyped"
		}
		for _, m := range labelName.FindAllStringSubmatch(ls, -1) {
			if m[1] != "le" && m[1] != "quantile" && !slices.Contains(labels[family], m[1]) {
				labels[family] = append(labels[family], m[1])
			}
		}
	}
	if err := lines.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) == 0 {
		t.Fatal("GET /metrics exposed no den_ metric")
	}
	return types, labels
}

// readmeChatRoundTrip joins a chat room, sends a message, waits for it
// to come back durable, then closes cleanly and waits for den's close
// frame.
func readmeChatRoundTrip(t *testing.T, addr string) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/rooms/chat/readme?user=ann", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"message","text":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the chat message: %v", err)
		}
		var m struct{ Type string }
		if json.Unmarshal(data, &m) == nil && m.Type == "message" {
			break
		}
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("waiting for den's close frame: %v", err)
			}
			return
		}
	}
}

// mdTable is a markdown table: its header cells (lower case) and its rows.
type mdTable struct {
	header []string
	body   [][]string
}

// readmeTable returns the first table under heading in the README, up to
// the next heading of the same or a higher level.
func readmeTable(t *testing.T, heading string) mdTable {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	level := strings.IndexFunc(heading, func(r rune) bool { return r != '#' })
	var tab mdTable
	in, fenced, started := false, false, false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if !fenced && strings.HasPrefix(line, "#") {
			if in {
				if l := strings.IndexFunc(line, func(r rune) bool { return r != '#' }); l <= level {
					break
				}
			}
			if strings.TrimSpace(line) == heading {
				in = true
			}
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if started {
				break
			}
			continue
		}
		started = true
		cells := mdRow(line)
		switch {
		case tab.header == nil:
			for _, c := range cells {
				tab.header = append(tab.header, strings.ToLower(c))
			}
		case strings.Trim(strings.Join(cells, ""), "-: ") == "":
			// the |---|---| line
		default:
			if len(cells) != len(tab.header) {
				t.Fatalf("README.md, %s: row has %d cells, header %d: %s", heading, len(cells), len(tab.header), line)
			}
			tab.body = append(tab.body, cells)
		}
	}
	if !in {
		t.Fatalf("README.md has no heading %q", heading)
	}
	if len(tab.body) == 0 {
		t.Fatalf("README.md, %s: no table", heading)
	}
	return tab
}

// mdRow splits "| a | b \| c |" into its trimmed cells.
func mdRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// mdColumn is the index of the first header cell containing word.
func mdColumn(t *testing.T, tab mdTable, word string) int {
	t.Helper()
	for i, h := range tab.header {
		if strings.Contains(h, word) {
			return i
		}
	}
	t.Fatalf("README table %v has no %q column", tab.header, word)
	return -1
}

func mdCell(cell string) string { return strings.Trim(cell, "` ") }

// reportNames fails the test with every name in list, one a line.
func reportNames(t *testing.T, what string, list []string) {
	t.Helper()
	if len(list) > 0 {
		t.Errorf("%s:\n\t%s", what, strings.Join(list, "\n\t"))
	}
}
