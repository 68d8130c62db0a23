package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
)

// childArgsEnv makes the test binary run playhouse-bench's main with these
// (space-separated) arguments instead of the tests: --spawn starts it as a
// server child.
const childArgsEnv = "PLAYHOUSE_BENCH_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(childArgsEnv); args != "" {
		ctx, stop := signalContext()
		defer stop()
		if err := run(ctx, strings.Fields(args), os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// served is a --serve process's addresses, from its "serving" line.
type served struct {
	tcp, ws, tls, wss, ca, control, admin string
}

// addr is the address of a transport (tcp, ws, tls or wss).
func (s served) addr(transport string) string {
	return map[string]string{"tcp": s.tcp, "ws": s.ws, "tls": s.tls, "wss": s.wss}[transport]
}

// startServe runs --serve in this process until the test ends.
func startServe(t *testing.T, args ...string) served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0",
			"--tls-addr", "127.0.0.1:0", "--wss-addr", "127.0.0.1:0"}, args...), pw, io.Discard)
		_ = pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve %v: %v", args, err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if err != nil {
		t.Fatalf("serve %v: %v", args, err)
	}
	var s served
	for f := range strings.FieldsSeq(line) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "tcp":
			s.tcp = v
		case "ws":
			s.ws = v
		case "tls":
			s.tls = v
		case "wss":
			s.wss = v
		case "ca":
			s.ca = v
		case "control":
			s.control = "http://" + v
		case "admin":
			s.admin = v
		}
	}
	if s.tcp == "" || s.ws == "" || s.tls == "" || s.wss == "" || s.ca == "" || s.control == "" {
		t.Fatalf("serving line %q", line)
	}
	return s
}

// runJSON runs the tool with --json and decodes its summary into v.
func runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(t.Context(), append(args, "--json", "--progress", "0"), &out, &errOut); err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, errOut.String())
	}
	if err := json.Unmarshal(out.Bytes(), v); err != nil {
		t.Fatalf("summary: %v\n%s", err, out.String())
	}
}

func ordered(t *testing.T, l map[string]float64) {
	t.Helper()
	if !(l["p50"] > 0 && l["p50"] <= l["p90"] && l["p90"] <= l["p99"] && l["p99"] <= l["max"]) {
		t.Fatalf("latency quantiles out of order: %v", l)
	}
}

// servers starts the baseline and the engine (relay app, which also echoes)
// in this process.
func servers(t *testing.T) map[string]served {
	return map[string]served{
		"raw":       startServe(t, "--serve", "raw"),
		"playhouse": startServe(t, "--serve", "playhouse", "--app", "relay"),
	}
}

func TestEchoReportsServerCPU(t *testing.T) {
	for name, s := range servers(t) {
		for _, tc := range []struct{ tr, client string }{{"tcp", "pkg/client"}, {"ws", "pkg/client"}, {"tcp", "light"}, {"ws", "light"}} {
			t.Run(name+"/"+tc.tr+"/"+tc.client, func(t *testing.T) {
				args := []string{"--addr", s.addr(tc.tr), "--transport", tc.tr, "--control", s.control,
					"--sessions", "4", "--inflight", "4", "--payload", "64", "--duration", "300ms"}
				if tc.client == "light" {
					args = append(args, "--light")
				}
				var sum summary
				runJSON(t, &sum, args...)
				if sum.Requests == 0 || len(sum.Errors) != 0 || sum.Connected != 4 || sum.Inflight != 4 || sum.Seconds < 0.25 {
					t.Fatalf("summary %+v", sum)
				}
				ordered(t, sum.LatencyMs)
				// The server runs in this process: its CPU time is this process's.
				if sum.ServerCPUSeconds <= 0 || sum.PerServerCPUSecond <= 0 {
					t.Fatalf("no server CPU figures: %+v", sum)
				}
			})
		}
	}
}

