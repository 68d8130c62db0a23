package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// poll retries cond every 50ms until it succeeds or 30s pass. It gives up at
// once when exited is closed (the operator stopped: nothing will change).
func poll(t *testing.T, what string, exited <-chan struct{}, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("the operator stopped while waiting for %s (last error: %v)", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunAgainstAPIServer runs the operator's main path against a test API
// server: flags, leader election, probes, the secured HTTP/1.1-only metrics
// endpoint, and the controller creating a PlayHouseServer's Deployment.
func TestRunAgainstAPIServer(t *testing.T) {
	cfg, _, c := startAPIServer(t)
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "playhouse-system"}}); err != nil {
		t.Fatal(err)
	}

	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	var o options
	fs := flag.NewFlagSet("playhouse-operator", flag.ContinueOnError)
	bindFlags(fs, &o)
	if err := fs.Parse([]string{
		"--leader-elect", "--leader-election-namespace=playhouse-system",
		"--metrics-bind-address=" + metricsAddr, "--metrics-secure",
		"--health-probe-bind-address=" + probeAddr,
		"--default-image=example/playhouse:9", "--session-resync-interval=2s",
	}); err != nil {
		t.Fatal(err)
	}
	if o.enableHTTP2 || o.sessionReadTimeout != 2*time.Second || o.logFormat != "json" {
		t.Errorf("flag defaults: %+v", o)
	}
	// go test -count=N runs this test again in the same process.
	o.skipControllerNameCheck = true

	runCtx, cancel := context.WithCancel(ctx)
	exited := make(chan struct{})
	var runErr error
	go func() {
		defer close(exited)
		runErr = run(runCtx, cfg, &o)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-exited:
			if runErr != nil {
				t.Errorf("run returned %v", runErr)
			}
		case <-time.After(30 * time.Second):
			t.Error("run did not return after its context ended")
		}
	}
	t.Cleanup(stop)

	for _, path := range []string{"/healthz", "/readyz"} {
		poll(t, path, exited, func() error {
			resp, err := http.Get("http://" + probeAddr + path)
			if err != nil {
				return err
			}
			defer func() { _ = resp.Body.Close() }()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %s", resp.Status)
			}
			return nil
		})
	}

	lease := &coordinationv1.Lease{}
	poll(t, "leader election lease", exited, func() error {
		if err := c.Get(ctx, client.ObjectKey{Namespace: "playhouse-system", Name: leaderElectionID}, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease has no holder")
		}
		return nil
	})

	// The metrics endpoint: TLS, HTTP/1.1 only, and closed to anonymous callers.
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}, //nolint:gosec // self-signed test certificate
		ForceAttemptHTTP2: true,
	}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	poll(t, "metrics endpoint", exited, func() error {
		resp, err := hc.Get("https://" + metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.ProtoMajor != 1 {
			t.Errorf("metrics server negotiated %s; HTTP/2 must be off", resp.Proto)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous scrape got %s, want 401", resp.Status)
		}
		return nil
	})
	// A bearer token the API server's TokenReview rejects is unauthenticated too: 401.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer not-a-valid-token")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("scrape with an invalid token got %s, want 401", resp.Status)
	}

	phs := &playhousev1alpha1.PlayHouseServer{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "smoke"}}
	if err := c.Create(ctx, phs); err != nil {
		t.Fatal(err)
	}
	poll(t, "the operator's Deployment", exited, func() error {
		d := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "smoke"}, d); err != nil {
			return err
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "example/playhouse:9" {
			t.Errorf("image %q, want the --default-image", img)
		}
		return nil
	})

	// Stopping releases the lease for the next replica.
	stop()
	if err := c.Get(ctx, client.ObjectKey{Namespace: "playhouse-system", Name: leaderElectionID}, lease); err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && strings.TrimSpace(*h) != "" {
		t.Errorf("lease still held by %q after shutdown", *h)
	}
}

// startAPIServer starts a test API server with the CRDs installed (skipped
// under -short) and returns its config, a scheme with our types and an admin
// client.
func startAPIServer(t *testing.T) (*rest.Config, *runtime.Scheme, client.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("envtest skipped under -short")
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test`, or `KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh) go test ./cmd/playhouse-operator/`; -short skips this test")
	}
	ctrl.SetLogger(logr.Discard())
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = playhousev1alpha1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, scheme, c
}
