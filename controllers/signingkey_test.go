package controllers

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// secretReads wraps a reader so that reading Secrets returns err (a cold or
// stale cache answers NotFound; a struggling API server times out).
func secretReads(c client.WithWatch, err error) client.WithWatch {
	return interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return err
			}
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok && m.Kind == "Secret" {
				return err
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
}

// drainEvents returns the events recorded so far.
func drainEvents(rec *events.FakeRecorder) []string {
	var out []string
	for len(rec.Events) > 0 {
		out = append(out, <-rec.Events)
	}
	return out
}

// TestSigningKeyKeptWhenTheCacheMisses reconciles with a client whose cache
// does not hold the signing-key Secret (cold, stale, or filtered by label):
// the key is confirmed with a direct read and kept. When the direct read
// fails too, nothing is generated and the pass fails.
func TestSigningKeyKeptWhenTheCacheMisses(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	p := minimalPHS(ns, "cold")
	p.Labels = map[string]string{directLabel: "true"}
	phs := s.create(t, p)
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(phs)}
	ctx := context.Background()

	r, rec := s.directReconciler(newFaults(), nil)
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatalf("first reconcile: %v", err)
	}
	secret := &corev1.Secret{}
	if _, err := s.get(secret, ns, "cold-signing-key"); err != nil {
		t.Fatal(err)
	}
	key, rv := bytes.Clone(secret.Data[SigningKeyKey]), secret.ResourceVersion
	if len(key) != SigningKeyBytes {
		t.Fatalf("generated key has %d bytes", len(key))
	}
	drainEvents(rec)

	// The cache says NotFound; the API server has the key.
	r.Client = secretReads(s.c, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, "cold-signing-key"))
	r.APIReader = s.c
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatalf("reconcile with a cold cache: %v", err)
	}
	if _, err := s.get(secret, ns, "cold-signing-key"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret.Data[SigningKeyKey], key) || secret.ResourceVersion != rv {
		t.Errorf("the signing key was rewritten after a cache miss (resourceVersion %s -> %s)", rv, secret.ResourceVersion)
	}
	for _, e := range drainEvents(rec) {
		if strings.Contains(e, "SigningKeyGenerated") {
			t.Errorf("a key was generated although one is stored: %s", e)
		}
	}

	// The direct read fails as well: no key is generated, the pass fails and
	// says why.
	r.APIReader = secretReads(s.c, apierrors.NewTimeoutError("injected timeout", 1))
	if _, err := r.Reconcile(ctx, req); err == nil || !strings.Contains(err.Error(), "injected timeout") {
		t.Fatalf("reconcile with an unreadable Secret returned %v, want the read error", err)
	}
	if _, err := s.get(secret, ns, "cold-signing-key"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret.Data[SigningKeyKey], key) || secret.ResourceVersion != rv {
		t.Errorf("the signing key was rewritten after a failed read (resourceVersion %s -> %s)", rv, secret.ResourceVersion)
	}
	for _, e := range drainEvents(rec) {
		if strings.Contains(e, "SigningKeyGenerated") {
			t.Errorf("a key was generated although the stored one could not be read: %s", e)
		}
	}
	got := &playhousev1alpha1.PlayHouseServer{}
	if _, err := s.get(got, ns, "cold"); err != nil {
		t.Fatal(err)
	}
	if d := condition(got, ConditionStalled); d == nil || d.Status != metav1.ConditionTrue || d.Reason != ReasonApplyFailed {
		t.Errorf("Stalled after a failed Secret read: %+v", d)
	}
}

// TestSigningKeyOfAPrecreatedSecretIsKept creates the "<name>-signing-key"
// Secret by hand before the PlayHouseServer. It is the user's: the operator
// neither replaces nor adopts it, reports the name conflict, and the user
// decides (auth.signingKeySecretName is the way to bring one's own key).
func TestSigningKeyOfAPrecreatedSecretIsKept(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	ctx := context.Background()
	key := []byte("a key the token issuer shares, 36 b")
	user := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared-signing-key"},
		Data:       map[string][]byte{SigningKeyKey: key},
	}
	if err := s.c.Create(ctx, user); err != nil {
		t.Fatal(err)
	}
	phs := s.create(t, minimalPHS(ns, "shared"))
	s.waitConflict(t, phs, "Secret shared-signing-key")
	s.waitPasses(t, phs, 2)
	secret := &corev1.Secret{}
	if _, err := s.get(secret, ns, "shared-signing-key"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret.Data[SigningKeyKey], key) || secret.ResourceVersion != user.ResourceVersion ||
		len(secret.OwnerReferences) != 0 || len(secret.Labels) != 0 {
		t.Errorf("the user's Secret was written: %+v", secret.ObjectMeta)
	}

	// Pointing the spec at it is the supported way: the fleet converges.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Auth.SigningKeySecretName = "shared-signing-key" })
	got := s.waitObserved(t, phs)
	waitFor(t, "Stalled=False", func() (bool, error) {
		_, err := s.get(got, ns, "shared")
		c := condition(got, ConditionStalled)
		return c != nil && c.Status == metav1.ConditionFalse && c.ObservedGeneration == got.Generation, err
	})
	if _, err := s.get(secret, ns, "shared-signing-key"); err != nil {
		t.Fatal(err)
	}
	if secret.ResourceVersion != user.ResourceVersion {
		t.Errorf("the user's Secret was written (resourceVersion %s -> %s)", user.ResourceVersion, secret.ResourceVersion)
	}
}