func TestConnectMode(t *testing.T) {
	for name, s := range servers(t) {
		for _, tr := range []string{"tcp", "ws"} {
			t.Run(name+"/"+tr, func(t *testing.T) {
				addr := s.addr(tr)
				var sum connectSummary
				runJSON(t, &sum, "--mode", "connect", "--addr", addr, "--transport", tr, "--control", s.control,
					"--sessions", "3", "--duration", "300ms", "--source-ips", "4")
				if sum.Cycles == 0 || len(sum.Errors) != 0 || sum.Workers != 3 {
					t.Fatalf("summary %+v", sum)
				}
				ordered(t, sum.LatencyMs)
				if sum.ServerCPUSeconds <= 0 || sum.PerServerCPUSecond <= 0 || sum.PerSecond <= 0 {
					t.Fatalf("rates %+v", sum)
				}
			})
		}
	}
}

func TestIdleMode(t *testing.T) {
	for name, s := range servers(t) {
		for _, tr := range []string{"tcp", "ws", "tls", "wss"} {
			t.Run(name+"/"+tr, func(t *testing.T) {
				var sum idleSummary
				runJSON(t, &sum, "--mode", "idle", "--addr", s.addr(tr), "--transport", tr, "--ca", s.ca, "--control", s.control,
					"--sessions", "50", "--burst", "5", "--payload", "100", "--connect-rate", "2000")
				if sum.Connected != 50 || len(sum.Errors) != 0 || !sum.GCForced || sum.Burst != 5 {
					t.Fatalf("summary %+v", sum)
				}
				if got := sum.After.Sessions - sum.Before.Sessions; got != 50 {
					t.Fatalf("the server counts %d more sessions, want 50", got)
				}
				// The figures are the server's growth divided by the sessions
				// (this process also runs other tests' leftovers, so only the
				// arithmetic and the session count are asserted here; the
				// sizes themselves are checked by test/memory).
				p, b, a := sum.PerSession, sum.Before, sum.After
				if sum.After.RSSBytes == 0 || a.HeapInuse == 0 || a.Goroutines < 50 ||
					math.Abs(p.HeapStackBytes*50-(float64(a.HeapInuse+a.StackInuse)-float64(b.HeapInuse+b.StackInuse))) > 1 ||
					math.Abs(p.Goroutines*50-float64(a.Goroutines-b.Goroutines)) > 1e-6 {
					t.Fatalf("per session %+v (before %+v, after %+v)", p, b, a)
				}
			})
		}
	}
	// From the engine's own /metrics: no forced GC, the same session count.
	// An idle session holds one goroutine (its reader), so the process holds
	// at least 50 at the second scrape. (The growth between the scrapes is
	// not asserted: sessions of the subtests above, in this process, may
	// still be ending at the first.)
	s := startServe(t, "--serve", "playhouse")
	var sum idleSummary
	runJSON(t, &sum, "--mode", "idle", "--addr", s.tcp, "--metrics", "http://"+s.admin+"/metrics",
		"--server-pid", fmt.Sprint(os.Getpid()), "--sessions", "50")
	if sum.Connected != 50 || sum.GCForced || sum.After.Goroutines < 50 || sum.After.HeapInuse == 0 || sum.After.RSSBytes == 0 {
		t.Fatalf("summary from /metrics %+v", sum)
	}
}

// --parked measures once the engine reports every session's reader parked:
// the sessions then hold no goroutine.
func TestIdleModeParked(t *testing.T) {
	s := startServe(t, "--serve", "playhouse", "--idle-park", "100ms")
	for _, tr := range []string{"tcp", "tls"} {
		var sum idleSummary
		runJSON(t, &sum, "--mode", "idle", "--parked", "--addr", s.addr(tr), "--transport", tr, "--ca", s.ca, "--control", s.control,
			"--sessions", "50", "--connect-rate", "2000")
		if sum.Connected != 50 || len(sum.Errors) != 0 {
			t.Fatalf("%s: summary %+v", tr, sum)
		}
		if got := sum.After.Parked - sum.Before.Parked; got != 50 {
			t.Fatalf("%s: %d more parked readers, want 50", tr, got)
		}
		if sum.PerSession.Goroutines > 0.5 {
			t.Fatalf("%s: %.2f goroutines per parked session", tr, sum.PerSession.Goroutines)
		}
	}
}

