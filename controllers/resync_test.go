package controllers

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// TestResyncWritesNothing: once a fleet has converged, the periodic resyncs
// send no write at all (no apply, no status patch); a child edited by hand is
// repaired with one apply of that child alone.
func TestResyncWritesNothing(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	ctx := context.Background()
	phs := minimalPHS(ns, "quiet")
	phs.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To(int32(1)), MaxReplicas: 4, TargetSessionsPerPod: 100}
	phs.Spec.DisruptionBudget = playhousev1alpha1.DisruptionBudgetSpec{Enabled: true, MaxUnavailable: ptr.To(intstr.FromInt32(1))}
	phs.Spec.Monitoring.ServiceMonitor = true
	phs.Spec.Pod.Env = []corev1.EnvVar{{Name: "GAME", Value: "chess"}}
	phs.Spec.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: mustQuantity(t, "0.5")}}
	s.create(t, phs)
	s.waitObserved(t, phs)
	setDeploymentReady(t, s, ns, "quiet")
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "Ready=True", func() (bool, error) {
		ok, err := s.get(got, ns, "quiet")
		r := condition(got, ConditionReady)
		return ok && r != nil && r.Status == "True", err
	})
	// Let any pass already queued finish, then watch three resyncs.
	s.waitPasses(t, phs, 1)
	before := s.calls.writes(ns)
	s.waitPasses(t, phs, 3)
	after := s.calls.writes(ns)
	for k, n := range after {
		if n != before[k] {
			t.Errorf("a resync of an unchanged fleet sent %d %q", n-before[k], k)
		}
	}

	// A hand edit of one child is repaired by an apply of that child only.
	svc := &corev1.Service{}
	if _, err := s.get(svc, ns, "quiet"); err != nil {
		t.Fatal(err)
	}
	wantSel := svc.Spec.Selector
	svc.Spec.Selector = map[string]string{"app": "elsewhere"}
	if err := s.c.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Service's selector repaired", func() (bool, error) {
		_, err := s.get(svc, ns, "quiet")
		return len(svc.Spec.Selector) == len(wantSel) && svc.Spec.Selector[LabelInstance] == "quiet" && svc.Spec.Selector["app"] == "", err
	})
	s.waitPasses(t, phs, 2)
	repaired := s.calls.writes(ns)
	for k, n := range repaired {
		if n == after[k] {
			continue
		}
		if !strings.HasPrefix(k, "apply Service ") && !strings.HasPrefix(k, "status-patch ") {
			t.Errorf("repairing the Service also sent %d %q", n-after[k], k)
		}
	}
	if n := repaired["apply Service "+ns+"/quiet"] - after["apply Service "+ns+"/quiet"]; n < 1 || n > 2 {
		t.Errorf("the Service was applied %d times to repair it, want 1 (2 at most after a stale read)", n)
	}

	// No event claims an update that did not happen: one Updated event, for the Service.
	evs := &eventsv1.EventList{}
	if err := s.c.List(ctx, evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Reason == "Updated" && (e.Related == nil || e.Related.Kind != "Service" || e.Related.Name != "quiet") {
			t.Errorf("spurious Updated event: %+v: %s", e.Related, e.Note)
		}
	}
}

// mustQuantity parses a resource quantity.
func mustQuantity(t *testing.T, s string) resource.Quantity {
	t.Helper()
	q, err := resource.ParseQuantity(s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
