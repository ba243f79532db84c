package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times; it is 100
// on every Linux architecture Go runs on.
const clockTicks = 100

// serverProbe reads a server's memory and CPU: from /proc for local
// processes, or from Prometheus metrics (process_resident_memory_bytes and
// process_cpu_seconds_total, as the Go client's process collector exports).
// With several, the figures are summed: several processes serve one run.
type serverProbe struct {
	pids   []int
	urls   []string
	client *http.Client
}

func newServerProbe(pids []int, urls []string) *serverProbe {
	if len(pids) == 0 && len(urls) == 0 {
		return nil
	}
	return &serverProbe{pids: pids, urls: urls, client: &http.Client{Timeout: 2 * time.Second}}
}

func (p *serverProbe) source() string {
	var parts []string
	for _, pid := range p.pids {
		parts = append(parts, "pid "+strconv.Itoa(pid))
	}
	return strings.Join(append(parts, p.urls...), ", ")
}

// sample returns resident bytes and CPU seconds, or an error naming the
// source that could not be read.
func (p *serverProbe) sample(ctx context.Context) (rss int64, cpu float64, err error) {
	for _, pid := range p.pids {
		r, c, err := procSample(pid)
		if err != nil {
			return 0, 0, err
		}
		rss += r
		cpu += c
	}
	for _, u := range p.urls {
		r, c, err := p.metricsSample(ctx, u)
		if err != nil {
			return 0, 0, err
		}
		rss += r
		cpu += c
	}
	return rss, cpu, nil
}

func procSample(pid int) (int64, float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("server pid %d: %w", pid, err)
	}
	// The command name may hold spaces and parentheses; fields start after
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 22 {
		return 0, 0, fmt.Errorf("server pid %d: unreadable /proc stat", pid)
	}
	// After ')': state is field 3 of stat(5), so field k is f[k-3].
	utime, _ := strconv.ParseInt(f[14-3], 10, 64)
	stime, _ := strconv.ParseInt(f[15-3], 10, 64)
	rssPages, _ := strconv.ParseInt(f[24-3], 10, 64)
	return rssPages * int64(unix.Getpagesize()), float64(utime+stime) / clockTicks, nil
}

func (p *serverProbe) metricsSample(ctx context.Context, url string) (int64, float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("metrics %s: %w", url, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("metrics %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("metrics %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, 0, fmt.Errorf("metrics %s: %w", url, err)
	}
	mem, ok := fams["process_resident_memory_bytes"]
	if !ok || len(mem.GetMetric()) == 0 {
		return 0, 0, fmt.Errorf("metrics %s: no process_resident_memory_bytes", url)
	}
	rss := int64(mem.GetMetric()[0].GetGauge().GetValue())
	var cpu float64
	if c, ok := fams["process_cpu_seconds_total"]; ok && len(c.GetMetric()) > 0 {
		cpu = c.GetMetric()[0].GetCounter().GetValue()
	}
	return rss, cpu, nil
}

// fileLimit raises this process's open-file limit as far as it may go and
// returns it.
func raiseFileLimit() uint64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
			_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
		}
	}
	return lim.Cur
}
