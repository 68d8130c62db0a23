// Command playhouse-operator runs the PlayHouseServer controller: it turns each
// PlayHouseServer custom resource into a fleet of session-engine pods and keeps
// it converged.
//
// Usage:
//
//	playhouse-operator [--metrics-bind-address :8080] [--metrics-secure]
//	                   [--health-probe-bind-address :8081] [--leader-elect]
//	                   [--default-image IMAGE] [--session-resync-interval 30s]
//	                   [--watch-namespace NS[,NS...]] [--fleet-metrics-timeout 5s]
//	                   [--log-level info] [--log-format json]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/controllers"
)

// leaderElectionID names the Lease the operator replicas compete for.
const leaderElectionID = "playhouse-operator.playhouse.dev"

// options are the command-line flags.
type options struct {
	metricsAddr             string
	metricsSecure           bool
	enableHTTP2             bool
	probeAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	defaultImage            string
	watchNamespaces         string
	fleetMetricsTimeout     time.Duration
	sessionResync           time.Duration
	sessionReadTimeout      time.Duration
	maxConcurrentRecons     int
	logLevel                string
	logFormat               string

	// skipControllerNameCheck lets a test run the operator more than once in
	// one process (go test -count): controller-runtime otherwise refuses a
	// second controller of the same name. Never set by a flag.
	skipControllerNameCheck bool
}

func main() {
	var o options
	bindFlags(flag.CommandLine, &o)
	flag.Parse()

	err := func() error {
		if err := setupLogging(&o); err != nil {
			return err
		}
		cfg, err := ctrl.GetConfig()
		if err != nil {
			return fmt.Errorf("load kubeconfig: %w", err)
		}
		return run(ctrl.SetupSignalHandler(), cfg, &o)
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "playhouse-operator:", err)
		os.Exit(1)
	}
}

// bindFlags defines the command-line flags on fs, storing into o.
func bindFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080",
		`Address of the metrics endpoint; "0" disables it.`)
	fs.BoolVar(&o.metricsSecure, "metrics-secure", false,
		"Serve metrics over HTTPS with Kubernetes authentication and authorization (needs the RBAC for TokenReviews and SubjectAccessReviews).")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Allow HTTP/2 on the metrics server. Off by default: HTTP/2 Rapid Reset and Stream Cancellation (CVE-2023-44487, CVE-2023-39325).")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081",
		"Address of the /healthz and /readyz probe endpoint.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect a leader among operator replicas so only one reconciles at a time.")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease; empty uses the operator's own namespace (required outside a cluster).")
	fs.StringVar(&o.defaultImage, "default-image", controllers.DefaultServerImage,
		"Server image used by PlayHouseServers that do not set spec.image.")
	fs.StringVar(&o.watchNamespaces, "watch-namespace", "",
		"Comma-separated namespaces whose PlayHouseServers the operator manages; its cache and API calls stay inside them, so namespaced RBAC (Roles) suffices. Empty: every namespace (needs a ClusterRole).")
	fs.DurationVar(&o.fleetMetricsTimeout, "fleet-metrics-timeout", defaultFleetListTimeout,
		"Bound on reading the PlayHouseServers (from the cache) for the fleet metrics of one scrape; past it the fleet gauges are left out of that scrape.")
	fs.DurationVar(&o.sessionResync, "session-resync-interval", controllers.DefaultResyncInterval,
		"How often each ready pod's live session count is read to refresh its pod-deletion-cost and status.sessions.")
	fs.DurationVar(&o.sessionReadTimeout, "session-read-timeout", controllers.DefaultSessionReadTimeout,
		"Timeout of one request to a pod's /status endpoint.")
	fs.IntVar(&o.maxConcurrentRecons, "max-concurrent-reconciles", 2,
		"PlayHouseServers reconciled in parallel.")
	fs.StringVar(&o.logLevel, "log-level", "info",
		"Log level: debug, info, warn, error, or a logr verbosity such as 2.")
	fs.StringVar(&o.logFormat, "log-format", "json", "Log format: json or text.")
}

