package main

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// fleet is a PlayHouseServer with the given status.
func fleet(ns, name string, sessions int64, ready, replicas int32, conds ...metav1.Condition) *playhousev1alpha1.PlayHouseServer {
	return &playhousev1alpha1.PlayHouseServer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Status: playhousev1alpha1.PlayHouseServerStatus{
			Sessions: sessions, ReadyReplicas: ready, Replicas: replicas, Conditions: conds,
		},
	}
}

func cond(typ string, st metav1.ConditionStatus) metav1.Condition {
	return metav1.Condition{Type: typ, Status: st, Reason: "Test", LastTransitionTime: metav1.Now()}
}

func TestFleetCollector(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := playhousev1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		fleet("team-a", "lobby", 120, 2, 2, cond("Ready", metav1.ConditionTrue), cond("Degraded", metav1.ConditionFalse), cond("Progressing", metav1.ConditionFalse)),
		fleet("team-a", "match", 7, 1, 3, cond("Ready", metav1.ConditionFalse), cond("Degraded", metav1.ConditionTrue), cond("Stalled", metav1.ConditionTrue)),
		fleet("team-b", "fresh", 0, 0, 0),
	).Build()
	col := newFleetCollector(c, time.Second, logr.Discard())

	want := `
# HELP playhouse_operator_fleet_sessions Live sessions of a PlayHouseServer (status.sessions).
# TYPE playhouse_operator_fleet_sessions gauge
playhouse_operator_fleet_sessions{name="fresh",namespace="team-b"} 0
playhouse_operator_fleet_sessions{name="lobby",namespace="team-a"} 120
playhouse_operator_fleet_sessions{name="match",namespace="team-a"} 7
# HELP playhouse_operator_fleets PlayHouseServers by condition type and status (Unknown counts the fleets whose status lacks the condition).
# TYPE playhouse_operator_fleets gauge
playhouse_operator_fleets{condition="Degraded",status="False"} 1
playhouse_operator_fleets{condition="Degraded",status="True"} 1
playhouse_operator_fleets{condition="Degraded",status="Unknown"} 1
playhouse_operator_fleets{condition="Progressing",status="False"} 1
playhouse_operator_fleets{condition="Progressing",status="True"} 0
playhouse_operator_fleets{condition="Progressing",status="Unknown"} 2
playhouse_operator_fleets{condition="Ready",status="False"} 1
playhouse_operator_fleets{condition="Ready",status="True"} 1
playhouse_operator_fleets{condition="Ready",status="Unknown"} 1
playhouse_operator_fleets{condition="Stalled",status="True"} 1
# HELP playhouse_operator_fleet_ready_replicas Ready pods of a PlayHouseServer (status.readyReplicas).
# TYPE playhouse_operator_fleet_ready_replicas gauge
playhouse_operator_fleet_ready_replicas{name="fresh",namespace="team-b"} 0
playhouse_operator_fleet_ready_replicas{name="lobby",namespace="team-a"} 2
playhouse_operator_fleet_ready_replicas{name="match",namespace="team-a"} 1
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), metricFleetSessions, metricFleets, metricFleetReadyReplicas); err != nil {
		t.Error(err)
	}

	// The collector registers on a registry next to others without clashes.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatalf("register: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, metricFleetReplicas); err != nil || n != 3 {
		t.Errorf("replicas series %d (%v), want one per fleet", n, err)
	}
}

// TestFleetCollectorListError leaves the fleet metrics out of a scrape when
// the PlayHouseServers cannot be listed, instead of failing the endpoint.
func TestFleetCollectorListError(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(runtime.NewScheme()).Build() // the kind is unknown: List fails
	col := newFleetCollector(c, time.Second, logr.Discard())
	if n := testutil.CollectAndCount(col); n != 0 {
		t.Errorf("%d metrics from a failed list, want none", n)
	}
}

func TestParseNamespaces(t *testing.T) {
	if m, err := parseNamespaces(""); m != nil || err != nil {
		t.Errorf("empty list: %v %v, want every namespace (nil)", m, err)
	}
	m, err := parseNamespaces("team-a, team-b")
	if err != nil || len(m) != 2 {
		t.Fatalf("two namespaces: %v %v", m, err)
	}
	if _, ok := m["team-b"]; !ok {
		t.Errorf("team-b missing: %v", m)
	}
	for _, bad := range []string{"team-a,,team-b", "Team_A", "a,"} {
		if _, err := parseNamespaces(bad); err == nil || !strings.Contains(err.Error(), "--watch-namespace") {
			t.Errorf("%q: error %v, want a --watch-namespace error", bad, err)
		}
	}
}

// TestRunRefusesBadScopingAndMetricsFlags: bad values stop the operator
// before it talks to any API server.
func TestRunRefusesBadScopingAndMetricsFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--watch-namespace=team-a,Team_B"}, "--watch-namespace"},
		{[]string{"--fleet-metrics-timeout=0s"}, "--fleet-metrics-timeout must be positive"},
	} {
		var o options
		fs := flag.NewFlagSet("playhouse-operator", flag.ContinueOnError)
		bindFlags(fs, &o)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := run(t.Context(), &rest.Config{Host: "http://127.0.0.1:1"}, &o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: run returned %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}
