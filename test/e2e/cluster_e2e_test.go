//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
)

// Bounds of the suite. Every wait has one; the whole run is bounded by
// `go test -timeout` (make e2e: E2E_TIMEOUT, 30m).
const (
	// inNetnsEnv is set in the re-executed test binary that runs inside the
	// network namespace the outer test made.
	inNetnsEnv = "PLAYHOUSE_E2E_IN_NETNS"
	// startTimeout bounds each component's start (readiness endpoint up).
	startTimeout = 2 * time.Minute
	// convergeTimeout bounds each wait on the cluster (pods Running, replicas
	// changed, objects collected). Generous: a busy 2-core machine.
	convergeTimeout = 3 * time.Minute
	// stopGrace is how long a component gets between SIGTERM and SIGKILL.
	stopGrace = 10 * time.Second
	// poll is how often waits re-check.
	poll = 250 * time.Millisecond
)

// TestE2E is the end-to-end suite on a fuller control plane: kube-apiserver
// and etcd (envtest's binaries), kube-controller-manager, kube-scheduler,
// kwok (fake nodes whose pods run and become Ready), Prometheus and KEDA's
// operator and metrics adapter, all on loopback inside a network namespace
// the test creates (KEDA's adapter binds a port on every interface). It must
// run as root (ip netns). `make e2e` builds and caches the binaries.
func TestE2E(t *testing.T) {
	if os.Getenv(inNetnsEnv) == "" {
		runInNetns(t)
		return
	}
	c := startCluster(t)
	ok := t.Run("Install", c.testInstall)
	ok = ok && t.Run("FleetReady", c.testFleetReady)
	if !ok {
		return
	}
	t.Run("AutoscalingLoop", c.testAutoscalingLoop)
	t.Run("HPAWithoutMetricsAPI", c.testHPAWithoutMetricsAPI)
	t.Run("ConfigChangeRolls", c.testConfigChangeRolls)
	t.Run("ScaleSubresource", c.testScale)
	t.Run("EvictionRespectsPDB", c.testEviction)
	t.Run("NameTakenByUser", c.testNameTaken)
	t.Run("DeleteCollectsChildren", c.testGarbageCollection)
}

// runInNetns re-executes this test inside a new network namespace with only
// loopback up, and deletes the namespace afterwards.
func runInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the e2e suite must run as root: it creates a network namespace (ip netns) so no component listens outside it")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal("the e2e suite needs the `ip` command (iproute2) to create its network namespace")
	}
	name := fmt.Sprintf("playhouse-e2e-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		// Anything the inner run left behind (it was killed by a timeout, or
		// a component ignored SIGTERM) is still in the namespace: end it.
		if out, err := exec.Command(ip, "netns", "pids", name).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					t.Logf("killing process %d left in network namespace %s", pid, name)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command(ip, "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", name, err, out)
		}
	})
	if out, err := exec.Command(ip, "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("bring up lo in %s: %v\n%s", name, err, out)
	}
	args := []string{"netns", "exec", name, os.Args[0], "-test.run", "^TestE2E$", "-test.v"}
	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(dl).Round(time.Second).String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-10*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, ip, args...)
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		t.Fatalf("the e2e suite in network namespace %s failed: %v (its output is above)", name, err)
	}
}

// binaries are the programs the suite runs.
type binaries struct {
	etcd, apiserver                 string // KUBEBUILDER_ASSETS
	kcm, scheduler, kwok, kwokStage string // E2E_BINS
	prometheus                      string
	kedaOperator, kedaAdapter       string
	kedaCRDs                        string
	helm                            string // HELM
	operator, server, bench         string // PLAYHOUSE_BIN
	kubectl                         string // optional: PATH
}

// findBinaries locates every binary, failing with what to run when one is missing.
func findBinaries(t *testing.T) binaries {
	t.Helper()
	dir := func(env, how string) string {
		d := os.Getenv(env)
		if d == "" {
			t.Fatalf("%s is not set: %s (or run `make e2e`)", env, how)
		}
		return d
	}
	assets := dir("KUBEBUILDER_ASSETS", "KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh)")
	bins := dir("E2E_BINS", "E2E_BINS=$(hack/e2e-bins.sh) (first run builds for ~30 min)")
	pbin := dir("PLAYHOUSE_BIN", "PLAYHOUSE_BIN=$PWD/bin after `make build`")
	helm := dir("HELM", "HELM=$PWD/bin/helm-<version> after `make helm`")
	b := binaries{
		etcd: filepath.Join(assets, "etcd"), apiserver: filepath.Join(assets, "kube-apiserver"),
		kcm: filepath.Join(bins, "kube-controller-manager"), scheduler: filepath.Join(bins, "kube-scheduler"),
		kwok: filepath.Join(bins, "kwok"), kwokStage: filepath.Join(bins, "kwok-stages"),
		prometheus:   filepath.Join(bins, "prometheus"),
		kedaOperator: filepath.Join(bins, "keda-operator"), kedaAdapter: filepath.Join(bins, "keda-adapter"),
		kedaCRDs: filepath.Join(bins, "keda-crds"),
		helm:     helm,
		operator: filepath.Join(pbin, "playhouse-operator"), server: filepath.Join(pbin, "playhouse-server"),
		bench: filepath.Join(pbin, "playhouse-bench"),
	}
	for _, p := range []string{b.etcd, b.apiserver, b.kcm, b.scheduler, b.kwok, b.kwokStage, b.prometheus,
		b.kedaOperator, b.kedaAdapter, b.kedaCRDs, b.helm, b.operator, b.server, b.bench} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("missing %s: %v (run `make e2e`, which builds it, or hack/e2e-bins.sh / make build)", p, err)
		}
	}
	b.kubectl, _ = exec.LookPath("kubectl")
	return b
}

