package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
	"github.com/playhouse-k8s/playhouse/pkg/apps"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// startEcho runs the echo app on loopback with every transport.
func startEcho(t *testing.T, ratePerSecond float64) (*server.Server, *testcert.Bundle) {
	t.Helper()
	certs, err := testcert.Write(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Transports.TCP.Port, c.Transports.WebSocket.Port, c.Admin.Port = 0, 0, 0
	c.Transports.TLSTCP = config.Listener{Enabled: true}
	c.Transports.WSS.Enabled, c.Transports.WSS.Port = true, 0
	c.Transports.TLS.CertFile, c.Transports.TLS.KeyFile = certs.CertFile, certs.KeyFile
	c.Limits.RateLimit.PacketsPerSecond = ratePerSecond
	srv, err := serverconfig.NewApp(c, apps.Builtin(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv, certs
}

func runBench(t *testing.T, args ...string) summary {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(t.Context(), append(args, "--json", "--progress", "100ms"), &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var s summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("summary: %v\n%s", err, out.String())
	}
	return s
}

func TestBenchAgainstEchoOnEveryTransport(t *testing.T) {
	srv, certs := startEcho(t, 0)
	for _, tc := range []struct {
		transport string
		kind      transport.Kind
	}{{"tcp", transport.KindTCP}, {"tls", transport.KindTLSTCP}, {"ws", transport.KindWebSocket}, {"wss", transport.KindWSS}} {
		t.Run(tc.transport, func(t *testing.T) {
			s := runBench(t, "--addr", srv.Addr(tc.kind).String(), "--transport", tc.transport,
				"--ca", certs.CAFile, "--sessions", "8", "--inflight", "4", "--payload", "64", "--duration", "300ms")
			if s.Connected != 8 || s.Requests == 0 || len(s.Errors) != 0 {
				t.Fatalf("summary: %+v", s)
			}
			l := s.LatencyMs
			if !(l["p50"] > 0 && l["p50"] <= l["p90"] && l["p90"] <= l["p99"] && l["p99"] <= l["p999"] && l["p999"] <= l["max"]) {
				t.Fatalf("latency quantiles out of order: %v", l)
			}
			if s.PerSecond <= 0 || s.Seconds < 0.3 {
				t.Fatalf("rate %v over %vs", s.PerSecond, s.Seconds)
			}
		})
	}
}

func TestBenchCountsRateLimitedReplies(t *testing.T) {
	srv, _ := startEcho(t, 5) // 5 packets/s per session, burst 200
	s := runBench(t, "--addr", srv.Addr(transport.KindTCP).String(), "--sessions", "2", "--inflight", "8", "--duration", "300ms")
	if s.Errors["code RateLimitExceeded"] == 0 {
		t.Fatalf("rate-limited replies not counted: %+v", s)
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--transport", "udp"}, {"--sessions", "0"}, {"--sessions", "100000"}, {"--inflight", "0"},
		{"--duration", "0s"}, {"--payload", "-1"}, {"extra"},
	} {
		var errOut bytes.Buffer
		if err := run(context.Background(), args, io.Discard, &errOut); err == nil {
			t.Errorf("run(%v) accepted", args)
		}
	}
	var errOut bytes.Buffer
	err := run(context.Background(), []string{"--addr", "127.0.0.1:1", "--sessions", "1", "--duration", "10ms"}, io.Discard, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no session connected") {
		t.Fatalf("unreachable server: %v", err)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.99: 990 * time.Millisecond} {
		got := h.quantile(q)
		if got < want || float64(got) > float64(want)*1.03 {
			t.Errorf("q%.2f = %v, want about %v (bucket upper bound, within 2%%)", q, got, want)
		}
	}
	if h.quantile(1) != time.Second || h.max != time.Second {
		t.Errorf("max = %v", h.quantile(1))
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram")
	}
}
