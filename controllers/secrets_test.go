package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// waitStalled waits until phs is Stalled (and not Ready) for reason, with a
// message containing want.
func (s *suite) waitStalled(t *testing.T, phs *playhousev1alpha1.PlayHouseServer, reason, want string) {
	t.Helper()
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "Stalled "+reason+" naming "+want, func() (bool, error) {
		ok, err := s.get(got, phs.Namespace, phs.Name)
		st, r := condition(got, ConditionStalled), condition(got, ConditionReady)
		return ok && st != nil && st.Status == metav1.ConditionTrue && st.Reason == reason && strings.Contains(st.Message, want) &&
			r != nil && r.Status == metav1.ConditionFalse && r.Reason == reason && st.ObservedGeneration == got.Generation, err
	})
}

// waitWarning waits for a Warning event with reason on phs whose note contains want.
func (s *suite) waitWarning(t *testing.T, phs *playhousev1alpha1.PlayHouseServer, reason, want string) {
	t.Helper()
	waitFor(t, "a Warning event "+reason, func() (bool, error) {
		evs := &eventsv1.EventList{}
		if err := s.c.List(context.Background(), evs, client.InNamespace(phs.Namespace)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == phs.Name && e.Type == corev1.EventTypeWarning && e.Reason == reason && strings.Contains(e.Note, want) {
				return true, nil
			}
		}
		return false, nil
	})
}

// TestMissingTLSSecretIsReported: a TLS Secret that does not exist, then one
// without its private key, are reported (Stalled, Ready=False, a Warning
// event); nothing is rolled out meanwhile, and the fleet recovers once the
// Secret is complete.
func TestMissingTLSSecretIsReported(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	ctx := context.Background()
	phs := minimalPHS(ns, "tls")
	phs.Spec.Transports = playhousev1alpha1.TransportsSpec{
		TCP:    playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7000},
		TLSTCP: playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7002},
		TLS:    playhousev1alpha1.TLSSpec{SecretName: "does-not-exist"},
	}
	s.create(t, phs)
	s.waitStalled(t, phs, ReasonSecretNotFound, "Secret does-not-exist (transports.tls.secretName)")
	s.waitWarning(t, phs, ReasonSecretNotFound, "does-not-exist")
	if ok, err := s.get(&corev1.ConfigMap{}, ns, "tls-config"); ok || err != nil {
		t.Errorf("children were written while the TLS Secret is missing (%v)", err)
	}

	// The Secret appears without its key: still not startable.
	sec := s.createSecret(t, ns, "does-not-exist", corev1.TLSCertKey)
	s.waitStalled(t, phs, ReasonSecretInvalid, `has no key "tls.key"`)

	// Completed: the fleet converges.
	sec.Data[corev1.TLSPrivateKeyKey] = []byte("a private key placeholder")
	if err := s.c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "Stalled=False and the Deployment", func() (bool, error) {
		ok, err := s.get(got, ns, "tls")
		c := condition(got, ConditionStalled)
		dok, derr := s.get(&corev1.ConfigMap{}, ns, "tls-config")
		return ok && dok && c != nil && c.Status == metav1.ConditionFalse, errors.Join(err, derr)
	})
}

// TestMissingSecretsOfOtherFields: a user signing-key Secret and an env
// secretKeyRef are checked as well; an optional env reference is not.
func TestMissingSecretsOfOtherFields(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := minimalPHS(ns, "refs")
	phs.Spec.Auth.SigningKeySecretName = "my-key"
	phs.Spec.Pod.Env = []corev1.EnvVar{
		{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}},
		{Name: "EXTRA", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "maybe"}, Key: "x", Optional: ptr.To(true)}}},
	}
	s.create(t, phs)
	s.waitStalled(t, phs, ReasonSecretNotFound, "Secret my-key (auth.signingKeySecretName)")
	s.createSecret(t, ns, "my-key", "wrong-key")
	s.waitStalled(t, phs, ReasonSecretInvalid, `Secret my-key (auth.signingKeySecretName) has no key "signing-key"`)
	if err := s.c.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-key"}}); err != nil {
		t.Fatal(err)
	}
	s.createSecret(t, ns, "my-key", SigningKeyKey)
	s.waitStalled(t, phs, ReasonSecretNotFound, "Secret db (pod.env[DB_PASSWORD])")
	s.createSecret(t, ns, "db", "password")
	s.waitObserved(t, phs)
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "Stalled=False", func() (bool, error) {
		_, err := s.get(got, ns, "refs")
		c := condition(got, ConditionStalled)
		return c != nil && c.Status == metav1.ConditionFalse, err
	})
}

