package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/den-rooms/den/internal/wsframe"
)

// The BenchmarkServer* benchmarks run den (this test binary as the bench
// server of bench_server_test.go) in a child process and load it from
// this one over loopback, so the server's CPU time and memory are its
// own. They are small load clients until den's load generator exists:
//
//	go test ./gateway -run '^$' -bench Server -benchtime 1x
//
// Custom metrics: server µs of CPU per connection, round trip or
// delivered frame; bytes of server RSS per idle socket.

// benchServer is a den child process.
type benchServer struct {
	addr string
	pid  int
}

func startBenchServer(b *testing.B) *benchServer {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=127.0.0.1:0")
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("bench server: %v", err)
	}
	return &benchServer{addr: strings.TrimSpace(line), pid: cmd.Process.Pid}
}

// cpu returns the server's user+system CPU time so far.
func (s *benchServer) cpu(b *testing.B) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * (time.Second / 100) // USER_HZ
}

// rss returns the server's resident set size in bytes.
func (s *benchServer) rss(b *testing.B) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func upgradeRequest(path string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: den\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n")
}

// connectMany opens n WebSockets to path with an epoll loop of nonblocking
// sockets, at most inflight handshakes at a time, spread over 64 loopback
// source addresses. It returns the open descriptors.
func connectMany(b *testing.B, addr, path string, n, inflight int) []int {
	b.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	var sa unix.SockaddrInet4
	sa.Port = p
	copy(sa.Addr[:], net.ParseIP(host).To4())
	req := upgradeRequest(path)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(ep)
	sent := map[int]bool{}
	fds := make([]int, 0, n)
	started := 0
	start := func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatalf("socket after %d: %v", started, err)
		}
		// Choose the port at connect time, so ports in TIME_WAIT from
		// earlier runs are reused per destination.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		_ = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 1, byte(started%64 + 1)}})
		if err := unix.Connect(fd, &sa); err != nil && err != unix.EINPROGRESS {
			b.Fatalf("connect: %v", err)
		}
		sent[fd] = false
		_ = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLIN, Fd: int32(fd)})
		started++
	}
	for started < n && started < inflight {
		start()
	}
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 1024)
	for len(fds) < n {
		k, err := unix.EpollWait(ep, events, 10000)
		if err == unix.EINTR {
			continue
		}
		if err != nil || k == 0 {
			b.Fatalf("connecting stalled at %d of %d: %v", len(fds), n, err)
		}
		for _, ev := range events[:k] {
			fd := int(ev.Fd)
			if !sent[fd] {
				if ev.Events&unix.EPOLLOUT != 0 {
					_, _ = unix.Write(fd, req)
					sent[fd] = true
					_ = unix.EpollCtl(ep, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
				}
				continue
			}
			m, _ := unix.Read(fd, buf)
			if m < 12 || !bytes.HasPrefix(buf[:m], []byte("HTTP/1.1 101 ")) {
				b.Fatalf("handshake %d: %q", len(fds), buf[:max(m, 0)])
			}
			_ = unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil)
			delete(sent, fd)
			fds = append(fds, fd)
			if started < n {
				start()
			}
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// BenchmarkServerConnect: new WebSocket connections per second and the
// server's CPU per connection. One op is one connection.
func BenchmarkServerConnect(b *testing.B) {
	srv := startBenchServer(b)
	n := min(b.N, 15000)
	cpu0, t0 := srv.cpu(b), time.Now()
	fds := connectMany(b, srv.addr, "/rooms/echo/connect", n, 256)
	el, cpu := time.Since(t0), srv.cpu(b)-cpu0
	closeAll(fds)
	b.ReportMetric(float64(n)/el.Seconds(), "conns/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "server-µs/conn")
}

// BenchmarkServerIdle: server RSS per idle open socket (RSS delta over the
// sockets, after a settle).
func BenchmarkServerIdle(b *testing.B) {
	for _, n := range []int{10000, 19000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			srv := startBenchServer(b)
			time.Sleep(500 * time.Millisecond) // let the fresh process settle before the baseline
			before := srv.rss(b)
			fds := connectMany(b, srv.addr, "/rooms/echo/idle", n, 256)
			time.Sleep(3 * time.Second) // the same settle as the shared load client
			after := srv.rss(b)
			closeAll(fds)
			b.ReportMetric(float64(after-before)/float64(n), "server-B/socket")
		})
	}
}

// wsConn is a blocking benchmark client socket.
type wsConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialWS(b *testing.B, addr, path string, i int) *wsConn {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(i%64+1))}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c.Write(upgradeRequest(path))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if line == "\r\n" {
			return &wsConn{c: c, br: br}
		}
	}
}

