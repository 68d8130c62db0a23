/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

package crdvalidation

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// TestSamplesAreAccepted creates every sample of config/samples and reads it
// back through the typed API.
func TestSamplesAreAccepted(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	ctx := context.Background()
	for _, file := range []string{
		"playhouse_v1alpha1_playhouseserver_minimal.yaml",
		"playhouse_v1alpha1_playhouseserver_full.yaml",
	} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", file))
			if err != nil {
				t.Fatalf("read sample: %v", err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &u.Object); err != nil {
				t.Fatalf("parse sample: %v", err)
			}
			u.SetNamespace(ns)
			if err := c.Create(ctx, u); err != nil {
				t.Fatalf("sample was refused: %v", err)
			}
			got := &v1alpha1.PlayHouseServer{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(u), got); err != nil {
				t.Fatalf("read sample back: %v", err)
			}
			if !got.Spec.Transports.TCP.Enabled && !got.Spec.Transports.WebSocket.Enabled &&
				!got.Spec.Transports.TLSTCP.Enabled && !got.Spec.Transports.WSS.Enabled {
				t.Errorf("sample %s read back with no transport enabled: %+v", file, got.Spec.Transports)
			}
		})
	}
}

// TestFullSampleRoundTrips checks that the typed object of the full sample
// keeps the values written in the file.
func TestFullSampleRoundTrips(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", "playhouse_v1alpha1_playhouseserver_full.yaml"))
	if err != nil {
		t.Fatalf("read sample: %v", err)
	}
	phs := &v1alpha1.PlayHouseServer{}
	if err := yaml.UnmarshalStrict(data, phs); err != nil {
		t.Fatalf("sample does not decode strictly into the Go type: %v", err)
	}
	phs.Namespace = ns
	s := createAndGet(t, c, phs).Spec
	checkFields(t, []fieldCheck{
		{"transports.tlsTcp", s.Transports.TLSTCP, v1alpha1.ListenerSpec{Enabled: true, Port: 7779, ServicePort: 443}},
		{"transports.wss.servicePort", s.Transports.WSS.ServicePort, int32(8443)},
		{"pod.priorityClassName", s.Pod.PriorityClassName, "game-critical"},
		{"pod.serviceAccountName", s.Pod.ServiceAccountName, "game-servers"},
		{"pod.imagePullSecrets", len(s.Pod.ImagePullSecrets), 1},
		{"pod.topologySpreadConstraints", len(s.Pod.TopologySpreadConstraints), 1},
		{"autoscaling.behavior.scaleUp.policies", len(s.Autoscaling.Behavior.ScaleUp.Policies), 1},
		{"transports.wss.path", s.Transports.WSS.Path, "/ws"},
		{"transports.tls.secretName", s.Transports.TLS.SecretName, "game-tls"},
		{"auth.mode", s.Auth.Mode, v1alpha1.AuthModeToken},
		{"auth.signingKeySecretName", s.Auth.SigningKeySecretName, ""},
		{"autoscaling.maxReplicas", s.Autoscaling.MaxReplicas, int32(20)},
		{"disruptionBudget.maxUnavailable", s.DisruptionBudget.MaxUnavailable.IntValue(), 1},
		{"drainTimeout", s.DrainTimeout.Duration, 2 * time.Minute},
		{"limits.heartbeatTimeout", s.Limits.HeartbeatTimeout.Duration, 90 * time.Second},
		{"monitoring.serviceMonitor", s.Monitoring.ServiceMonitor, true},
	})
}

// TestDefaultsAreApplied creates minimal objects and checks the defaults the
// API server fills in.
func TestDefaultsAreApplied(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)

	t.Run("minimal typed object", func(t *testing.T) {
		phs := &v1alpha1.PlayHouseServer{ObjectMeta: metav1.ObjectMeta{Name: "minimal", Namespace: ns}}
		s := createAndGet(t, c, phs).Spec
		checkFields(t, []fieldCheck{
			{"transports.tcp", s.Transports.TCP, v1alpha1.ListenerSpec{Enabled: true, Port: 7777}},
			{"transports.websocket.enabled", s.Transports.WebSocket.Enabled, true},
			{"transports.websocket.port", s.Transports.WebSocket.Port, int32(7778)},
			{"transports.websocket.path", s.Transports.WebSocket.Path, "/ws"},
			{"transports.tlsTcp", s.Transports.TLSTCP, v1alpha1.ListenerSpec{Enabled: false, Port: 7779}},
			{"transports.wss.enabled", s.Transports.WSS.Enabled, false},
			{"transports.wss.port", s.Transports.WSS.Port, int32(7780)},
			{"transports.wss.path", s.Transports.WSS.Path, "/ws"},
			{"app", s.App, "echo"},
			{"auth.mode", s.Auth.Mode, v1alpha1.AuthModeOpen},
			{"service.type", s.Service.Type, corev1.ServiceTypeLoadBalancer},
			{"service.externalTrafficPolicy", s.Service.ExternalTrafficPolicy, corev1.ServiceExternalTrafficPolicyLocal},
			{"replicas", ptr.Deref(s.Replicas, -1), int32(1)},
			{"autoscaling.enabled", s.Autoscaling.Enabled, false},
			{"disruptionBudget.enabled", s.DisruptionBudget.Enabled, false},
			{"monitoring.serviceMonitor", s.Monitoring.ServiceMonitor, false},
		})
		if s.DrainTimeout == nil || s.DrainTimeout.Duration != 30*time.Second {
			t.Errorf("drainTimeout = %v, want 30s", s.DrainTimeout)
		}
	})

	t.Run("transport blocks left out of a partial transports spec", func(t *testing.T) {
		u := object(t, ns, "partial", "transports: {wss: {enabled: true, port: 443}, tls: {secretName: game-tls}}")
		tr := createAndGet(t, c, u).Spec.Transports
		if tr.TCP != (v1alpha1.ListenerSpec{Enabled: true, Port: 7777}) {
			t.Errorf("tcp = %+v, want the default (enabled, 7777)", tr.TCP)
		}
		if !tr.WebSocket.Enabled || tr.WebSocket.Port != 7778 || tr.WebSocket.Path != "/ws" {
			t.Errorf("websocket = %+v, want the default (enabled, 7778, /ws)", tr.WebSocket)
		}
		if tr.TLSTCP != (v1alpha1.ListenerSpec{Enabled: false, Port: 7779}) {
			t.Errorf("tlsTcp = %+v, want the default (disabled, 7779)", tr.TLSTCP)
		}
		if !tr.WSS.Enabled || tr.WSS.Port != 443 || tr.WSS.Path != "/ws" {
			t.Errorf("wss = %+v, want enabled on 443 with the default path /ws", tr.WSS)
		}
	})
}

