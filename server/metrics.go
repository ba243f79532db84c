package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
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
	rt := func(f func(st *rooms.Stats) float64) func() float64 {
		return func() float64 { st := s.rt.Stats(); return f(&st) }
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "den_rooms", Help: "Rooms in memory by state: active (an object and a goroutine) or hibernated (only their sockets).", ConstLabels: prometheus.Labels{"state": "active"}},
		rt(func(st *rooms.Stats) float64 { return float64(st.Rooms) })))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "den_rooms", Help: "Rooms in memory by state: active (an object and a goroutine) or hibernated (only their sockets).", ConstLabels: prometheus.Labels{"state": "hibernated"}},
		rt(func(st *rooms.Stats) float64 { return float64(st.Hibernated) })))
	counter("den_room_wakes_total", "Rooms brought into memory, first wakes included.", rt(func(st *rooms.Stats) float64 { return float64(st.Wakes) }))
	counter("den_room_hibernations_total", "Rooms put to sleep with their sockets open.", rt(func(st *rooms.Stats) float64 { return float64(st.Hibernations) }))
	counter("den_room_evictions_total", "Rooms without sockets dropped from memory.", rt(func(st *rooms.Stats) float64 { return float64(st.Evictions) }))
	reg.MustRegister(s.wakeSeconds)
	gauge("den_alarms_pending", "Room alarms scheduled and not yet fired.", rt(func(st *rooms.Stats) float64 { return float64(st.AlarmsPending) }))
	counter("den_alarms_fired_total", "Room alarms that came due and went to their room.", rt(func(st *rooms.Stats) float64 { return float64(st.AlarmsFired) }))
	counter("den_alarms_retried_total", "Failed alarm handlers scheduled to run again.", rt(func(st *rooms.Stats) float64 { return float64(st.AlarmsRetried) }))
	counter("den_alarms_dropped_total", "Alarms dropped after their last retry.", rt(func(st *rooms.Stats) float64 { return float64(st.AlarmsDropped) }))
	counter("den_room_events_failed_total", "Events whose handler returned an error or panicked.", func() float64 { return float64(s.rt.Stats().EventsFailed) })
	counter("den_room_commits_failed_total", "Room commits that failed.", func() float64 { return float64(s.rt.Stats().CommitsFailed) })
	counter("den_room_events_refused_total", "Events refused for a full mailbox.", func() float64 { return float64(s.rt.Stats().Refused) })
	gauge("den_storage_open_handles", "Room databases open.", func() float64 { return float64(s.store.OpenHandles()) })
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// newWakeHistogram is den_room_wake_seconds: from the event that found a
// room asleep to its object being ready (storage open, constructor run).
func newWakeHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "den_room_wake_seconds",
		Help:    "Time to wake a room: storage opened and constructor run.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14), // 50 µs to 0.4 s
	})
}
