package gateway

import "sync/atomic"

// stats are the gateway's counters; Stats returns a copy.
type stats struct {
	conns             atomic.Int64 // TCP connections held
	open              atomic.Int64 // WebSockets open or closing
	accepted          atomic.Uint64
	refusedAtLimit    atomic.Uint64
	acceptErrors      atomic.Uint64
	slowConsumers     atomic.Uint64
	protocolErrors    atomic.Uint64
	keepaliveTimeouts atomic.Uint64
	handshakeTimeouts atomic.Uint64
}

// Stats is a snapshot of the gateway's counters.
type Stats struct {
	Conns             int64  // TCP connections held now
	Sockets           int64  // WebSockets open now
	Accepted          uint64 // TCP connections accepted
	RefusedAtLimit    uint64 // connections refused for lack of file descriptors
	AcceptErrors      uint64 // other accept or enroll failures
	SlowConsumers     uint64 // sockets closed with 1008 over their write queue
	ProtocolErrors    uint64 // sockets failed for breaking RFC 6455
	KeepaliveTimeouts uint64 // silent sockets closed
	HandshakeTimeouts uint64 // requests or joins that ran out of time
}

// Stats returns the current counters.
func (srv *Server) Stats() Stats {
	s := &srv.stats
	return Stats{
		Conns: s.conns.Load(), Sockets: s.open.Load(), Accepted: s.accepted.Load(),
		RefusedAtLimit: s.refusedAtLimit.Load(), AcceptErrors: s.acceptErrors.Load(),
		SlowConsumers: s.slowConsumers.Load(), ProtocolErrors: s.protocolErrors.Load(),
		KeepaliveTimeouts: s.keepaliveTimeouts.Load(), HandshakeTimeouts: s.handshakeTimeouts.Load(),
	}
}
