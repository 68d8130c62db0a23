package controllers

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

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

// TestSecretCacheHoldsNoData: the cache transform of Secrets drops the data,
// the managed fields and kubectl's last-applied annotation (which holds the
// data too), and keeps what the operator reads (labels, owners, its hash).
func TestSecretCacheHoldsNoData(t *testing.T) {
	in := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:            "tls",
			Labels:          map[string]string{LabelManagedBy: ManagedByValue},
			Annotations:     map[string]string{lastAppliedAnnotation: `{"data":{"tls.key":"c2VjcmV0"}}`, AnnotationAppliedHash: "abc"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			OwnerReferences: []metav1.OwnerReference{{Kind: "PlayHouseServer", Name: "game", Controller: ptr.To(true)}},
		},
		Data:       map[string][]byte{"tls.key": []byte("secret")},
		StringData: map[string]string{"x": "y"},
	}
	outAny, err := stripSecret(in)
	if err != nil {
		t.Fatal(err)
	}
	out := outAny.(*corev1.Secret)
	if out.Data != nil || out.StringData != nil || out.ManagedFields != nil || out.Annotations[lastAppliedAnnotation] != "" {
		t.Errorf("the cached Secret keeps data: %+v", out)
	}
	if out.Annotations[AnnotationAppliedHash] != "abc" || out.Labels[LabelManagedBy] != ManagedByValue || len(out.OwnerReferences) != 1 {
		t.Errorf("the cached Secret lost its metadata: %+v", out.ObjectMeta)
	}
	meta := secretMetadata()
	meta.Annotations = map[string]string{lastAppliedAnnotation: "{}"}
	if _, err := stripSecret(meta); err != nil || meta.Annotations[lastAppliedAnnotation] != "" {
		t.Errorf("metadata-only Secret keeps the last-applied annotation (%v)", err)
	}
}
