package controllers

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// The kstatus tests read each PlayHouseServer the way Flux, kpt and
// Argo-style health checks do: with kstatus itself, on the object as stored.
// Condition types and reasons are spelled out, as a tool sees them.

// kstatusOf computes the kstatus of a stored PlayHouseServer.
func (s *suite) kstatusOf(ns, name string) (*status.Result, *unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(playhousev1alpha1.GroupVersion.WithKind("PlayHouseServer"))
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return nil, nil, err
	}
	res, err := status.Compute(u)
	return res, u, err
}

// waitKstatus waits until kstatus reads want for the PlayHouseServer and the
// extra check (nil: none) holds, and returns the last object read.
func (s *suite) waitKstatus(t *testing.T, ns, name string, want status.Status, check func(*playhousev1alpha1.PlayHouseServer) bool) *playhousev1alpha1.PlayHouseServer {
	t.Helper()
	var last *status.Result
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, fmt.Sprintf("kstatus %s for %s", want, name), func() (bool, error) {
		res, _, err := s.kstatusOf(ns, name)
		if err != nil {
			return false, err
		}
		last = res
		if _, err := s.get(got, ns, name); err != nil {
			return false, err
		}
		if res.Status != want || (check != nil && !check(got)) {
			return false, fmt.Errorf("kstatus %s %q; conditions %+v", res.Status, res.Message, got.Status.Conditions)
		}
		return true, nil
	})
	t.Logf("%s: kstatus %s %q", name, last.Status, last.Message)
	return got
}

// readyIs returns a check that the Ready condition has the status and reason
// and describes the current generation.
func readyIs(st metav1.ConditionStatus, reason string) func(*playhousev1alpha1.PlayHouseServer) bool {
	return func(p *playhousev1alpha1.PlayHouseServer) bool {
		c := condition(p, "Ready")
		return c != nil && c.Status == st && (reason == "" || c.Reason == reason) && c.ObservedGeneration == p.Generation &&
			p.Status.ObservedGeneration == p.Generation
	}
}

// setDeploymentStatus plays the Deployment controller: it writes the
// Deployment's status subresource (a real API server write).
func setDeploymentStatus(t *testing.T, s *suite, ns, name string, change func(*appsv1.Deployment)) {
	t.Helper()
	waitFor(t, "Deployment status update", func() (bool, error) {
		d := &appsv1.Deployment{}
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
			return false, err
		}
		change(d)
		return true, s.c.Status().Update(context.Background(), d)
	})
}

// zeroQuota creates a ResourceQuota that lets no object of resource (such as
// "count/deployments.apps") be created in ns. envtest runs no quota
// controller, so the test also writes the quota's status, as it would.
func zeroQuota(t *testing.T, s *suite, ns, resourceName string) {
	t.Helper()
	rn := corev1.ResourceName(resourceName)
	q := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "none"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{rn: resource.MustParse("0")}},
	}
	ctx := context.Background()
	if err := s.c.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	q.Status = corev1.ResourceQuotaStatus{Hard: q.Spec.Hard, Used: corev1.ResourceList{rn: resource.MustParse("0")}}
	if err := s.c.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
}

// TestKstatusDeploymentCannotBeCreated: a fleet whose Deployment the API
// server refuses is Failed (Stalled), never Current, and still has a Ready
// condition.
func TestKstatusDeploymentCannotBeCreated(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	zeroQuota(t, s, ns, "count/deployments.apps")
	s.create(t, minimalPHS(ns, "noquota"))
	s.waitKstatus(t, ns, "noquota", status.FailedStatus, readyIs(metav1.ConditionFalse, "ApplyFailed"))
}

