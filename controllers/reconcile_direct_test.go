package controllers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// faults injects API errors into a client and counts its writes.
type faults struct {
	mu sync.Mutex
	// applyErrs maps a kind to the errors its next applies return, in order.
	applyErrs map[string][]error
	// statusErrs are the errors the next status patches return, in order.
	statusErrs []error
	// writes counts every write call that reached the API server, by verb.
	writes map[string]int
}

func newFaults() *faults {
	return &faults{applyErrs: map[string][]error{}, writes: map[string]int{}}
}

// next pops the next injected error of a queue.
func next(q *[]error) error {
	if len(*q) == 0 {
		return nil
	}
	err := (*q)[0]
	*q = (*q)[1:]
	return err
}

func (f *faults) failApply(kind string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applyErrs[kind] = append(f.applyErrs[kind], errs...)
}

func (f *faults) failStatus(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusErrs = append(f.statusErrs, errs...)
}

func (f *faults) count(verb string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes[verb]++
}

// resetWrites returns the write counts so far and starts over.
func (f *faults) resetWrites() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes = map[string]int{}
	return w
}

// wrap returns c with the faults injected.
func (f *faults) wrap(c client.WithWatch) client.WithWatch {
	return interceptor.NewClient(c, interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			kind := ""
			if k, ok := obj.(interface{ GetKind() string }); ok {
				kind = k.GetKind()
			}
			f.mu.Lock()
			q := f.applyErrs[kind]
			err := next(&q)
			f.applyErrs[kind] = q
			f.mu.Unlock()
			if err != nil {
				return err
			}
			f.count("apply")
			return c.Apply(ctx, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			f.count("create")
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			f.count("update")
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			f.count("patch")
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			f.count("delete")
			return c.Delete(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			f.mu.Lock()
			err := next(&f.statusErrs)
			f.mu.Unlock()
			if err != nil {
				return err
			}
			f.count("status-patch")
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
}

// directReconciler builds a reconciler that talks to the API server without a
// cache, through f, for a test that calls Reconcile itself.
func (s *suite) directReconciler(f *faults, sessions SessionReader) (*PlayHouseServerReconciler, *events.FakeRecorder) {
	c := f.wrap(s.c)
	rec := events.NewFakeRecorder(1000)
	return &PlayHouseServerReconciler{
		Client:         c,
		APIReader:      c,
		Scheme:         s.scheme,
		RESTMapper:     s.mgr.GetRESTMapper(),
		Recorder:       rec,
		Sessions:       sessions,
		DefaultImage:   "playhouse:test",
		ResyncInterval: testResync,
	}, rec
}

// directPHS is a PlayHouseServer the suite's manager ignores, with every
// optional child turned on.
func directPHS(ns, name string) *playhousev1alpha1.PlayHouseServer {
	p := minimalPHS(ns, name)
	p.Labels = map[string]string{directLabel: "true"}
	p.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MaxReplicas: 4, TargetSessionsPerPod: 100}
	p.Spec.DisruptionBudget.Enabled = true
	p.Spec.Monitoring.ServiceMonitor = true
	return p
}

// resourceVersions reads the resourceVersion of the PlayHouseServer, every
// child it can have and the given pods ("" for those that do not exist).
func (s *suite) resourceVersions(t *testing.T, phs *playhousev1alpha1.PlayHouseServer, pods ...string) map[string]string {
	t.Helper()
	ns, name := phs.Namespace, phs.Name
	objs := map[string]struct {
		obj  client.Object
		name string
	}{
		"PlayHouseServer": {&playhousev1alpha1.PlayHouseServer{}, name},
		"ConfigMap":       {&corev1.ConfigMap{}, name + "-config"},
		"Secret":          {&corev1.Secret{}, name + "-signing-key"},
		"Service":         {&corev1.Service{}, name},
		"MetricsService":  {&corev1.Service{}, name + "-metrics"},
		"Deployment":      {&appsv1.Deployment{}, name},
		"HPA":             {&autoscalingv2.HorizontalPodAutoscaler{}, name},
		"PDB":             {&policyv1.PodDisruptionBudget{}, name},
	}
	for _, p := range pods {
		objs["Pod/"+p] = struct {
			obj  client.Object
			name string
		}{&corev1.Pod{}, p}
	}
	out := map[string]string{}
	for k, o := range objs {
		ok, err := s.get(o.obj, ns, o.name)
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		if ok {
			out[k] = o.obj.GetResourceVersion()
		}
	}
	return out
}

func TestReconcileIsIdempotent(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, directPHS(ns, "idem"))
	sessions := newFakeSessions()
	f := newFaults()
	r, rec := s.directReconciler(f, sessions)
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(phs)}
	ctx := context.Background()

	pod := newServerPod(t, s, phs, "idem-a", "10.2.0.1", true)
	sessions.set(ns+"/idem-a", 5)

	res, err := r.Reconcile(ctx, req)
	if err != nil {
		t.Fatalf("first reconcile: %v", err)
	}
	if res.RequeueAfter != testResync {
		t.Errorf("requeue after %s, want the resync interval %s", res.RequeueAfter, testResync)
	}
	first := s.resourceVersions(t, phs, pod.Name)
	for _, k := range []string{"ConfigMap", "Secret", "Service", "MetricsService", "Deployment", "HPA", "PDB"} {
		if first[k] == "" {
			t.Errorf("%s not created by the first reconcile", k)
		}
	}
	if c, _ := s.podCost(pod); c != "5" {
		t.Errorf("deletion cost %q after the first reconcile", c)
	}
	f.resetWrites()
	drainEvents(rec)

	for pass := 2; pass <= 3; pass++ {
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatalf("reconcile %d: %v", pass, err)
		}
		again := s.resourceVersions(t, phs, pod.Name)
		for k, rv := range first {
			if again[k] != rv {
				t.Errorf("pass %d rewrote %s (resourceVersion %s -> %s)", pass, k, rv, again[k])
			}
		}
		// Nothing changed, so nothing is sent: not even a no-op apply.
		for verb, n := range f.resetWrites() {
			t.Errorf("pass %d made %d %s calls", pass, n, verb)
		}
		for _, e := range drainEvents(rec) {
			t.Errorf("pass %d recorded an event: %s", pass, e)
		}
	}
}

