package observability

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/playhouse-k8s/playhouse/internal/charttest"
	"github.com/playhouse-k8s/playhouse/pkg/apps/echo"
	"github.com/playhouse-k8s/playhouse/pkg/metrics"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

// The shipped files, relative to this package.
var (
	rulesFile     = filepath.Join("..", "..", "charts", "playhouse", "files", "prometheus-rules.yaml")
	dashboardFile = filepath.Join("..", "..", "charts", "playhouse", "files", "grafana-dashboard.json")
	adapterFile   = filepath.Join("..", "..", "charts", "playhouse", "files", "prometheus-adapter-rules.yaml")
)

// promtool returns the promtool binary: $PROMTOOL (set by `make test`), else
// skips under -short, else fails saying how to get one.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	if testing.Short() {
		t.Skip("PROMTOOL is not set; skipped under -short")
	}
	t.Fatal("PROMTOOL is not set, so the rules cannot be tested. Run `make test`, or\n" +
		"  PROMTOOL=$(hack/e2e-bins.sh promtool)/promtool go test ./test/observability/\n" +
		"  (builds promtool once from the Go module proxy, ~4 min cold); `go test -short` skips this test.")
	return ""
}

// The rules file is valid and its alerts and recording rules behave as
// rules_test.yaml says.
func TestPrometheusRules(t *testing.T) {
	p := promtool(t)
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", "rules_test.yaml"}} {
		out, err := exec.Command(p, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exportedMetrics are the metric names a session server exports, read from
// a live registry with every collector attached (histograms with their
// _bucket, _sum and _count series).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	mgr, err := session.NewManager(session.Options{Handler: echo.New()})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	m.Attach(mgr, func() bool { return false }, nil)
	m.AttachBudget(protocol.NewBudget(1 << 20))
	m.AttachOpenConnections(func() int64 { return 0 })
	m.AttachLimits(100)
	m.PacketReceived(1)
	m.HandlerDone(1)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		out[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[f.GetName()+s] = true
			}
		}
	}
	// Not exported by the engine's registry, but by every TLS-serving
	// server (the collector reports it only when a certificate is loaded).
	out["playhouse_tls_cert_expiry_timestamp_seconds"] = true
	return out
}

// metricRef finds metric names in PromQL: playhouse_... not part of a
// recording rule name (those contain a colon).
var metricRef = regexp.MustCompile(`(?:^|[^a-z_:])(playhouse_[a-z_]+)`)

// shippedQueries returns every PromQL expression the rules file, the
// dashboard and the adapter rule hold, by where they come from.
func shippedQueries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct{ Record, Alert, Expr string }
		}
	}
	mustRead(t, rulesFile, &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["rule "+r.Record+r.Alert] = r.Expr
		}
	}
	for where, q := range DashboardQueries(t) {
		out["dashboard "+where] = q
	}
	for i, r := range adapterRules(t) {
		// metricsQuery is a template over seriesQuery's series.
		out["adapter seriesQuery "+string(rune('0'+i))] = r.SeriesQuery
	}
	return out
}

// DashboardQueries returns the dashboard's PromQL (panel targets and
// template variable queries), by panel title and refId.
func DashboardQueries(t testing.TB) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ RefID, Expr string }
		}
		Templating struct {
			List []struct {
				Name  string
				Query any
			}
		}
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("parse %s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			out["variable "+v.Name], _ = q["query"].(string)
		}
	}
	return out
}

// adapterRule is one prometheus-adapter rule, as far as the tests read it.
type adapterRule struct {
	SeriesQuery  string `json:"seriesQuery"`
	MetricsQuery string `json:"metricsQuery"`
	Name         struct {
		As string `json:"as"`
	} `json:"name"`
}

// adapterRules reads the shipped prometheus-adapter rules.
func adapterRules(t *testing.T) []adapterRule {
	t.Helper()
	var f struct {
		Rules []adapterRule `json:"rules"`
	}
	mustRead(t, adapterFile, &f)
	return f.Rules
}

// The adapter serves the metric under the name the operator's HPA asks for.
func TestAdapterServesTheHPAMetric(t *testing.T) {
	rules := adapterRules(t)
	if len(rules) != 1 || rules[0].Name.As != metrics.SessionsActive ||
		!strings.Contains(rules[0].MetricsQuery, "sum by (<<.GroupBy>>)") {
		t.Fatalf("adapter rules %+v: want one rule serving %s summed per pod", rules, metrics.SessionsActive)
	}
}

