package controllers

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// TestServiceMonitorSourceLogs: the controller logs a watch started at
// runtime with the source as a structured value ("Starting EventSource",
// "source", src). With the operator's JSON logger that value must encode as
// a readable name, not "!ERROR:json: unsupported type".
func TestServiceMonitorSourceLogs(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := playhousev1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	r := &PlayHouseServerReconciler{Scheme: scheme}
	src := r.serviceMonitorSource()

	var buf bytes.Buffer
	log := logr.FromSlogHandler(slog.NewJSONHandler(&buf, nil))
	log.Info("Starting EventSource", "source", src)
	line := buf.String()
	if strings.Contains(line, "ERROR") {
		t.Fatalf("the source does not encode: %s", line)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("not one JSON record: %v: %s", err, line)
	}
	if got, want := rec["source"], "kind source: ServiceMonitor.monitoring.coreos.com/v1"; got != want {
		t.Errorf("source logged as %v, want %q", got, want)
	}
}
