/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

package crdvalidation

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The validation of the platform knobs: pod settings, Service ports separate
// from container ports, and the autoscaler's behavior.

// TestPlatformKnobsValidation sends objects with the platform knobs through
// the API server (server-side dry run): each refused case must carry the
// exact message, each accepted case must pass.
func TestPlatformKnobsValidation(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	refused := []struct {
		name, spec string
		want       string
	}{
		{
			name: "two transports on the same Service port",
			spec: "transports: {tcp: {enabled: true, port: 7777, servicePort: 443}, websocket: {enabled: true, port: 7778, servicePort: 443}}",
			want: `spec.transports: Invalid value: enabled transports must use distinct Service ports (servicePort, or port when servicePort is unset)`,
		},
		{
			name: "a Service port equal to another transport's port",
			spec: "transports: {tcp: {enabled: true, port: 7777}, websocket: {enabled: true, port: 7778, servicePort: 7777}}",
			want: `spec.transports: Invalid value: enabled transports must use distinct Service ports (servicePort, or port when servicePort is unset)`,
		},
		{
			name: "Service port above 65535",
			spec: "transports: {tcp: {enabled: true, port: 7777, servicePort: 70000}}",
			want: `spec.transports.tcp.servicePort: Invalid value: 70000: spec.transports.tcp.servicePort in body should be less than or equal to 65535`,
		},
		{
			name: "stabilization seconds together with behavior.scaleDown",
			spec: "autoscaling: {enabled: true, maxReplicas: 4, targetSessionsPerPod: 100, scaleDownStabilizationSeconds: 60, behavior: {scaleDown: {stabilizationWindowSeconds: 600}}}",
			want: `spec.autoscaling.scaleDownStabilizationSeconds: Invalid value: set scaleDownStabilizationSeconds or behavior.scaleDown, not both`,
		},
		{
			name: "priority class name that is not a DNS subdomain",
			spec: "pod: {priorityClassName: High_Priority}",
			want: `spec.pod.priorityClassName: Invalid value: "High_Priority": spec.pod.priorityClassName in body should match`,
		},
		{
			name: "service account name that is not a DNS subdomain",
			spec: "pod: {serviceAccountName: 'Game Servers'}",
			want: `spec.pod.serviceAccountName: Invalid value: "Game Servers": spec.pod.serviceAccountName in body should match`,
		},
		{
			name: "too many image pull secrets",
			spec: "pod: {imagePullSecrets: [" + strings.TrimSuffix(strings.Repeat("{name: s},", 17), ",") + "]}",
			want: `spec.pod.imagePullSecrets: Too many: 17: must have at most 16 items`,
		},
		{
			name: "topology spread constraint without its required fields",
			spec: "pod: {topologySpreadConstraints: [{maxSkew: 1}]}",
			want: `spec.pod.topologySpreadConstraints[0].topologyKey: Required value`,
		},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			err := c.Create(context.Background(), object(t, ns, "bad", tc.spec), client.DryRunAll)
			if err == nil {
				t.Fatalf("object was accepted, want refusal containing %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("error is not Invalid: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not contain %q:\n%v", tc.want, err)
			}
		})
	}

	accepted := []struct{ name, spec string }{
		{name: "443 on the Service, 7779 in the container", spec: "transports: {tlsTcp: {enabled: true, port: 7779, servicePort: 443}, tls: {secretName: game-tls}}"},
		{name: "Service ports swapped against the container ports", spec: "transports: {tcp: {enabled: true, port: 7777, servicePort: 7778}, websocket: {enabled: true, port: 7778, servicePort: 7777}}"},
		{name: "disabled transport may reuse a Service port", spec: "transports: {tcp: {enabled: true, port: 7777, servicePort: 80}, wss: {enabled: false, port: 7780, servicePort: 80}}"},
		{name: "every pod knob", spec: `pod:
  imagePullSecrets: [{name: regcred}]
  priorityClassName: game-critical
  serviceAccountName: game-servers
  defaultTopologySpread: false
  topologySpreadConstraints:
  - {maxSkew: 2, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app.kubernetes.io/instance: good}}}
resources: {requests: {cpu: 500m, memory: 512Mi}}`},
		{name: "autoscaling behavior", spec: `autoscaling:
  enabled: true
  maxReplicas: 10
  targetSessionsPerPod: 500
  behavior:
    scaleDown: {stabilizationWindowSeconds: 900, policies: [{type: Pods, value: 1, periodSeconds: 120}]}
    scaleUp: {policies: [{type: Percent, value: 100, periodSeconds: 15}]}`},
		{name: "stabilization seconds with a scaleUp-only behavior", spec: "autoscaling: {enabled: true, maxReplicas: 4, targetSessionsPerPod: 100, scaleDownStabilizationSeconds: 60, behavior: {scaleUp: {stabilizationWindowSeconds: 0}}}"},
	}
	for _, tc := range accepted {
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			if err := c.Create(context.Background(), object(t, ns, "good", tc.spec), client.DryRunAll); err != nil {
				t.Fatalf("object was refused: %v", err)
			}
		})
	}
}
