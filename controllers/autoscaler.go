package controllers

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// KEDA's ScaledObject, handled as unstructured data so the operator does not
// depend on KEDA's Go module.
const (
	// KEDAGroup is the API group of ScaledObject.
	KEDAGroup = "keda.sh"
	// ScaledObjectKind is the kind name.
	ScaledObjectKind = "ScaledObject"
	// scaledObjectVersion is the only version the operator writes.
	scaledObjectVersion = "v1alpha1"
)

// Reasons of the AutoscalingActive condition.
const (
	// ReasonScalingActive: the autoscaler reads its metric and can scale.
	ReasonScalingActive = "ScalingActive"
	// ReasonAutoscalerPending: the autoscaler exists but has not reported
	// yet (no HPA controller or KEDA operator has looked at it).
	ReasonAutoscalerPending = "AutoscalerPending"
	// ReasonKEDANotInstalled: the provider is keda but the cluster does not
	// serve keda.sh ScaledObjects.
	ReasonKEDANotInstalled = "KEDANotInstalled"
	// ReasonScaledObjectNotReady: KEDA reports the ScaledObject not ready
	// (bad trigger, Prometheus unreachable, ...).
	ReasonScaledObjectNotReady = "ScaledObjectNotReady"
)

// +kubebuilder:rbac:groups=keda.sh,resources=scaledobjects,verbs=get;list;watch;create;patch;delete

// scaledObjectGK is the group and kind of KEDA's ScaledObject.
var scaledObjectGK = schema.GroupKind{Group: KEDAGroup, Kind: ScaledObjectKind}

// newScaledObject is an empty unstructured ScaledObject for reads.
func newScaledObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(scaledObjectGK.WithVersion(scaledObjectVersion))
	return u
}

// autoscalingProvider is the spec's provider with its default.
func autoscalingProvider(phs *playhousev1alpha1.PlayHouseServer) string {
	if p := phs.Spec.Autoscaling.Provider; p != "" {
		return p
	}
	return playhousev1alpha1.AutoscalingProviderHPA
}

// targetSessionsPerPod is the autoscalers' per-pod target: the spec's, else
// a fraction of limits.maxConnections.
func targetSessionsPerPod(phs *playhousev1alpha1.PlayHouseServer) (int64, error) {
	if t := phs.Spec.Autoscaling.TargetSessionsPerPod; t > 0 {
		return int64(t), nil
	}
	cfg, err := renderConfig(phs)
	if err != nil {
		return 0, err
	}
	return max(1, int64(float64(cfg.Limits.MaxConnections)*defaultTargetSessionsFraction)), nil
}

// FleetSessionsQuery is the PromQL the keda provider's trigger runs: the
// fleet's open sessions, summed over its pods. The pods are matched by
// namespace and by the Deployment's pod-name shape <name>-<hash>-<id>, so a
// fleet named "a" never counts the pods of a fleet named "a-b".
func FleetSessionsQuery(namespace, name string) string {
	return fmt.Sprintf(`sum(%s{namespace=%q,pod=~%q})`, SessionsMetric, namespace,
		regexp.QuoteMeta(name)+"-[a-z0-9]+-[a-z0-9]+")
}

// desiredScaledObject builds the keda.sh/v1alpha1 ScaledObject of a fleet
// whose provider is keda, or nil otherwise. The trigger's threshold is the
// target sessions per pod (an AverageValue metric: KEDA's HPA divides the
// fleet's sum by the replica count), and the HPA KEDA creates gets the same
// drain-safe scale-down behavior as the hpa provider's.
func desiredScaledObject(phs *playhousev1alpha1.PlayHouseServer) (*unstructured.Unstructured, error) {
	a := &phs.Spec.Autoscaling
	if !a.Enabled || autoscalingProvider(phs) != playhousev1alpha1.AutoscalingProviderKEDA {
		return nil, nil
	}
	if a.Prometheus == nil || a.Prometheus.ServerAddress == "" {
		return nil, fmt.Errorf("spec.autoscaling.prometheus.serverAddress is required when the provider is keda")
	}
	cfg, err := renderConfig(phs)
	if err != nil {
		return nil, err
	}
	target, err := targetSessionsPerPod(phs)
	if err != nil {
		return nil, err
	}
	minReplicas := ptr.Deref(a.MinReplicas, 1)
	maxReplicas := max(a.MaxReplicas, minReplicas)
	behavior, err := runtime.DefaultUnstructuredConverter.ToUnstructured(hpaBehavior(phs, cfg.DrainTimeout.Duration))
	if err != nil {
		return nil, fmt.Errorf("convert the scaling behavior: %w", err)
	}
	pruneNulls(behavior)
	lbls := map[string]any{}
	for k, v := range commonLabels(phs.Name) {
		lbls[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": KEDAGroup + "/" + scaledObjectVersion,
		"kind":       ScaledObjectKind,
		"metadata":   unstructuredChildMeta(phs, lbls),
		"spec": map[string]any{
			"scaleTargetRef":  map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": phs.Name},
			"minReplicaCount": int64(minReplicas),
			"maxReplicaCount": int64(maxReplicas),
			"advanced": map[string]any{
				"horizontalPodAutoscalerConfig": map[string]any{"behavior": behavior},
			},
			"triggers": []any{map[string]any{
				"type":       "prometheus",
				"metricType": string(autoscalingv2.AverageValueMetricType),
				"metadata": map[string]any{
					"serverAddress": a.Prometheus.ServerAddress,
					"query":         FleetSessionsQuery(phs.Namespace, phs.Name),
					"threshold":     strconv.FormatInt(target, 10),
				},
			}},
		},
	}}, nil
}

