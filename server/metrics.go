package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/den-rooms/den/gateway"
)

type gwStats = gateway.Stats

// metrics serves GET /metrics: den's counters, read when scraped, beside
// the Go runtime's and the process's (process_resident_memory_bytes is
// what `den loadtest --metrics-url` samples).
func (s *Server) metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gw := func(f func(st *gwStats) float64) func() float64 {
		return func() float64 { st := gwStats(s.gw.Stats()); return f(&st) }
	}
	gauge("den_connections", "TCP connections held.", gw(func(st *gwStats) float64 { return float64(st.Conns) }))
	gauge("den_sockets", "WebSockets open.", gw(func(st *gwStats) float64 { return float64(st.Sockets) }))
	counter("den_accepted_total", "TCP connections accepted.", gw(func(st *gwStats) float64 { return float64(st.Accepted) }))
	counter("den_refused_at_limit_total", "Connections refused for lack of file descriptors.", gw(func(st *gwStats) float64 { return float64(st.RefusedAtLimit) }))
	counter("den_slow_consumers_total", "Sockets closed with 1008 over their write queue.", gw(func(st *gwStats) float64 { return float64(st.SlowConsumers) }))
	counter("den_protocol_errors_total", "Sockets failed for breaking RFC 6455.", gw(func(st *gwStats) float64 { return float64(st.ProtocolErrors) }))
	counter("den_keepalive_timeouts_total", "Silent sockets closed.", gw(func(st *gwStats) float64 { return float64(st.KeepaliveTimeouts) }))
	counter("den_handshake_timeouts_total", "Requests or joins that ran out of time.", gw(func(st *gwStats) float64 { return float64(st.HandshakeTimeouts) }))
	gauge("den_rooms_active", "Rooms with an object in memory.", func() float64 { return float64(s.rt.Stats().Rooms) })
	counter("den_room_events_failed_total", "Events whose handler returned an error or panicked.", func() float64 { return float64(s.rt.Stats().EventsFailed) })
	counter("den_room_commits_failed_total", "Room commits that failed.", func() float64 { return float64(s.rt.Stats().CommitsFailed) })
	counter("den_room_events_refused_total", "Events refused for a full mailbox.", func() float64 { return float64(s.rt.Stats().Refused) })
	gauge("den_storage_open_handles", "Room databases open.", func() float64 { return float64(s.store.OpenHandles()) })
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
