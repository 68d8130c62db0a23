/*
Copyright 2026 The PlayHouse for Kubernetes authors.

Licensed under the Apache License, Version 2.0.
*/

package v1alpha1

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Condition types reported in PlayHouseServerStatus.Conditions.
const (
	// ConditionReady is True when the fleet serves clients: the Deployment has
	// at least one ready pod and as many ready pods as it wants.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a rollout or scale is under way.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the operator cannot converge the fleet.
	ConditionDegraded = "Degraded"
	// ConditionAutoscalingActive is True when the fleet's autoscaler can
	// compute a scale (the HorizontalPodAutoscaler's ScalingActive, or the
	// KEDA ScaledObject's Ready), not merely when it was applied. Absent
	// while autoscaling is disabled.
	ConditionAutoscalingActive = "AutoscalingActive"
)

// Values of AuthSpec.Mode.
const (
	// AuthModeOpen lets the application decide who may connect.
	AuthModeOpen = "open"
	// AuthModeToken additionally requires signed tokens.
	AuthModeToken = "token"
)

// Values of ProtocolSpec.RequestHeader.
const (
	// RequestHeaderCompact is the header the official connectors send.
	RequestHeaderCompact = "compact"
	// RequestHeaderFull adds ErrorCode and OriginalSize to the request header.
	RequestHeaderFull = "full"
)

// AdminPort is the pod's admin HTTP port (/metrics, /healthz, /readyz,
// /status). No client transport may use it.
const AdminPort int32 = 9090

