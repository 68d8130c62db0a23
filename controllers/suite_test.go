package controllers

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// Tunables of the envtest suite.
const (
	// testResync is the manager's resync interval: short, so session counts
	// and a newly installed ServiceMonitor CRD are picked up quickly.
	testResync = time.Second
	// waitTimeout bounds every wait for the manager to converge (generous:
	// the suite runs with the race detector on two cores).
	waitTimeout = 30 * time.Second
	// pollInterval is how often a wait re-checks its condition.
	pollInterval = 50 * time.Millisecond
	// directLabel marks PlayHouseServers that the suite's manager must not
	// see, because a test calls Reconcile on them itself.
	directLabel = "playhouse.test/direct"
)

// suite is the running envtest API server and operator manager.
type suite struct {
	cfg    *rest.Config
	scheme *runtime.Scheme
	// c reads and writes straight to the API server (no cache).
	c client.WithWatch
	// mgr is the operator manager under test.
	mgr ctrl.Manager
	// sessions is the fake session reader the manager's reconciler uses.
	sessions *fakeSessions
	// calls counts the manager client's calls.
	calls *callLog
}

// callLog counts the calls the manager's client makes, by verb, kind and
// namespace/name ("apply ConfigMap ns/name"). A Get of the PlayHouseServer
// starts every reconcile, so its count is the number of passes.
type callLog struct {
	mu     sync.Mutex
	counts map[string]int
}

func newCallLog() *callLog { return &callLog{counts: map[string]int{}} }

// add counts one call.
func (l *callLog) add(verb, kind string, key client.ObjectKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[verb+" "+kind+" "+key.String()]++
}

// count is how often verb was called on kind ns/name.
func (l *callLog) count(verb, kind string, key client.ObjectKey) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[verb+" "+kind+" "+key.String()]
}

// writes returns the write calls (every verb but get and list) made on
// objects of namespace ns, by "verb kind ns/name".
func (l *callLog) writes(ns string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, n := range l.counts {
		f := strings.Fields(k)
		if len(f) == 3 && f[0] != "get" && f[0] != "list" && strings.HasPrefix(f[2], ns+"/") {
			out[k] = n
		}
	}
	return out
}

// kindOf names the kind of obj for the call log.
func kindOf(scheme *runtime.Scheme, obj runtime.Object) string {
	if gvk := obj.GetObjectKind().GroupVersionKind(); gvk.Kind != "" {
		return gvk.Kind
	}
	if gvks, _, err := scheme.ObjectKinds(obj); err == nil && len(gvks) > 0 {
		return gvks[0].Kind
	}
	return fmt.Sprintf("%T", obj)
}

// countingClient returns the manager's NewClient func: the usual cached
// client, with every call counted in log.
func countingClient(log *callLog) client.NewClientFunc {
	return func(cfg *rest.Config, o client.Options) (client.Client, error) {
		c, err := client.NewWithWatch(cfg, o)
		if err != nil {
			return nil, err
		}
		sch := o.Scheme
		return interceptor.NewClient(c, interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				log.add("get", kindOf(sch, obj), key)
				return c.Get(ctx, key, obj, opts...)
			},
			Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
				kind, key := "", client.ObjectKey{}
				if u, ok := obj.(interface {
					GetKind() string
					GetName() string
					GetNamespace() string
				}); ok {
					kind, key = u.GetKind(), client.ObjectKey{Namespace: u.GetNamespace(), Name: u.GetName()}
				}
				log.add("apply", kind, key)
				return c.Apply(ctx, obj, opts...)
			},
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				log.add("create", kindOf(sch, obj), client.ObjectKeyFromObject(obj))
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				log.add("update", kindOf(sch, obj), client.ObjectKeyFromObject(obj))
				return c.Update(ctx, obj, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				log.add("patch", kindOf(sch, obj), client.ObjectKeyFromObject(obj))
				return c.Patch(ctx, obj, patch, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				log.add("delete", kindOf(sch, obj), client.ObjectKeyFromObject(obj))
				return c.Delete(ctx, obj, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				log.add(sub+"-patch", kindOf(sch, obj), client.ObjectKeyFromObject(obj))
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}), nil
	}
}

// testEnv is set by TestMain when the envtest suite runs; nil under -short.
var testEnv *suite

