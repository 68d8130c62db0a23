//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/controllers"
)

// Names the suite uses.
const (
	releaseName = "playhouse"
	operatorNS  = "playhouse-system"
	gamesNS     = "games"
)

// testInstall installs the chart with helm, as a user would, and runs the
// operator as a local process authenticated with a token of the chart's
// ServiceAccount, so it has exactly the chart's RBAC. (The chart's own
// operator Deployment lands on a kwok node, where nothing runs.)
func (c *cluster) testInstall(t *testing.T) {
	chart, err := filepath.Abs(filepath.Join("..", "..", "charts", "playhouse"))
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd := exec.Command(c.bin.helm, "install", releaseName, chart, "--namespace", operatorNS, "--create-namespace",
		"--kubeconfig", c.kubecfg, "--set", "leaderElection.enabled=false", "--set", "test.enabled=false")
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	cs, err := kubernetes.NewForConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(operatorNS).CreateToken(context.Background(), releaseName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token of the chart's ServiceAccount %s/%s: %v", operatorNS, releaseName, err)
	}
	kc := c.writeKubeconfig("operator", tr.Status.Token)
	probe := freePort(t)
	op := c.start("playhouse-operator", c.bin.operator, []string{"POD_NAMESPACE=" + operatorNS},
		"--kubeconfig="+kc, "--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(probe),
		"--session-resync-interval=2s", "--log-format=text", "--leader-elect=false")
	c.waitHTTP(op, fmt.Sprintf("http://127.0.0.1:%d/readyz", probe))
	if err := c.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: gamesNS}}); err != nil {
		t.Fatal(err)
	}
}

// phs is a PlayHouseServer in the games namespace.
func phs(name string, replicas int32) *playhousev1alpha1.PlayHouseServer {
	return &playhousev1alpha1.PlayHouseServer{
		ObjectMeta: metav1.ObjectMeta{Namespace: gamesNS, Name: name},
		Spec:       playhousev1alpha1.PlayHouseServerSpec{Image: "playhouse:e2e", Replicas: ptr.To(replicas)},
	}
}