// PlayHouseServerSpec is the desired state of one fleet of session-engine pods.
type PlayHouseServerSpec struct {
	// Image is the container image of playhouse-server. Empty uses the
	// operator's --default-image.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the server container.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Replicas is the number of pods. It is ignored when autoscaling is
	// enabled (the HorizontalPodAutoscaler owns the count then).
	// +optional
	// (A negative count is refused by the scale subresource's own check,
	// so the schema sets no minimum that would report it a second time.)
	// +kubebuilder:default=1
	// +kubebuilder:validation:Maximum=10000
	Replicas *int32 `json:"replicas,omitempty"`

	// Resources of the server container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitzero"`

	// Pod holds scheduling and metadata overrides for the server pods.
	// +optional
	Pod PodOverrides `json:"pod,omitzero"`

	// App names the built-in application handler the server runs: echo
	// (answers every request with its payload) or relay (stages: one-way
	// packets relayed to the other sessions of the sender's stage).
	// +optional
	// +kubebuilder:default=echo
	// +kubebuilder:validation:Enum=echo;relay
	App string `json:"app,omitempty"`

	// Transports selects the client listeners. Each transport block that is
	// left out takes its default (tcp on 7777 and websocket on 7778 at /ws
	// enabled; tlsTcp on 7779 and wss on 7780 disabled).
	// +optional
	// +kubebuilder:default={tcp: {enabled: true, port: 7777}, websocket: {enabled: true, port: 7778, path: "/ws"}, tlsTcp: {enabled: false, port: 7779}, wss: {enabled: false, port: 7780, path: "/ws"}}
	Transports TransportsSpec `json:"transports,omitzero"`

	// Protocol holds wire-format options.
	// +optional
	Protocol ProtocolSpec `json:"protocol,omitzero"`

	// Limits holds the session limits and timeouts. Every field is optional;
	// an unset or zero field keeps the server's built-in default.
	// +optional
	Limits LimitsSpec `json:"limits,omitzero"`

	// Auth holds authentication options.
	// +optional
	// +kubebuilder:default={}
	Auth AuthSpec `json:"auth,omitzero"`

	// Service configures the Service that exposes the client transports.
	// +optional
	// +kubebuilder:default={}
	Service ServiceSpec `json:"service,omitzero"`

	// Autoscaling scales the fleet on live sessions per pod.
	// +optional
	Autoscaling AutoscalingSpec `json:"autoscaling,omitzero"`

	// DrainTimeout bounds the graceful drain of a terminating pod; the pod's
	// terminationGracePeriodSeconds is set above it. At most 1h: a longer
	// drain would hold a node drain or rollout for hours.
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="must be a positive duration such as 30s or 1m30s"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('1h')`,message="must be at most 1h"
	DrainTimeout *metav1.Duration `json:"drainTimeout,omitempty"`

	// DisruptionBudget creates a PodDisruptionBudget for the fleet.
	// +optional
	DisruptionBudget DisruptionBudgetSpec `json:"disruptionBudget,omitzero"`

	// Monitoring creates a Prometheus ServiceMonitor for the pods' admin port.
	// +optional
	Monitoring MonitoringSpec `json:"monitoring,omitzero"`
}

// PodOverrides holds scheduling and metadata overrides for the server pods.
type PodOverrides struct {
	// NodeSelector constrains the pods to nodes with these labels.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the pods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity of the pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// Env adds environment variables to the server container.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Annotations are added to the pod template.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Annotations map[string]string `json:"annotations,omitempty"`

	// Labels are added to the pod template. They may not override the
	// selector labels app.kubernetes.io/name and app.kubernetes.io/instance.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/instance' in self)",message="must not set the selector labels app.kubernetes.io/name or app.kubernetes.io/instance"
	Labels map[string]string `json:"labels,omitempty"`

	// Platform settings of the pods: registry credentials, priority,
	// identity and spreading.

	// ImagePullSecrets name Secrets in the same namespace holding the
	// registry credentials used to pull the server image.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// PriorityClassName is the PriorityClass of the pods.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// ServiceAccountName runs the pods under this ServiceAccount of the
	// namespace (default: the namespace's "default"). The server never calls
	// the Kubernetes API, so no API token is mounted either way.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// TopologySpreadConstraints of the pods. When empty, the default spread
	// applies unless defaultTopologySpread is false: maxSkew 1 over nodes
	// (kubernetes.io/hostname) and over zones (topology.kubernetes.io/zone),
	// whenUnsatisfiable ScheduleAnyway, selecting this fleet's pods. A
	// non-empty list replaces the default.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// DefaultTopologySpread turns the default topology spread (see
	// topologySpreadConstraints) on or off. Unset means on.
	// +optional
	DefaultTopologySpread *bool `json:"defaultTopologySpread,omitempty"`
}

// TransportsSpec selects the client listeners. At least one must be enabled,
// enabled listeners need distinct ports, and none may use the admin port 9090.
// +kubebuilder:validation:XValidation:rule="self.tcp.enabled || self.websocket.enabled || self.tlsTcp.enabled || self.wss.enabled",message="at least one transport (tcp, websocket, tlsTcp, wss) must be enabled"
// +kubebuilder:validation:XValidation:rule="!(self.tcp.enabled && self.websocket.enabled && has(self.tcp.port) && has(self.websocket.port) && self.tcp.port == self.websocket.port) && !(self.tcp.enabled && self.tlsTcp.enabled && has(self.tcp.port) && has(self.tlsTcp.port) && self.tcp.port == self.tlsTcp.port) && !(self.tcp.enabled && self.wss.enabled && has(self.tcp.port) && has(self.wss.port) && self.tcp.port == self.wss.port) && !(self.websocket.enabled && self.tlsTcp.enabled && has(self.websocket.port) && has(self.tlsTcp.port) && self.websocket.port == self.tlsTcp.port) && !(self.websocket.enabled && self.wss.enabled && has(self.websocket.port) && has(self.wss.port) && self.websocket.port == self.wss.port) && !(self.tlsTcp.enabled && self.wss.enabled && has(self.tlsTcp.port) && has(self.wss.port) && self.tlsTcp.port == self.wss.port)",message="enabled transports must listen on distinct ports"
// +kubebuilder:validation:XValidation:rule="!(self.tlsTcp.enabled || self.wss.enabled) || (has(self.tls) && has(self.tls.secretName))",message="transports.tls.secretName is required when tlsTcp or wss is enabled",fieldPath=".tls"
// +kubebuilder:validation:XValidation:rule="!(self.tcp.enabled && self.websocket.enabled && (has(self.tcp.servicePort) || has(self.tcp.port)) && (has(self.websocket.servicePort) || has(self.websocket.port)) && (has(self.tcp.servicePort) ? self.tcp.servicePort : self.tcp.port) == (has(self.websocket.servicePort) ? self.websocket.servicePort : self.websocket.port)) && !(self.tcp.enabled && self.tlsTcp.enabled && (has(self.tcp.servicePort) || has(self.tcp.port)) && (has(self.tlsTcp.servicePort) || has(self.tlsTcp.port)) && (has(self.tcp.servicePort) ? self.tcp.servicePort : self.tcp.port) == (has(self.tlsTcp.servicePort) ? self.tlsTcp.servicePort : self.tlsTcp.port)) && !(self.tcp.enabled && self.wss.enabled && (has(self.tcp.servicePort) || has(self.tcp.port)) && (has(self.wss.servicePort) || has(self.wss.port)) && (has(self.tcp.servicePort) ? self.tcp.servicePort : self.tcp.port) == (has(self.wss.servicePort) ? self.wss.servicePort : self.wss.port)) && !(self.websocket.enabled && self.tlsTcp.enabled && (has(self.websocket.servicePort) || has(self.websocket.port)) && (has(self.tlsTcp.servicePort) || has(self.tlsTcp.port)) && (has(self.websocket.servicePort) ? self.websocket.servicePort : self.websocket.port) == (has(self.tlsTcp.servicePort) ? self.tlsTcp.servicePort : self.tlsTcp.port)) && !(self.websocket.enabled && self.wss.enabled && (has(self.websocket.servicePort) || has(self.websocket.port)) && (has(self.wss.servicePort) || has(self.wss.port)) && (has(self.websocket.servicePort) ? self.websocket.servicePort : self.websocket.port) == (has(self.wss.servicePort) ? self.wss.servicePort : self.wss.port)) && !(self.tlsTcp.enabled && self.wss.enabled && (has(self.tlsTcp.servicePort) || has(self.tlsTcp.port)) && (has(self.wss.servicePort) || has(self.wss.port)) && (has(self.tlsTcp.servicePort) ? self.tlsTcp.servicePort : self.tlsTcp.port) == (has(self.wss.servicePort) ? self.wss.servicePort : self.wss.port))",message="enabled transports must use distinct Service ports (servicePort, or port when servicePort is unset)"
type TransportsSpec struct {
	// TCP is the plain TCP listener (default: enabled on port 7777).
	// +optional
	// +kubebuilder:default={enabled: true, port: 7777}
	TCP ListenerSpec `json:"tcp"`

	// WebSocket is the plain WebSocket listener (default: enabled on port
	// 7778, path /ws).
	// +optional
	// +kubebuilder:default={enabled: true, port: 7778, path: "/ws"}
	WebSocket WebSocketSpec `json:"websocket"`

	// TLSTCP is the TCP listener wrapped in TLS (default: disabled, port
	// 7779). Enabling it requires tls.secretName.
	// +optional
	// +kubebuilder:default={enabled: false, port: 7779}
	TLSTCP ListenerSpec `json:"tlsTcp"`

	// WSS is the WebSocket listener wrapped in TLS (default: disabled, port
	// 7780, path /ws). Enabling it requires tls.secretName.
	// +optional
	// +kubebuilder:default={enabled: false, port: 7780, path: "/ws"}
	WSS WebSocketSpec `json:"wss"`

	// TLS names the certificate used by tlsTcp and wss.
	// +optional
	TLS TLSSpec `json:"tls,omitzero"`

	// ProxyProtocol enables the PROXY protocol (v1/v2) on the TCP listeners.
	// +optional
	ProxyProtocol ProxyProtocolSpec `json:"proxyProtocol,omitzero"`
}

// ListenerSpec is one TCP-based listener. A block written in a manifest must
// say whether it is enabled; an enabled listener needs a port.
// +kubebuilder:validation:XValidation:rule="!self.enabled || has(self.port)",message="port is required when the transport is enabled",fieldPath=".port"
// +kubebuilder:validation:XValidation:rule="!self.enabled || !has(self.port) || self.port != 9090",message="port 9090 is reserved for the admin endpoint",fieldPath=".port"
type ListenerSpec struct {
	// Enabled turns the listener on.
	Enabled bool `json:"enabled"`

	// Port is the port the server listens on in the container, and the
	// Service port unless servicePort is set.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// ServicePort is the port the Service exposes for this listener
	// (default: port). It lets the Service offer a privileged port such as
	// 443 while the non-root container listens on an unprivileged one.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ServicePort int32 `json:"servicePort,omitempty"`
}

// WebSocketSpec is a WebSocket listener. A block written in a manifest must
// say whether it is enabled; an enabled listener needs a port.
// +kubebuilder:validation:XValidation:rule="!self.enabled || has(self.port)",message="port is required when the transport is enabled",fieldPath=".port"
// +kubebuilder:validation:XValidation:rule="!self.enabled || !has(self.port) || self.port != 9090",message="port 9090 is reserved for the admin endpoint",fieldPath=".port"
type WebSocketSpec struct {
	// Enabled turns the listener on.
	Enabled bool `json:"enabled"`

	// Port is the port the server listens on in the container, and the
	// Service port unless servicePort is set.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// ServicePort is the port the Service exposes for this listener
	// (default: port). It lets the Service offer a privileged port such as
	// 443 while the non-root container listens on an unprivileged one.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ServicePort int32 `json:"servicePort,omitempty"`

	// Path is the HTTP path of the upgrade endpoint; it must start with "/".
	// +optional
	// +kubebuilder:default="/ws"
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="path must start with /"
	Path string `json:"path,omitempty"`

	// AllowedOrigins lists the Origin header values accepted on upgrade;
	// empty accepts any origin.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
}

// TLSSpec names the certificate of the TLS transports.
type TLSSpec struct {
	// SecretName is a kubernetes.io/tls Secret in the same namespace holding
	// tls.crt and tls.key. The server reloads it when the Secret changes.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName,omitempty"`
}

