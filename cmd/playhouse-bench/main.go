// Command playhouse-bench is a load generator for the PlayHouse protocol: it
// opens many sessions over TCP, TLS-TCP, WebSocket or WSS, authenticates each,
// keeps a number of echo requests in flight per session for a fixed time, and
// prints progress and a latency/throughput summary. Point it at a server
// running the echo app (make run); for throughput runs, disable the server's
// per-session rate limit (limits.rateLimit.packetsPerSecond: 0), or replies
// with ErrorCode 18 are counted as errors.
//
// --mode selects what is measured (echo is the default above; with --light
// it runs on the light client of the other modes instead of pkg/client):
//
//   - connect: --sessions loops each dial, authenticate and close for
//     --duration; reports cycles per second and dial-to-authenticated latency.
//   - idle: opens --sessions authenticated sessions (optionally passes a
//     --burst of echo requests on each) and reports the server's growth in RSS,
//     Go heap and stacks and goroutines per session, after a forced GC when
//     the server offers one (--control), or from its /metrics (--metrics).
//   - broadcast: --sessions members and one sender join one stage; the sender
//     sends --broadcasts one-way packets of --payload bytes that the server
//     pushes to every member (the relay app); reports server CPU per broadcast
//     and the time until the last member has it.
//
// Every mode reports the server's CPU-seconds when the server runs on the same
// machine and its pid is known: --server-pid, a server started by the tool
// with --spawn "command", or a --control endpoint.
//
// With --serve raw|playhouse it is a server instead: the raw-echo baseline
// (internal/rawecho: one goroutine and a 4 KiB buffer per connection, gorilla
// for WebSocket) or the PlayHouse engine (pkg/server, as playhouse-server runs
// it), on --addr (TCP), --ws-addr (WebSocket), --tls-addr and --wss-addr
// (a throwaway certificate whose CA file it prints), with a control endpoint on
// --control-addr: GET /snapshot?gc=1 forces a GC and returns the process's
// memory figures as JSON; GET /metrics has the Go runtime and process
// collectors. Baseline and engine thus run from the same binary with the same
// measurement hooks (see docs/benchmarks.md for the comparison commands).
//
// With --once it is a connectivity check instead (the Helm chart's
// `helm test` runs it): one session dials, authenticates (--credentials),
// sends one echo request and checks that the reply carries the same payload,
// all within --timeout; the exit status is 0 on success and 1 otherwise.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/playhouse-k8s/playhouse/pkg/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "playhouse-bench:", err)
		os.Exit(1)
	}
}

// options are the command-line settings.
type options struct {
	addr        string
	transport   string
	wsPath      string
	sessions    int
	inflight    int
	payload     int
	duration    time.Duration
	rate        float64
	connectRate float64
	progress    time.Duration
	caFile      string
	insecure    bool
	authMsgID   string
	jsonOut     bool
	once        bool
	timeout     time.Duration
	credentials string

	mode        string
	sourceIPs   int
	burst       int
	parked      bool
	idlePark    time.Duration
	broadcasts  int
	spawn       string
	serverPID   int
	control     string
	metricsURL  string
	serve       string
	wsAddr      string
	tlsAddr     string
	wssAddr     string
	controlAddr string
	configFile  string
	app         string
	light       bool
}

// defaultOnceTimeout bounds the whole --once check: dial, authenticate and
// one echo.
const defaultOnceTimeout = 10 * time.Second