// kedaInstalled asks the REST mapper whether the API server serves KEDA's
// ScaledObject. The mapper re-reads discovery on a miss, so KEDA installed
// after the operator started is found at the next pass.
func (r *PlayHouseServerReconciler) kedaInstalled() (bool, error) {
	_, err := r.RESTMapper.RESTMapping(scaledObjectGK, scaledObjectVersion)
	switch {
	case err == nil:
		return true, nil
	case meta.IsNoMatchError(err):
		return false, nil
	default:
		return false, fmt.Errorf("look up the ScaledObject kind: %w", err)
	}
}

// autoscalerObservation is what a pass saw of the fleet's autoscaler; nil
// when autoscaling is disabled.
type autoscalerObservation struct {
	// provider is hpa or keda.
	provider string
	// hpa is the applied HorizontalPodAutoscaler (provider hpa), with status.
	hpa *autoscalingv2.HorizontalPodAutoscaler
	// scaledObject is the applied ScaledObject (provider keda), with status.
	scaledObject *unstructured.Unstructured
	// kedaMissing is set when the provider is keda and the cluster does not
	// serve ScaledObjects: nothing was applied.
	kedaMissing bool
}

// reconcileAutoscaler applies the fleet's autoscaler (hpa: the desired
// HorizontalPodAutoscaler; keda: the ScaledObject, when KEDA's CRD is
// served) and deletes the one of the other provider, so switching provider
// never leaves two autoscalers fighting over the Deployment's replicas. It
// returns what it saw, for the AutoscalingActive condition (nil: autoscaling
// is disabled). desiredHPA is the HPA rendered for the spec (nil unless the
// provider is hpa and autoscaling enabled).
func (r *PlayHouseServerReconciler) reconcileAutoscaler(ctx context.Context, phs *playhousev1alpha1.PlayHouseServer, desiredHPA *autoscalingv2.HorizontalPodAutoscaler) (*autoscalerObservation, error) {
	so, err := desiredScaledObject(phs)
	if err != nil {
		return nil, err
	}
	var obs *autoscalerObservation
	if phs.Spec.Autoscaling.Enabled {
		obs = &autoscalerObservation{provider: autoscalingProvider(phs)}
	}

	if desiredHPA != nil {
		live := &autoscalingv2.HorizontalPodAutoscaler{}
		if err := r.apply(ctx, phs, desiredHPA, live); err != nil {
			return obs, err
		}
		obs.hpa = live
	} else if err := r.deleteOwned(ctx, phs, &autoscalingv2.HorizontalPodAutoscaler{}, phs.Name); err != nil {
		return obs, err
	}

	installed, err := r.kedaInstalled()
	if err != nil {
		return obs, err
	}
	switch {
	case so != nil && !installed:
		obs.kedaMissing = true
	case so != nil:
		live := newScaledObject()
		if err := r.apply(ctx, phs, so, live); err != nil {
			if meta.IsNoMatchError(err) {
				// The CRD went away between the lookup and the write.
				obs.kedaMissing = true
				return obs, nil
			}
			return obs, err
		}
		obs.scaledObject = live
	case installed:
		// A ScaledObject to remove can only exist where the kind is served.
		if err := r.deleteOwned(ctx, phs, newScaledObject(), phs.Name); err != nil {
			return obs, err
		}
	}
	return obs, nil
}

