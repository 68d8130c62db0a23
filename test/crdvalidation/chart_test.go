/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

package crdvalidation

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// These tests need no API server: they keep the Helm chart in step with the
// generated manifests under config/. The tests of the rendered chart are in
// chart_render_test.go.

// TestChartCRDsMatchGenerated checks that charts/playhouse/crds holds exactly
// the CRDs of config/crd/bases (make manifests copies them).
func TestChartCRDsMatchGenerated(t *testing.T) {
	bases, err := filepath.Glob(filepath.Join("..", "..", "config", "crd", "bases", "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no generated CRDs in config/crd/bases (err %v)", err)
	}
	chart, err := filepath.Glob(filepath.Join("..", "..", "charts", "playhouse", "crds", "*.yaml"))
	if err != nil {
		t.Fatalf("list chart CRDs: %v", err)
	}
	if len(chart) != len(bases) {
		t.Fatalf("chart has %d CRD files, config/crd/bases has %d: run make manifests", len(chart), len(bases))
	}
	for _, b := range bases {
		want, err := os.ReadFile(b)
		if err != nil {
			t.Fatalf("read %s: %v", b, err)
		}
		c := filepath.Join("..", "..", "charts", "playhouse", "crds", filepath.Base(b))
		got, err := os.ReadFile(c)
		if err != nil {
			t.Fatalf("read %s: %v", c, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s: run make manifests", c, b)
		}
	}
}
