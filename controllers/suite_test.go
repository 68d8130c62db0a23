package controllers

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
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
	return &suite{cfg: cfg, scheme: scheme, c: c, mgr: mgr, sessions: sessions}, stop, nil
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
