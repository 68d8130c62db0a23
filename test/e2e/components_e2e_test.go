//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// insecureHTTP is an HTTP client for readiness probes of components serving
// self-signed certificates.
func insecureHTTP() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback readiness probe only
	}}
}

// clientcmdConfig is a kubeconfig for host with a bearer token.
func clientcmdConfig(host string, ca []byte, token string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca}
	cfg.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	cfg.CurrentContext = "e2e"
	return cfg
}

// startPrometheus runs Prometheus scraping the stand-in engines through a
// file_sd target list (labels namespace, pod and job, as a ServiceMonitor
// scrape gives them), with the chart's rules file loaded.
func (c *cluster) startPrometheus() {
	t := c.t
	port := freePort(t)
	c.promAddr = fmt.Sprintf("127.0.0.1:%d", port)
	targets := filepath.Join(c.dir, "targets.json")
	if err := os.WriteFile(targets, []byte("[]"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules, err := filepath.Abs(filepath.Join("..", "..", "charts", "playhouse", "files", "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: playhouse
    file_sd_configs:
      - files: [%q]
        refresh_interval: 1s
`, rules, targets)
	cfgFile := filepath.Join(c.dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := c.start("prometheus", c.bin.prometheus, nil, "--config.file="+cfgFile,
		"--web.listen-address="+c.promAddr, "--storage.tsdb.path="+filepath.Join(c.dir, "prometheus-data"))
	c.waitHTTP(p, "http://"+c.promAddr+"/-/ready")
	c.engines = &fleetEngines{c: c, targets: targets, servers: map[string]*engine{}}
}

// promQuery runs an instant query and returns its vector samples' values by
// their label sets' string form.
func (c *cluster) promQuery(q string) (map[string]float64, error) {
	resp, err := http.Get("http://" + c.promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %s: %w: %s", q, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, r.Error)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		out[fmt.Sprint(s.Metric)] = v
	}
	return out, nil
}

// startKEDA runs KEDA's operator and metrics adapter and registers the
// adapter as the external metrics API (an ExternalName Service to localhost
// and an APIService), waiting until the API server reports it Available.
func (c *cluster) startKEDA() {
	t := c.t
	ctx := context.Background()
	ca, err := newTestCA("keda-ca")
	if err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(c.dir, "keda-certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := ca.writeCA(filepath.Join(certDir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	crt, key, err := ca.issue(certDir, "tls", "keda", "keda-metrics-apiserver.keda.svc", "keda-operator.keda.svc")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "keda"}}); err != nil {
		t.Fatal(err)
	}
	env := []string{"KUBECONFIG=" + c.kubecfg, "POD_NAMESPACE=keda", "WATCH_NAMESPACE=", "KEDA_CLUSTER_OBJECT_NAMESPACE=keda"}
	metricsSvc := freePort(t)
	probe := freePort(t)
	op := c.start("keda-operator", c.bin.kedaOperator, env,
		"--leader-elect=false",
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(freePort(t)),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(probe),
		"--metrics-service-bind-address=127.0.0.1:"+strconv.Itoa(metricsSvc),
		"--enable-cert-rotation=false", "--cert-dir="+certDir, "--ca-dir="+certDir, "--zap-log-level=info")
	c.waitHTTP(op, fmt.Sprintf("http://127.0.0.1:%d/readyz", probe))

	secure := freePort(t)
	ad := c.start("keda-adapter", c.bin.kedaAdapter, env,
		"--secure-port="+strconv.Itoa(secure), "--bind-address=127.0.0.1",
		"--tls-cert-file="+crt, "--tls-private-key-file="+key, "--cert-dir="+certDir,
		"--client-ca-file="+filepath.Join(c.dir, "front-proxy-ca.crt"),
		"--lister-kubeconfig="+c.kubecfg, "--authentication-kubeconfig="+c.kubecfg, "--authorization-kubeconfig="+c.kubecfg,
		"--metrics-service-address=127.0.0.1:"+strconv.Itoa(metricsSvc),
		"--port="+strconv.Itoa(freePort(t)))
	c.waitHTTP(ad, fmt.Sprintf("https://127.0.0.1:%d/readyz", secure))

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "keda", Name: "keda-metrics-apiserver"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "https", Port: int32(secure), Protocol: corev1.ProtocolTCP}}}}
	if err := c.c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	as := unstructuredOf("apiregistration.k8s.io/v1", "APIService")
	as.SetName("v1beta1.external.metrics.k8s.io")
	as.Object["spec"] = map[string]any{
		"group": "external.metrics.k8s.io", "version": "v1beta1",
		"groupPriorityMinimum": int64(100), "versionPriority": int64(100),
		"caBundle": ca.certPEM,
		"service":  map[string]any{"namespace": "keda", "name": "keda-metrics-apiserver", "port": int64(secure)},
	}
	if err := c.c.Create(ctx, as); err != nil {
		t.Fatalf("register KEDA's external metrics APIService: %v", err)
	}
	waitFor(t, startTimeout, "the external metrics APIService to be Available", func() (bool, error) {
		u := unstructuredOf("apiregistration.k8s.io/v1", "APIService")
		if _, err := c.get(u, "", "v1beta1.external.metrics.k8s.io"); err != nil {
			return false, err
		}
		conds, _, _ := unstructuredSlice(u.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Available" {
				return m["status"] == "True", fmt.Errorf("Available=%v: %v", m["status"], m["message"])
			}
		}
		return false, nil
	})
}

// unstructuredSlice reads a nested slice.
func unstructuredSlice(obj map[string]any, fields ...string) ([]any, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[f]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}

// engine is a playhouse-server process standing in for one pod's engine.
type engine struct {
	p                *proc
	tcpAddr, metrics string
}

// fleetEngines keeps one real playhouse-server process per live pod of the
// fleets it follows (no kubelet runs here, so kwok's pods run nothing), and
// keeps Prometheus' target list equal to them, labelled like a
// ServiceMonitor scrape labels a pod (namespace, pod, job <fleet>-metrics).
type fleetEngines struct {
	c       *cluster
	targets string

	mu      sync.Mutex
	servers map[string]*engine // by namespace/pod
	stop    context.CancelFunc
	done    chan struct{}
}

// follow starts syncing the engines with the pods of fleet ns/name, until
// the returned func is called (which also stops the engines).
func (f *fleetEngines) follow(ns, name string) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f.sync(ctx, ns, name)
			select {
			case <-ctx.Done():
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return func() {
		cancel()
		<-done
		f.mu.Lock()
		defer f.mu.Unlock()
		for k, e := range f.servers {
			e.p.stop()
			delete(f.servers, k)
		}
		f.writeTargets(ns, name)
	}
}

// sync starts an engine for every pod of the fleet that is not being
// deleted, stops the engines of the others, and rewrites the target list.
func (f *fleetEngines) sync(ctx context.Context, ns, name string) {
	pods := &corev1.PodList{}
	if err := f.c.c.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": name}); err != nil {
		return
	}
	live := map[string]bool{}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		key := ns + "/" + p.Name
		live[key] = true
		if _, ok := f.servers[key]; ok {
			continue
		}
		tcp := fmt.Sprintf("127.0.0.1:%d", freePort(f.c.t))
		admin := fmt.Sprintf("127.0.0.1:%d", freePort(f.c.t))
		proc := f.c.start("engine-"+p.Name, f.c.bin.server, nil, "--tcp-addr="+tcp, "--admin-addr="+admin,
			"--app=echo", "--log-format=text", "--log-level=warn")
		f.servers[key] = &engine{p: proc, tcpAddr: tcp, metrics: admin}
	}
	for key, e := range f.servers {
		if !live[key] {
			e.p.stop()
			delete(f.servers, key)
		}
	}
	f.writeTargets(ns, name)
}

// writeTargets replaces the file_sd list atomically. Call with mu held.
func (f *fleetEngines) writeTargets(ns, name string) {
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	keys := make([]string, 0, len(f.servers))
	for k := range f.servers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	groups := []group{}
	for _, k := range keys {
		_, pod, _ := cut(k, "/")
		groups = append(groups, group{Targets: []string{f.servers[k].metrics},
			Labels: map[string]string{"namespace": ns, "pod": pod, "job": name + "-metrics"}})
	}
	data, _ := json.Marshal(groups)
	tmp := f.targets + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err == nil {
		_ = os.Rename(tmp, f.targets)
	}
}

// anyEngine returns the TCP address of one running engine ("" if none).
func (f *fleetEngines) anyEngine() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.servers))
	for k := range f.servers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return ""
	}
	return f.servers[keys[0]].tcpAddr
}

func cut(s, sep string) (string, string, bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}