func mustRead(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}

// Every metric the rules, the dashboard and the adapter rule query is one
// the engine exports: a renamed metric fails here, not silently in a
// cluster whose alerts never fire and whose autoscaler sees nothing.
func TestShippedQueriesUseExportedMetrics(t *testing.T) {
	have := exportedMetrics(t)
	if !have[metrics.SessionsActive] {
		t.Fatalf("the engine does not export %s", metrics.SessionsActive)
	}
	queries := shippedQueries(t)
	if len(queries) < 20 {
		t.Fatalf("only %d queries found in the shipped files", len(queries))
	}
	for where, q := range queries {
		refs := metricRef.FindAllStringSubmatch(q, -1)
		if len(refs) == 0 && !strings.Contains(q, ":") {
			t.Errorf("%s: no playhouse metric in %q", where, q)
		}
		for _, m := range refs {
			if !have[m[1]] {
				t.Errorf("%s queries %s, which the engine does not export (have %v)", where, m[1], slices.Sorted(mapsKeys(have)))
			}
		}
	}
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if strings.HasPrefix(k, "playhouse_") && !yield(k) {
				return
			}
		}
	}
}

// The chart ships the same files: the dashboard ConfigMap (sidecar label),
// the PrometheusRule only where its CRD is served, the adapter ConfigMap;
// none of them by default.
func TestChartRendersObservability(t *testing.T) {
	if testing.Short() && os.Getenv("HELM") == "" {
		t.Skip("helm not set; skipped under -short")
	}
	def := charttest.Render(t, "r", "ops")
	for _, kind := range []string{"PrometheusRule"} {
		if len(charttest.OfKind(def, kind)) != 0 {
			t.Errorf("%s rendered by default", kind)
		}
	}
	if charttest.Find(def, "ConfigMap", "ops", "r-playhouse-dashboard") != nil {
		t.Error("dashboard rendered by default")
	}

	on := []string{"--set", "grafanaDashboard.enabled=true,prometheusRule.enabled=true,prometheusAdapter.rulesConfigMap=true"}
	objs := charttest.Render(t, "r", "ops", on...)
	if len(charttest.OfKind(objs, "PrometheusRule")) != 0 {
		t.Error("PrometheusRule rendered although the cluster does not serve the kind")
	}
	cm := charttest.Find(objs, "ConfigMap", "ops", "r-playhouse-dashboard")
	if cm == nil {
		t.Fatal("dashboard ConfigMap not rendered")
	}
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard labels %v, want grafana_dashboard: \"1\"", cm.GetLabels())
	}
	want, _ := os.ReadFile(dashboardFile)
	data := cm.Object["data"].(map[string]any)
	if got := data["playhouse-sessions.json"]; strings.TrimSpace(got.(string)) != strings.TrimSpace(string(want)) {
		t.Error("the dashboard ConfigMap differs from files/grafana-dashboard.json")
	}
	ad := charttest.Find(objs, "ConfigMap", "ops", "r-playhouse-prometheus-adapter")
	if ad == nil {
		t.Fatal("prometheus-adapter ConfigMap not rendered")
	}
	wantAd, _ := os.ReadFile(adapterFile)
	if got := ad.Object["data"].(map[string]any)["config.yaml"].(string); strings.TrimSpace(got) != strings.TrimSpace(string(wantAd)) {
		t.Error("the adapter ConfigMap differs from files/prometheus-adapter-rules.yaml")
	}

	withCRD := charttest.Render(t, "r", "ops", append(on, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")...)
	pr := charttest.Find(withCRD, "PrometheusRule", "ops", "r-playhouse")
	if pr == nil {
		t.Fatal("PrometheusRule not rendered although the cluster serves the kind")
	}
	var file map[string]any
	mustRead(t, rulesFile, &file)
	gotJSON, _ := json.Marshal(pr.Object["spec"])
	wantJSON, _ := json.Marshal(file)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("PrometheusRule spec differs from the rules file:\n got %s\nwant %s", gotJSON, wantJSON)
	}
}
