package controllers

import (
	"math"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// Release image and the defaults the platform knobs of the pods take.
const (
	// Version is the release of the operator and the server. It equals the
	// Helm chart's appVersion (a test keeps them equal), so the default image
	// of a release is the image published with it.
	Version = "0.1.0"
	// ImageRepository is the repository the release images are published to.
	// Build and push your own with `make docker-build docker-push IMG=...`.
	ImageRepository = "ghcr.io/playhouse-k8s/playhouse"
	// DefaultServerImage is the server image of PlayHouseServers without
	// spec.image when the operator's --default-image names none.
	DefaultServerImage = ImageRepository + ":" + Version

	// DefaultCPURequest is the server container's CPU request when the spec
	// sets neither a request nor a limit for CPU.
	DefaultCPURequest = "100m"
	// DefaultMemoryRequest is the server container's memory request when the
	// spec sets neither a request nor a limit for memory.
	DefaultMemoryRequest = "128Mi"

	// TopologyKeyHostname and TopologyKeyZone are the well-known node labels
	// the default topology spread uses.
	TopologyKeyHostname = "kubernetes.io/hostname"
	// TopologyKeyZone is the well-known zone label of nodes.
	TopologyKeyZone = "topology.kubernetes.io/zone"

	// scaleDownPercent is the share of the pods the default scale-down
	// behavior may remove per period (or one pod, whichever is more).
	scaleDownPercent = 10
	// minScaleDownPeriod and maxScaleDownPeriod bound the period of the
	// default scale-down policies; the autoscaler accepts 1..1800 seconds.
	minScaleDownPeriod = 15 * time.Second
	maxScaleDownPeriod = 1800 * time.Second
)

// defaultResources returns the spec's resources with the default requests
// filled in for each of CPU and memory that has neither a request nor a
// limit (a limit alone makes the API server use it as the request).
func defaultResources(in corev1.ResourceRequirements) corev1.ResourceRequirements {
	out := *in.DeepCopy()
	for name, def := range map[corev1.ResourceName]string{
		corev1.ResourceCPU:    DefaultCPURequest,
		corev1.ResourceMemory: DefaultMemoryRequest,
	} {
		if _, ok := out.Requests[name]; ok {
			continue
		}
		if _, ok := out.Limits[name]; ok {
			continue
		}
		if out.Requests == nil {
			out.Requests = corev1.ResourceList{}
		}
		out.Requests[name] = resource.MustParse(def)
	}
	return out
}

// topologySpread is the pods' topology spread: the spec's constraints, else
// the default spread over nodes and zones, else (defaultTopologySpread false)
// none. ScheduleAnyway keeps the default a preference: a single-node or
// single-zone cluster still schedules every pod.
func topologySpread(phs *playhousev1alpha1.PlayHouseServer) []corev1.TopologySpreadConstraint {
	p := &phs.Spec.Pod
	if len(p.TopologySpreadConstraints) > 0 {
		return p.TopologySpreadConstraints
	}
	if !ptr.Deref(p.DefaultTopologySpread, true) {
		return nil
	}
	var out []corev1.TopologySpreadConstraint
	for _, key := range []string{TopologyKeyHostname, TopologyKeyZone} {
		out = append(out, corev1.TopologySpreadConstraint{
			MaxSkew:           1,
			TopologyKey:       key,
			WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector:     &metav1.LabelSelector{MatchLabels: selectorLabels(phs.Name)},
		})
	}
	return out
}

// hpaBehavior is the autoscaler's behavior: the spec's, with the drain-safe
// scale-down filled in when the spec sets none. A draining pod keeps its
// players for up to drainTimeout, so the default removes at most one pod or
// scaleDownPercent of the pods (whichever is more) per drainTimeout, after
// the stabilization window.
func hpaBehavior(phs *playhousev1alpha1.PlayHouseServer, drainTimeout time.Duration) *autoscalingv2.HorizontalPodAutoscalerBehavior {
	a := &phs.Spec.Autoscaling
	b := &autoscalingv2.HorizontalPodAutoscalerBehavior{}
	if a.Behavior != nil {
		b = a.Behavior.DeepCopy()
	}
	if b.ScaleDown != nil {
		return b
	}
	// Whole seconds, rounded up: never shorter than the drain.
	period := int32(math.Ceil(min(max(drainTimeout, minScaleDownPeriod), maxScaleDownPeriod).Seconds()))
	b.ScaleDown = &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr.To(ptr.Deref(a.ScaleDownStabilizationSeconds, defaultScaleDownStabilizationSeconds)),
		SelectPolicy:               ptr.To(autoscalingv2.MaxChangePolicySelect),
		Policies: []autoscalingv2.HPAScalingPolicy{
			{Type: autoscalingv2.PodsScalingPolicy, Value: 1, PeriodSeconds: period},
			{Type: autoscalingv2.PercentScalingPolicy, Value: scaleDownPercent, PeriodSeconds: period},
		},
	}
	return b
}

// servicePorts maps the client port names (tcp, ws, tls-tcp, wss) to the
// Service port the spec asks for, when it sets servicePort.
func servicePorts(phs *playhousev1alpha1.PlayHouseServer) map[string]int32 {
	t := &phs.Spec.Transports
	out := map[string]int32{}
	for name, p := range map[string]int32{
		PortTCP:    t.TCP.ServicePort,
		PortWS:     t.WebSocket.ServicePort,
		PortTLSTCP: t.TLSTCP.ServicePort,
		PortWSS:    t.WSS.ServicePort,
	} {
		if p > 0 {
			out[name] = p
		}
	}
	return out
}
