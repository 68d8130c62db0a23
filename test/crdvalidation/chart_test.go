/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

package crdvalidation

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// These tests need no API server: they keep the Helm chart in step with the
// generated manifests under config/.

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

// TestChartClusterRoleMatchesGenerated checks that the chart's ClusterRole
// grants exactly the rules controller-gen wrote to config/rbac/role.yaml.
func TestChartClusterRoleMatchesGenerated(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatalf("read role.yaml: %v", err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(data, &generated); err != nil {
		t.Fatalf("parse role.yaml: %v", err)
	}

	tmpl, err := os.ReadFile(filepath.Join("..", "..", "charts", "playhouse", "templates", "clusterrole.yaml"))
	if err != nil {
		t.Fatalf("read chart template: %v", err)
	}
	// The template ends with a plain YAML rules list followed by "{{- end }}".
	text := string(tmpl)
	start := strings.Index(text, "\nrules:\n")
	end := strings.LastIndex(text, "{{- end }}")
	if start < 0 || end < start {
		t.Fatalf("templates/clusterrole.yaml does not end with a plain rules: list and {{- end }}")
	}
	rulesYAML := text[start+1 : end]
	if strings.Contains(rulesYAML, "{{") {
		t.Fatalf("the rules of templates/clusterrole.yaml must be plain YAML, found a template action")
	}
	var chart struct {
		Rules []rbacv1.PolicyRule `json:"rules"`
	}
	if err := yaml.UnmarshalStrict([]byte(rulesYAML), &chart); err != nil {
		t.Fatalf("parse the chart's rules: %v", err)
	}
	if !reflect.DeepEqual(chart.Rules, generated.Rules) {
		t.Errorf("charts/playhouse/templates/clusterrole.yaml rules differ from config/rbac/role.yaml:\nchart:     %+v\ngenerated: %+v", chart.Rules, generated.Rules)
	}
}