// ProxyProtocolSpec configures the PROXY protocol (v1 and v2) on every
// client listener.
// +kubebuilder:validation:XValidation:rule="!has(self.enabled) || !self.enabled || (has(self.trustedCIDRs) && size(self.trustedCIDRs) > 0)",message="trustedCIDRs must list at least one CIDR when the PROXY protocol is enabled"
type ProxyProtocolSpec struct {
	// Enabled accepts a PROXY header from trusted peers, so per-IP limits see
	// the real client address behind a load balancer. Trusted peers may also
	// connect without a header; a header from any other peer is refused.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// TrustedCIDRs lists the peers allowed to send a PROXY header.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="every entry must be a CIDR such as 10.0.0.0/8"
	TrustedCIDRs []string `json:"trustedCIDRs,omitempty"`
}

// ProtocolSpec holds wire-format options. Unset fields keep the server's defaults.
type ProtocolSpec struct {
	// RequestHeader is the client request header format: compact (what the
	// official connectors send; the default) or full.
	// +optional
	// +kubebuilder:validation:Enum=compact;full
	RequestHeader string `json:"requestHeader,omitempty"`

	// HeartbeatMsgId is the heartbeat message name (default "@Heart@Beat@").
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	HeartbeatMsgId string `json:"heartbeatMsgId,omitempty"` //nolint:revive // name fixed by the API contract

	// AuthenticateMsgId is the message name that must open a session
	// (default "AuthenticateRequest").
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	AuthenticateMsgId string `json:"authenticateMsgId,omitempty"` //nolint:revive // name fixed by the API contract

	// Compression configures outbound LZ4 compression.
	// +optional
	Compression CompressionSpec `json:"compression,omitzero"`
}