// checkStatusCoherent fails when the stored status contradicts itself:
// conditions describing another generation than observedGeneration, Stalled
// and Reconciling both True, Stalled without Degraded, or Ready=True while
// Stalled.
func checkStatusCoherent(t *testing.T, s *suite, phs *playhousev1alpha1.PlayHouseServer) *playhousev1alpha1.PlayHouseServer {
	t.Helper()
	got := &playhousev1alpha1.PlayHouseServer{}
	if _, err := s.get(got, phs.Namespace, phs.Name); err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Conditions) == 0 {
		return got // never written
	}
	for _, c := range got.Status.Conditions {
		if c.ObservedGeneration != got.Status.ObservedGeneration {
			t.Errorf("condition %s describes generation %d, observedGeneration is %d", c.Type, c.ObservedGeneration, got.Status.ObservedGeneration)
		}
	}
	is := func(typ string, want metav1.ConditionStatus) bool {
		c := condition(got, typ)
		return c != nil && c.Status == want
	}
	if !is(ConditionStalled, metav1.ConditionTrue) && !is(ConditionStalled, metav1.ConditionFalse) {
		t.Errorf("no Stalled condition: %+v", got.Status.Conditions)
	}
	stalled := is(ConditionStalled, metav1.ConditionTrue)
	if stalled && (is(ConditionReconciling, metav1.ConditionTrue) || is(ConditionReady, metav1.ConditionTrue) || !is(ConditionDegraded, metav1.ConditionTrue)) {
		t.Errorf("Stalled but Reconciling, Ready or not Degraded: %+v", got.Status.Conditions)
	}
	if !stalled && is(ConditionDegraded, metav1.ConditionTrue) {
		t.Errorf("Degraded but not Stalled: %+v", got.Status.Conditions)
	}
	return got
}

