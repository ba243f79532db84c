package gateway

import (
	"strconv"
	"sync/atomic"
)

// stats are the gateway's counters; Stats returns a copy. Per-message
// counters live in each loop (see loop), the rest here.
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
	upgrades          atomic.Uint64
	refusals          [len(RefusalReasons)]atomic.Uint64
	closesSent        [len(CloseCodeLabels)]atomic.Uint64
	closesReceived    [len(CloseCodeLabels)]atomic.Uint64
	limitHits         [len(LimitNames)]atomic.Uint64
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

	Upgrades uint64 // WebSocket handshakes accepted (101 sent)
	// Refused counts handshakes turned away, by reason: RefusalReasons[i]
	// is Refused[i]'s.
	Refused [len(RefusalReasons)]uint64
	// ClosesSent and ClosesReceived count close codes den sent and its
	// clients sent, by CloseCodeLabels; a connection that ended without
	// the client's close frame counts as 1006 received.
	ClosesSent, ClosesReceived [len(CloseCodeLabels)]uint64

	// LimitHits counts connections, handshakes and sockets turned away or
	// closed by an abuse limit, by LimitNames.
	LimitHits [len(LimitNames)]uint64

	MessagesIn, MessagesOut uint64 // WebSocket data messages read and written
	// BytesIn and BytesOut are WebSocket bytes read and written after the
	// handshake: frame headers and control frames included.
	BytesIn, BytesOut uint64
}

// Stats returns the current counters.
func (srv *Server) Stats() Stats {
	s := &srv.stats
	st := Stats{
		Conns: s.conns.Load(), Sockets: s.open.Load(), Accepted: s.accepted.Load(),
		RefusedAtLimit: s.refusedAtLimit.Load(), AcceptErrors: s.acceptErrors.Load(),
		SlowConsumers: s.slowConsumers.Load(), ProtocolErrors: s.protocolErrors.Load(),
		KeepaliveTimeouts: s.keepaliveTimeouts.Load(), HandshakeTimeouts: s.handshakeTimeouts.Load(),
		Upgrades: s.upgrades.Load(),
	}
	for i := range s.refusals {
		st.Refused[i] = s.refusals[i].Load()
	}
	for i := range s.limitHits {
		st.LimitHits[i] = s.limitHits[i].Load()
	}
	for i := range s.closesSent {
		st.ClosesSent[i], st.ClosesReceived[i] = s.closesSent[i].Load(), s.closesReceived[i].Load()
	}
	for _, l := range *srv.loopSet.Load() {
		st.MessagesIn += l.msgsIn.Load()
		st.MessagesOut += l.msgsOut.Load()
		st.BytesIn += l.bytesIn.Load()
		st.BytesOut += l.bytesOut.Load()
	}
	return st
}

// Refusal is why a WebSocket handshake was turned away.
type Refusal uint8

const (
	refusedBadHandshake Refusal = iota // not a valid RFC 6455 handshake
	refusedNotFound                    // not a /rooms/{kind}/{name} path
	refusedOrigin                      // Origin not allowed
	// RefusedByRoom: the room (or its runtime) said no.
	RefusedByRoom
	refusedTimeout  // the room did not answer in time
	refusedShutdown // the server is shutting down
	// RefusedAuth: no valid token, or one not good for the room.
	RefusedAuth
	// RefusedWebhook: the connect webhook said no, or did not answer.
	RefusedWebhook
)

// RefusalReasons name the reasons a handshake is refused, as metrics
// label them.
var RefusalReasons = [...]string{"bad_handshake", "not_found", "origin", "room", "timeout", "shutdown", "auth", "webhook"}

func (s *stats) refused(r Refusal) { s.refusals[r].Add(1) }

// limit is an abuse limit of the gateway's.
type limit uint8

const (
	limitConnsPerIP    limit = iota // Config.MaxConnsPerIP: the connection is refused with 429
	limitHandshakeRate              // Config.HandshakesPerIP: the connection is refused with 429
	limitMessageRate                // Config.MessageRate: the socket is closed with 1008
)

// LimitNames name the gateway's abuse limits, as metrics label them.
var LimitNames = [...]string{"conns_per_ip", "handshake_rate", "message_rate"}

func (s *stats) hit(l limit) { s.limitHits[l].Add(1) }

// CloseCodeLabels are the close codes counted apart; the codes 3000–3999
// and 4000–4999 (registered and private) count as "3xxx" and "4xxx", any
// other as "other", so a client cannot make labels without bound.
var CloseCodeLabels = [...]string{
	"1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008",
	"1009", "1010", "1011", "1012", "1013", "1014", "1015", "3xxx", "4xxx", "other",
}

// closeLabel is code's index in CloseCodeLabels.
func closeLabel(code uint16) int {
	switch i, ok := closeIndex[code]; {
	case ok:
		return i
	case code >= 3000 && code < 4000:
		return len(CloseCodeLabels) - 3
	case code >= 4000 && code < 5000:
		return len(CloseCodeLabels) - 2
	}
	return len(CloseCodeLabels) - 1
}

var closeIndex = func() map[uint16]int {
	m := map[uint16]int{}
	for i, l := range CloseCodeLabels[:len(CloseCodeLabels)-3] {
		code, _ := strconv.Atoi(l)
		m[uint16(code)] = i
	}
	return m
}()