// runningPods returns the fleet's pods that are Running and Ready and not
// being deleted.
func (c *cluster) runningPods(ns, name string) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := c.c.List(context.Background(), pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": name}); err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// waitReady waits until the fleet has want Running pods and reports Ready.
func (c *cluster) waitReady(t *testing.T, name string, want int) {
	t.Helper()
	waitFor(t, convergeTimeout, fmt.Sprintf("%s Ready with %d Running pods", name, want), func() (bool, error) {
		pods, err := c.runningPods(gamesNS, name)
		if err != nil {
			return false, err
		}
		got := &playhousev1alpha1.PlayHouseServer{}
		if _, err := c.get(got, gamesNS, name); err != nil {
			return false, err
		}
		ready := meta.FindStatusCondition(got.Status.Conditions, playhousev1alpha1.ConditionReady)
		return len(pods) == want && ready != nil && ready.Status == metav1.ConditionTrue &&
				got.Status.ReadyReplicas == int32(want) && ready.ObservedGeneration == got.Generation,
			fmt.Errorf("%d running pods, Ready %+v", len(pods), ready)
	})
}

// testFleetReady: a PlayHouseServer becomes Ready with its pods Running.
func (c *cluster) testFleetReady(t *testing.T) {
	if err := c.c.Create(context.Background(), phs("echo", 2)); err != nil {
		t.Fatal(err)
	}
	c.waitReady(t, "echo", 2)
}

// testAutoscalingLoop closes the loop: real engines scraped by Prometheus,
// sessions opened by playhouse-bench, KEDA's trigger and the HPA controller
// raise the replicas, the sessions close and the replicas come back down.
func (c *cluster) testAutoscalingLoop(t *testing.T) {
	ctx := context.Background()
	const (
		// scaleDownPeriod is the drain-safe policy's period for a 1s
		// drainTimeout: its 15 s floor.
		scaleDownPeriod = 15 * time.Second
		name            = "loop"
		sessions        = 6
		perPod          = 2
	)
	p := phs(name, 1)
	p.Spec.DrainTimeout = &metav1.Duration{Duration: time.Second}
	p.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{
		Enabled: true, Provider: playhousev1alpha1.AutoscalingProviderKEDA,
		MinReplicas: ptr.To(int32(1)), MaxReplicas: 4, TargetSessionsPerPod: perPod,
		ScaleDownStabilizationSeconds: ptr.To(int32(0)),
		Prometheus:                    &playhousev1alpha1.AutoscalingPrometheusSpec{ServerAddress: "http://" + c.promAddr},
	}
	if err := c.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	stop := c.engines.follow(gamesNS, name)
	defer stop()

	waitFor(t, convergeTimeout, "KEDA to report the operator's ScaledObject Ready", func() (bool, error) {
		so := unstructuredOf("keda.sh/v1alpha1", "ScaledObject")
		if ok, err := c.get(so, gamesNS, name); !ok {
			return false, fmt.Errorf("no ScaledObject (%v): the operator created no autoscaler", err)
		}
		conds, _, _ := unstructuredSlice(so.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Ready" {
				return m["status"] == "True", fmt.Errorf("Ready=%v: %v", m["status"], m["message"])
			}
		}
		return false, nil
	})
	waitFor(t, convergeTimeout, "AutoscalingActive=True on the PlayHouseServer", func() (bool, error) {
		got := &playhousev1alpha1.PlayHouseServer{}
		if _, err := c.get(got, gamesNS, name); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, playhousev1alpha1.ConditionAutoscalingActive)
		return cond != nil && cond.Status == metav1.ConditionTrue, fmt.Errorf("%+v", cond)
	})
	var addr string
	waitFor(t, convergeTimeout, "an engine for the fleet's pod", func() (bool, error) {
		addr = c.engines.anyEngine()
		return addr != "", nil
	})

	bench := c.start("playhouse-bench", c.bin.bench, nil, "--addr="+addr, "--sessions="+strconv.Itoa(sessions),
		"--duration=15m", "--rate=1", "--progress=0", "--connect-rate=50")
	query := controllers.FleetSessionsQuery(gamesNS, name)
	waitFor(t, convergeTimeout, fmt.Sprintf("Prometheus to see %d sessions (%s)", sessions, query), func() (bool, error) {
		if done, err := bench.exited(); done {
			t.Fatalf("playhouse-bench exited: %v\n%s", err, bench.tail(20))
		}
		v, err := c.promQuery(query)
		if err != nil {
			return false, err
		}
		for _, x := range v {
			return x == sessions, fmt.Errorf("%v", v)
		}
		return false, fmt.Errorf("empty result")
	})
	t.Logf("Prometheus sees the %d sessions of playhouse-bench", sessions)
	want := int32(math.Ceil(float64(sessions) / perPod))
	c.logReplicas(t, name)
	waitFor(t, convergeTimeout, fmt.Sprintf("KEDA and the HPA controller to scale %s to %d replicas", name, want), func() (bool, error) {
		d := &appsv1.Deployment{}
		if _, err := c.get(d, gamesNS, name); err != nil {
			return false, err
		}
		return ptr.Deref(d.Spec.Replicas, 0) == want, fmt.Errorf("replicas %d", ptr.Deref(d.Spec.Replicas, 0))
	})
	c.waitReady(t, name, int(want))
	t.Logf("scaled up: %d replicas Running", want)
	c.checkDashboard(t, name)
	c.checkAdapterRule(t, name, sessions)

	// The drain-safe scale-down removes at most one pod per period (15 s
	// here) counted from the last scale: wait until the scale-up is a full
	// period old, so the step-down below is limited by it alone.
	waitFor(t, convergeTimeout, "the scale-up to be one scale-down period old", func() (bool, error) {
		h := &autoscalingv2.HorizontalPodAutoscaler{}
		if _, err := c.get(h, gamesNS, "keda-hpa-"+name); err != nil {
			return false, err
		}
		return h.Status.LastScaleTime != nil && time.Since(h.Status.LastScaleTime.Time) > scaleDownPeriod+2*time.Second, nil
	})
	bench.stop()
	waitFor(t, convergeTimeout, "the sessions to close in Prometheus", func() (bool, error) {
		v, err := c.promQuery(query)
		for _, x := range v {
			return x == 0, fmt.Errorf("%v", v)
		}
		return false, err
	})
	seen := map[int32]bool{}
	waitFor(t, convergeTimeout, fmt.Sprintf("%s to scale back to 1 replica", name), func() (bool, error) {
		d := &appsv1.Deployment{}
		if _, err := c.get(d, gamesNS, name); err != nil {
			return false, err
		}
		seen[ptr.Deref(d.Spec.Replicas, 0)] = true
		return ptr.Deref(d.Spec.Replicas, 0) == 1, fmt.Errorf("replicas %d", ptr.Deref(d.Spec.Replicas, 0))
	})
	if !seen[2] {
		t.Errorf("the fleet went from %d to 1 replica at once: the drain-safe scale-down (one pod per period) was not applied (seen %v)", want, seen)
	}
	c.waitReady(t, name, 1)
	t.Log("scaled back down to 1 replica")
}