// CompressionSpec configures outbound LZ4 compression.
type CompressionSpec struct {
	// Enabled turns outbound compression on. Leave it off for JavaScript
	// clients, whose connector rejects compressed frames.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// Threshold is the smallest payload in bytes that is compressed; 0 keeps
	// the default (512).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=67108864
	Threshold int32 `json:"threshold,omitempty"`
}

// LimitsSpec holds the session limits and timeouts. Every field is optional;
// an unset or zero field keeps the server's built-in default.
// +kubebuilder:validation:XValidation:rule=`(has(self.maxPendingOutboundBytes) && self.maxPendingOutboundBytes > 0 ? self.maxPendingOutboundBytes : 5242880) >= (has(self.maxPacketSize) && self.maxPacketSize > 0 ? self.maxPacketSize : 2097152) + 4`,message="maxPendingOutboundBytes must be at least maxPacketSize + 4 (defaults: 5 MiB and 2 MiB), so two maximum-size replies can be queued"
type LimitsSpec struct {
	// MaxPacketSize is the largest frame body accepted, in bytes (default 2 MiB).
	// +optional
	// +kubebuilder:validation:Minimum=64
	// +kubebuilder:validation:Maximum=67108864
	MaxPacketSize int32 `json:"maxPacketSize,omitempty"`

	// MaxConnections caps concurrent connections per pod (default 10000).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxConnections int32 `json:"maxConnections,omitempty"`

	// MaxConnectionsPerIP caps concurrent connections per client address,
	// IPv6 counted per /64 (default 10).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxConnectionsPerIP int32 `json:"maxConnectionsPerIP,omitempty"`

	// PerIPExempt lists CIDRs not subject to MaxConnectionsPerIP. Absent or
	// empty keeps the default (loopback).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="every entry must be a CIDR such as 10.0.0.0/8"
	PerIPExempt []string `json:"perIPExempt,omitempty"`

	// RateLimit is a token bucket per session.
	// +optional
	RateLimit RateLimitSpec `json:"rateLimit,omitzero"`

	// HeartbeatTimeout closes a session with no inbound frame for this long
	// (default 90s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="must be a positive duration such as 30s or 1m30s"
	HeartbeatTimeout *metav1.Duration `json:"heartbeatTimeout,omitempty"`

	// AuthTimeout closes a session that has not authenticated within this
	// long (default 10s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="must be a positive duration such as 30s or 1m30s"
	AuthTimeout *metav1.Duration `json:"authTimeout,omitempty"`

	// MaxAuthAttempts closes a session after this many failed
	// authentications (default 5).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxAuthAttempts int32 `json:"maxAuthAttempts,omitempty"`

	// TLSHandshakeTimeout bounds the TLS handshake (default 5s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="must be a positive duration such as 30s or 1m30s"
	TLSHandshakeTimeout *metav1.Duration `json:"tlsHandshakeTimeout,omitempty"`

	// MaxPendingOutboundBytes closes a session whose unsent bytes (queued and
	// being written) exceed it (default 5 MiB; at least maxPacketSize + 4).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxPendingOutboundBytes int32 `json:"maxPendingOutboundBytes,omitempty"`

	// WriteTimeout closes a session whose socket write does not finish in
	// time (default 5s).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="must be a positive duration such as 30s or 1m30s"
	WriteTimeout *metav1.Duration `json:"writeTimeout,omitempty"`
}

