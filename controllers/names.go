package controllers

import (
	"time"
)

// FieldManager is the server-side apply field manager of every write the
// operator makes.
const FieldManager = "playhouse-operator"

// Labels set on every child object and on the pod template.
const (
	// LabelName is app.kubernetes.io/name; always "playhouse-server".
	LabelName = "app.kubernetes.io/name"
	// LabelInstance is app.kubernetes.io/instance; the PlayHouseServer's name.
	LabelInstance = "app.kubernetes.io/instance"
	// LabelManagedBy is app.kubernetes.io/managed-by; always "playhouse-operator".
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelComponent is app.kubernetes.io/component; set on the metrics Service only.
	LabelComponent = "app.kubernetes.io/component"

	// AppName is the value of LabelName.
	AppName = "playhouse-server"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "playhouse-operator"
)

// Annotations the operator reads or writes.
const (
	// AnnotationConfigHash is the pod template annotation holding the hash of
	// the rendered configuration; changing it rolls the pods.
	AnnotationConfigHash = "playhouse.dev/config-hash"
	// AnnotationAppliedHash is set on every child: the hash of the object the
	// operator applied last. A child whose hash matches the desired object and
	// whose fields still hold what was applied is not written again.
	AnnotationAppliedHash = "playhouse.dev/applied-hash"
	// AnnotationPodDeletionCost is the annotation the ReplicaSet controller
	// reads to pick which pods go first on a scale-down (lowest first).
	AnnotationPodDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
)

// Paths inside the server container.
const (
	// ConfigDir is where the ConfigMap is mounted.
	ConfigDir = "/etc/playhouse"
	// ConfigKey is the ConfigMap data key of the server configuration.
	ConfigKey = "config.yaml"
	// ConfigPath is the configuration file the server reads.
	ConfigPath = ConfigDir + "/" + ConfigKey
	// TLSDir is where the TLS secret is mounted.
	TLSDir = "/etc/playhouse/tls"
	// AuthDir is where the signing-key secret is mounted.
	AuthDir = "/etc/playhouse/auth"
	// SigningKeyKey is the data key of the signing-key Secret.
	SigningKeyKey = "signing-key"
	// SigningKeyPath is the signing-key file the server reads.
	SigningKeyPath = AuthDir + "/" + SigningKeyKey
	// SigningKeyBytes is the size of a generated signing key.
	SigningKeyBytes = 32
)

// Container and port names.
const (
	// ContainerName is the name of the server container.
	ContainerName = "playhouse-server"
	// PortTCP names the plain TCP port.
	PortTCP = "tcp"
	// PortWS names the WebSocket port.
	PortWS = "ws"
	// PortTLSTCP names the TLS-over-TCP port.
	PortTLSTCP = "tls-tcp"
	// PortWSS names the secure WebSocket port.
	PortWSS = "wss"
	// PortAdmin names the admin HTTP port (/metrics, /healthz, /readyz, /status).
	PortAdmin = "admin"
)

// Condition types of PlayHouseServer status.
const (
	// ConditionReady is True when every desired replica is ready (and there is at least one).
	ConditionReady = "Ready"
	// ConditionProgressing is True while the Deployment is rolling out.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the operator cannot converge the children.
	ConditionDegraded = "Degraded"
	// ConditionReconciling is the kstatus abnormal-true condition: True while
	// the fleet converges towards the current generation (rollout, replicas
	// starting), False once settled or stuck.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is the kstatus abnormal-true condition: True when the
	// fleet cannot converge without someone acting (a child name taken by a
	// foreign object, a missing or invalid Secret, an apply the API server
	// refuses, an invalid spec, a rollout past its progress deadline).
	ConditionStalled = "Stalled"
)

// Condition reasons.
const (
	// ReasonReplicasReady: every desired replica is ready.
	ReasonReplicasReady = "ReplicasReady"
	// ReasonReplicasNotReady: fewer replicas are ready than desired.
	ReasonReplicasNotReady = "ReplicasNotReady"
	// ReasonScaledToZero: no replica is desired.
	ReasonScaledToZero = "ScaledToZero"
	// ReasonRollingOut: the Deployment has not finished rolling out its newest spec.
	ReasonRollingOut = "RollingOut"
	// ReasonRolloutComplete: every replica runs the newest spec.
	ReasonRolloutComplete = "RolloutComplete"
	// ReasonProgressDeadlineExceeded: the Deployment reported that its rollout is stuck.
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	// ReasonApplyFailed: a child object could not be written.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonInvalidSpec: the spec renders to a configuration the server would refuse.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonChildNameConflict: an object with a child's name exists and is not
	// controlled by this PlayHouseServer; the operator never writes it.
	ReasonChildNameConflict = "ChildNameConflict"
	// ReasonSecretNotFound: a Secret the spec references does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonSecretInvalid: a Secret the spec references lacks a required key.
	ReasonSecretInvalid = "SecretInvalid"
	// ReasonAsExpected: nothing is wrong.
	ReasonAsExpected = "AsExpected"
)

// Defaults of the reconciler.
const (
	// DefaultResyncInterval is how often live session counts are read and the
	// pod deletion costs refreshed.
	DefaultResyncInterval = 30 * time.Second
	// DefaultSessionReadTimeout bounds one /status request.
	DefaultSessionReadTimeout = 2 * time.Second
	// terminationGraceMargin is added to the drain timeout to form the pod's
	// terminationGracePeriodSeconds, so the kubelet never kills a draining
	// server before its own drain timeout ends it.
	terminationGraceMargin = 15 * time.Second
	// defaultScaleDownStabilizationSeconds is the HPA's scale-down window when
	// the spec leaves it empty: sessions are long-lived, so shrink slowly.
	defaultScaleDownStabilizationSeconds = 300
)

// configMapName is the name of the ConfigMap of a PlayHouseServer.
func configMapName(name string) string { return name + "-config" }

// signingKeySecretName is the name of the generated signing-key Secret.
func signingKeySecretName(name string) string { return name + "-signing-key" }

// metricsServiceName is the name of the admin-port Service the ServiceMonitor selects.
func metricsServiceName(name string) string { return name + "-metrics" }

// selectorLabels are the labels that select a PlayHouseServer's pods.
func selectorLabels(name string) map[string]string {
	return map[string]string{LabelName: AppName, LabelInstance: name}
}

// commonLabels are the labels set on every child object.
func commonLabels(name string) map[string]string {
	l := selectorLabels(name)
	l[LabelManagedBy] = ManagedByValue
	return l
}