func TestBroadcastMode(t *testing.T) {
	for name, s := range servers(t) {
		for _, tr := range []string{"tcp", "ws"} {
			t.Run(name+"/"+tr, func(t *testing.T) {
				addr := s.addr(tr)
				var sum broadcastSummary
				runJSON(t, &sum, "--mode", "broadcast", "--addr", addr, "--transport", tr, "--control", s.control,
					"--sessions", "50", "--broadcasts", "20", "--payload", "256", "--connect-rate", "2000")
				if sum.Members != 50 || sum.Broadcasts != 20 || sum.PayloadBytes != 256 || len(sum.Errors) != 0 {
					t.Fatalf("summary %+v", sum)
				}
				ordered(t, sum.LatencyMs)
			})
		}
	}
	// Without the relay app the pushes never come: the mode fails rather
	// than report numbers.
	s := startServe(t, "--serve", "playhouse", "--app", "echo")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := run(ctx, []string{"--mode", "broadcast", "--addr", s.tcp, "--sessions", "3", "--broadcasts", "1"}, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("broadcast through the echo app reported success")
	}
}

// TestSpawnMeasuresTheChild starts the baseline as a child process with
// --spawn and checks that the CPU figures are the child's and that the child
// is stopped at the end.
func TestSpawnMeasuresTheChild(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	t.Setenv(childArgsEnv, "--serve raw --addr "+addr)
	var out, errOut bytes.Buffer
	before, err := procCPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"--spawn", exe, "--addr", addr, "--sessions", "8", "--inflight", "8",
		"--duration", "500ms", "--json", "--progress", "0"}, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var sum summary
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Requests == 0 || sum.ServerCPUSeconds <= 0 {
		t.Fatalf("summary %+v", sum)
	}
	// The child's CPU is not this process's: this process spent its own.
	if mine, _ := procCPUSeconds(os.Getpid()); mine-before <= 0 {
		t.Fatalf("own CPU did not grow")
	}
	// The child is gone: nothing accepts on its address any more.
	testutil.WaitFor(t, "the spawned server stopped", func() bool {
		c, err := dialTimeout(addr)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	})
	// A command that exits at once is reported.
	t.Setenv(childArgsEnv, "--serve bogus")
	if err := run(t.Context(), []string{"--spawn", exe, "--addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--duration", "10ms"}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "exited before") {
		t.Fatalf("a failing --spawn: %v", err)
	}
}

func TestProcFigures(t *testing.T) {
	pid := os.Getpid()
	before, err := procCPUSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the 10 ms clock moves (bounded by the test timeout).
	x := 0
	for end := time.Now().Add(testutil.Timeout); time.Now().Before(end); {
		for i := range 1_000_000 {
			x += i
		}
		if now, _ := procCPUSeconds(pid); now > before {
			break
		}
	}
	if now, _ := procCPUSeconds(pid); now <= before {
		t.Fatalf("CPU seconds did not grow: %v -> %v (%d)", before, now, x)
	}
	rss, err := procRSS(pid)
	if err != nil || rss < 1<<20 {
		t.Fatalf("RSS %d: %v", rss, err)
	}
	if _, err := procCPUSeconds(1 << 30); err == nil {
		t.Fatal("no error for a missing process")
	}
	var l syscall.Rlimit
	n, err := raiseOpenFiles()
	if err != nil || syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil || l.Cur != l.Max || n != l.Max {
		t.Fatalf("open-file limit %d (%+v): %v", n, l, err)
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics([]byte("# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 12\n" +
		"go_memstats_heap_inuse_bytes 1.5e+06\nplayhouse_sessions_active{transport=\"tcp\"} 3\nbroken\n"))
	if m["go_goroutines"] != 12 || m["go_memstats_heap_inuse_bytes"] != 1.5e6 || len(m) != 2 {
		t.Fatalf("parsed %v", m)
	}
}

func TestNewModesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--mode", "nope"}, {"--source-ips", "0"}, {"--burst", "-1"}, {"--broadcasts", "0"},
		{"--serve", "nginx"}, {"--mode", "broadcast", "--sessions", fmt.Sprint(maxSessions)},
		{"--mode", "idle", "--addr", "127.0.0.1:1"}, // no --control or --metrics
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%v) accepted", args)
		}
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func dialTimeout(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }
