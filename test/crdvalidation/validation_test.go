/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

package crdvalidation

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// object builds an unstructured PlayHouseServer from a YAML spec.
func object(t *testing.T, namespace, name, specYAML string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("PlayHouseServer")
	u.SetNamespace(namespace)
	u.SetName(name)
	if specYAML != "" {
		spec := map[string]any{}
		if err := yaml.Unmarshal([]byte(specYAML), &spec); err != nil {
			t.Fatalf("parse spec YAML: %v", err)
		}
		u.Object["spec"] = spec
	}
	return u
}

// TestInvalidObjectsAreRefused sends bad objects (server-side dry run) and
// asserts the API server's validation message: the field path followed by
// the CEL rule's message or the OpenAPI message.
func TestInvalidObjectsAreRefused(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	cases := []struct {
		name string
		// objName overrides the object name ("bad" by default).
		objName string
		spec    string
		want    []string
		// absent are texts the error must not contain.
		absent []string
		// once: the refusal has exactly one cause.
		once bool
	}{
		{
			name: "autoscaling minReplicas above maxReplicas",
			spec: "autoscaling: {enabled: true, minReplicas: 5, maxReplicas: 2, targetSessionsPerPod: 100}",
			want: []string{`spec.autoscaling.minReplicas: Invalid value: minReplicas must not be greater than maxReplicas`},
		},
		{
			name: "autoscaling enabled without maxReplicas",
			spec: "autoscaling: {enabled: true, targetSessionsPerPod: 100}",
			want: []string{`spec.autoscaling.maxReplicas: Invalid value: maxReplicas must be at least 1 when autoscaling is enabled`},
		},
		{
			name: "autoscaling enabled without targetSessionsPerPod",
			spec: "autoscaling: {enabled: true, maxReplicas: 4}",
			want: []string{`spec.autoscaling.targetSessionsPerPod: Invalid value: targetSessionsPerPod must be at least 1 when autoscaling is enabled`},
		},
		{
			name: "autoscaling minReplicas zero",
			spec: "autoscaling: {enabled: true, minReplicas: 0, maxReplicas: 4, targetSessionsPerPod: 100}",
			want: []string{`spec.autoscaling.minReplicas: Invalid value: 0: spec.autoscaling.minReplicas in body should be greater than or equal to 1`},
		},
		{
			name: "tcp and websocket on the same port",
			spec: "transports: {tcp: {enabled: true, port: 8000}, websocket: {enabled: true, port: 8000}}",
			want: []string{`spec.transports: Invalid value: enabled transports must listen on distinct ports`},
		},
		{
			name: "tlsTcp and wss on the same port",
			spec: "transports: {tlsTcp: {enabled: true, port: 8443}, wss: {enabled: true, port: 8443}, tls: {secretName: game-tls}}",
			want: []string{`spec.transports: Invalid value: enabled transports must listen on distinct ports`},
		},
		{
			name: "tcp on the admin port",
			spec: "transports: {tcp: {enabled: true, port: 9090}}",
			want: []string{`spec.transports.tcp.port: Invalid value: port 9090 is reserved for the admin endpoint`},
		},
		{
			name: "wss on the admin port",
			spec: "transports: {wss: {enabled: true, port: 9090}, tls: {secretName: game-tls}}",
			want: []string{`spec.transports.wss.port: Invalid value: port 9090 is reserved for the admin endpoint`},
		},
		{
			name: "port above 65535",
			spec: "transports: {tcp: {enabled: true, port: 70000}}",
			want: []string{`spec.transports.tcp.port: Invalid value: 70000: spec.transports.tcp.port in body should be less than or equal to 65535`},
		},
		{
			name: "port zero",
			spec: "transports: {websocket: {enabled: true, port: 0}}",
			want: []string{`spec.transports.websocket.port: Invalid value: 0: spec.transports.websocket.port in body should be greater than or equal to 1`},
		},
		{
			name: "enabled transport without a port",
			spec: "transports: {tlsTcp: {enabled: true}, tls: {secretName: game-tls}}",
			want: []string{`spec.transports.tlsTcp.port: Invalid value: port is required when the transport is enabled`},
		},
		{
			name: "transport block without enabled",
			spec: "transports: {tcp: {port: 7000}}",
			want: []string{`spec.transports.tcp.enabled: Required value`},
		},
		{
			name: "websocket path without leading slash",
			spec: "transports: {websocket: {enabled: true, port: 7778, path: ws}}",
			want: []string{`spec.transports.websocket.path: Invalid value: "ws": path must start with /`},
		},
		{
			name: "wss path without leading slash",
			spec: "transports: {wss: {enabled: true, port: 7780, path: game}, tls: {secretName: game-tls}}",
			want: []string{`spec.transports.wss.path: Invalid value: "game": path must start with /`},
		},
		{
			name: "tlsTcp without a TLS secret",
			spec: "transports: {tlsTcp: {enabled: true, port: 7779}}",
			want: []string{`spec.transports.tls: Invalid value: transports.tls.secretName is required when tlsTcp or wss is enabled`},
		},
		{
			name: "wss without a TLS secret",
			spec: "transports: {wss: {enabled: true, port: 7780}}",
			want: []string{`spec.transports.tls: Invalid value: transports.tls.secretName is required when tlsTcp or wss is enabled`},
		},
		{
			name: "TLS secret name not a DNS subdomain",
			spec: "transports: {tls: {secretName: Game_TLS}}",
			want: []string{`spec.transports.tls.secretName: Invalid value: "Game_TLS": spec.transports.tls.secretName in body should match`},
		},
		{
			name: "no transport enabled",
			spec: "transports: {tcp: {enabled: false}, websocket: {enabled: false}}",
			want: []string{`spec.transports: Invalid value: at least one transport (tcp, websocket, tlsTcp, wss) must be enabled`},
		},
		{
			name: "trusted CIDR that is not a CIDR",
			spec: "transports: {proxyProtocol: {enabled: true, trustedCIDRs: [10.0.0.0/8, not-a-cidr]}}",
			want: []string{`spec.transports.proxyProtocol.trustedCIDRs: Invalid value: every entry must be a CIDR such as 10.0.0.0/8`},
		},
		{
			name: "PROXY protocol without trusted CIDRs",
			spec: "transports: {proxyProtocol: {enabled: true}}",
			want: []string{`spec.transports.proxyProtocol: Invalid value: trustedCIDRs must list at least one CIDR when the PROXY protocol is enabled`},
		},
		{
			name: "pending outbound bytes below the default packet size",
			spec: "limits: {maxPendingOutboundBytes: 1048576}",
			want: []string{`spec.limits: Invalid value: maxPendingOutboundBytes must be at least maxPacketSize + 4 (defaults: 5 MiB and 2 MiB), so two maximum-size replies can be queued`},
		},
		{
			name: "packet size whose frame does not fit the default pending bound",
			spec: "limits: {maxPacketSize: 6291456}",
			want: []string{`spec.limits: Invalid value: maxPendingOutboundBytes must be at least maxPacketSize + 4`},
		},
		{
			name: "disruption budget with both bounds",
			spec: "disruptionBudget: {enabled: true, minAvailable: 1, maxUnavailable: 1}",
			want: []string{`spec.disruptionBudget: Invalid value: set at most one of minAvailable and maxUnavailable`},
		},
		{
			name: "disruption budget percentage above 100",
			spec: "disruptionBudget: {enabled: true, maxUnavailable: 150%}",
			want: []string{`spec.disruptionBudget.maxUnavailable: Invalid value: "150%": spec.disruptionBudget.maxUnavailable in body should match`},
		},
		{
			name: "unknown request header",
			spec: "protocol: {requestHeader: huge}",
			want: []string{`spec.protocol.requestHeader: Unsupported value: "huge": supported values: "compact", "full"`},
		},
		{
			name: "heartbeat message id too long",
			spec: "protocol: {heartbeatMsgId: " + strings.Repeat("h", 256) + "}",
			want: []string{`spec.protocol.heartbeatMsgId: Too long: may not be more than 255 bytes`},
		},
		{
			name: "unknown auth mode",
			spec: "auth: {mode: jwt}",
			want: []string{`spec.auth.mode: Unsupported value: "jwt": supported values: "open", "token"`},
		},
		{
			name: "unknown app",
			spec: "app: chess",
			want: []string{`spec.app: Unsupported value: "chess": supported values: "echo", "relay"`},
		},
		{
			name: "drain timeout that is not a duration",
			spec: "drainTimeout: soon",
			want: []string{`spec.drainTimeout: Invalid value: "soon": must be a positive duration such as 30s or 1m30s`},
		},
		{
			name: "drain timeout over an hour",
			spec: "drainTimeout: 61m",
			want: []string{`spec.drainTimeout: Invalid value: "61m": must be at most 1h`},
		},
		{
			name: "zero heartbeat timeout",
			spec: "limits: {heartbeatTimeout: 0s}",
			want: []string{`spec.limits.heartbeatTimeout: Invalid value: "0s": must be a positive duration such as 30s or 1m30s`},
		},
		{
			name: "negative connection limit",
			spec: "limits: {maxConnections: -1}",
			want: []string{`spec.limits.maxConnections: Invalid value: -1: spec.limits.maxConnections in body should be greater than or equal to 0`},
		},
		{
			name: "packet size below the frame header",
			spec: "limits: {maxPacketSize: 10}",
			want: []string{`spec.limits.maxPacketSize: Invalid value: 10: spec.limits.maxPacketSize in body should be greater than or equal to 64`},
		},
		{
			name: "negative rate limit burst",
			spec: "limits: {rateLimit: {burst: -5}}",
			want: []string{`spec.limits.rateLimit.burst: Invalid value: -5: spec.limits.rateLimit.burst in body should be greater than or equal to 0`},
		},
		{
			name: "service type ExternalName",
			spec: "service: {type: ExternalName}",
			want: []string{`spec.service.type: Unsupported value: "ExternalName": supported values: "ClusterIP", "NodePort", "LoadBalancer"`},
		},
		{
			name: "load balancer source range that is not a CIDR",
			spec: "service: {loadBalancerSourceRanges: [0.0.0.0]}",
			want: []string{`spec.service.loadBalancerSourceRanges: Invalid value: every entry must be a CIDR such as 203.0.113.0/24`},
		},
		{
			name: "negative replicas",
			spec: "replicas: -1",
			want: []string{`spec.replicas: Invalid value: -1: should be a non-negative integer`},
			// One message, not the same refusal twice.
			once: true,
		},
		{
			name: "negative disruption budget minAvailable",
			spec: "disruptionBudget: {enabled: true, minAvailable: -1}",
			want: []string{`spec.disruptionBudget.minAvailable: Invalid value: -1: must be a non-negative pod count or a percentage such as "50%"`},
			once: true,
		},
		{
			name: "negative disruption budget maxUnavailable",
			spec: "disruptionBudget: {enabled: true, maxUnavailable: -2}",
			want: []string{`spec.disruptionBudget.maxUnavailable: Invalid value: -2: must be a non-negative pod count or a percentage such as "25%"`},
			once: true,
		},
		{
			name: "disruption budget minAvailable of 100%",
			spec: "disruptionBudget: {enabled: true, minAvailable: 100%}",
			want: []string{`spec.disruptionBudget.minAvailable: Invalid value: "100%": minAvailable "100%" would block every voluntary disruption (node drains, upgrades); use at most "99%" or maxUnavailable`},
			once: true,
		},
		{
			name: "pod labels overriding the selector",
			spec: "pod: {labels: {app.kubernetes.io/instance: other}}",
			want: []string{`spec.pod.labels: Invalid value: must not set the selector labels app.kubernetes.io/name or app.kubernetes.io/instance`},
		},
		{
			name: "monitoring interval that is not a Prometheus duration",
			spec: "monitoring: {serviceMonitor: true, interval: 5 minutes}",
			want: []string{`spec.monitoring.interval: Invalid value: "5 minutes": spec.monitoring.interval in body should match`},
		},
		{
			name:    "name that cannot name a Service",
			objName: "game.eu",
			want:    []string{`metadata: Invalid value: metadata.name must be a DNS label of at most 63 characters starting with a letter (it names the Service)`},
			absent:  []string{`<nil>`},
		},
		{
			// "<name>-metrics" would exceed the 63 characters of a Service name.
			name:    "name too long for the metrics Service",
			objName: "m" + strings.Repeat("x", 55),
			spec:    "monitoring: {serviceMonitor: true}",
			want:    []string{`metadata: Invalid value: metadata.name must be at most 55 characters while monitoring.serviceMonitor is on (it names the Service <name>-metrics)`},
			absent:  []string{`<nil>`},
		},
		{
			// "dup" with monitoring on owns the Service "dup-metrics", which is
			// also the client Service of a PlayHouseServer named "dup-metrics".
			name:    "name ending in -metrics",
			objName: "dup-metrics",
			want:    []string{`metadata: Invalid value: metadata.name must not end with "-metrics" (reserved for the metrics Service <name>-metrics of another PlayHouseServer)`},
			absent:  []string{`<nil>`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.objName
			if name == "" {
				name = "bad"
			}
			obj := object(t, ns, name, tc.spec)
			err := c.Create(context.Background(), obj, client.DryRunAll)
			if err == nil {
				t.Fatalf("object was accepted, want refusal containing %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("error is not Invalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if causes := causesOf(err); tc.once && len(causes) != 1 {
				t.Errorf("want exactly one cause, got %d: %v", len(causes), causes)
			}
			for _, a := range tc.absent {
				if strings.Contains(err.Error(), a) {
					t.Errorf("error contains %q:\n%v", a, err)
				}
			}
		})
	}
}

// TestValidObjectsAreAccepted sends objects at the edges of the rules that
// must pass (server-side dry run).
func TestValidObjectsAreAccepted(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	cases := []struct {
		name string
		// objName overrides the object name ("good" by default).
		objName string
		spec    string
	}{
		{name: "no spec at all", spec: ""},
		{name: "63-character name without monitoring", objName: "m" + strings.Repeat("x", 62), spec: "monitoring: {serviceMonitor: false}"},
		{name: "55-character name with monitoring", objName: "m" + strings.Repeat("x", 54), spec: "monitoring: {serviceMonitor: true}"},
		{name: "relay app", spec: "app: relay"},
		{name: "disabled transports may share ports", spec: "transports: {tlsTcp: {enabled: false, port: 7777}, wss: {enabled: false, port: 9090}}"},
		{name: "disabled transport without a port", spec: "transports: {tlsTcp: {enabled: false}}"},
		{name: "only a TLS transport", spec: "transports: {tcp: {enabled: false}, websocket: {enabled: false}, tlsTcp: {enabled: true, port: 443}, tls: {secretName: game-tls}}"},
		{name: "token mode without a signing key secret (the operator generates one)", spec: "auth: {mode: token}"},
		{name: "token mode with a signing key secret", spec: "auth: {mode: token, signingKeySecretName: game-key, reconnectTokenLifetime: 10m}"},
		{name: "autoscaling disabled needs no bounds", spec: "autoscaling: {enabled: false}"},
		{name: "autoscaling with equal bounds", spec: "autoscaling: {enabled: true, minReplicas: 3, maxReplicas: 3, targetSessionsPerPod: 1}"},
		{name: "disruption budget with a percentage", spec: "disruptionBudget: {enabled: true, minAvailable: 50%}"},
		{name: "disruption budget with no bound", spec: "disruptionBudget: {enabled: true}"},
		{name: "disruption budget with integer bounds at zero", spec: "disruptionBudget: {enabled: true, minAvailable: 0}"},
		{name: "disruption budget maxUnavailable 0", spec: "disruptionBudget: {enabled: true, maxUnavailable: 0}"},
		{name: "disruption budget minAvailable 99%", spec: "disruptionBudget: {enabled: true, minAvailable: 99%}"},
		{name: "disruption budget maxUnavailable 100%", spec: "disruptionBudget: {enabled: true, maxUnavailable: 100%}"},
		{name: "disruption budget integer minAvailable", spec: "disruptionBudget: {enabled: true, minAvailable: 2}"},
		{name: "name containing metrics but not at the end", objName: "metrics-eu"},
		{name: "fractional and compound durations", spec: "drainTimeout: 1m30s\nlimits: {heartbeatTimeout: 1.5s, writeTimeout: 250ms}"},
		{name: "drain timeout of exactly 1h", spec: "drainTimeout: 1h"},
		{name: "IPv6 CIDRs", spec: "limits: {perIPExempt: ['::1/128', 'fd00::/8']}"},
		{name: "ClusterIP service", spec: "service: {type: ClusterIP}"},
		{name: "pending outbound bytes exactly one maximum frame", spec: "limits: {maxPacketSize: 1048576, maxPendingOutboundBytes: 1048580}"},
		{name: "larger packets with a larger pending bound", spec: "limits: {maxPacketSize: 8388608, maxPendingOutboundBytes: 16777216}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.objName
			if name == "" {
				name = "good"
			}
			obj := object(t, ns, name, tc.spec)
			if err := c.Create(context.Background(), obj, client.DryRunAll); err != nil {
				t.Fatalf("object was refused: %v", err)
			}
		})
	}
}

// causesOf returns the causes of an API error's status details.
func causesOf(err error) []metav1.StatusCause {
	var st apierrors.APIStatus
	if !errors.As(err, &st) || st.Status().Details == nil {
		return nil
	}
	return st.Status().Details.Causes
}
