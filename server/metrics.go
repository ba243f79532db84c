package server

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/den-rooms/den/gateway"
	"github.com/den-rooms/den/rooms"
)

// observer holds den's histograms; the rooms runtime reports to it.
type observer struct {
	wake      prometheus.Histogram
	events    *prometheus.HistogramVec
	byType    map[string]prometheus.Observer // resolved once: no label hashing per event
	commit    prometheus.Histogram
	batch     prometheus.Histogram
	alarmLate prometheus.Histogram
}

func newObserver() *observer {
	o := &observer{
		wake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "den_room_wake_seconds",
			Help:    "Time to wake a room: from the event that found it asleep to storage opened and constructor run.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14), // 50 µs to 0.4 s
		}),
		events: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "den_room_event_seconds",
			Help:    "Room events by type, from reaching the room to their output released: queueing, handler and commit.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16), // 50 µs to 1.6 s
		}, []string{"type"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "den_room_commit_seconds",
			Help:    "Room commits, fsync included.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16), // 25 µs to 0.8 s
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "den_room_commit_events",
			Help:    "Events that shared one commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 to 512
		}),
		alarmLate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "den_alarm_lateness_seconds",
			Help:    "How long after its scheduled time an alarm's handler began (first attempts).",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16), // 0.1 ms to 3.3 s
		}),
		byType: map[string]prometheus.Observer{},
	}
	for _, t := range rooms.EventTypes() {
		o.byType[t] = o.events.WithLabelValues(t)
	}
	return o
}

func (o *observer) Wake(d time.Duration) { o.wake.Observe(d.Seconds()) }

func (o *observer) Event(typ string, d time.Duration) {
	if h := o.byType[typ]; h != nil {
		h.Observe(d.Seconds())
	}
}

func (o *observer) Commit(events int, d time.Duration) {
	o.commit.Observe(d.Seconds())
	o.batch.Observe(float64(events))
}

func (o *observer) AlarmLate(d time.Duration) { o.alarmLate.Observe(max(d, 0).Seconds()) }

func (o *observer) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.wake, o.events, o.commit, o.batch, o.alarmLate}
}

// snapshot is what one scrape reads.
type snapshot struct {
	gw          gateway.Stats
	rt          rooms.Stats
	openHandles int
	logsDropped uint64
}

// metric is one unlabelled counter or gauge read from a snapshot.
type metric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*snapshot) float64
}

// collector exposes den's counters, read from one snapshot per scrape.
type collector struct {
	s        *Server
	metrics  []metric
	rooms    *prometheus.Desc
	refused  *prometheus.Desc
	sent     *prometheus.Desc
	received *prometheus.Desc
	limits   *prometheus.Desc
}

