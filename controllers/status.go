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
	// deployment is the Deployment as returned by its apply (or as read).
	deployment *appsv1.Deployment
	// service is the client Service as returned by its apply (or as read).
	service *corev1.Service
	// sessions is the sum of the ready pods' live session counts.
	sessions *int64
	// invalidSpec is set when the spec renders to a configuration the server refuses.
	invalidSpec error
	// conflict is set when a child's name is held by an object this
	// PlayHouseServer does not control.
	conflict *childConflictError
	// secret is set when a referenced Secret is missing or incomplete.
	secret *secretProblem
	// applyErr is the first write that failed.
	applyErr error
	// staleRead is set when a write was refused because the object changed
	// since it was read (a stale cache): the pass is retried at once and
	// writes no status.
	staleRead bool
	// serviceMonitorSkipped is set when monitoring asks for a ServiceMonitor
	// but the cluster does not serve the kind.
	serviceMonitorSkipped bool
	// autoscaler is what the pass saw of the fleet's autoscaler (nil: not
	// reached, or autoscaling disabled).
	autoscaler *autoscalerObservation
}

// stall is why a fleet cannot converge without someone acting.
type stall struct {
	reason, message string
}

// stalled returns what blocks the fleet, or nil: a problem of this pass
// first, then a rollout the Deployment controller gave up on.
func (o *observation) stalled() *stall {
	switch {
	case o.invalidSpec != nil:
		return &stall{ReasonInvalidSpec, o.invalidSpec.Error()}
	case o.conflict != nil:
		return &stall{ReasonChildNameConflict, o.conflict.Error()}
	case o.secret != nil:
		return &stall{o.secret.reason, o.secret.message}
	case o.applyErr != nil:
		return &stall{ReasonApplyFailed, o.applyErr.Error()}
	case o.deployment != nil && deploymentStuck(o.deployment):
		return &stall{ReasonProgressDeadlineExceeded, "the Deployment's rollout exceeded its progress deadline"}
	}
	return nil
}

// computeStatus returns the status a reconcile pass should write, starting
// from the current one. Every pass records the generation it worked on in
// observedGeneration, and every condition describes that generation, so
// kstatus-based tools (Flux, kpt, Argo-style health checks) read it as:
//
//   - Stalled=True (kstatus Failed) when the fleet cannot converge without
//     someone acting: invalid spec, a child name held by a foreign object,
//     a missing or incomplete Secret, a refused write, a rollout past its
//     progress deadline. Ready is then False with the same reason.
//   - Reconciling=True (kstatus InProgress) while the Deployment rolls out or
//     replicas are not ready yet.
//   - neither (kstatus Current) once settled, including scaled to zero.
func computeStatus(phs *playhousev1alpha1.PlayHouseServer, obs *observation) playhousev1alpha1.PlayHouseServerStatus {
	st := *phs.Status.DeepCopy()
	gen := phs.Generation
	st.ObservedGeneration = gen
	st.Selector = SelectorString(phs)

	d := obs.deployment
	var desired int32
	if d != nil {
		st.Replicas = d.Status.Replicas
		st.ReadyReplicas = d.Status.ReadyReplicas
		desired = ptr.Deref(d.Spec.Replicas, 1)
	}
	if obs.service != nil {
		st.Endpoint = serviceEndpoint(obs.service)
	}
	if obs.sessions != nil {
		st.Sessions = *obs.sessions
	}
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: truncateMessage(msg), ObservedGeneration: gen,
		})
	}
	stuck := obs.stalled()
	setAutoscalingCondition(&st.Conditions, phs, obs.autoscaler)

	switch {
	case stuck != nil:
		set(ConditionReady, metav1.ConditionFalse, stuck.reason, stuck.message)
	case d == nil:
		set(ConditionReady, metav1.ConditionUnknown, ReasonRollingOut, "the Deployment has not been observed yet")
	case desired == 0:
		set(ConditionReady, metav1.ConditionTrue, ReasonScaledToZero, "scaled to zero: no replica is desired")
	case d.Status.ReadyReplicas >= desired:
		set(ConditionReady, metav1.ConditionTrue, ReasonReplicasReady, fmt.Sprintf("%d of %d replicas ready", d.Status.ReadyReplicas, desired))
	default:
		set(ConditionReady, metav1.ConditionFalse, ReasonReplicasNotReady, fmt.Sprintf("%d of %d replicas ready", d.Status.ReadyReplicas, desired))
	}

	if d != nil {
		switch {
		case deploymentStuck(d):
			set(ConditionProgressing, metav1.ConditionFalse, ReasonProgressDeadlineExceeded, "the Deployment's rollout exceeded its progress deadline")
		case rollingOut(d, desired):
			set(ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut, fmt.Sprintf("%d of %d replicas updated, %d available",
				d.Status.UpdatedReplicas, desired, d.Status.AvailableReplicas))
		default:
			set(ConditionProgressing, metav1.ConditionFalse, ReasonRolloutComplete, fmt.Sprintf("%d replicas run the current spec", d.Status.UpdatedReplicas))
		}
	}

	switch {
	case stuck != nil:
		set(ConditionReconciling, metav1.ConditionFalse, stuck.reason, "not converging: see the Stalled condition")
	case d == nil:
		set(ConditionReconciling, metav1.ConditionTrue, ReasonRollingOut, "the Deployment has not been observed yet")
	case rollingOut(d, desired):
		set(ConditionReconciling, metav1.ConditionTrue, ReasonRollingOut, fmt.Sprintf("%d of %d replicas updated, %d available",
			d.Status.UpdatedReplicas, desired, d.Status.AvailableReplicas))
	case d.Status.ReadyReplicas < desired:
		set(ConditionReconciling, metav1.ConditionTrue, ReasonReplicasNotReady, fmt.Sprintf("%d of %d replicas ready", d.Status.ReadyReplicas, desired))
	default:
		set(ConditionReconciling, metav1.ConditionFalse, ReasonAsExpected, "the fleet runs the current generation")
	}

	if stuck != nil {
		set(ConditionStalled, metav1.ConditionTrue, stuck.reason, stuck.message)
		set(ConditionDegraded, metav1.ConditionTrue, stuck.reason, stuck.message)
	} else {
		set(ConditionStalled, metav1.ConditionFalse, ReasonAsExpected, "nothing blocks the fleet")
		msg := "every child object is applied"
		if obs.serviceMonitorSkipped {
			msg += "; ServiceMonitor skipped: the monitoring.coreos.com CRD is not installed"
		}
		set(ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, msg)
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