// readFrame reads one unmasked server frame's payload into buf.
func (w *wsConn) readFrame(buf []byte) ([]byte, wsframe.Opcode, error) {
	var hdr [10]byte
	if _, err := io.ReadFull(w.br, hdr[:2]); err != nil {
		return nil, 0, err
	}
	n := int(hdr[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(w.br, hdr[2:4]); err != nil {
			return nil, 0, err
		}
		n = int(binary.BigEndian.Uint16(hdr[2:4]))
	case 127:
		if _, err := io.ReadFull(w.br, hdr[2:10]); err != nil {
			return nil, 0, err
		}
		n = int(binary.BigEndian.Uint64(hdr[2:10]))
	}
	buf = slices.Grow(buf[:0], n)[:n]
	_, err := io.ReadFull(w.br, buf)
	return buf, wsframe.Opcode(hdr[0] & 0xf), err
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[int(float64(len(d)-1)*q)]
}

// BenchmarkServerEcho: 1,000 sockets doing echo round trips. One op is
// one round trip.
func BenchmarkServerEcho(b *testing.B) {
	const sockets = 1000
	srv := startBenchServer(b)
	conns := make([]*wsConn, sockets)
	for i := range conns {
		conns[i] = dialWS(b, srv.addr, "/rooms/echo/rt", i)
	}
	frame := wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpBinary, bytes.Repeat([]byte("x"), 64), testMask)
	var next atomic.Int64
	lats := make([][]time.Duration, sockets)
	var wg sync.WaitGroup
	cpu0, t0 := srv.cpu(b), time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for next.Add(1) <= int64(b.N) {
				t := time.Now()
				c.c.Write(frame)
				var err error
				if buf, _, err = c.readFrame(buf); err != nil {
					b.Error(err)
					return
				}
				lats[i] = append(lats[i], time.Since(t))
			}
		}()
	}
	wg.Wait()
	el, cpu := time.Since(t0), srv.cpu(b)-cpu0
	all := slices.Concat(lats...)
	b.ReportMetric(float64(len(all))/el.Seconds(), "rtt/s")
	b.ReportMetric(float64(percentile(all, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "server-µs/rtt")
	for _, c := range conns {
		c.c.Close()
	}
}

// BenchmarkServerBroadcast: one room of 1,000 sockets; one member sends,
// with at most w messages not yet delivered to everyone, and every member
// receives every message. One op is one message (1,000 frames).
func BenchmarkServerBroadcast(b *testing.B) {
	for _, window := range []int{8, 32} {
		b.Run(fmt.Sprintf("w%d", window), func(b *testing.B) {
			const members = 1000
			srv := startBenchServer(b)
			conns := make([]*wsConn, members)
			for i := range conns {
				conns[i] = dialWS(b, srv.addr, "/rooms/bcast/bench", i)
			}
			// The bench room records a member before its 101 goes out, so
			// every member is in the room once every dial returned.
			n := b.N
			counts := make([]atomic.Int32, n+1)
			complete := make(chan int, n+1)
			lats := make([][]time.Duration, members)
			var wg sync.WaitGroup
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var buf []byte
					for {
						p, op, err := c.readFrame(buf)
						if err != nil {
							return
						}
						buf = p
						if op != wsframe.OpBinary || len(p) < 16 {
							continue
						}
						seq := int(binary.BigEndian.Uint64(p))
						sentAt := int64(binary.BigEndian.Uint64(p[8:]))
						if seq > 0 {
							lats[i] = append(lats[i], time.Duration(time.Now().UnixNano()-sentAt))
						}
						if counts[seq].Add(1) == members {
							complete <- seq
						}
					}
				}()
			}
			send := func(seq int) {
				var p [64]byte
				binary.BigEndian.PutUint64(p[:], uint64(seq))
				binary.BigEndian.PutUint64(p[8:], uint64(time.Now().UnixNano()))
				conns[0].c.Write(wsframe.AppendMaskedFrame(nil, true, 0, wsframe.OpBinary, p[:], testMask))
			}
			send(0) // warm-up, not measured
			<-complete
			cpu0, t0 := srv.cpu(b), time.Now()
			done := 0
			for seq := 1; seq <= n; seq++ {
				for seq-1-done >= window {
					<-complete
					done++
				}
				send(seq)
			}
			for done < n {
				<-complete
				done++
			}
			el, cpu := time.Since(t0), srv.cpu(b)-cpu0
			for _, c := range conns {
				c.c.Close()
			}
			wg.Wait()
			all := slices.Concat(lats...)
			b.ReportMetric(float64(len(all))/el.Seconds(), "frames/s")
			b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(n*members), "server-µs/frame")
		})
	}
}