// RateLimitSpec is a token bucket per session. Zero fields keep the defaults
// (100 packets per second, burst 200, 100 violations).
type RateLimitSpec struct {
	// PacketsPerSecond is the sustained packet rate per session.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PacketsPerSecond int32 `json:"packetsPerSecond,omitempty"`

	// Burst is the bucket size.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Burst int32 `json:"burst,omitempty"`

	// MaxViolations closes the session after this many consecutive
	// over-limit packets.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxViolations int32 `json:"maxViolations,omitempty"`
}

// AuthSpec holds authentication options.
type AuthSpec struct {
	// Mode is open (the application decides; the echo app accepts any
	// non-empty credentials) or token (every authenticate payload must be a
	// JWT, HS256, signed with the signing key, whose "sub" names the account).
	// In both modes a valid signed token (for example a reconnect token) is
	// accepted in place of credentials.
	// +optional
	// +kubebuilder:default=open
	// +kubebuilder:validation:Enum=open;token
	Mode string `json:"mode,omitempty"`

	// SigningKeySecretName names a Secret in the same namespace whose key
	// "signing-key" holds the HS256 key for tokens (at least 16 bytes). When
	// empty, the operator generates a random 32-byte key once, in the Secret
	// "<name>-signing-key", and never rotates it by accident, so every pod
	// of the fleet accepts the tokens the others issue.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SigningKeySecretName string `json:"signingKeySecretName,omitempty"`

	// ReconnectTokenLifetime is the lifetime of the reconnect tokens handed
	// out on drain (default 5m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) > duration('0s')`,message="must be a positive duration such as 30s or 1m30s"
	ReconnectTokenLifetime *metav1.Duration `json:"reconnectTokenLifetime,omitempty"`
}