// logReplicas logs every change of the fleet Deployment's replica count and
// of its KEDA HPA's view until the test ends.
func (c *cluster) logReplicas(t *testing.T, name string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		last := ""
		for ctx.Err() == nil {
			d := &appsv1.Deployment{}
			h := &autoscalingv2.HorizontalPodAutoscaler{}
			_, _ = c.get(d, gamesNS, name)
			_, _ = c.get(h, gamesNS, "keda-hpa-"+name)
			cur := fmt.Sprintf("deployment spec.replicas=%d ready=%d; HPA desired=%d", ptr.Deref(d.Spec.Replicas, 0), d.Status.ReadyReplicas, h.Status.DesiredReplicas)
			for _, m := range h.Status.CurrentMetrics {
				if m.External != nil {
					cur += fmt.Sprintf(" external %s average=%v", m.External.Metric.Name, m.External.Current.AverageValue)
				}
			}
			if cur != last {
				t.Log(cur)
				last = cur
			}
			select {
			case <-ctx.Done():
			case <-time.After(poll):
			}
		}
	}()
}

// testHPAWithoutMetricsAPI: the hpa provider in a cluster without a
// custom-metrics adapter (this one has only KEDA's external metrics API):
// the real HPA controller cannot read the metric, and the fleet says so
// instead of reporting its autoscaler as working (issue 11's symptom).
func (c *cluster) testHPAWithoutMetricsAPI(t *testing.T) {
	p := phs("hpa", 1)
	p.Spec.Autoscaling = playhousev1alpha1.AutoscalingSpec{Enabled: true, MaxReplicas: 3, TargetSessionsPerPod: 10}
	if err := c.c.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "AutoscalingActive=False from the HPA's ScalingActive", func() (bool, error) {
		got := &playhousev1alpha1.PlayHouseServer{}
		if _, err := c.get(got, gamesNS, "hpa"); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, playhousev1alpha1.ConditionAutoscalingActive)
		return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == "FailedGetPodsMetric", fmt.Errorf("%+v", cond)
	})
}

// dashboardQueries are the shipped dashboard's panel queries, by panel title.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "charts", "playhouse", "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ RefID, Expr string }
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	return out
}

// checkDashboard runs the dashboard's queries for the fleet against the
// real Prometheus: they must be valid, and those over series a fleet under
// load always has must return data.
func (c *cluster) checkDashboard(t *testing.T, name string) {
	t.Helper()
	mustHaveData := map[string]bool{
		"Open sessions/A": true, "Pods reporting/A": true, "Draining pods/A": true,
		"Sessions per pod/A": true, "Sessions per transport/A": true, "New sessions / s/A": true,
		"Packets / s/A": true, "Packets / s/B": true, "Bytes / s/A": true, "Bytes / s/B": true,
	}
	qs := dashboardQueries(t)
	for k := range mustHaveData {
		if _, ok := qs[k]; !ok {
			t.Errorf("dashboard panel %s is gone", k)
		}
	}
	waitFor(t, convergeTimeout, "the dashboard's queries to return data", func() (bool, error) {
		var missing []string
		for where, q := range qs {
			q = strings.NewReplacer("$namespace", gamesNS, "$job", name+"-metrics", "$__rate_interval", "30s").Replace(q)
			v, err := c.promQuery(q)
			if err != nil {
				t.Fatalf("dashboard query %s is invalid: %v", where, err)
			}
			if mustHaveData[where] && len(v) == 0 {
				missing = append(missing, where)
			}
		}
		return len(missing) == 0, fmt.Errorf("no data for %v", missing)
	})
}