// maxSessions keeps a run under the 20,000 open files a process may hold
// (one descriptor per session; the server is another process).
const maxSessions = 19000

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("playhouse-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:7777", "server address (host:port)")
	fs.StringVar(&o.transport, "transport", "tcp", "tcp, tls, ws or wss")
	fs.StringVar(&o.wsPath, "ws-path", "/ws", "WebSocket path")
	fs.IntVar(&o.sessions, "sessions", 50, fmt.Sprintf("concurrent sessions (1..%d)", maxSessions))
	fs.IntVar(&o.inflight, "inflight", 1, "requests in flight per session (1..1000)")
	fs.IntVar(&o.payload, "payload", 32, "request payload bytes (0..1048576)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to send requests (after all sessions connect)")
	fs.Float64Var(&o.rate, "rate", 0, "requests per second per session; 0 sends as fast as replies come back")
	fs.Float64Var(&o.connectRate, "connect-rate", 500, "new sessions per second while connecting")
	fs.DurationVar(&o.progress, "progress", time.Second, "progress line interval on stderr; 0 disables")
	fs.StringVar(&o.caFile, "ca", "", "PEM CA bundle to trust for tls/wss")
	fs.BoolVar(&o.insecure, "insecure-skip-verify", false, "do not verify the server certificate (tls/wss)")
	fs.StringVar(&o.authMsgID, "auth-msg-id", "AuthenticateRequest", "authentication message id")
	fs.BoolVar(&o.jsonOut, "json", false, "print the summary as JSON")
	fs.BoolVar(&o.once, "once", false, "connectivity check: one session dials, authenticates, echoes one request and exits (0 ok, 1 failed)")
	fs.DurationVar(&o.timeout, "timeout", defaultOnceTimeout, "deadline of the whole --once check")
	fs.StringVar(&o.credentials, "credentials", "", "authenticate payload of the --once session (default: a generated account name; a JWT for auth mode token)")
	fs.StringVar(&o.mode, "mode", modeEcho, "what to measure: echo, connect, idle or broadcast")
	fs.IntVar(&o.sourceIPs, "source-ips", 1, "connect, idle and broadcast modes: spread connections over this many loopback source addresses from 127.0.0.2 up (1: the system picks; 1..10000; IPv4 loopback targets only)")
	fs.DurationVar(&o.idlePark, "idle-park", -1, "--serve playhouse: the engine's limits.idlePark (0 disables parking; negative keeps the configuration's, 5s by default)")
	fs.BoolVar(&o.parked, "parked", false, "idle mode: measure once the server reports every session's reader parked (the engine's limits.idlePark, waited for up to 2 minutes); the baseline never parks")
	fs.IntVar(&o.burst, "burst", 0, "idle mode: echo requests each session sends (pipelined) before the measurement (0..10000)")
	fs.BoolVar(&o.light, "light", false, "echo mode: use the light client of the other modes (one goroutine per session, no pkg/client), so one load core can saturate a server")
	fs.IntVar(&o.broadcasts, "broadcasts", 200, "broadcast mode: pushes to send (1..1000000)")
	fs.StringVar(&o.spawn, "spawn", "", "start this server command (split on spaces) first, wait until --addr accepts, measure its CPU, stop it at the end")
	fs.IntVar(&o.serverPID, "server-pid", 0, "pid of the server on this machine, for its CPU-seconds and RSS")
	fs.StringVar(&o.control, "control", "", "base URL of a --serve process's control endpoint (forced GC, memory figures, pid)")
	fs.StringVar(&o.metricsURL, "metrics", "", "URL of the server's Prometheus /metrics (memory figures without a forced GC)")
	fs.StringVar(&o.serve, "serve", "", "run a server instead of load: raw (the baseline) or playhouse (the engine)")
	fs.StringVar(&o.wsAddr, "ws-addr", "", "serve: WebSocket listen address (empty: no WebSocket)")
	fs.StringVar(&o.tlsAddr, "tls-addr", "", "serve: TLS-over-TCP listen address, with a throwaway certificate (empty: none)")
	fs.StringVar(&o.wssAddr, "wss-addr", "", "serve: WSS listen address, with a throwaway certificate (empty: none)")
	fs.StringVar(&o.controlAddr, "control-addr", "127.0.0.1:0", "serve: control endpoint address")
	fs.StringVar(&o.configFile, "config", "", "serve playhouse: YAML config (default: built-in defaults without rate limit)")
	fs.StringVar(&o.app, "app", "", "serve playhouse: built-in app, echo or relay (relay for the broadcast mode)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case o.transport != "tcp" && o.transport != "tls" && o.transport != "ws" && o.transport != "wss":
		return o, fmt.Errorf("--transport must be tcp, tls, ws or wss, got %q", o.transport)
	case o.sessions < 1 || o.sessions > maxSessions:
		return o, fmt.Errorf("--sessions must be 1..%d, got %d", maxSessions, o.sessions)
	case o.inflight < 1 || o.inflight > 1000:
		return o, fmt.Errorf("--inflight must be 1..1000, got %d", o.inflight)
	case o.payload < 0 || o.payload > 1<<20:
		return o, fmt.Errorf("--payload must be 0..1048576, got %d", o.payload)
	case o.duration <= 0:
		return o, fmt.Errorf("--duration must be positive, got %s", o.duration)
	case o.light && o.rate > 0:
		return o, errors.New("--light does not pace (--rate)")
	case o.light && o.inflight > 65535:
		return o, errors.New("--light needs --inflight <= 65535")
	case o.rate < 0 || o.connectRate <= 0:
		return o, errors.New("--rate must be >= 0 and --connect-rate > 0")
	case o.timeout <= 0:
		return o, fmt.Errorf("--timeout must be positive, got %s", o.timeout)
	case o.mode != modeEcho && o.mode != modeConnect && o.mode != modeIdle && o.mode != modeBroadcast:
		return o, fmt.Errorf("--mode must be echo, connect, idle or broadcast, got %q", o.mode)
	case o.sourceIPs < 1 || o.sourceIPs > 10000:
		return o, fmt.Errorf("--source-ips must be 1..10000, got %d", o.sourceIPs)
	case o.parked && o.mode != modeIdle:
		return o, fmt.Errorf("--parked is for --mode idle only")
	case o.burst < 0 || o.burst > 10000:
		return o, fmt.Errorf("--burst must be 0..10000, got %d", o.burst)
	case o.broadcasts < 1 || o.broadcasts > 1000000:
		return o, fmt.Errorf("--broadcasts must be 1..1000000, got %d", o.broadcasts)
	case o.mode == modeBroadcast && o.sessions+1 > maxSessions:
		return o, fmt.Errorf("--sessions must be at most %d in broadcast mode (plus the sender)", maxSessions-1)
	case o.serve != "" && o.serve != serveRaw && o.serve != servePlayhouse:
		return o, fmt.Errorf("--serve must be raw or playhouse, got %q", o.serve)
	}
	return o, nil
}