// ServiceSpec configures the Service that exposes the client transports.
type ServiceSpec struct {
	// Type of the Service.
	// +optional
	// +kubebuilder:default=LoadBalancer
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	Type corev1.ServiceType `json:"type,omitempty"`

	// Annotations are added to the Service (for example load balancer
	// settings of the cloud provider).
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Annotations map[string]string `json:"annotations,omitempty"`

	// ExternalTrafficPolicy of the Service. Local (the default) keeps the
	// client address visible to the pods, which per-IP limits need. It is
	// ignored for type ClusterIP.
	// +optional
	// +kubebuilder:default=Local
	// +kubebuilder:validation:Enum=Cluster;Local
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy `json:"externalTrafficPolicy,omitempty"`

	// LoadBalancerSourceRanges restricts the client addresses a
	// LoadBalancer Service accepts.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="every entry must be a CIDR such as 203.0.113.0/24"
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges,omitempty"`
}

// Values of AutoscalingSpec.Provider.
const (
	// AutoscalingProviderHPA scales with a HorizontalPodAutoscaler on the
	// Pods metric playhouse_sessions_active, served by a custom-metrics
	// adapter (prometheus-adapter with the rule the chart ships).
	AutoscalingProviderHPA = "hpa"
	// AutoscalingProviderKEDA scales with a KEDA ScaledObject whose
	// prometheus trigger sums the fleet's playhouse_sessions_active.
	AutoscalingProviderKEDA = "keda"
)

