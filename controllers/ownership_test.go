package controllers

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// userObjects creates, in ns, a user's ConfigMap "<name>-config", Service
// "<name>" (port 5432) and Deployment "<name>", none of them made by the
// operator, and returns them as stored.
func userObjects(t *testing.T, s *suite, ns, name string) []client.Object {
	t.Helper()
	sel := map[string]string{"app": "db"}
	objs := []client.Object{
		&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: configMapName(name)},
			Data:       map[string]string{ConfigKey: "user: data\n", "other": "keep me"},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{
				Selector: sel,
				Ports:    []corev1.ServicePort{{Name: "postgres", Port: 5432}},
			},
		},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(int32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: sel},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: sel},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "postgres", Image: "postgres:16"}}},
				},
			},
		},
	}
	for _, o := range objs {
		if err := s.c.Create(context.Background(), o); err != nil {
			t.Fatalf("create the user's %T %s: %v", o, o.GetName(), err)
		}
	}
	return objs
}

// requireUntouched fails when a user's object was written at all: another
// resourceVersion, an owner reference, or other content.
func requireUntouched(t *testing.T, s *suite, want client.Object) {
	t.Helper()
	got, ok := want.DeepCopyObject().(client.Object)
	if !ok {
		t.Fatalf("cannot copy %T", want)
	}
	if _, err := s.get(got, want.GetNamespace(), want.GetName()); err != nil {
		t.Fatalf("get %T %s: %v", want, want.GetName(), err)
	}
	if refs := got.GetOwnerReferences(); len(refs) != 0 {
		t.Errorf("%T %s gained owner references %+v", want, want.GetName(), refs)
	}
	if got.GetResourceVersion() != want.GetResourceVersion() {
		t.Errorf("%T %s was written (resourceVersion %s -> %s)", want, want.GetName(), want.GetResourceVersion(), got.GetResourceVersion())
	}
	switch w := want.(type) {
	case *corev1.ConfigMap:
		if g := got.(*corev1.ConfigMap); !equality.Semantic.DeepEqual(g.Data, w.Data) {
			t.Errorf("ConfigMap %s data %v, want %v", w.Name, g.Data, w.Data)
		}
	case *corev1.Service:
		if g := got.(*corev1.Service); !equality.Semantic.DeepEqual(g.Spec.Selector, w.Spec.Selector) || len(g.Spec.Ports) != 1 || g.Spec.Ports[0].Port != 5432 {
			t.Errorf("Service %s spec changed: %+v", w.Name, g.Spec)
		}
	case *appsv1.Deployment:
		if g := got.(*appsv1.Deployment); g.Spec.Template.Spec.Containers[0].Image != "postgres:16" || len(g.Spec.Template.Spec.Containers) != 1 {
			t.Errorf("Deployment %s template changed: %+v", w.Name, g.Spec.Template.Spec.Containers)
		}
	}
}

// waitConflict waits until phs reports a child name conflict naming want
// (such as "ConfigMap victim-config") with Ready and Stalled.
func (s *suite) waitConflict(t *testing.T, phs *playhousev1alpha1.PlayHouseServer, want string) *playhousev1alpha1.PlayHouseServer {
	t.Helper()
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "a ChildNameConflict naming "+want, func() (bool, error) {
		ok, err := s.get(got, phs.Namespace, phs.Name)
		r, st := condition(got, ConditionReady), condition(got, ConditionStalled)
		return ok && r != nil && r.Status == metav1.ConditionFalse && r.Reason == ReasonChildNameConflict &&
			strings.Contains(r.Message, want) &&
			st != nil && st.Status == metav1.ConditionTrue && st.Reason == ReasonChildNameConflict &&
			got.Status.ObservedGeneration == got.Generation, err
	})
	return got
}

func TestUserObjectsAreNeverTakenOver(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	ctx := context.Background()
	user := userObjects(t, s, ns, "victim")
	cm, svc, dep := user[0], user[1], user[2]

	phs := s.create(t, minimalPHS(ns, "victim"))
	s.waitConflict(t, phs, "ConfigMap victim-config")
	s.waitPasses(t, phs, 2)
	for _, o := range user {
		requireUntouched(t, s, o)
	}
	waitFor(t, "a Warning event ChildNameConflict", func() (bool, error) {
		evs := &eventsv1.EventList{}
		if err := s.c.List(ctx, evs, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "victim" && e.Type == corev1.EventTypeWarning && e.Reason == ReasonChildNameConflict &&
				strings.Contains(e.Note, "ConfigMap victim-config") {
				return true, nil
			}
		}
		return false, nil
	})

	// The user removes the ConfigMap: the operator takes the free name and
	// stops at the next foreign object.
	if err := s.c.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	own := &corev1.ConfigMap{}
	waitFor(t, "the operator's own ConfigMap", func() (bool, error) {
		ok, err := s.get(own, ns, "victim-config")
		return ok && metav1.IsControlledBy(own, phs), err
	})
	s.waitConflict(t, phs, "Service victim")
	s.waitPasses(t, phs, 2)
	requireUntouched(t, s, svc)
	requireUntouched(t, s, dep)

	// Deleting the PlayHouseServer leaves the user's objects as they were: no
	// owner reference was ever added, so the garbage collector (which
	// envtest does not run) would have nothing to collect.
	if err := s.c.Delete(ctx, phs); err != nil {
		t.Fatal(err)
	}
	requireUntouched(t, s, svc)
	requireUntouched(t, s, dep)
	if n := s.calls.writes(ns); n["apply Service "+ns+"/victim"]+n["apply Deployment "+ns+"/victim"] != 0 {
		t.Errorf("the operator sent writes to the user's objects: %v", n)
	}
}
