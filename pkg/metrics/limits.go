package metrics

import "github.com/prometheus/client_golang/prometheus"

// AttachLimits exports the server's configured limits, so alerts and
// dashboards can relate the live counts to them: playhouse_max_connections
// (limits.maxConnections). Call it once.
func (m *Metrics) AttachLimits(maxConnections int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MaxConnections,
		Help: "The server's limits.maxConnections: the most concurrent client connections it admits.",
	}, func() float64 { return float64(maxConnections) }))
}