// AutoscalingSpec scales the fleet on the pods' live sessions
// (playhouse_sessions_active) with a HorizontalPodAutoscaler, or with a KEDA
// ScaledObject (provider keda) that queries Prometheus.
// +kubebuilder:validation:XValidation:rule="!self.enabled || !has(self.provider) || self.provider != 'keda' || (has(self.prometheus) && has(self.prometheus.serverAddress))",message="prometheus.serverAddress is required when the provider is keda",fieldPath=".prometheus"
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",message="minReplicas must not be greater than maxReplicas",fieldPath=".minReplicas"
// +kubebuilder:validation:XValidation:rule="!self.enabled || (has(self.maxReplicas) && self.maxReplicas >= 1)",message="maxReplicas must be at least 1 when autoscaling is enabled",fieldPath=".maxReplicas"
// +kubebuilder:validation:XValidation:rule="!self.enabled || (has(self.targetSessionsPerPod) && self.targetSessionsPerPod >= 1)",message="targetSessionsPerPod must be at least 1 when autoscaling is enabled",fieldPath=".targetSessionsPerPod"
// +kubebuilder:validation:XValidation:rule="!has(self.scaleDownStabilizationSeconds) || !has(self.behavior) || !has(self.behavior.scaleDown)",message="set scaleDownStabilizationSeconds or behavior.scaleDown, not both",fieldPath=".scaleDownStabilizationSeconds"
type AutoscalingSpec struct {
	// Enabled creates the autoscaler; spec.replicas is then ignored.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// Provider is the autoscaler: hpa (a HorizontalPodAutoscaler on the Pods
	// metric playhouse_sessions_active, for clusters with a custom-metrics
	// adapter) or keda (a KEDA ScaledObject with a prometheus trigger on the
	// fleet's sessions; needs KEDA installed and prometheus.serverAddress).
	// +optional
	// +kubebuilder:default=hpa
	// +kubebuilder:validation:Enum=hpa;keda
	Provider string `json:"provider,omitempty"`

	// Prometheus is where the keda provider reads the sessions from.
	// +optional
	Prometheus *AutoscalingPrometheusSpec `json:"prometheus,omitempty"`

	// MinReplicas is the lower bound of the pod count (default 1).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// MaxReplicas is the upper bound of the pod count.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	MaxReplicas int32 `json:"maxReplicas,omitempty"`

	// TargetSessionsPerPod is the average live session count per pod the
	// autoscaler aims for.
	// +optional
	// +kubebuilder:validation:Minimum=0
	TargetSessionsPerPod int32 `json:"targetSessionsPerPod,omitempty"`

	// ScaleDownStabilizationSeconds is the stabilization window of the
	// default scale-down behavior (default 300). Must be unset when
	// behavior.scaleDown is set.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	ScaleDownStabilizationSeconds *int32 `json:"scaleDownStabilizationSeconds,omitempty"`

	// Behavior is the autoscaler's scaling behavior (the autoscaling/v2
	// HorizontalPodAutoscalerBehavior). A scaleDown left unset gets the
	// drain-safe default: a stabilization window of
	// scaleDownStabilizationSeconds (default 300), then at most one pod or
	// 10% of the pods, whichever is more, per drainTimeout (at least 15s, at
	// most 1800s), so draining pods never pile up. A scaleUp left unset keeps
	// the autoscaler's default.
	// +optional
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
}

// AutoscalingPrometheusSpec is the Prometheus server the keda provider's
// trigger queries for sum(playhouse_sessions_active) over the fleet's pods
// (series labelled namespace and pod, as a ServiceMonitor or PodMonitor
// scrape labels them).
type AutoscalingPrometheusSpec struct {
	// ServerAddress is the Prometheus base URL, for example
	// http://prometheus-operated.monitoring.svc:9090.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	ServerAddress string `json:"serverAddress"`
}

