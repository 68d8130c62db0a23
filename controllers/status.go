package controllers

import (
	"fmt"
	"net"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// observation is what one reconcile pass saw. A nil field was not observed in
// this pass, and the status fields derived from it keep their previous value:
// the status only ever reports what the operator actually saw.
type observation struct {
	// deployment is the Deployment as returned by its apply.
	deployment *appsv1.Deployment
	// service is the client Service as returned by its apply.
	service *corev1.Service
	// sessions is the sum of the ready pods' live session counts.
	sessions *int64
	// invalidSpec is set when the spec renders to a configuration the server refuses.
	invalidSpec error
	// applyErr is the first write that failed.
	applyErr error
	// serviceMonitorSkipped is set when monitoring asks for a ServiceMonitor
	// but the cluster does not serve the kind.
	serviceMonitorSkipped bool
}

// succeeded reports whether the pass converged every child.
func (o *observation) succeeded() bool {
	return o.invalidSpec == nil && o.applyErr == nil
}

// computeStatus returns the status a reconcile pass should write, starting
// from the current one. observedGeneration advances only when the whole pass
// succeeded; the conditions carry the generation they were computed from.
func computeStatus(phs *playhousev1alpha1.PlayHouseServer, obs *observation) playhousev1alpha1.PlayHouseServerStatus {
	st := *phs.Status.DeepCopy()
	gen := phs.Generation
	st.Selector = SelectorString(phs)

	progressStuck := false
	if d := obs.deployment; d != nil {
		st.Replicas = d.Status.Replicas
		st.ReadyReplicas = d.Status.ReadyReplicas
		desired := ptr.Deref(d.Spec.Replicas, 1)

		ready := metav1.Condition{Type: ConditionReady, ObservedGeneration: gen}
		switch {
		case desired == 0:
			ready.Status, ready.Reason = metav1.ConditionFalse, ReasonScaledToZero
			ready.Message = "no replica is desired"
		case d.Status.ReadyReplicas >= desired:
			ready.Status, ready.Reason = metav1.ConditionTrue, ReasonReplicasReady
			ready.Message = fmt.Sprintf("%d of %d replicas ready", d.Status.ReadyReplicas, desired)
		default:
			ready.Status, ready.Reason = metav1.ConditionFalse, ReasonReplicasNotReady
			ready.Message = fmt.Sprintf("%d of %d replicas ready", d.Status.ReadyReplicas, desired)
		}
		meta.SetStatusCondition(&st.Conditions, ready)

		progressing := metav1.Condition{Type: ConditionProgressing, ObservedGeneration: gen}
		switch {
		case deploymentStuck(d):
			progressStuck = true
			progressing.Status, progressing.Reason = metav1.ConditionFalse, ReasonProgressDeadlineExceeded
			progressing.Message = "the Deployment's rollout exceeded its progress deadline"
		case rollingOut(d, desired):
			progressing.Status, progressing.Reason = metav1.ConditionTrue, ReasonRollingOut
			progressing.Message = fmt.Sprintf("%d of %d replicas updated, %d available",
				d.Status.UpdatedReplicas, desired, d.Status.AvailableReplicas)
		default:
			progressing.Status, progressing.Reason = metav1.ConditionFalse, ReasonRolloutComplete
			progressing.Message = fmt.Sprintf("%d replicas run the current spec", d.Status.UpdatedReplicas)
		}
		meta.SetStatusCondition(&st.Conditions, progressing)
	}
	if obs.service != nil {
		st.Endpoint = serviceEndpoint(obs.service)
	}
	if obs.sessions != nil {
		st.Sessions = *obs.sessions
	}

	degraded := metav1.Condition{Type: ConditionDegraded, ObservedGeneration: gen}
	switch {
	case obs.invalidSpec != nil:
		degraded.Status, degraded.Reason = metav1.ConditionTrue, ReasonInvalidSpec
		degraded.Message = truncateMessage(obs.invalidSpec.Error())
	case obs.applyErr != nil:
		degraded.Status, degraded.Reason = metav1.ConditionTrue, ReasonApplyFailed
		degraded.Message = truncateMessage(obs.applyErr.Error())
	case progressStuck:
		degraded.Status, degraded.Reason = metav1.ConditionTrue, ReasonProgressDeadlineExceeded
		degraded.Message = "the Deployment's rollout exceeded its progress deadline"
	default:
		degraded.Status, degraded.Reason = metav1.ConditionFalse, ReasonAsExpected
		degraded.Message = "every child object is applied"
		if obs.serviceMonitorSkipped {
			degraded.Message += "; ServiceMonitor skipped: the monitoring.coreos.com CRD is not installed"
		}
	}
	meta.SetStatusCondition(&st.Conditions, degraded)

	if obs.succeeded() {
		st.ObservedGeneration = gen
	}
	return st
}

// rollingOut reports whether the Deployment still moves pods to its newest spec.
func rollingOut(d *appsv1.Deployment, desired int32) bool {
	s := d.Status
	return s.ObservedGeneration < d.Generation ||
		s.UpdatedReplicas < desired ||
		s.Replicas > s.UpdatedReplicas ||
		s.AvailableReplicas < s.UpdatedReplicas
}

// deploymentStuck reports whether the Deployment controller gave up waiting
// for the rollout (its progress deadline passed).
func deploymentStuck(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing {
			return c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded"
		}
	}
	return false
}

// serviceEndpoint is the client address of a Service: its load balancer's
// ingress IP or hostname, else its cluster IP, with the first client port
// (TCP when enabled). Empty when the Service has neither.
func serviceEndpoint(svc *corev1.Service) string {
	if len(svc.Spec.Ports) == 0 {
		return ""
	}
	host := ""
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			host = ing.IP
			break
		}
		if ing.Hostname != "" {
			host = ing.Hostname
			break
		}
	}
	if host == "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		host = svc.Spec.ClusterIP
	}
	if host == "" {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(int(svc.Spec.Ports[0].Port)))
}

// truncateMessage keeps a condition message within the API's 32768-byte limit.
func truncateMessage(s string) string {
	const limit = 32768
	if len(s) <= limit {
		return s
	}
	return s[:limit-3] + "..."
}
