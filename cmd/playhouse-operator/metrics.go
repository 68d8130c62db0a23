package main

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// The operator's own metrics, served with controller-runtime's (among them
// controller_runtime_reconcile_errors_total{controller="playhouseserver"}
// and controller_runtime_reconcile_total) on the metrics endpoint.
const (
	// metricFleets counts PlayHouseServers by condition type and status.
	metricFleets = "playhouse_operator_fleets"
	// metricFleetSessions is status.sessions of each PlayHouseServer.
	metricFleetSessions = "playhouse_operator_fleet_sessions"
	// metricFleetReadyReplicas is status.readyReplicas of each PlayHouseServer.
	metricFleetReadyReplicas = "playhouse_operator_fleet_ready_replicas"
	// metricFleetReplicas is status.replicas of each PlayHouseServer.
	metricFleetReplicas = "playhouse_operator_fleet_replicas"

	// defaultFleetListTimeout bounds the read of the PlayHouseServers (from
	// the informer cache) behind one scrape.
	defaultFleetListTimeout = 5 * time.Second
)

// reportedConditions are the condition types always exported, with a zero
// count when no fleet has them in a status; other types a status carries
// are exported as they appear.
var reportedConditions = []string{
	playhousev1alpha1.ConditionReady,
	playhousev1alpha1.ConditionProgressing,
	playhousev1alpha1.ConditionDegraded,
}

// fleetCollector is a prometheus.Collector computing the fleet metrics at
// scrape time from the PlayHouseServers in the manager's cache, so they are
// always exactly the status the API server holds, fleets that are gone
// disappear from the metrics, and the reconciler needs no metrics code.
type fleetCollector struct {
	reader  client.Reader
	timeout time.Duration
	log     logr.Logger

	fleets, sessions, ready, replicas *prometheus.Desc
}

// newFleetCollector returns a collector listing PlayHouseServers from reader
// (the manager's cache), each list bounded by timeout.
func newFleetCollector(reader client.Reader, timeout time.Duration, log logr.Logger) *fleetCollector {
	fleetLabels := []string{"namespace", "name"}
	return &fleetCollector{
		reader:  reader,
		timeout: timeout,
		log:     log,
		fleets: prometheus.NewDesc(metricFleets,
			"PlayHouseServers by condition type and status (Unknown counts the fleets whose status lacks the condition).",
			[]string{"condition", "status"}, nil),
		sessions: prometheus.NewDesc(metricFleetSessions,
			"Live sessions of a PlayHouseServer (status.sessions).", fleetLabels, nil),
		ready: prometheus.NewDesc(metricFleetReadyReplicas,
			"Ready pods of a PlayHouseServer (status.readyReplicas).", fleetLabels, nil),
		replicas: prometheus.NewDesc(metricFleetReplicas,
			"Pods of a PlayHouseServer (status.replicas).", fleetLabels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.fleets
	ch <- c.sessions
	ch <- c.ready
	ch <- c.replicas
}

// Collect implements prometheus.Collector. When the PlayHouseServers cannot
// be listed (caches not synced yet, or the timeout passed) the fleet metrics
// are left out of this scrape and the error is logged; the rest of the
// endpoint still answers.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	list := &playhousev1alpha1.PlayHouseServerList{}
	if err := c.reader.List(ctx, list); err != nil {
		c.log.Error(err, "cannot list PlayHouseServers for the fleet metrics; left out of this scrape")
		return
	}
	type key struct{ typ, status string }
	counts := map[key]int{}
	for _, typ := range reportedConditions {
		for _, st := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			counts[key{typ, string(st)}] = 0
		}
	}
	for i := range list.Items {
		p := &list.Items[i]
		seen := map[string]bool{}
		for _, cond := range p.Status.Conditions {
			if seen[cond.Type] {
				continue
			}
			seen[cond.Type] = true
			counts[key{cond.Type, string(cond.Status)}]++
		}
		for _, typ := range reportedConditions {
			if !seen[typ] {
				counts[key{typ, string(metav1.ConditionUnknown)}]++
			}
		}
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(p.Status.Sessions), p.Namespace, p.Name)
		ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, float64(p.Status.ReadyReplicas), p.Namespace, p.Name)
		ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, float64(p.Status.Replicas), p.Namespace, p.Name)
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.fleets, prometheus.GaugeValue, float64(n), k.typ, k.status)
	}
}
