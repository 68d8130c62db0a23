// Package observability tests what the chart ships for monitoring the
// session servers: the alerting and recording rules (with promtool), the
// Grafana dashboard and the prometheus-adapter rule, including that every
// metric they query is one the engine really exports.
package observability