// checkAdapterRule runs the shipped prometheus-adapter rule's metricsQuery,
// expanded the way the adapter expands it for a Pods metric of the fleet's
// pods, against the real Prometheus: the per-pod values must add up to the
// sessions (prometheus-adapter itself cannot be built here).
func (c *cluster) checkAdapterRule(t *testing.T, name string, sessions int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "charts", "playhouse", "files", "prometheus-adapter-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Rules []struct {
			MetricsQuery string `json:"metricsQuery"`
			Name         struct {
				As string `json:"as"`
			} `json:"name"`
		} `json:"rules"`
	}
	if err := sigsyaml.Unmarshal(data, &f); err != nil || len(f.Rules) != 1 {
		t.Fatalf("adapter rules: %v (%d rules)", err, len(f.Rules))
	}
	q := strings.NewReplacer("<<.GroupBy>>", "namespace,pod", "<<.Series>>", f.Rules[0].Name.As,
		"<<.LabelMatchers>>", fmt.Sprintf(`namespace=%q,pod=~%q`, gamesNS, name+"-.*")).Replace(f.Rules[0].MetricsQuery)
	waitFor(t, convergeTimeout, "the adapter rule's query to serve the sessions per pod: "+q, func() (bool, error) {
		v, err := c.promQuery(q)
		if err != nil {
			t.Fatalf("adapter rule query %s is invalid: %v", q, err)
		}
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		return sum == float64(sessions), fmt.Errorf("%v", v)
	})
}

// testConfigChangeRolls: a spec change rolls every pod to the new template.
func (c *cluster) testConfigChangeRolls(t *testing.T) {
	ctx := context.Background()
	before := map[string]bool{}
	pods, err := c.runningPods(gamesNS, "echo")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		before[p.Labels["pod-template-hash"]] = true
	}
	got := &playhousev1alpha1.PlayHouseServer{}
	if _, err := c.get(got, gamesNS, "echo"); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.App = "relay"
	if err := c.c.Patch(ctx, got, patch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "every pod of echo to run the new template", func() (bool, error) {
		pods, err := c.runningPods(gamesNS, "echo")
		if err != nil {
			return false, err
		}
		all := &corev1.PodList{}
		_ = c.c.List(ctx, all, client.InNamespace(gamesNS), client.MatchingLabels{"app.kubernetes.io/instance": "echo"})
		if len(pods) != 2 || len(all.Items) != 2 {
			return false, fmt.Errorf("%d running of %d pods", len(pods), len(all.Items))
		}
		for _, p := range pods {
			if before[p.Labels["pod-template-hash"]] {
				return false, fmt.Errorf("pod %s still on the old template", p.Name)
			}
		}
		return true, nil
	})
	c.waitReady(t, "echo", 2)
}

// testScale: `kubectl scale phs` (or the scale subresource without kubectl)
// changes the fleet's pod count.
func (c *cluster) testScale(t *testing.T) {
	if c.bin.kubectl != "" {
		if out, err := c.kubectl("scale", "playhouseserver/echo", "-n", gamesNS, "--replicas=3"); err != nil {
			t.Fatalf("kubectl scale: %v\n%s", err, out)
		}
	} else {
		t.Log("kubectl not on PATH: scaling through the scale subresource with client-go")
		got := &playhousev1alpha1.PlayHouseServer{}
		if _, err := c.get(got, gamesNS, "echo"); err != nil {
			t.Fatal(err)
		}
		sc := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 3}}
		if err := c.c.SubResource("scale").Update(context.Background(), got, client.WithSubResourceBody(sc)); err != nil {
			t.Fatalf("update scale: %v", err)
		}
	}
	c.waitReady(t, "echo", 3)
}

