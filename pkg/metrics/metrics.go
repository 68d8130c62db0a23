// Package metrics exports the session engine's Prometheus metrics: a
// collector over the session manager's counters, histograms fed on the hot
// path through session.Observer, and the Go runtime and process collectors,
// all in a registry of its own (no global state).
package metrics

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Namespace prefixes every metric name.
const Namespace = "playhouse"

// Metrics is the engine's metric set. Create it with New, pass it as
// session.Options.Observer, then Attach the manager.
type Metrics struct {
	reg       *prometheus.Registry
	packetIn  prometheus.Observer
	packetOut prometheus.Observer
	handler   prometheus.Histogram
	collector *collector
}

var _ session.Observer = (*Metrics)(nil)

// New builds the metric set and its registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	sizes := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace,
		Name:      "packet_size_bytes",
		Help:      "Size of client packets, length prefix included, by direction (in: from clients, out: to clients).",
		Buckets:   prometheus.ExponentialBuckets(16, 4, 9), // 16 B .. 1 MiB
	}, []string{"direction"})
	handler := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace,
		Name:      "handler_duration_seconds",
		Help:      "Time from a packet being read to the application handler's return (the engine's parsing and rate-limit check, well under a microsecond, included).",
		Buckets:   prometheus.ExponentialBuckets(1e-6, 4, 11), // 1µs .. ~1s
	})
	c := &collector{}
	reg.MustRegister(sizes, handler, c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Metrics{
		reg:       reg,
		packetIn:  sizes.WithLabelValues("in"),
		packetOut: sizes.WithLabelValues("out"),
		handler:   handler,
		collector: c,
	}
}

// Attach makes the collector report mgr's counters; draining reports whether
// the server is draining, and certExpiry returns the TLS certificate's expiry
// (zero when there is none). Either func may be nil.
func (m *Metrics) Attach(mgr *session.Manager, draining func() bool, certExpiry func() time.Time) {
	m.collector.src.Store(&source{mgr: mgr, draining: draining, certExpiry: certExpiry})
}

// AttachBudget exports the process-wide inbound budget: the bytes held by
// partly received frames (playhouse_inbound_partial_bytes) and the budget's
// size (playhouse_inbound_budget_bytes, 0 when unlimited). Call it once.
func (m *Metrics) AttachBudget(b *protocol.Budget) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "inbound_partial_bytes",
			Help:      "Bytes held by read buffers above their idle size (partly received frames), across every connection.",
		}, func() float64 { return float64(b.Used()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace,
			Name:      "inbound_budget_bytes",
			Help:      "Size of the inbound budget (limits.inboundBudgetBytes); 0 when unlimited.",
		}, func() float64 { return float64(b.Max()) }),
	)
}

// AttachOpenConnections exports fn as playhouse_connections_open: client
// connections accepted and not yet closed, whether sessions or still in
// their PROXY-header, TLS or upgrade phase. Call it once.
func (m *Metrics) AttachOpenConnections(fn func() int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "connections_open",
		Help:      "Client connections accepted and not yet closed (sessions and connections still in their PROXY, TLS or upgrade phase); each holds an admission slot.",
	}, func() float64 { return float64(fn()) }))
}

// Registry returns the registry holding every metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// PacketReceived implements session.Observer.
func (m *Metrics) PacketReceived(bytes int) { m.packetIn.Observe(float64(bytes)) }

// PacketSent implements session.Observer.
func (m *Metrics) PacketSent(bytes int) { m.packetOut.Observe(float64(bytes)) }

// HandlerDone implements session.Observer.
func (m *Metrics) HandlerDone(d time.Duration) { m.handler.Observe(d.Seconds()) }

// source is what the collector reads at scrape time.
type source struct {
	mgr        *session.Manager
	draining   func() bool
	certExpiry func() time.Time
}

// collector turns the manager's counters into metrics at scrape time, so the
// hot path only touches atomics.
type collector struct {
	src atomic.Pointer[source]
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

var (
	descActive        = desc(SessionsActiveName, "Open sessions, by transport (the autoscaling signal).", "transport")
	descConnections   = desc("connections_total", "Connections that became sessions, by transport.", "transport")
	descDisconnects   = desc("disconnections_total", "Ended sessions, by transport and close reason.", "transport", "reason")
	descRejected      = desc("connections_rejected_total", "Connections refused before becoming sessions, by reason.", "reason")
	descPacketsIn     = desc("packets_received_total", "Packets received from clients, by transport.", "transport")
	descPacketsOut    = desc("packets_sent_total", "Packets written to clients, by transport.", "transport")
	descBytesIn       = desc("bytes_received_total", "Bytes received from clients (length prefixes included), by transport.", "transport")
	descBytesOut      = desc("bytes_sent_total", "Bytes written to clients, by transport.", "transport")
	descRateLimited   = desc("rate_limited_total", "Packets over a session's rate limit.")
	descAuthFailures  = desc("auth_failures_total", "Failed authentications.")
	descSlowConsumers = desc("slow_consumers_total", "Sessions closed as slow consumers.")
	descUnencodable   = desc("unencodable_replies_total", "Packets the application sent that could not be encoded (over maxPacketSize); a request among them was answered with ErrorCode 99 instead.")
	descParked        = desc("sessions_parked", "Open sessions whose reader is parked: idle for limits.idlePark, they hold no goroutine until input arrives.")
	descDraining      = desc("draining", "1 while the server is draining, else 0.")
	descCertExpiry    = desc("tls_cert_expiry_timestamp_seconds", "Expiry of the served TLS certificate, as a Unix timestamp (absent without TLS).")
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descConnections, descDisconnects, descRejected,
		descPacketsIn, descPacketsOut, descBytesIn, descBytesOut, descRateLimited, descAuthFailures,
		descSlowConsumers, descUnencodable, descParked, descDraining, descCertExpiry} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Every label value is
// pre-registered (all transports, all reasons), so series never appear or
// vanish as traffic changes, and label cardinality is fixed.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil {
		return
	}
	st := src.mgr.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, k := range transport.Kinds {
		ts := st.Transports[k]
		kind := string(k)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(ts.Active), kind)
		counter(descConnections, ts.Accepted, kind)
		counter(descPacketsIn, ts.PacketsIn, kind)
		counter(descPacketsOut, ts.PacketsOut, kind)
		counter(descBytesIn, ts.BytesIn, kind)
		counter(descBytesOut, ts.BytesOut, kind)
		for _, r := range session.AllReasons() {
			counter(descDisconnects, ts.Closed[r], kind, r.String())
		}
	}
	for _, r := range session.AllRejectReasons() {
		counter(descRejected, st.Rejected[r], r.String())
	}
	counter(descRateLimited, st.RateLimited)
	counter(descAuthFailures, st.AuthFailures)
	counter(descSlowConsumers, st.Closed[session.SlowConsumer])
	counter(descUnencodable, st.UnencodableReplies)
	ch <- prometheus.MustNewConstMetric(descParked, prometheus.GaugeValue, float64(st.Parked))
	draining := 0.0
	if src.draining != nil && src.draining() {
		draining = 1
	}
	ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, draining)
	if src.certExpiry != nil {
		if t := src.certExpiry(); !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(t.Unix()))
		}
	}
}
