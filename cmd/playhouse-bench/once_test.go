package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/apps"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// TestOnceEchoesOnEveryTransport runs the --once check (what `helm test`
// runs) against the echo app on every transport, over real sockets.
func TestOnceEchoesOnEveryTransport(t *testing.T) {
	srv, certs := startEcho(t, 0)
	for _, tc := range []struct {
		transport string
		kind      transport.Kind
	}{{"tcp", transport.KindTCP}, {"tls", transport.KindTLSTCP}, {"ws", transport.KindWebSocket}, {"wss", transport.KindWSS}} {
		t.Run(tc.transport, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), []string{"--once", "--addr", srv.Addr(tc.kind).String(), "--transport", tc.transport,
				"--ca", certs.CAFile, "--payload", "100", "--timeout", "20s"}, &out, &errOut)
			if err != nil {
				t.Fatalf("--once failed: %v\n%s", err, errOut.String())
			}
			if !strings.HasPrefix(out.String(), "ok: ") || !strings.Contains(out.String(), "echoed 100 bytes") {
				t.Errorf("output %q", out.String())
			}
		})
	}
}

// TestOnceFails checks that --once reports each failing step as an error
// (the binary then exits 1).
func TestOnceFails(t *testing.T) {
	// A server that refuses the credentials: token mode wants a signed JWT.
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "signing-key")
	if err := os.WriteFile(keyFile, bytes.Repeat([]byte("k"), 32), 0o600); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Transports.TCP.Port, c.Admin.Port = 0, 0
	c.Transports.WebSocket.Enabled = false
	c.Auth.Mode, c.Auth.SigningKeyFile = config.AuthModeToken, keyFile
	srv, err := serverconfig.NewApp(c, apps.Builtin(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	// A peer that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = conn.Close() })
		}
	}()

	// A port nothing listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	_ = closed.Close()

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"refused credentials", []string{"--addr", srv.Addr(transport.KindTCP).String(), "--credentials", "not-a-jwt"}, "once: authenticate"},
		{"silent server", []string{"--addr", silent.Addr().String(), "--timeout", "300ms"}, "once: authenticate"},
		{"nothing listening", []string{"--addr", closedAddr}, "once: dial"},
		{"bad timeout", []string{"--timeout", "0s"}, "--timeout must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			var out bytes.Buffer
			err := run(t.Context(), append([]string{"--once"}, tc.args...), &out, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("a failed check printed %q", out.String())
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("the check took %s", d)
			}
		})
	}
}