// testEviction: an eviction the PodDisruptionBudget forbids is refused; one
// it allows goes through.
func (c *cluster) testEviction(t *testing.T) {
	ctx := context.Background()
	p := phs("pdb", 2)
	p.Spec.DisruptionBudget = playhousev1alpha1.DisruptionBudgetSpec{Enabled: true, MinAvailable: ptr.To(intstr.FromInt32(2))}
	if err := c.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	c.waitReady(t, "pdb", 2)
	waitPDB := func(allowed int32) {
		t.Helper()
		waitFor(t, convergeTimeout, fmt.Sprintf("PDB to allow %d disruptions", allowed), func() (bool, error) {
			pdb := &policyv1.PodDisruptionBudget{}
			if _, err := c.get(pdb, gamesNS, "pdb"); err != nil {
				return false, err
			}
			return pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == 2 &&
				pdb.Status.DisruptionsAllowed == allowed, fmt.Errorf("%+v", pdb.Status)
		})
	}
	evict := func() error {
		pods, err := c.runningPods(gamesNS, "pdb")
		if err != nil || len(pods) == 0 {
			return fmt.Errorf("no pod to evict: %v", err)
		}
		return c.c.SubResource("eviction").Create(ctx, &pods[0], &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: pods[0].Name, Namespace: gamesNS}})
	}
	waitPDB(0)
	if err := evict(); !apierrors.IsTooManyRequests(err) {
		t.Fatalf("eviction with minAvailable 2 of 2: %v, want 429 (refused by the PDB)", err)
	}
	got := &playhousev1alpha1.PlayHouseServer{}
	if _, err := c.get(got, gamesNS, "pdb"); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.DisruptionBudget.MinAvailable = nil
	got.Spec.DisruptionBudget.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	if err := c.c.Patch(ctx, got, patch); err != nil {
		t.Fatal(err)
	}
	waitPDB(1)
	if err := evict(); err != nil {
		t.Fatalf("eviction with maxUnavailable 1: %v", err)
	}
	c.waitReady(t, "pdb", 2)
}

// testNameTaken: a child name held by a user's object: the operator leaves
// the object alone and says so.
func (c *cluster) testNameTaken(t *testing.T) {
	ctx := context.Background()
	mine := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: gamesNS, Name: "taken-config"}, Data: map[string]string{"owner": "user"}}
	if err := c.c.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if err := c.c.Create(ctx, phs("taken", 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "taken to report the name conflict", func() (bool, error) {
		got := &playhousev1alpha1.PlayHouseServer{}
		if _, err := c.get(got, gamesNS, "taken"); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, "Stalled")
		return cond != nil && cond.Status == metav1.ConditionTrue && cond.Reason == controllers.ReasonChildNameConflict, fmt.Errorf("%+v", cond)
	})
	got := &corev1.ConfigMap{}
	if _, err := c.get(got, gamesNS, "taken-config"); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != mine.ResourceVersion || len(got.OwnerReferences) != 0 || got.Data["owner"] != "user" {
		t.Fatalf("the user's ConfigMap was touched: %+v", got)
	}
}

// testGarbageCollection: deleting the CR removes its children (the
// garbage collector follows the owner references).
func (c *cluster) testGarbageCollection(t *testing.T) {
	ctx := context.Background()
	if err := c.c.Delete(ctx, phs("echo", 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "echo's children to be collected", func() (bool, error) {
		for _, o := range []struct {
			obj  client.Object
			name string
		}{{&appsv1.Deployment{}, "echo"}, {&corev1.Service{}, "echo"}, {&corev1.ConfigMap{}, "echo-config"}} {
			if ok, err := c.get(o.obj, gamesNS, o.name); ok || err != nil {
				return false, fmt.Errorf("%T %s still there (%v)", o.obj, o.name, err)
			}
		}
		pods := &corev1.PodList{}
		if err := c.c.List(ctx, pods, client.InNamespace(gamesNS), client.MatchingLabels{"app.kubernetes.io/instance": "echo"}); err != nil {
			return false, err
		}
		return len(pods.Items) == 0, fmt.Errorf("%d pods left", len(pods.Items))
	})
}
