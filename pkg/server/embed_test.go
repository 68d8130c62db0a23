package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/apps/echo"
	"github.com/playhouse-k8s/playhouse/pkg/apps/relay"
	"github.com/playhouse-k8s/playhouse/pkg/client"
	"github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// startEmbedded builds a server from Options in code (no config file) and
// starts it.
func startEmbedded(t *testing.T, o server.Options) *server.Server {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

// serveHTTP serves h on a loopback port of the test's own (optionally TLS)
// server and returns its address.
func serveHTTP(t *testing.T, h http.Handler, tlsConfig *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: testTimeout, TLSConfig: tlsConfig}
	if tlsConfig != nil {
		go hs.ServeTLS(ln, "", "")
	} else {
		go hs.Serve(ln)
	}
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// An embedding program with no engine listener at all (no client listener,
// no admin listener): WebSocket and WSS served by its own HTTP servers, with
// its own tls.Config; the sessions are admitted, counted in /status and the
// metrics (AdminHandler on its own mux), relayed between through
// Session.Manager, and drained.
func TestEmbeddedWithoutEngineListeners(t *testing.T) {
	srv := startEmbedded(t, server.Options{Session: session.Options{Handler: relay.New()}, DrainTimeout: 2 * time.Second})
	if srv.AdminAddr() != nil {
		t.Fatalf("admin listener bound at %v without Admin.Addr", srv.AdminAddr())
	}
	for _, k := range transport.Kinds {
		if a := srv.Addr(k); a != nil {
			t.Fatalf("%s listener bound at %v", k, a)
		}
	}
	ws, err := srv.WebSocketHandler(transport.KindWebSocket, nil)
	if err != nil {
		t.Fatal(err)
	}
	wss, err := srv.WebSocketHandler(transport.KindWSS, nil)
	if err != nil {
		t.Fatal(err)
	}
	bundle, serverTLS := testutil.ServerTLS(t)
	mux := http.NewServeMux()
	mux.Handle("/ws", ws)
	mux.Handle("/admin/", http.StripPrefix("/admin", srv.AdminHandler()))
	plain := serveHTTP(t, mux, nil)
	secure := serveHTTP(t, wss, serverTLS)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dial := func(url string, tlsConfig *tls.Config, name string) *client.Client {
		t.Helper()
		c, err := client.DialWebSocket(ctx, url, nil, client.Options{TLSConfig: tlsConfig, DisableResume: true})
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Authenticate(ctx, "AuthenticateRequest", []byte(name)); err != nil {
			t.Fatal(err)
		}
		if r, err := c.Request(ctx, relay.JoinStageMsgID, 5, nil); err != nil || r.Err() != nil {
			t.Fatalf("join: %v %+v", err, r)
		}
		return c
	}
	a := dial("ws://"+plain+"/ws", nil, "a")
	b := dial("wss://"+secure+"/ws", bundle.ClientConfig(), "b")
	if err := a.Send("ChatNotify", 5, []byte("over the mounted handlers")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.Pushes():
		if p.MsgID != "ChatNotify" || string(p.Payload) != "over the mounted handlers" {
			t.Fatalf("push = %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("no relay through Session.Manager")
	}

	resp, err := http.Get("http://" + plain + "/admin/status")
	if err != nil {
		t.Fatal(err)
	}
	var st server.Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.Sessions != 2 || st.SessionsByTransport["ws"] != 1 || st.SessionsByTransport["wss"] != 1 {
		t.Fatalf("status = %+v (%v)", st, err)
	}
	resp, err = http.Get("http://" + plain + "/admin/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(body), `playhouse_sessions_active{transport="wss"} 1`) {
		t.Fatalf("mounted /metrics lacks the wss session (%v):\n%s", err, body)
	}

	if err := srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := srv.Manager().Count(); n != 0 {
		t.Fatalf("%d sessions left after the drain", n)
	}
	// Draining: the mounted handler refuses new sessions.
	if _, err := client.DialWebSocket(ctx, "ws://"+plain+"/ws", nil, client.Options{DisableResume: true}); err == nil {
		t.Fatal("mounted handler accepted a connection after the drain")
	}
}

// A configuration file can turn the admin listener off and leave every
// engine listener off (transports.mounted), and may name an app of its own.
func TestConfigAdminDisabledAndMountedOnly(t *testing.T) {
	c, _ := testConfig(t)
	c.App = "my-game"
	c.Admin.Enabled = false
	c.Transports.TCP.Enabled, c.Transports.WebSocket.Enabled = false, false
	c.Transports.TLSTCP.Enabled, c.Transports.WSS.Enabled = false, false
	c.Transports.Mounted = true
	srv, err := serverconfig.New(c, echo.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("embedding config refused: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	if srv.AdminAddr() != nil || srv.Addr(transport.KindTCP) != nil {
		t.Fatalf("listeners bound: admin %v tcp %v", srv.AdminAddr(), srv.Addr(transport.KindTCP))
	}
	// Port 0 still means "any free port" when the admin listener is on.
	c.App = "echo"
	c.Admin.Enabled = true
	c.Transports.TCP.Enabled = true
	on := startServer(t, c)
	if on.AdminAddr() == nil {
		t.Fatal("admin listener not bound with admin.enabled")
	}
}

// TLS from a caller's tls.Config: a certificate rotated in memory through
// GetCertificate is served to new handshakes, and the expiry metric follows
// the certificate actually served.
func TestTLSFromConfigRotatesInMemory(t *testing.T) {
	load := func(b *testcert.Bundle) *tls.Certificate {
		cert, err := tls.LoadX509KeyPair(b.CertFile, b.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		return &cert
	}
	first, err := testcert.Write(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	second, err := testcert.Write(t.TempDir(), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var current atomic.Pointer[tls.Certificate]
	current.Store(load(first))
	srv := startEmbedded(t, server.Options{
		Session: session.Options{Handler: echo.New()},
		TLSTCP:  server.Listener{Addr: "127.0.0.1:0"},
		TLS: server.TLSOptions{Config: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current.Load(), nil },
		}},
	})
	addr := srv.Addr(transport.KindTLSTCP).String()
	handshake := func(b *testcert.Bundle) error {
		c, err := tls.Dial("tcp", addr, b.ClientConfig())
		if err != nil {
			return err
		}
		return c.Close()
	}
	if err := handshake(first); err != nil {
		t.Fatal(err)
	}
	if got := server.CertExpiry(srv).Unix(); got != first.NotAfter.Unix() {
		t.Fatalf("expiry = %d, want %d", got, first.NotAfter.Unix())
	}
	current.Store(load(second))
	if err := handshake(second); err != nil {
		t.Fatalf("rotated certificate not served: %v", err)
	}
	if got := server.CertExpiry(srv).Unix(); got != second.NotAfter.Unix() {
		t.Fatalf("expiry after rotation = %d, want %d", got, second.NotAfter.Unix())
	}
	if err := handshake(first); err == nil {
		t.Fatal("old CA still accepted after the rotation")
	}
}

// PROXY protocol for a mounted handler: the caller's own server runs on
// AdmitListener's listener with the server's ConnContext; each connection is
// admitted once, under the client address its PROXY header names.
func TestAdmitListenerProxyProtocol(t *testing.T) {
	srv := startEmbedded(t, server.Options{
		Session: session.Options{
			Handler:             echo.New(),
			MaxConnectionsPerIP: 1,
		},
		ProxyProtocol: server.ProxyProtocolOptions{TrustedCIDRs: []string{"127.0.0.0/8"}, HeaderTimeout: time.Second},
	})
	ws, err := srv.WebSocketHandler(transport.KindWebSocket, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.AdmitListener(raw)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: ws, ReadHeaderTimeout: testTimeout, ConnContext: srv.ConnContext}
	go hs.Serve(ln)
	defer hs.Close()
	addr := raw.Addr().String()

	upgrade := func(src string) (*websocket.Conn, error) {
		c := dialWithProxyHeader(t, addr, 2, src)
		u := url.URL{Scheme: "ws", Host: addr, Path: "/"}
		ws, _, err := websocket.NewClient(c, &u, nil, 1024, 1024)
		return ws, err
	}
	// One connection per client address is allowed: a second admission of
	// the same connection would be refused.
	c1, err := upgrade("203.0.113.7:40001")
	if err != nil {
		t.Fatalf("upgrade through AdmitListener: %v", err)
	}
	defer c1.Close()
	echoOverWS(t, c1, "proxied")
	sessionFrom(t, srv, "203.0.113.7:40001")
	if got := srv.OpenConnections(); got != 1 {
		t.Fatalf("open connections = %d, want 1", got)
	}
	// The per-IP limit applies to the address the header names.
	if c2, err := upgrade("203.0.113.7:40002"); err == nil {
		c2.Close()
		t.Fatal("a second connection from the same proxied client was admitted")
	}
	waitFor(t, "the per-IP refusal to be counted", func() bool {
		return srv.Manager().Stats().Rejected[session.RejectPerIP] >= 1
	})
	c3, err := upgrade("198.51.100.9:40003")
	if err != nil {
		t.Fatalf("another client: %v", err)
	}
	c3.Close()
}

// Options that cannot work are refused by New, with the field named.
func TestOptionsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    server.Options
		want string
	}{
		{"no handler", server.Options{}, "Session.Handler is required"},
		{"tls listener without certificate", server.Options{Session: session.Options{Handler: echo.New()}, WSS: server.WebSocketListener{Addr: "127.0.0.1:0"}}, "TLS.Config"},
		{"bad proxy CIDR", server.Options{Session: session.Options{Handler: echo.New()}, ProxyProtocol: server.ProxyProtocolOptions{TrustedCIDRs: []string{"nonsense"}}}, "nonsense"},
	} {
		if _, err := server.New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}