// DisruptionBudgetSpec creates a PodDisruptionBudget for the fleet. At most
// one of MinAvailable and MaxUnavailable may be set.
// +kubebuilder:validation:XValidation:rule="!(has(self.minAvailable) && has(self.maxUnavailable))",message="set at most one of minAvailable and maxUnavailable"
type DisruptionBudgetSpec struct {
	// Enabled creates the PodDisruptionBudget.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// MinAvailable is a non-negative pod count or a percentage such as
	// "50%". "100%" is refused: it would block every voluntary disruption
	// (node drains, cluster upgrades).
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:Pattern=`^(100|[1-9]?[0-9])%$`
	// +kubebuilder:validation:XValidation:rule="type(self) != int || self >= 0",message="must be a non-negative pod count or a percentage such as \"50%\""
	// +kubebuilder:validation:XValidation:rule="type(self) != string || self != '100%'",message="minAvailable \"100%\" would block every voluntary disruption (node drains, upgrades); use at most \"99%\" or maxUnavailable"
	MinAvailable *intstr.IntOrString `json:"minAvailable,omitempty"`

	// MaxUnavailable is a non-negative pod count or a percentage such as "25%".
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:Pattern=`^(100|[1-9]?[0-9])%$`
	// +kubebuilder:validation:XValidation:rule="type(self) != int || self >= 0",message="must be a non-negative pod count or a percentage such as \"25%\""
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// MonitoringSpec configures Prometheus scraping of the pods' admin port.
type MonitoringSpec struct {
	// ServiceMonitor creates a ServiceMonitor (only when the
	// monitoring.coreos.com CRDs are installed).
	// +optional
	ServiceMonitor bool `json:"serviceMonitor,omitempty"`

	// Labels are added to the ServiceMonitor, for a Prometheus selector.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Labels map[string]string `json:"labels,omitempty"`

	// Interval is the scrape interval, a Prometheus duration such as 30s.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`
	Interval string `json:"interval,omitempty"`
}

// PlayHouseServerStatus is the observed state of a PlayHouseServer.
type PlayHouseServerStatus struct {
	// ObservedGeneration is the spec generation the operator last worked on;
	// every condition describes that generation. It is written on every
	// reconcile, whether the pass succeeded or not.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration"`

	// Replicas is the number of pods of the fleet.
	// +optional
	// +kubebuilder:default=0
	Replicas int32 `json:"replicas"`

	// ReadyReplicas is the number of ready pods.
	// +optional
	// +kubebuilder:default=0
	ReadyReplicas int32 `json:"readyReplicas"`

	// Sessions is the number of live sessions over the ready pods, read from
	// each pod's /status at every resync. When no ready pod can be read it
	// keeps its last value.
	// +optional
	// +kubebuilder:default=0
	Sessions int64 `json:"sessions"`

	// Endpoint is the client address of the Service with its first client
	// port: the load balancer's IP or host name once assigned, else the
	// cluster IP (for example "10.0.0.1:7777").
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Selector is the pods' label selector, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`

	// Conditions are Ready, Reconciling and Stalled (kstatus), Progressing
	// and Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// PlayHouseServer is one fleet of PlayHouse session-engine pods and the
// Service, configuration and optional autoscaler, disruption budget and
// monitoring around it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:path=playhouseservers,singular=playhouseserver,shortName=phs,categories=playhouse
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`,priority=1
// +kubebuilder:printcolumn:name="Sessions",type=integer,JSONPath=`.status.sessions`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",message="metadata.name must be a DNS label of at most 63 characters starting with a letter (it names the Service)",fieldPath=".metadata"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.monitoring) || !has(self.spec.monitoring.serviceMonitor) || !self.spec.monitoring.serviceMonitor || size(self.metadata.name) <= 55",message="metadata.name must be at most 55 characters while monitoring.serviceMonitor is on (it names the Service <name>-metrics)",fieldPath=".metadata"
// +kubebuilder:validation:XValidation:rule="!self.metadata.name.endsWith('-metrics')",message="metadata.name must not end with \"-metrics\" (reserved for the metrics Service <name>-metrics of another PlayHouseServer)",fieldPath=".metadata"
type PlayHouseServer struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired state.
	// +optional
	// +kubebuilder:default={}
	Spec PlayHouseServerSpec `json:"spec"`

	// Status is the observed state, written by the operator. Its counters
	// default to 0, so they read 0 (not blank) before the first reconcile.
	// +optional
	// +kubebuilder:default={}
	Status PlayHouseServerStatus `json:"status,omitzero"`
}

// PlayHouseServerList is a list of PlayHouseServer.
//
// +kubebuilder:object:root=true
type PlayHouseServerList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the listed objects.
	Items []PlayHouseServer `json:"items"`
}