// TestScaleSubresource reads and writes the scale subresource.
func TestScaleSubresource(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	ctx := context.Background()

	phs := &v1alpha1.PlayHouseServer{ObjectMeta: metav1.ObjectMeta{Name: "scaled", Namespace: ns}}
	if err := c.Create(ctx, phs); err != nil {
		t.Fatalf("create: %v", err)
	}
	selector := "app.kubernetes.io/instance=scaled,app.kubernetes.io/name=playhouse-server"
	phs.Status.Replicas = 1
	phs.Status.Selector = selector
	if err := c.Status().Update(ctx, phs); err != nil {
		t.Fatalf("update status: %v", err)
	}

	scale := &autoscalingv1.Scale{}
	if err := c.SubResource("scale").Get(ctx, phs, scale); err != nil {
		t.Fatalf("get scale: %v", err)
	}
	if scale.Spec.Replicas != 1 || scale.Status.Replicas != 1 || scale.Status.Selector != selector {
		t.Fatalf("scale = spec %d, status %d, selector %q; want 1, 1, %q",
			scale.Spec.Replicas, scale.Status.Replicas, scale.Status.Selector, selector)
	}

	scale.Spec.Replicas = 3
	if err := c.SubResource("scale").Update(ctx, phs, client.WithSubResourceBody(scale)); err != nil {
		t.Fatalf("update scale: %v", err)
	}
	got := &v1alpha1.PlayHouseServer{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(phs), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if r := ptr.Deref(got.Spec.Replicas, -1); r != 3 {
		t.Errorf("spec.replicas after scale update = %d, want 3", r)
	}

	scale.Spec.Replicas = -1
	if err := c.SubResource("scale").Update(ctx, phs, client.WithSubResourceBody(scale)); err == nil {
		t.Errorf("scale to -1 replicas was accepted")
	}
}

// TestCRDShape checks the served CRD's names, subresources and printer columns.
func TestCRDShape(t *testing.T) {
	c := newClient(t)
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "playhouseservers.playhouse.dev"}, crd); err != nil {
		t.Fatalf("get CRD: %v", err)
	}
	if crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Errorf("scope = %s, want Namespaced", crd.Spec.Scope)
	}
	if !slices.Contains(crd.Spec.Names.ShortNames, "phs") {
		t.Errorf("short names = %v, want phs", crd.Spec.Names.ShortNames)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1alpha1" {
		t.Fatalf("versions = %+v, want only v1alpha1", crd.Spec.Versions)
	}
	v := crd.Spec.Versions[0]
	if v.Subresources == nil || v.Subresources.Status == nil || v.Subresources.Scale == nil {
		t.Fatalf("subresources = %+v, want status and scale", v.Subresources)
	}
	if sc := v.Subresources.Scale; sc.SpecReplicasPath != ".spec.replicas" || sc.StatusReplicasPath != ".status.replicas" ||
		sc.LabelSelectorPath == nil || *sc.LabelSelectorPath != ".status.selector" {
		t.Errorf("scale subresource = %+v", sc)
	}
	var cols []string
	for _, col := range v.AdditionalPrinterColumns {
		if col.Priority == 0 {
			cols = append(cols, col.Name)
		}
	}
	if want := []string{"Ready", "Sessions", "Endpoint", "Age"}; !slices.Equal(cols, want) {
		t.Errorf("default printer columns = %v, want %v", cols, want)
	}
}

// createAndGet creates obj and reads it back as the API server stored it
// (defaults applied).
func createAndGet(t *testing.T, c client.Client, obj client.Object) *v1alpha1.PlayHouseServer {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, obj); err != nil {
		t.Fatalf("create: %v", err)
	}
	got := &v1alpha1.PlayHouseServer{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	return got
}

// fieldCheck is one field of a stored object and the value it should hold.
type fieldCheck struct {
	name      string
	got, want any
}

// checkFields reports every check whose value differs from its want.
func checkFields(t *testing.T, checks []fieldCheck) {
	t.Helper()
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}