// summary is the result of a run.
type summary struct {
	Transport   string             `json:"transport"`
	Sessions    int                `json:"sessions"`
	Connected   int                `json:"connected"`
	Inflight    int                `json:"inflight"`
	PayloadSize int                `json:"payloadBytes"`
	Seconds     float64            `json:"seconds"`
	Requests    uint64             `json:"requests"`
	Errors      map[string]uint64  `json:"errors"`
	PerSecond   float64            `json:"requestsPerSecond"`
	LatencyMs   map[string]float64 `json:"latencyMs"`
	// ServerCPUSeconds is the server's CPU time while requests ran (0: unknown).
	ServerCPUSeconds float64 `json:"serverCpuSeconds"`
	// PerServerCPUSecond is echoes per server CPU-second (0: unknown).
	PerServerCPUSecond float64 `json:"requestsPerServerCpuSecond"`
}

// worker is one session's goroutines and their counters.
type worker struct {
	ok   atomic.Uint64
	mu   sync.Mutex
	hist histogram
}

func (o options) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.insecure} //nolint:gosec // opt-in flag
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s holds no certificate", o.caFile)
		}
	}
	return cfg, nil
}

func (o options) dial(ctx context.Context, tlsCfg *tls.Config) (*client.Client, error) {
	opts := client.Options{RequestTimeout: 30 * time.Second}
	switch o.transport {
	case "tls":
		opts.TLSConfig = tlsCfg
		return client.Dial(ctx, o.addr, opts)
	case "ws", "wss":
		if o.transport == "wss" {
			opts.TLSConfig = tlsCfg
		}
		return client.DialWebSocket(ctx, o.transport+"://"+o.addr+o.wsPath, nil, opts)
	default:
		return client.Dial(ctx, o.addr, opts)
	}
}