// setAutoscalingCondition sets the AutoscalingActive condition from what a
// pass saw of the autoscaler (as, from reconcileAutoscaler), or removes it
// when autoscaling is disabled. A pass that did not reach the autoscaler
// (as nil while autoscaling is enabled) leaves the condition as it was.
// It reports whether the autoscaler actually works, not that it was applied:
//
//   - hpa: the HorizontalPodAutoscaler's ScalingActive condition (False with
//     FailedGetPodsMetric when no custom-metrics adapter serves the metric);
//   - keda: the ScaledObject's Ready condition; False with KEDANotInstalled
//     when the cluster does not serve ScaledObjects;
//   - Unknown (AutoscalerPending) while nothing has reported on it yet.
func setAutoscalingCondition(conds *[]metav1.Condition, phs *playhousev1alpha1.PlayHouseServer, as *autoscalerObservation) {
	if !phs.Spec.Autoscaling.Enabled {
		meta.RemoveStatusCondition(conds, playhousev1alpha1.ConditionAutoscalingActive)
		return
	}
	if as == nil {
		return
	}
	gen := phs.Generation
	set := func(status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(conds, metav1.Condition{
			Type: playhousev1alpha1.ConditionAutoscalingActive, Status: status, Reason: reason,
			Message: truncateMessage(msg), ObservedGeneration: gen,
		})
	}
	switch {
	case as.kedaMissing:
		set(metav1.ConditionFalse, ReasonKEDANotInstalled,
			"spec.autoscaling.provider is keda, but the cluster does not serve keda.sh/v1alpha1 ScaledObjects: install KEDA, or use provider hpa with a custom-metrics adapter; the replica count stays where it is")
	case as.hpa != nil:
		c := hpaCondition(as.hpa, autoscalingv2.ScalingActive)
		switch {
		case c == nil:
			set(metav1.ConditionUnknown, ReasonAutoscalerPending,
				"the HorizontalPodAutoscaler has not reported yet (is the HPA controller of kube-controller-manager running?)")
		case c.Status == corev1.ConditionTrue:
			set(metav1.ConditionTrue, ReasonScalingActive, "HorizontalPodAutoscaler "+as.hpa.Name+": "+c.Message)
		default:
			set(metav1.ConditionFalse, c.Reason, "HorizontalPodAutoscaler "+as.hpa.Name+" cannot scale: "+c.Message+
				" (the hpa provider needs a custom-metrics adapter serving "+SessionsMetric+" per pod)")
		}
	case as.scaledObject != nil:
		ready := unstructuredCondition(as.scaledObject, "Ready")
		active := unstructuredCondition(as.scaledObject, "Active")
		activity := ""
		if active != nil {
			activity = "; Active=" + active.status
		}
		switch {
		case ready == nil || ready.status == string(metav1.ConditionUnknown):
			set(metav1.ConditionUnknown, ReasonAutoscalerPending,
				"the ScaledObject has not been reported ready yet (is the KEDA operator running?)")
		case ready.status == string(metav1.ConditionTrue):
			set(metav1.ConditionTrue, ReasonScalingActive, "ScaledObject "+as.scaledObject.GetName()+" is ready"+activity)
		default:
			set(metav1.ConditionFalse, ReasonScaledObjectNotReady,
				"ScaledObject "+as.scaledObject.GetName()+" is not ready: "+ready.reason+": "+ready.message)
		}
	default:
		set(metav1.ConditionUnknown, ReasonAutoscalerPending, "the autoscaler has not been observed yet")
	}
}

// hpaCondition returns the HPA's condition of type t, or nil.
func hpaCondition(h *autoscalingv2.HorizontalPodAutoscaler, t autoscalingv2.HorizontalPodAutoscalerConditionType) *autoscalingv2.HorizontalPodAutoscalerCondition {
	for i := range h.Status.Conditions {
		if h.Status.Conditions[i].Type == t {
			return &h.Status.Conditions[i]
		}
	}
	return nil
}

// looseCondition is a status condition read from unstructured data.
type looseCondition struct {
	status, reason, message string
}

// unstructuredCondition returns status.conditions[type=t] of u, or nil.
func unstructuredCondition(u *unstructured.Unstructured, t string) *looseCondition {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, item := range list {
		m, ok := item.(map[string]any)
		if !ok || m["type"] != t {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		return &looseCondition{status: str("status"), reason: str("reason"), message: str("message")}
	}
	return nil
}