// TestKstatusLifecycle follows one fleet through the states a GitOps tool
// waits on: rolling out, ready, stuck past its progress deadline, a spec
// update the API server refuses, and scaled to zero.
func TestKstatusLifecycle(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := minimalPHS(ns, "life")
	phs.Spec.Replicas = ptr.To(int32(2))
	s.create(t, phs)

	// Created, no pod ready yet: InProgress.
	s.waitKstatus(t, ns, "life", status.InProgressStatus, readyIs(metav1.ConditionFalse, ""))

	// Every replica ready: Current.
	setDeploymentReady(t, s, ns, "life")
	s.waitKstatus(t, ns, "life", status.CurrentStatus, readyIs(metav1.ConditionTrue, "ReplicasReady"))

	// The rollout of a new template exceeds its progress deadline: Failed,
	// and Ready is False although the old replicas still serve.
	setDeploymentStatus(t, s, ns, "life", func(d *appsv1.Deployment) {
		d.Status.UpdatedReplicas = 1
		d.Status.Conditions = []appsv1.DeploymentCondition{{
			Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded",
			Message: "ReplicaSet has timed out progressing.",
		}}
	})
	s.waitKstatus(t, ns, "life", status.FailedStatus, readyIs(metav1.ConditionFalse, "ProgressDeadlineExceeded"))

	// The Deployment recovers.
	setDeploymentReady(t, s, ns, "life")
	setDeploymentStatus(t, s, ns, "life", func(d *appsv1.Deployment) { d.Status.Conditions = nil })
	s.waitKstatus(t, ns, "life", status.CurrentStatus, readyIs(metav1.ConditionTrue, "ReplicasReady"))

	// A spec update whose new child the API server refuses: Failed, not
	// InProgress forever.
	zeroQuota(t, s, ns, "count/poddisruptionbudgets.policy")
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.DisruptionBudget.Enabled = true })
	s.waitKstatus(t, ns, "life", status.FailedStatus, readyIs(metav1.ConditionFalse, "ApplyFailed"))
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.DisruptionBudget.Enabled = false })
	s.waitKstatus(t, ns, "life", status.CurrentStatus, readyIs(metav1.ConditionTrue, "ReplicasReady"))

	// Scaled to zero is settled: Current, and the columns read 0.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Replicas = ptr.To(int32(0)) })
	waitFor(t, "Deployment at 0 replicas", func() (bool, error) {
		d := &appsv1.Deployment{}
		_, err := s.get(d, ns, "life")
		return ptr.Deref(d.Spec.Replicas, 1) == 0, err
	})
	setDeploymentReady(t, s, ns, "life")
	got := s.waitKstatus(t, ns, "life", status.CurrentStatus, readyIs(metav1.ConditionTrue, "ScaledToZero"))
	_, u, err := s.kstatusOf(ns, "life")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"replicas", "readyReplicas", "sessions"} {
		if v, ok, _ := unstructured.NestedInt64(u.Object, "status", f); !ok || v != 0 {
			t.Errorf("status.%s = %v (present %v), want a stored 0 (the printer column must not be blank)", f, v, ok)
		}
	}
	if got.Status.Replicas != 0 {
		t.Errorf("replicas %d", got.Status.Replicas)
	}
}

// TestStatusCountersReadZeroBeforeAnyReconcile: a PlayHouseServer no
// operator has reconciled yet still shows 0 in the REPLICAS and SESSIONS
// columns (the CRD defaults the status counters).
func TestStatusCountersReadZeroBeforeAnyReconcile(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	p := minimalPHS(ns, "fresh")
	p.Labels = map[string]string{directLabel: "true"} // the manager ignores it
	s.create(t, p)
	_, u, err := s.kstatusOf(ns, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"replicas", "readyReplicas", "sessions", "observedGeneration"} {
		if v, ok, _ := unstructured.NestedInt64(u.Object, "status", f); !ok || v != 0 {
			t.Errorf("status.%s = %v (present %v), want a stored 0", f, v, ok)
		}
	}
	// observedGeneration 0 < generation 1: not reconciled yet, which kstatus
	// reads as InProgress rather than Current.
	res, err := status.Compute(u)
	if err != nil || res.Status != status.InProgressStatus {
		t.Errorf("kstatus of an unreconciled object: %+v (%v), want InProgress", res, err)
	}
}