// errorKind names an error for the summary without unbounded cardinality.
func errorKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, client.ErrClosed), errors.Is(err, io.EOF):
		return "closed"
	}
	var ce *client.ErrorCodeError
	if errors.As(err, &ce) {
		return "code " + ce.Code.String()
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return msg
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// Progress lines, a spawned server's output and the summary code all
	// write to stderr.
	stderr = &lockedWriter{w: stderr}
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var tlsCfg *tls.Config
	if o.transport == "tls" || o.transport == "wss" {
		if tlsCfg, err = o.tlsConfig(); err != nil {
			return err
		}
	}
	if o.serve != "" {
		return runServe(ctx, o, stdout, stderr)
	}
	if o.once {
		return runOnce(ctx, o, tlsCfg, stdout)
	}
	if _, err := raiseOpenFiles(); err != nil {
		fmt.Fprintln(stderr, "warning:", err)
	}
	pid := o.serverPID
	if o.spawn != "" {
		sp, err := spawn(ctx, o.spawn, o.addr, stderr)
		if err != nil {
			return err
		}
		defer sp.stop()
		if pid == 0 {
			pid = sp.cmd.Process.Pid
		}
	}
	pr := newProbe(o.control, o.metricsURL, pid)
	if pid == 0 && o.control != "" {
		if pid, err = pr.serverPID(ctx); err != nil {
			return err
		}
		pr.pid = pid
	}
	tgt := target{pid: pid, probe: pr}
	switch o.mode {
	case modeConnect:
		return runConnect(ctx, o, newDialer(o, tlsCfg), tgt, stdout, stderr)
	case modeIdle:
		return runIdle(ctx, o, newDialer(o, tlsCfg), tgt, stdout, stderr)
	case modeBroadcast:
		return runBroadcast(ctx, o, newDialer(o, tlsCfg), tgt, stdout, stderr)
	}
	if o.light {
		return runEchoLight(ctx, o, newDialer(o, tlsCfg), tgt, stdout, stderr)
	}
	return runEcho(ctx, o, tlsCfg, tgt, stdout, stderr)
}