// setupLogging installs the logger the flags select.
func setupLogging(o *options) error {
	logger, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	ctrl.SetLogger(logger)
	return nil
}

// run builds the manager against the cluster of cfg and blocks until ctx
// ends (main cancels it on SIGTERM or SIGINT).
func run(ctx context.Context, cfg *rest.Config, o *options) error {
	log := ctrl.Log.WithName("setup")
	if o.sessionResync <= 0 {
		return fmt.Errorf("--session-resync-interval must be positive, got %s", o.sessionResync)
	}
	if o.fleetMetricsTimeout <= 0 {
		return fmt.Errorf("--fleet-metrics-timeout must be positive, got %s", o.fleetMetricsTimeout)
	}

	namespaces, err := parseNamespaces(o.watchNamespaces)
	if err != nil {
		return err
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(playhousev1alpha1.AddToScheme(scheme))

	var tlsOpts []func(*tls.Config)
	if !o.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{
		BindAddress:   o.metricsAddr,
		SecureServing: o.metricsSecure,
		TLSOpts:       tlsOpts,
	}
	if o.metricsSecure {
		// Only callers allowed to GET /metrics (per RBAC) may scrape.
		metricsOpts.FilterProvider = metricsAuthFilter
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       o.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{ByObject: controllers.CacheByObject(), DefaultNamespaces: namespaces},
		Controller:                    config.Controller{SkipNameValidation: &o.skipControllerNameCheck},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	r := controllers.NewPlayHouseServerReconciler(mgr, controllers.Options{
		DefaultImage:   o.defaultImage,
		ResyncInterval: o.sessionResync,
		Sessions:       controllers.NewHTTPSessionReader(o.sessionReadTimeout),

		MaxConcurrentReconciles: o.maxConcurrentRecons,
	})
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	// The fleet metrics join controller-runtime's on its registry; removed
	// again when run returns, so a second run in one process can add its own.
	fleets := newFleetCollector(mgr.GetCache(), o.fleetMetricsTimeout, ctrl.Log.WithName("metrics"))
	if err := ctrlmetrics.Registry.Register(fleets); err != nil {
		return fmt.Errorf("register fleet metrics: %w", err)
	}
	defer ctrlmetrics.Registry.Unregister(fleets)

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("cache-synced", cacheSynced(mgr)); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}

	log.Info("starting manager", "defaultImage", o.defaultImage, "sessionResync", o.sessionResync,
		"leaderElection", o.leaderElect, "metrics", o.metricsAddr, "metricsSecure", o.metricsSecure,
		"watchNamespaces", o.watchNamespaces)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// parseNamespaces turns the --watch-namespace list into the cache's
// namespace set; nil (every namespace) for an empty list.
func parseNamespaces(list string) (map[string]cache.Config, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	out := map[string]cache.Config{}
	for _, ns := range strings.Split(list, ",") {
		ns = strings.TrimSpace(ns)
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("--watch-namespace: %q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
		out[ns] = cache.Config{}
	}
	return out, nil
}

// cacheSynced is a readiness check that passes once the manager's informers
// have synced, so a rollout of the operator waits for a replica that can work.
func cacheSynced(mgr ctrl.Manager) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 100*time.Millisecond)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("informer caches not synced yet")
		}
		return nil
	}
}

// newLogger builds the operator's logger on log/slog. logr verbosity V(n)
// maps to slog level -n, so "debug" shows V(1) through V(4).
func newLogger(level, format string) (logr.Logger, error) {
	var lvl slog.Level
	switch level {
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		v, err := strconv.Atoi(level)
		if err != nil || v < 0 {
			return logr.Logger{}, fmt.Errorf("--log-level: want debug, info, warn, error or a verbosity >= 0, got %q", level)
		}
		lvl = slog.Level(-v)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, opts)), nil
	default:
		return logr.Logger{}, fmt.Errorf("--log-format: want json or text, got %q", format)
	}
}