// proc is a component process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// cluster is the running control plane and what the tests share.
type cluster struct {
	t        *testing.T
	bin      binaries
	dir      string
	env      *envtest.Environment
	cfg      *rest.Config
	c        client.Client
	scheme   *runtime.Scheme
	kubecfg  string // admin kubeconfig file
	promAddr string // Prometheus host:port

	mu    sync.Mutex
	procs []*proc
	// servers stand in for the pods' engines (see fleetEngines).
	engines *fleetEngines
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs a component with its output in <dir>/<name>.log, and stops it
// (SIGTERM, then SIGKILL after stopGrace) when the suite ends.
func (c *cluster) start(name, bin string, env []string, args ...string) *proc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s (%s): %v", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

// stop ends p and waits for it.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// exited reports whether p ended, with its error.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// tail is the end of p's log.
func (p *proc) tail(n int) string {
	data, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stopAll stops every component, newest first; on failure it shows their logs' tails.
func (c *cluster) stopAll() {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("---- last lines of %s (%s) ----\n%s", p.name, p.log, p.tail(25))
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

// waitFor polls cond until true or timeout, failing with what.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(poll)
	}
}

// waitHTTP waits until url answers 200 (TLS unverified: a readiness probe).
func (c *cluster) waitHTTP(p *proc, url string) {
	c.t.Helper()
	cl := insecureHTTP()
	waitFor(c.t, startTimeout, p.name+" to answer "+url, func() (bool, error) {
		if done, err := p.exited(); done {
			c.t.Fatalf("%s exited: %v\n%s", p.name, err, p.tail(30))
		}
		resp, err := cl.Get(url)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("status %d", resp.StatusCode)
	})
}

// startCluster starts every component, in dependency order.
func startCluster(t *testing.T) *cluster {
	bin := findBinaries(t)
	c := &cluster{t: t, bin: bin, dir: t.TempDir()}

	// Front proxy (API aggregation, for KEDA's metrics adapter).
	fpCA, err := newTestCA("front-proxy-ca")
	if err != nil {
		t.Fatal(err)
	}
	fpCAFile := filepath.Join(c.dir, "front-proxy-ca.crt")
	if err := fpCA.writeCA(fpCAFile); err != nil {
		t.Fatal(err)
	}
	fpCert, fpKey, err := fpCA.issue(c.dir, "front-proxy-client", "front-proxy-client")
	if err != nil {
		t.Fatal(err)
	}

	c.env = &envtest.Environment{
		BinaryAssetsDirectory: filepath.Dir(bin.apiserver),
		CRDDirectoryPaths:     []string{bin.kedaCRDs},
		ErrorIfCRDPathMissing: true,
	}
	api := c.env.ControlPlane.GetAPIServer()
	for k, v := range map[string]string{
		// No default route in the namespace.
		"advertise-address":                  "127.0.0.1",
		"endpoint-reconciler-type":           "none",
		"requestheader-client-ca-file":       fpCAFile,
		"requestheader-allowed-names":        "front-proxy-client",
		"requestheader-username-headers":     "X-Remote-User",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"proxy-client-cert-file":             fpCert,
		"proxy-client-key-file":              fpKey,
		// Pods need their ServiceAccount mounted only on real nodes; kwok
		// runs none, and envtest disables the admission plugin anyway.
	} {
		api.Configure().Set(k, v)
	}
	c.cfg, err = c.env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	// Components first (they hold watches on the API server), then the API
	// server and etcd.
	t.Cleanup(func() {
		c.stopAll()
		if err := c.env.Stop(); err != nil {
			t.Errorf("stop kube-apiserver and etcd: %v", err)
		}
	})
	admin, err := c.env.ControlPlane.AddUser(envtest.User{Name: "e2e-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	c.kubecfg = filepath.Join(c.dir, "admin.kubeconfig")
	if err := os.WriteFile(c.kubecfg, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	c.cfg = admin.Config()
	c.scheme = runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(c.scheme)
	_ = playhousev1alpha1.AddToScheme(c.scheme)
	if c.c, err = client.New(c.cfg, client.Options{Scheme: c.scheme}); err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(api.CertDir, "sa-signer.key")

	// kube-controller-manager: Deployments, ReplicaSets, HPAs, PDBs, GC.
	kcmPort := freePort(t)
	kcm := c.start("kube-controller-manager", bin.kcm, nil,
		"--kubeconfig="+c.kubecfg, "--authentication-kubeconfig="+c.kubecfg, "--authorization-kubeconfig="+c.kubecfg,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort),
		"--leader-elect=false", "--use-service-account-credentials=false",
		"--service-account-private-key-file="+saKey,
		"--controllers=deployment-controller,replicaset-controller,horizontal-pod-autoscaler-controller,garbage-collector-controller,disruption-controller,namespace-controller,serviceaccount-controller,pod-garbage-collector-controller",
		"--horizontal-pod-autoscaler-sync-period=2s",
		"--concurrent-deployment-syncs=2", "--concurrent-replicaset-syncs=2")
	c.waitHTTP(kcm, fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort))

	schedPort := freePort(t)
	sched := c.start("kube-scheduler", bin.scheduler, nil,
		"--kubeconfig="+c.kubecfg, "--authentication-kubeconfig="+c.kubecfg, "--authorization-kubeconfig="+c.kubecfg,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort), "--leader-elect=false")
	c.waitHTTP(sched, fmt.Sprintf("https://127.0.0.1:%d/healthz", schedPort))

	c.startKwok()
	c.startPrometheus()
	c.startKEDA()
	return c
}

// startKwok runs kwok with the node and pod stages its module ships and
// registers two fake nodes.
func (c *cluster) startKwok() {
	t := c.t
	st := c.bin.kwokStage
	args := []string{"--kubeconfig=" + c.kubecfg,
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.0/16", "--node-ip=10.0.0.1", "--node-lease-duration-seconds=40",
		"--server-address=127.0.0.1:" + strconv.Itoa(freePort(t))}
	for _, f := range []string{"node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"} {
		args = append(args, "--config="+filepath.Join(st, f))
	}
	kwok := c.start("kwok", c.bin.kwok, nil, args...)
	for i := range 2 {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("kwok-node-%d", i),
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/os": "linux", "kubernetes.io/hostname": fmt.Sprintf("kwok-node-%d", i)},
		}, Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{}}}
		if err := c.c.Create(context.Background(), n); err != nil {
			t.Fatalf("create node: %v", err)
		}
	}
	waitFor(t, startTimeout, "kwok nodes Ready", func() (bool, error) {
		if done, err := kwok.exited(); done {
			t.Fatalf("kwok exited: %v\n%s", err, kwok.tail(30))
		}
		nodes := &corev1.NodeList{}
		if err := c.c.List(context.Background(), nodes); err != nil {
			return false, err
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == 2, nil
	})
	// The API server taints new nodes not-ready; the node lifecycle
	// controller would lift the taint, but it is not run here (kwok's
	// leases keep the nodes Ready), so lift it directly.
	for i := range 2 {
		n := &corev1.Node{}
		if _, err := c.get(n, "", fmt.Sprintf("kwok-node-%d", i)); err != nil {
			t.Fatal(err)
		}
		n.Spec.Taints = nil
		if err := c.c.Update(context.Background(), n); err != nil {
			t.Fatalf("untaint node: %v", err)
		}
	}
}

// kubectl runs kubectl with the admin kubeconfig, or skips when it is absent
// and the caller has no client-go fallback.
func (c *cluster) kubectl(args ...string) (string, error) {
	cmd := exec.Command(c.bin.kubectl, append([]string{"--kubeconfig=" + c.kubecfg}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// writeKubeconfig writes a kubeconfig for the API server authenticating with token.
func (c *cluster) writeKubeconfig(name, token string) string {
	c.t.Helper()
	cfg := clientcmdConfig(c.cfg.Host, c.cfg.CAData, token)
	path := filepath.Join(c.dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		c.t.Fatal(err)
	}
	return path
}

// get reads an object, (false, nil) when it does not exist.
func (c *cluster) get(obj client.Object, ns, name string) (bool, error) {
	err := c.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
	if err != nil && client.IgnoreNotFound(err) == nil {
		return false, nil
	}
	return err == nil, err
}

// unstructuredOf is an empty unstructured object of apiVersion and kind.
func unstructuredOf(apiVersion, kind string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	return u
}