// TestSecretEventsReachTheirFleets: the Secret watch maps a Secret to the
// PlayHouseServer that owns it and to every one that references it.
func TestSecretEventsReachTheirFleets(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	a := minimalPHS(ns, "a")
	a.Spec.Transports = playhousev1alpha1.TransportsSpec{
		TCP: playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7000},
		TLS: playhousev1alpha1.TLSSpec{SecretName: "shared-tls"},
	}
	b := minimalPHS(ns, "b")
	b.Spec.Pod.Env = []corev1.EnvVar{{Name: "K", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "shared-tls"}, Key: "k"}}}}
	c := minimalPHS(ns, "c")
	for _, p := range []*playhousev1alpha1.PlayHouseServer{a, b, c} {
		s.create(t, p)
	}
	r := &PlayHouseServerReconciler{Client: s.c}
	sec := secretMetadata()
	sec.Namespace, sec.Name = ns, "shared-tls"
	got := r.secretRequests(context.Background(), sec)
	want := map[string]bool{"a": true, "b": true}
	if len(got) != 2 || !want[got[0].Name] || !want[got[1].Name] || got[0].Name == got[1].Name {
		t.Errorf("requests %v, want a and b", got)
	}
	owned := secretMetadata()
	owned.Namespace, owned.Name = ns, "c-signing-key"
	owned.OwnerReferences = []metav1.OwnerReference{ownerRef(c)}
	if got := r.secretRequests(context.Background(), owned); len(got) != 1 || got[0] != (reconcile.Request{NamespacedName: client.ObjectKeyFromObject(c)}) {
		t.Errorf("requests for an owned Secret %v, want c", got)
	}
}

// TestSecretWatchWakesTheFleet runs a second operator manager, confined to
// one namespace, whose resync is an hour: only the Secret watch can bring a
// PlayHouseServer waiting for its TLS Secret back when the Secret appears.
// (The suite's manager ignores the object: it carries the direct label.)
func TestSecretWatchWakesTheFleet(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	byObject := CacheByObject()
	byObject[&playhousev1alpha1.PlayHouseServer{}] = cache.ByObject{}
	mgr, err := ctrl.NewManager(s.cfg, ctrl.Options{
		Scheme:                 s.scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{ByObject: byObject, DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := NewPlayHouseServerReconciler(mgr, Options{DefaultImage: "playhouse:test", ResyncInterval: time.Hour, Sessions: newFakeSessions()})
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("second manager: %v", err)
		}
	})

	phs := minimalPHS(ns, "wake")
	phs.Labels = map[string]string{directLabel: "true"}
	phs.Spec.Transports = playhousev1alpha1.TransportsSpec{
		TCP: playhousev1alpha1.ListenerSpec{Enabled: true, Port: 7000},
		TLS: playhousev1alpha1.TLSSpec{SecretName: "wake-tls"},
	}
	s.create(t, phs)
	s.waitStalled(t, phs, ReasonSecretNotFound, "Secret wake-tls")
	s.createSecret(t, ns, "wake-tls", corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	got := &playhousev1alpha1.PlayHouseServer{}
	waitFor(t, "Stalled=False after the Secret appeared", func() (bool, error) {
		_, err := s.get(got, ns, "wake")
		c := condition(got, ConditionStalled)
		return c != nil && c.Status == metav1.ConditionFalse, err
	})
}