func newCollector(s *Server) *collector {
	c := &collector{
		s:        s,
		rooms:    prometheus.NewDesc("den_rooms", "Rooms in memory by state: active (an object and a goroutine) or hibernated (only their sockets).", []string{"state"}, nil),
		refused:  prometheus.NewDesc("den_upgrades_refused_total", "WebSocket handshakes turned away, by reason.", []string{"reason"}, nil),
		sent:     prometheus.NewDesc("den_closes_sent_total", "Close frames den sent, by code (3xxx and 4xxx grouped).", []string{"code"}, nil),
		limits:   prometheus.NewDesc("den_limit_hits_total", "Connections refused (429), sockets closed (1008) and joins, messages or requests refused (503, 1013) by an abuse limit, by limit.", []string{"limit"}, nil),
		received: prometheus.NewDesc("den_closes_received_total", "Close frames clients sent, by code (3xxx and 4xxx grouped); 1006 is a connection that ended without one.", []string{"code"}, nil),
	}
	add := func(typ prometheus.ValueType, name, help string, value func(*snapshot) float64) {
		c.metrics = append(c.metrics, metric{prometheus.NewDesc(name, help, nil, nil), typ, value})
	}
	gauge := func(name, help string, value func(*snapshot) float64) { add(prometheus.GaugeValue, name, help, value) }
	counter := func(name, help string, value func(*snapshot) float64) {
		add(prometheus.CounterValue, name, help, value)
	}
	gauge("den_connections", "TCP connections held.", func(s *snapshot) float64 { return float64(s.gw.Conns) })
	gauge("den_sockets", "WebSockets open.", func(s *snapshot) float64 { return float64(s.gw.Sockets) })
	counter("den_accepted_total", "TCP connections accepted.", func(s *snapshot) float64 { return float64(s.gw.Accepted) })
	counter("den_refused_at_limit_total", "Connections refused for lack of file descriptors.", func(s *snapshot) float64 { return float64(s.gw.RefusedAtLimit) })
	counter("den_upgrades_total", "WebSocket handshakes accepted.", func(s *snapshot) float64 { return float64(s.gw.Upgrades) })
	counter("den_messages_received_total", "WebSocket data messages read from clients.", func(s *snapshot) float64 { return float64(s.gw.MessagesIn) })
	counter("den_messages_sent_total", "WebSocket data messages written to clients.", func(s *snapshot) float64 { return float64(s.gw.MessagesOut) })
	counter("den_received_bytes_total", "WebSocket bytes read from clients after the handshake, frame headers and control frames included.", func(s *snapshot) float64 { return float64(s.gw.BytesIn) })
	counter("den_sent_bytes_total", "WebSocket bytes written to clients after the handshake, frame headers and control frames included.", func(s *snapshot) float64 { return float64(s.gw.BytesOut) })
	counter("den_slow_consumers_total", "Sockets closed with 1008 over their write queue.", func(s *snapshot) float64 { return float64(s.gw.SlowConsumers) })
	counter("den_protocol_errors_total", "Sockets failed for breaking RFC 6455.", func(s *snapshot) float64 { return float64(s.gw.ProtocolErrors) })
	counter("den_keepalive_timeouts_total", "Silent sockets closed.", func(s *snapshot) float64 { return float64(s.gw.KeepaliveTimeouts) })
	counter("den_handshake_timeouts_total", "Requests or joins that ran out of time.", func(s *snapshot) float64 { return float64(s.gw.HandshakeTimeouts) })
	counter("den_room_wakes_total", "Rooms brought into memory, first wakes included.", func(s *snapshot) float64 { return float64(s.rt.Wakes) })
	counter("den_room_hibernations_total", "Rooms put to sleep with their sockets open.", func(s *snapshot) float64 { return float64(s.rt.Hibernations) })
	counter("den_room_evictions_total", "Rooms without sockets dropped from memory.", func(s *snapshot) float64 { return float64(s.rt.Evictions) })
	counter("den_room_reclaims_total", "Evicted rooms that stored nothing, whose file and record were deleted.", func(s *snapshot) float64 { return float64(s.rt.Reclaims) })
	counter("den_room_events_failed_total", "Events whose handler returned an error or panicked.", func(s *snapshot) float64 { return float64(s.rt.EventsFailed) })
	counter("den_room_commits_failed_total", "Room commits that failed.", func(s *snapshot) float64 { return float64(s.rt.CommitsFailed) })
	counter("den_room_events_refused_total", "Events refused for a full mailbox.", func(s *snapshot) float64 { return float64(s.rt.Refused) })
	gauge("den_alarms_pending", "Room alarms scheduled and not yet fired.", func(s *snapshot) float64 { return float64(s.rt.AlarmsPending) })
	counter("den_alarms_fired_total", "Room alarms that came due and went to their room.", func(s *snapshot) float64 { return float64(s.rt.AlarmsFired) })
	counter("den_alarms_retried_total", "Failed alarm handlers scheduled to run again.", func(s *snapshot) float64 { return float64(s.rt.AlarmsRetried) })
	counter("den_alarms_dropped_total", "Alarms dropped after their last retry.", func(s *snapshot) float64 { return float64(s.rt.AlarmsDropped) })
	gauge("den_storage_open_handles", "Room databases open.", func(s *snapshot) float64 { return float64(s.openHandles) })
	counter("den_log_entries_dropped_total", "Log entries dropped by sampling: the same message more than 10 times in a second is logged once per 100.", func(s *snapshot) float64 { return float64(s.logsDropped) })
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	ch <- c.rooms
	ch <- c.refused
	ch <- c.sent
	ch <- c.received
	ch <- c.limits
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := &snapshot{gw: c.s.gw.Stats(), rt: c.s.rt.Stats(), openHandles: c.s.store.OpenHandles(), logsDropped: c.s.logsDropped.Load()}
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(s))
	}
	ch <- prometheus.MustNewConstMetric(c.rooms, prometheus.GaugeValue, float64(s.rt.Rooms), "active")
	ch <- prometheus.MustNewConstMetric(c.rooms, prometheus.GaugeValue, float64(s.rt.Hibernated), "hibernated")
	for i, reason := range gateway.RefusalReasons {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.gw.Refused[i]), reason)
	}
	for i, name := range gateway.LimitNames {
		ch <- prometheus.MustNewConstMetric(c.limits, prometheus.CounterValue, float64(s.gw.LimitHits[i]), name)
	}
	ch <- prometheus.MustNewConstMetric(c.limits, prometheus.CounterValue, float64(s.rt.RoomFull), "room_sockets")
	ch <- prometheus.MustNewConstMetric(c.limits, prometheus.CounterValue, float64(s.rt.NodeFull), "active_rooms")
	for i, code := range gateway.CloseCodeLabels {
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(s.gw.ClosesSent[i]), code)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(s.gw.ClosesReceived[i]), code)
	}
}

// metrics serves GET /metrics: den's counters and histograms beside the Go
// runtime's and the process's (process_resident_memory_bytes is what
// `den loadtest --metrics-url` samples).
func (s *Server) metrics() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector(), newCollector(s))
	reg.MustRegister(s.observe.collectors()...)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
