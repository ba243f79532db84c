package gateway

import (
	"net"
	"net/netip"
	"sync"
)

// ipLimits holds each client address to Config.MaxConnsPerIP connections
// and Config.HandshakesPerIP new connections a second. It is checked at
// accept, before den reads a byte: a flood from one address costs an
// accept and a close, not a parse.
type ipLimits struct {
	maxConns int32
	interval int64 // nanoseconds between connections at the sustained rate; 0: no rate limit
	slack    int64 // how far ahead of now an address's schedule may run: its burst

	mu  sync.Mutex
	ips map[netip.Addr]*ipEntry
}

type ipEntry struct {
	conns int32
	// tat is the generic cell rate algorithm's theoretical arrival time:
	// when the address's next connection is due if it kept to the rate.
	tat int64
}

func newIPLimits(cfg *Config) *ipLimits {
	if cfg.MaxConnsPerIP <= 0 && cfg.HandshakesPerIP <= 0 {
		return nil
	}
	t := &ipLimits{maxConns: int32(cfg.MaxConnsPerIP), ips: map[netip.Addr]*ipEntry{}}
	if cfg.HandshakesPerIP > 0 {
		t.interval = int64(1e9 / cfg.HandshakesPerIP)
		t.slack = int64(cfg.HandshakeBurst-1) * t.interval
	}
	return t
}

// admit counts a new connection from ip at monotonic time now, or reports
// which limit it is over.
func (t *ipLimits) admit(ip netip.Addr, now int64) (limit, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.ips[ip]
	if e == nil {
		e = &ipEntry{}
		t.ips[ip] = e
	}
	if t.maxConns > 0 && e.conns >= t.maxConns {
		return limitConnsPerIP, false
	}
	if t.interval > 0 {
		tat := max(e.tat, now)
		if tat-now > t.slack {
			return limitHandshakeRate, false
		}
		e.tat = tat + t.interval
	}
	e.conns++
	return 0, true
}

// release counts a connection from ip gone.
func (t *ipLimits) release(ip netip.Addr, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.ips[ip]; e != nil {
		e.conns--
		if e.conns <= 0 && e.tat <= now {
			delete(t.ips, ip)
		}
	}
}

// sweep forgets addresses with no connections whose schedule has passed,
// so the table holds only addresses that are connected or were limited
// lately.
func (t *ipLimits) sweep(now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ip, e := range t.ips {
		if e.conns <= 0 && e.tat <= now {
			delete(t.ips, ip)
		}
	}
}

// addrIP is the client a connection counts against: its IPv4 address, or
// its IPv6 /64, since one IPv6 host is usually given a whole /64 and could
// otherwise take a fresh address for each connection.
func addrIP(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}