// runEcho is --mode echo: --sessions sessions keep --inflight echo requests
// each in flight for --duration.
func runEcho(ctx context.Context, o options, tlsCfg *tls.Config, tgt target, stdout, stderr io.Writer) error {
	var (
		errMu  sync.Mutex
		errs   = map[string]uint64{}
		failed atomic.Uint64
	)
	countErr := func(err error) {
		failed.Add(1)
		errMu.Lock()
		errs[errorKind(err)]++
		errMu.Unlock()
	}

	// Connect and authenticate every session, paced by --connect-rate.
	clients := make([]*client.Client, 0, o.sessions)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	pace := rate.NewLimiter(rate.Limit(o.connectRate), 1)
	payload := make([]byte, o.payload)
	for i := range o.sessions {
		if err := pace.Wait(ctx); err != nil {
			return fmt.Errorf("connecting: %w", err)
		}
		c, err := o.dial(ctx, tlsCfg)
		if err != nil {
			countErr(err)
			continue
		}
		if _, err := c.Authenticate(ctx, o.authMsgID, []byte(fmt.Sprintf("bench-%d-%d", os.Getpid(), i))); err != nil {
			countErr(err)
			c.Close()
			continue
		}
		clients = append(clients, c)
	}
	if len(clients) == 0 {
		return fmt.Errorf("no session connected (%v)", errs)
	}
	fmt.Fprintf(stderr, "connected %d/%d sessions over %s; running %s\n", len(clients), o.sessions, o.transport, o.duration)

	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	workers := make([]*worker, len(clients))
	var wg sync.WaitGroup
	cpu := tgt.startCPU()
	start := time.Now()
	for i, c := range clients {
		w := &worker{}
		workers[i] = w
		var lim *rate.Limiter
		if o.rate > 0 {
			lim = rate.NewLimiter(rate.Limit(o.rate), o.inflight)
		}
		for range o.inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for runCtx.Err() == nil {
					if lim != nil && lim.Wait(runCtx) != nil {
						return
					}
					t0 := time.Now()
					r, err := c.Request(runCtx, "EchoRequest", 0, payload)
					if err == nil {
						err = r.Err() // a reply with an ErrorCode (e.g. 18, rate limited) is a failure
					}
					if err != nil {
						if runCtx.Err() != nil {
							return // the run ended mid-request: not an error
						}
						countErr(err)
						if errors.Is(err, client.ErrClosed) || c.Err() != nil {
							return
						}
						continue
					}
					d := time.Since(t0)
					w.ok.Add(1)
					w.mu.Lock()
					w.hist.record(d)
					w.mu.Unlock()
				}
			}()
		}
	}
	total := func() uint64 {
		var n uint64
		for _, w := range workers {
			n += w.ok.Load()
		}
		return n
	}
	if o.progress > 0 {
		go func() {
			t := time.NewTicker(o.progress)
			defer t.Stop()
			last, lastAt := uint64(0), start
			for {
				select {
				case <-runCtx.Done():
					return
				case now := <-t.C:
					n := total()
					fmt.Fprintf(stderr, "t=%4.1fs  %8.0f req/s  total %d  errors %d\n",
						now.Sub(start).Seconds(), float64(n-last)/now.Sub(lastAt).Seconds(), n, failed.Load())
					last, lastAt = n, now
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpuSec := cpu.seconds()

	var h histogram
	for _, w := range workers {
		w.mu.Lock()
		h.merge(&w.hist)
		w.mu.Unlock()
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	s := summary{
		Transport: o.transport, Sessions: o.sessions, Connected: len(clients), Inflight: o.inflight,
		PayloadSize: o.payload, Seconds: elapsed.Seconds(), Requests: h.n, Errors: errs,
		PerSecond:        float64(h.n) / elapsed.Seconds(),
		ServerCPUSeconds: cpuSec, PerServerCPUSecond: perCPU(float64(h.n), cpuSec),
		LatencyMs: map[string]float64{
			"p50": ms(h.quantile(0.50)), "p90": ms(h.quantile(0.90)), "p99": ms(h.quantile(0.99)),
			"p999": ms(h.quantile(0.999)), "max": ms(h.max),
		},
	}
	return printEcho(stdout, o.jsonOut, s)
}

// printEcho prints an echo summary as JSON or text.
func printEcho(stdout io.Writer, jsonOut bool, s summary) error {
	errs := s.Errors
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(stdout, "transport %s, %d/%d sessions, %d in flight each, %d-byte payload, %.1fs\n",
		s.Transport, s.Connected, s.Sessions, s.Inflight, s.PayloadSize, s.Seconds)
	fmt.Fprintf(stdout, "requests  %d ok, %.0f/s\n", s.Requests, s.PerSecond)
	if s.ServerCPUSeconds > 0 {
		fmt.Fprintf(stdout, "server    %.2f CPU-seconds, %.0f echoes per server CPU-second\n", s.ServerCPUSeconds, s.PerServerCPUSecond)
	}
	fmt.Fprintf(stdout, "latency   p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms\n",
		s.LatencyMs["p50"], s.LatencyMs["p90"], s.LatencyMs["p99"], s.LatencyMs["p999"], s.LatencyMs["max"])
	kinds := make([]string, 0, len(errs))
	for k := range errs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	if len(kinds) == 0 {
		fmt.Fprintln(stdout, "errors    none")
	}
	for _, k := range kinds {
		fmt.Fprintf(stdout, "errors    %d %s\n", errs[k], k)
	}
	return nil
}

// runOnce is the --once check: one session dials, authenticates, sends one
// echo request with a random payload and checks the reply, within o.timeout.
// Any failure is returned with the step it happened in.
func runOnce(ctx context.Context, o options, tlsCfg *tls.Config, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start := time.Now()
	c, err := o.dial(ctx, tlsCfg)
	if err != nil {
		return fmt.Errorf("once: dial %s over %s: %w", o.addr, o.transport, err)
	}
	defer func() { _ = c.Close() }()
	creds := o.credentials
	if creds == "" {
		creds = fmt.Sprintf("bench-once-%d", os.Getpid())
	}
	if _, err := c.Authenticate(ctx, o.authMsgID, []byte(creds)); err != nil {
		return fmt.Errorf("once: authenticate: %w", err)
	}
	payload := make([]byte, o.payload)
	if _, err := rand.Read(payload); err != nil {
		return fmt.Errorf("once: make payload: %w", err)
	}
	r, err := c.Request(ctx, "EchoRequest", 0, payload)
	if err == nil {
		err = r.Err()
	}
	if err != nil {
		return fmt.Errorf("once: echo: %w", err)
	}
	if !bytes.Equal(r.Payload, payload) {
		return fmt.Errorf("once: echo: the reply carries %d bytes that differ from the %d sent", len(r.Payload), len(payload))
	}
	fmt.Fprintf(stdout, "ok: %s over %s: authenticated and echoed %d bytes in %s\n",
		o.addr, o.transport, len(payload), time.Since(start).Round(time.Millisecond))
	return nil
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
