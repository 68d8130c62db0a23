package adversarial

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Finding 1: after one plain GET the connection must be closed (no
// keep-alive on the upgrade ports) and counted as a failed upgrade.
func TestPlainGETIsAnsweredClosedAndCounted(t *testing.T) {
	e := start(t, nil)
	for _, kind := range []transport.Kind{transport.KindWebSocket, transport.KindWSS} {
		c := dialFrom(t, "127.0.0.2", e.addr(kind))
		if kind == transport.KindWSS {
			tc := e.tlsClient(c)
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			c = tc
		}
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		got := expectClosedByServer(t, c, string(kind)+" connection after a plain GET")
		if !strings.HasPrefix(string(got), "HTTP/1.1 404") {
			t.Fatalf("%s: answer %q", kind, truncate(got))
		}
	}
	e.waitRejected(t, session.RejectUpgrade, 2)
}

// Finding 1: WebSocket connections are admitted when accepted, before any
// HTTP is read: silent connections from one address count against its
// per-IP limit, and the one past it is closed at once and counted.
func TestWebSocketPortsAdmitAtAccept(t *testing.T) {
	const perIP = 3
	e := start(t, func(c *config.Config) { c.Limits.MaxConnectionsPerIP = perIP })
	for i, kind := range []transport.Kind{transport.KindWebSocket, transport.KindWSS} {
		src := []string{"127.0.0.2", "127.0.0.4"}[i]
		before := e.rejected(session.RejectPerIP)
		for range perIP {
			dialFrom(t, src, e.addr(kind)) // hold without sending
		}
		testutil.WaitFor(t, "held connections open", func() bool { return e.srv.OpenConnections() == int64(perIP*(i+1)) })
		if n := e.rejected(session.RejectPerIP); n != before {
			t.Fatalf("%s: %d held connections refused", kind, n-before)
		}
		over := dialFrom(t, src, e.addr(kind))
		expectClosedByServer(t, over, string(kind)+" connection past the per-IP limit")
		e.waitRejected(t, session.RejectPerIP, before+1)
		// Another address is not affected.
		ws, _, err := e.wsDial(t, kind, "127.0.0.3", nil)
		if err != nil {
			t.Fatalf("%s from another address: %v", kind, err)
		}
		ws.Close()
		testutil.WaitFor(t, "upgraded connection closed", func() bool { return e.srv.OpenConnections() == int64(perIP*(i+1)) })
	}
}

// Finding 1: a silent connection, a slowloris request and a half-sent
// upgrade on the upgrade ports are all closed at the handshake timeout and
// counted as failed upgrades (or TLS failures on WSS before the handshake).
func TestUpgradeSlowlorisAndHalfOpenAreClosed(t *testing.T) {
	e := start(t, nil)
	started := time.Now()
	// The slowloris keeps sending, so only the request timeout ends it.
	silent := dialFrom(t, "127.0.0.2", e.addr(transport.KindWebSocket))
	slow := dialFrom(t, "127.0.0.2", e.addr(transport.KindWebSocket))
	half := dialFrom(t, "127.0.0.3", e.addr(transport.KindWebSocket))
	_, _ = slow.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n"))
	_, _ = half.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"))
	go func() {
		// Keep the slowloris alive with one header line at a time.
		for i := 0; i < 20; i++ {
			if _, err := fmt.Fprintf(slow, "X-%d: y\r\n", i); err != nil {
				return
			}
			time.Sleep(handshakeTimeout / 4)
		}
	}()
	silentTLS := dialFrom(t, "127.0.0.3", e.addr(transport.KindWSS))
	expectClosedByServer(t, silent, "silent ws connection")
	expectClosedByServer(t, slow, "slowloris ws request")
	expectClosedByServer(t, half, "half-sent upgrade")
	expectClosedByServer(t, silentTLS, "silent wss connection")
	if d := time.Since(started); d > wait {
		t.Fatalf("closing took %s", d)
	}
	e.waitRejected(t, session.RejectUpgrade, 3)
	e.waitRejected(t, session.RejectTLS, 1)
	testutil.WaitFor(t, "no connection held", func() bool { return e.srv.OpenConnections() == 0 })
}

// Finding 1: a header flood stops at the header limit (431) instead of
// being buffered up to Go's default 1 MiB.
func TestUpgradeHeaderLimit(t *testing.T) {
	e := start(t, nil)
	c := dialFrom(t, "127.0.0.2", e.addr(transport.KindWebSocket))
	line := "X-Flood: " + strings.Repeat("a", 1000) + "\r\n"
	go func() {
		_, _ = c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n"))
		for i := 0; i < 200; i++ { // 200 KB of headers, below Go's 1 MiB default
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	got := expectClosedByServer(t, c, "header flood")
	if !strings.HasPrefix(string(got), "HTTP/1.1 431") {
		t.Fatalf("answer %q", truncate(got))
	}
	e.waitRejected(t, session.RejectUpgrade, 1)
}

// Finding 5: a failed WSS handshake is counted like a failed TLS-TCP one.
func TestWSSHandshakeFailureCounted(t *testing.T) {
	e := start(t, nil)
	// Not TLS at all.
	c := dialFrom(t, "127.0.0.2", e.addr(transport.KindWSS))
	_, _ = c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"))
	expectClosedByServer(t, c, "plain HTTP on the WSS port")
	e.waitRejected(t, session.RejectTLS, 1)
	// A real client that refuses the server's certificate.
	c2 := dialFrom(t, "127.0.0.2", e.addr(transport.KindWSS))
	tc := tls.Client(c2, &tls.Config{ServerName: "wrong.example", MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err == nil {
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
	c2.Close()
	e.waitRejected(t, session.RejectTLS, 2)
}

// Finding 11: with allowedOrigins set, native clients (no Origin header)
// still connect, and the comparison ignores case in scheme and host.
func TestAllowedOriginsMissingAndCase(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Transports.WebSocket.AllowedOrigins = []string{"https://Game.Example"}
	})
	if _, _, err := e.wsDial(t, transport.KindWebSocket, "127.0.0.2", nil); err != nil {
		t.Fatalf("no Origin header: %v", err)
	}
	if _, _, err := e.wsDial(t, transport.KindWebSocket, "127.0.0.2", http.Header{"Origin": {"HTTPS://game.example"}}); err != nil {
		t.Fatalf("origin in other case: %v", err)
	}
	_, resp, err := e.wsDial(t, transport.KindWebSocket, "127.0.0.2", http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	e.waitRejected(t, session.RejectUpgrade, 1)

	// The option can turn the missing-Origin allowance off.
	strict := start(t, func(c *config.Config) {
		c.Transports.WebSocket.AllowedOrigins = []string{"https://game.example"}
		c.Transports.WebSocket.AllowMissingOrigin = false
	})
	if _, resp, err := strict.wsDial(t, transport.KindWebSocket, "127.0.0.2", nil); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("missing Origin with allowMissingOrigin false: %v %v", resp, err)
	}
}

// The admin port has the same request timeouts and header limit.
func TestAdminSlowlorisAndHeaderLimit(t *testing.T) {
	e := start(t, nil)
	admin := e.srv.AdminAddr().String()
	slow := dialFrom(t, "127.0.0.2", admin)
	_, _ = slow.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n"))
	expectClosedByServer(t, slow, "admin slowloris")

	big := dialFrom(t, "127.0.0.2", admin)
	go func() {
		_, _ = big.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"))
	}()
	if got := expectClosedByServer(t, big, "admin header flood"); !strings.HasPrefix(string(got), "HTTP/1.1 431") {
		t.Fatalf("answer %q", truncate(got))
	}
}

// A connection admitted at accept is not admitted again when the upgrade
// handler runs: with a per-IP limit of 1, one client still upgrades, and
// its slot is given back once, when the session ends.
func TestUpgradeAdmittedOnce(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Limits.MaxConnectionsPerIP = 1 })
	for _, kind := range []transport.Kind{transport.KindWebSocket, transport.KindWSS} {
		for i := range 3 {
			ws, _, err := e.wsDial(t, kind, "127.0.0.2", nil)
			if err != nil {
				t.Fatalf("%s upgrade %d with a per-IP limit of 1: %v", kind, i, err)
			}
			ws.Close()
			testutil.WaitFor(t, "slot given back", func() bool { return e.srv.OpenConnections() == 0 })
		}
	}
	if n := e.rejected(session.RejectPerIP); n != 0 {
		t.Fatalf("%d per-IP rejections", n)
	}
}
