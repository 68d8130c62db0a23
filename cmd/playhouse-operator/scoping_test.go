package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/internal/charttest"
)

// TestNamespacedInstallWithChartRBAC installs the chart's RBAC for a
// namespaced install (watchNamespaces: [team-a]) into a test API server and
// runs the operator as the chart's ServiceAccount with --watch-namespace:
// it must manage the fleet in team-a with nothing but those Roles, leave the
// fleet in team-b alone, be unable to read Secrets outside team-a, and
// export the fleet metrics of team-a only.
func TestNamespacedInstallWithChartRBAC(t *testing.T) {
	testInstallWithChartRBAC(t, true)
}

// TestClusterWideInstallWithChartRBAC is the same with the chart's default
// cluster-wide RBAC: both fleets are managed and reported.
func TestClusterWideInstallWithChartRBAC(t *testing.T) {
	testInstallWithChartRBAC(t, false)
}

// testInstallWithChartRBAC runs the operator as the chart's ServiceAccount
// with only the RBAC the chart renders, namespaced to team-a or cluster-wide.
func testInstallWithChartRBAC(t *testing.T, namespaced bool) {
	cfg, scheme, admin := startAPIServer(t)
	var renderArgs, flags []string
	if namespaced {
		renderArgs = []string{"--set", "watchNamespaces={team-a}"}
		flags = []string{"--watch-namespace=team-a"}
	}
	objs := charttest.Render(t, "ph", "playhouse-system", renderArgs...)

	ctx := context.Background()
	for _, ns := range []string{"playhouse-system", "team-a", "team-b"} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			if err := admin.Create(ctx, o); err != nil {
				t.Fatalf("install %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}

	// The operator's identity: the chart's ServiceAccount.
	opCfg := rest.CopyConfig(cfg)
	opCfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:playhouse-system:ph-playhouse",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:playhouse-system", "system:authenticated"},
	}
	op, err := client.New(opCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	never := make(chan struct{})
	poll(t, "the chart's RBAC to take effect", never, func() error {
		return op.List(ctx, &corev1.SecretList{}, client.InNamespace("team-a"))
	})
	for _, ns := range []string{"team-b", ""} {
		err := op.List(ctx, &corev1.SecretList{}, client.InNamespace(ns))
		if namespaced && !apierrors.IsForbidden(err) {
			t.Errorf("the operator's ServiceAccount lists Secrets in %q: %v, want Forbidden", ns, err)
		}
		if !namespaced && err != nil {
			t.Errorf("the cluster-wide operator cannot list Secrets in %q: %v", ns, err)
		}
	}

	metricsAddr, probeAddr := freeAddr(t), freeAddr(t)
	var o options
	fs := flag.NewFlagSet("playhouse-operator", flag.ContinueOnError)
	bindFlags(fs, &o)
	if err := fs.Parse(append(flags,
		"--leader-elect", "--leader-election-namespace=playhouse-system",
		"--metrics-bind-address="+metricsAddr, "--health-probe-bind-address="+probeAddr,
		"--default-image=example/playhouse:9", "--session-resync-interval=2s",
	)); err != nil {
		t.Fatal(err)
	}
	o.skipControllerNameCheck = true
	runCtx, cancel := context.WithCancel(ctx)
	exited := make(chan struct{})
	var runErr error
	go func() {
		defer close(exited)
		runErr = run(runCtx, opCfg, &o)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
			if runErr != nil {
				t.Errorf("run returned %v", runErr)
			}
		case <-time.After(30 * time.Second):
			t.Error("run did not return after its context ended")
		}
	})

	for _, ns := range []string{"team-b", "team-a"} {
		if err := admin.Create(ctx, &playhousev1alpha1.PlayHouseServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "game"}}); err != nil {
			t.Fatal(err)
		}
	}
	managed := []string{"team-a"}
	if !namespaced {
		managed = append(managed, "team-b")
	}
	for _, ns := range managed {
		poll(t, "the fleet in "+ns+" to be reconciled", exited, func() error {
			d := &appsv1.Deployment{}
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "game"}, d); err != nil {
				return err
			}
			s := &corev1.Secret{}
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "game-signing-key"}, s); err != nil {
				return err
			}
			p := &playhousev1alpha1.PlayHouseServer{}
			if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "game"}, p); err != nil {
				return err
			}
			if p.Status.ObservedGeneration != p.Generation || len(p.Status.Conditions) == 0 {
				return fmt.Errorf("status not written yet: %+v", p.Status)
			}
			return nil
		})
	}

	var body string
	poll(t, "the fleet metrics", exited, func() error {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		body = string(b)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		for _, ns := range managed {
			if !strings.Contains(body, `playhouse_operator_fleet_sessions{name="game",namespace="`+ns+`"} 0`) {
				return fmt.Errorf("no sessions gauge of %s/game yet", ns)
			}
		}
		return nil
	})
	for _, want := range []string{
		`playhouse_operator_fleets{condition="Ready",status=`,
		`playhouse_operator_fleet_replicas{name="game",namespace="team-a"}`,
		`controller_runtime_reconcile_total{controller="playhouseserver"`,
		`controller_runtime_reconcile_errors_total{controller="playhouseserver"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !namespaced {
		return
	}
	if strings.Contains(body, `namespace="team-b"`) {
		t.Error("metrics report the unwatched namespace team-b")
	}

	// team-b's fleet was never touched: no children, no status.
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "team-b", Name: "game"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("Deployment in the unwatched team-b: %v", err)
	}
	p := &playhousev1alpha1.PlayHouseServer{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "team-b", Name: "game"}, p); err != nil || len(p.Status.Conditions) != 0 {
		t.Errorf("the fleet in the unwatched team-b got a status: %+v (%v)", p.Status, err)
	}
}