func TestReconcileConvergesThroughAPIFaults(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	phs := s.create(t, directPHS(ns, "faulty"))
	f := newFaults()
	r, rec := s.directReconciler(f, newFakeSessions())
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(phs)}
	ctx := context.Background()

	unavailable := apierrors.NewServiceUnavailable("injected unavailable")
	timeout := apierrors.NewTimeoutError("injected timeout", 1)
	f.failApply("Service", unavailable)
	f.failApply("Deployment", timeout, timeout)
	f.failApply("HorizontalPodAutoscaler", context.DeadlineExceeded)
	f.failStatus(apierrors.NewConflict(schema.GroupResource{Group: "playhouse.dev", Resource: "playhouseservers"}, "faulty", errors.New("injected conflict")))

	// Each failing pass returns its error; the stored status stays coherent.
	var failures []string
	var prev *playhousev1alpha1.PlayHouseServer
	for pass := 1; ; pass++ {
		if pass > 10 {
			t.Fatalf("no convergence after 10 passes; failures: %v", failures)
		}
		before := checkStatusCoherent(t, s, phs)
		_, err := r.Reconcile(ctx, req)
		got := checkStatusCoherent(t, s, phs)
		if err == nil {
			prev = got
			break
		}
		failures = append(failures, err.Error())
		if strings.Contains(err.Error(), "patch status") {
			// The status patch itself failed: nothing of this pass was written.
			if !equality.Semantic.DeepEqual(before.Status, got.Status) {
				t.Errorf("pass %d: failed status patch changed the status:\n%+v\n%+v", pass, before.Status, got.Status)
			}
			continue
		}
		d := condition(got, ConditionStalled)
		if d == nil || d.Status != metav1.ConditionTrue || d.Reason != ReasonApplyFailed || !strings.Contains(d.Message, "injected") &&
			!strings.Contains(d.Message, "deadline") {
			t.Errorf("pass %d failed with %q but Stalled is %+v", pass, err, d)
		}
		// Each pass records the generation it worked on, failed or not.
		if got.Status.ObservedGeneration != got.Generation {
			t.Errorf("pass %d: observedGeneration %d, generation %d", pass, got.Status.ObservedGeneration, got.Generation)
		}
	}
	// Pass 1 fails twice over (the Service apply, then its status patch),
	// then the Deployment twice and the HPA once.
	if len(failures) != 4 {
		t.Errorf("want 4 failed passes, got %d: %v", len(failures), failures)
	}

	// Converged: everything applied, the generation observed, not degraded.
	if prev.Status.ObservedGeneration != prev.Generation {
		t.Errorf("observedGeneration %d, want %d", prev.Status.ObservedGeneration, prev.Generation)
	}
	if d := condition(prev, ConditionDegraded); d == nil || d.Status != metav1.ConditionFalse {
		t.Errorf("Degraded after convergence: %+v", d)
	}
	if prev.Status.Endpoint == "" || condition(prev, ConditionReady) == nil {
		t.Errorf("status incomplete after convergence: %+v", prev.Status)
	}
	rvs := s.resourceVersions(t, phs)
	for _, k := range []string{"ConfigMap", "Secret", "Service", "MetricsService", "Deployment", "HPA", "PDB"} {
		if rvs[k] == "" {
			t.Errorf("%s missing after convergence", k)
		}
	}

	// The failures were reported as events.
	warnings := 0
	for len(rec.Events) > 0 {
		if e := <-rec.Events; strings.HasPrefix(e, "Warning "+ReasonApplyFailed) {
			warnings++
		}
	}
	if warnings != 4 {
		t.Errorf("%d ApplyFailed warning events, want 4", warnings)
	}

	// A later spec change whose status patch fails twice: the old status
	// stays in place until a pass writes the new one whole.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Autoscaling.MaxReplicas = 6 })
	f.failStatus(context.DeadlineExceeded, apierrors.NewServerTimeout(schema.GroupResource{Resource: "playhouseservers"}, "patch", 1))
	for range 2 {
		if _, err := r.Reconcile(ctx, req); err == nil {
			t.Fatal("reconcile succeeded although its status patch failed")
		}
		got := checkStatusCoherent(t, s, phs)
		if !equality.Semantic.DeepEqual(got.Status, prev.Status) {
			t.Errorf("status changed although its patch failed:\n%+v\n%+v", prev.Status, got.Status)
		}
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	got := checkStatusCoherent(t, s, phs)
	if got.Status.ObservedGeneration != got.Generation || got.Generation == prev.Generation {
		t.Errorf("observedGeneration %d, generation %d (was %d)", got.Status.ObservedGeneration, got.Generation, prev.Generation)
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	if _, err := s.get(hpa, ns, "faulty"); err != nil || hpa.Spec.MaxReplicas != 6 {
		t.Errorf("HPA maxReplicas %d (%v), want 6", hpa.Spec.MaxReplicas, err)
	}

	// A write refused because the object changed since it was read (a stale
	// cache) is no failure: the pass is retried soon, quietly, and writes no
	// status.
	updateSpec(t, s, phs, func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Autoscaling.MaxReplicas = 7 })
	f.failApply("HorizontalPodAutoscaler", apierrors.NewConflict(schema.GroupResource{Group: "autoscaling", Resource: "horizontalpodautoscalers"}, "faulty", errors.New("injected conflict")))
	drainEvents(rec)
	before := checkStatusCoherent(t, s, phs)
	res, err := r.Reconcile(ctx, req)
	if err != nil || res.RequeueAfter != staleReadRetry {
		t.Errorf("pass after a stale read: %v, requeue after %s, want nil and %s", err, res.RequeueAfter, staleReadRetry)
	}
	if got := checkStatusCoherent(t, s, phs); !equality.Semantic.DeepEqual(got.Status, before.Status) {
		t.Errorf("a pass retried after a stale read wrote the status:\n%+v\n%+v", before.Status, got.Status)
	}
	for _, e := range drainEvents(rec) {
		if strings.HasPrefix(e, "Warning") {
			t.Errorf("a stale read was reported: %s", e)
		}
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.get(hpa, ns, "faulty"); err != nil || hpa.Spec.MaxReplicas != 7 {
		t.Errorf("HPA maxReplicas %d (%v), want 7", hpa.Spec.MaxReplicas, err)
	}
}

// TestSessionsKeptWhenNoPodCanBeRead checks that status.sessions reports only
// what was read: the sum of the readable ready pods, zero when no pod is
// ready, and the last value (not zero) when every ready pod's /status fails.
func TestSessionsKeptWhenNoPodCanBeRead(t *testing.T) {
	s := envOrSkip(t)
	ns := s.newNamespace(t)
	p := minimalPHS(ns, "blind")
	p.Labels = map[string]string{directLabel: "true"}
	phs := s.create(t, p)
	sessions := newFakeSessions()
	r, _ := s.directReconciler(newFaults(), sessions)
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(phs)}
	ctx := context.Background()
	statusSessions := func(pass string) int64 {
		t.Helper()
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatalf("%s: reconcile: %v", pass, err)
		}
		got := &playhousev1alpha1.PlayHouseServer{}
		if _, err := s.get(got, ns, "blind"); err != nil {
			t.Fatal(err)
		}
		return got.Status.Sessions
	}

	a := newServerPod(t, s, phs, "blind-a", "10.3.0.1", true)
	b := newServerPod(t, s, phs, "blind-b", "10.3.0.2", true)
	sessions.set(ns+"/blind-a", 30)
	sessions.set(ns+"/blind-b", 12)
	if n := statusSessions("both readable"); n != 42 {
		t.Fatalf("status.sessions %d, want 42", n)
	}

	// One pod unreadable: the sum of what was read.
	sessions.unset(ns + "/blind-b")
	if n := statusSessions("one unreadable"); n != 30 {
		t.Errorf("status.sessions %d, want 30 from the readable pod", n)
	}

	// No pod readable (say a NetworkPolicy blocks the admin port): nothing was
	// observed, so the last value stays instead of a false zero.
	sessions.unset(ns + "/blind-a")
	if n := statusSessions("none readable"); n != 30 {
		t.Errorf("status.sessions %d with every read failing, want the last value 30", n)
	}
	if c, _ := s.podCost(a); c != "30" {
		t.Errorf("deletion cost %q of an unreadable pod, want its last value 30", c)
	}

	// No ready pod at all: zero sessions is what is observed.
	for _, pod := range []*corev1.Pod{a, b} {
		if err := s.c.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the pods gone", func() (bool, error) {
		pods := &corev1.PodList{}
		err := s.c.List(ctx, pods, client.InNamespace(ns))
		return len(pods.Items) == 0, err
	})
	if n := statusSessions("no ready pod"); n != 0 {
		t.Errorf("status.sessions %d without a ready pod, want 0", n)
	}
}