// envOrSkip returns the envtest suite, or skips the test under -short.
func envOrSkip(t *testing.T) *suite {
	t.Helper()
	if testEnv == nil {
		t.Skip("envtest suite skipped under -short")
	}
	return testEnv
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

// runTests starts the API server and the manager, runs the tests and stops both.
func runTests(m *testing.M) int {
	if testing.Short() {
		return m.Run()
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "controllers: KUBEBUILDER_ASSETS is not set, so the envtest suite cannot start a test API server.\n"+
			"  Run `make test`, or `KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh) go test ./controllers/...`;\n"+
			"  `go test -short` skips the envtest suite.")
		return 1
	}
	ctrl.SetLogger(testLogger())

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controllers: start envtest:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "controllers: stop envtest:", err)
		}
	}()
	if !hasCRD(env.CRDs, "playhouseservers.playhouse.dev") {
		fmt.Fprintln(os.Stderr, "controllers: ../config/crd/bases holds no PlayHouseServer CRD; run `make manifests`")
		return 1
	}

	s, stop, err := startSuite(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controllers:", err)
		return 1
	}
	testEnv = s
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "controllers: manager:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// testLogger logs the operator's errors to stderr; PLAYHOUSE_TEST_LOG=debug
// (or info) shows more.
func testLogger() logr.Logger {
	level := slog.LevelError
	switch os.Getenv("PLAYHOUSE_TEST_LOG") {
	case "debug":
		level = slog.Level(-4)
	case "info":
		level = slog.LevelInfo
	}
	return logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// hasCRD reports whether crds holds the named CRD.
func hasCRD[T interface{ GetName() string }](crds []T, name string) bool {
	for _, c := range crds {
		if c.GetName() == name {
			return true
		}
	}
	return false
}

// startSuite starts the operator manager against cfg, the way main does,
// except that it uses a fake session reader, a short resync, and ignores the
// PlayHouseServers that tests reconcile directly.
func startSuite(cfg *rest.Config) (*suite, func() error, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	if err := playhousev1alpha1.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	direct, err := labels.NewRequirement(directLabel, selection.DoesNotExist, nil)
	if err != nil {
		return nil, nil, err
	}
	byObject := CacheByObject()
	byObject[&playhousev1alpha1.PlayHouseServer{}] = cache.ByObject{Label: labels.NewSelector().Add(*direct)}

	calls := newCallLog()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		NewClient:              countingClient(calls),
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{ByObject: byObject},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create manager: %w", err)
	}
	sessions := newFakeSessions()
	r := NewPlayHouseServerReconciler(mgr, Options{
		DefaultImage:            "playhouse:test",
		ResyncInterval:          testResync,
		Sessions:                sessions,
		MaxConcurrentReconciles: 2,
	})
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, fmt.Errorf("create client: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	syncCtx, syncCancel := context.WithTimeout(ctx, waitTimeout)
	defer syncCancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		cancel()
		return nil, nil, errors.Join(errors.New("manager cache did not sync"), <-done)
	}
	stop := func() error {
		cancel()
		return <-done
	}
	return &suite{cfg: cfg, scheme: scheme, c: c, mgr: mgr, sessions: sessions, calls: calls}, stop, nil
}

// fakeSessions is a SessionReader answering from a table of pod name to
// session count; a pod missing from the table is an error.
type fakeSessions struct {
	mu     sync.Mutex
	counts map[string]int64
	reads  map[string]int
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{counts: map[string]int64{}, reads: map[string]int{}}
}

// set stores the session count of a pod ("namespace/name").
func (f *fakeSessions) set(key string, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[key] = n
}

// unset removes a pod's session count, so reading it fails.
func (f *fakeSessions) unset(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.counts, key)
}

// readCount is how often a pod was read.
func (f *fakeSessions) readCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads[key]
}

// Sessions implements SessionReader.
func (f *fakeSessions) Sessions(_ context.Context, pod *corev1.Pod) (int64, error) {
	key := pod.Namespace + "/" + pod.Name
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads[key]++
	n, ok := f.counts[key]
	if !ok {
		return 0, fmt.Errorf("fake: no session count for pod %s", key)
	}
	return n, nil
}

// newNamespace creates a namespace for one test.
func (s *suite) newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "phs-test-"}}
	if err := s.c.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return ns.Name
}

// create creates a PlayHouseServer and deletes it when the test ends, so the
// manager stops reconciling it (envtest runs no garbage collector, so the
// children stay behind in the test's namespace, which is harmless).
func (s *suite) create(t *testing.T, phs *playhousev1alpha1.PlayHouseServer) *playhousev1alpha1.PlayHouseServer {
	t.Helper()
	if err := s.c.Create(context.Background(), phs); err != nil {
		t.Fatalf("create PlayHouseServer %s: %v", phs.Name, err)
	}
	t.Cleanup(func() {
		if err := s.c.Delete(context.Background(), phs); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete PlayHouseServer %s: %v", phs.Name, err)
		}
	})
	return phs
}

// waitFor polls cond until it returns true, failing the test with what and
// the last error when waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", waitTimeout, what, lastErr)
		}
		time.Sleep(pollInterval)
	}
}

// get reads an object, returning (false, nil) while it does not exist.
func (s *suite) get(obj client.Object, ns, name string) (bool, error) {
	err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// waitPasses waits until the manager has started n more reconciles of phs.
func (s *suite) waitPasses(t *testing.T, phs *playhousev1alpha1.PlayHouseServer, n int) {
	t.Helper()
	key := client.ObjectKeyFromObject(phs)
	start := s.calls.count("get", "PlayHouseServer", key)
	waitFor(t, fmt.Sprintf("%d more reconciles of %s", n, phs.Name), func() (bool, error) {
		return s.calls.count("get", "PlayHouseServer", key) >= start+n, nil
	})
}

// createSecret creates a Secret holding keys (each with a placeholder
// value) and returns it.
func (s *suite) createSecret(t *testing.T, ns, name string, keys ...string) *corev1.Secret {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{}}
	for _, k := range keys {
		sec.Data[k] = []byte("placeholder value of " + k + " (at least 16 bytes)")
	}
	if err := s.c.Create(context.Background(), sec); err != nil {
		t.Fatalf("create Secret %s: %v", name, err)
	}
	return sec
}

// createReferencedSecrets creates every Secret phs references, so its pods could start.
func (s *suite) createReferencedSecrets(t *testing.T, phs *playhousev1alpha1.PlayHouseServer) {
	t.Helper()
	for _, ref := range referencedSecrets(phs) {
		s.createSecret(t, phs.Namespace, ref.name, ref.keys...)
	}
}
