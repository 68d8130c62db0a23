package server_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pires/go-proxyproto"

	"github.com/playhouse-k8s/playhouse/pkg/config"
	. "github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// dialWithProxyHeader connects to addr over loopback and sends a PROXY header
// claiming the client is src (only bytes: no traffic goes to src).
func dialWithProxyHeader(t *testing.T, addr string, version byte, src string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	srcAddr, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	h := proxyproto.HeaderProxyFromAddrs(version, srcAddr, c.RemoteAddr())
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	return c
}

// sessionFrom waits for the session whose remote address is addr.
func sessionFrom(t *testing.T, srv *Server, addr string) *session.Session {
	t.Helper()
	var found *session.Session
	waitFor(t, "session from "+addr, func() bool {
		srv.Manager().Range(func(s *session.Session) bool {
			if s.RemoteAddr().String() == addr {
				found = s
				return false
			}
			return true
		})
		return found != nil
	})
	return found
}

func proxyConfig(t *testing.T, trusted ...string) config.Config {
	t.Helper()
	c, _ := testConfig(t)
	c.Transports.ProxyProtocol = config.ProxyProtocol{Enabled: true, TrustedCIDRs: trusted, HeaderTimeout: config.D(time.Second)}
	c.Limits.MaxConnectionsPerIP = 1
	return c
}

func TestProxyProtocolSetsClientAddress(t *testing.T) {
	srv := startServer(t, proxyConfig(t, "127.0.0.0/8"))
	addr := srv.Addr(transport.KindTCP).String()

	// v1 and v2 headers: the session sees the address the load balancer reports.
	c1 := dialWithProxyHeader(t, addr, 1, "203.0.113.7:40001")
	echoOverStream(t, c1, "v1-user")
	sessionFrom(t, srv, "203.0.113.7:40001")
	c2 := dialWithProxyHeader(t, addr, 2, "[2001:db8::5]:40002")
	echoOverStream(t, c2, "v2-user")
	sessionFrom(t, srv, "[2001:db8::5]:40002")

	// The per-IP limit (1) applies to the reported address, not the proxy's.
	again := dialWithProxyHeader(t, addr, 2, "203.0.113.7:40003")
	_ = again.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := again.Read(make([]byte, 1)); err == nil {
		t.Fatal("second connection from the same client address admitted")
	}
	if srv.Manager().Stats().Rejected[session.RejectPerIP] != 1 {
		t.Fatalf("rejections: %v", srv.Manager().Stats().Rejected)
	}
	// A trusted peer may connect without a header (health checks).
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	echoOverStream(t, plain, "no-header")

	// Over WebSocket too: the header precedes the HTTP upgrade.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		return dialWithProxyHeader(t, a, 1, "198.51.100.9:40004"), nil
	}}
	ws, _, err := d.Dial(wsURL("ws", srv.Addr(transport.KindWebSocket)), http.Header{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echoOverWS(t, ws, "ws-proxied")
	if s := sessionFrom(t, srv, "198.51.100.9:40004"); s.Transport() != transport.KindWebSocket {
		t.Fatalf("transport = %s", s.Transport())
	}
}

func TestProxyProtocolRefusesUntrustedAndMalformed(t *testing.T) {
	srv := startServer(t, proxyConfig(t, "10.0.0.0/8")) // loopback is not trusted
	addr := srv.Addr(transport.KindTCP).String()
	spoof := dialWithProxyHeader(t, addr, 1, "203.0.113.7:40001")
	_ = spoof.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := spoof.Read(make([]byte, 1)); err == nil {
		t.Fatal("PROXY header from an untrusted peer accepted")
	}
	// Without a header the untrusted peer is an ordinary client.
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	echoOverStream(t, plain, "direct")

	srv2 := startServer(t, proxyConfig(t, "127.0.0.0/8"))
	bad, err := net.Dial("tcp", srv2.Addr(transport.KindTCP).String())
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, _ = bad.Write([]byte("PROXY TCP4 not-an-address\r\n"))
	_ = bad.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := bad.Read(make([]byte, 1)); err == nil {
		t.Fatal("malformed PROXY header accepted")
	}
	waitFor(t, "proxy rejections counted", func() bool {
		return srv.Manager().Stats().Rejected[session.RejectProxyProtocol] == 1 &&
			srv2.Manager().Stats().Rejected[session.RejectProxyProtocol] == 1
	})
}

func TestProxyProtocolConfigErrors(t *testing.T) {
	c, _ := testConfig(t)
	c.Transports.ProxyProtocol.Enabled = true
	if _, err := newServer(c, nil, nil); err == nil {
		t.Fatal("PROXY protocol without trusted CIDRs accepted")
	}
}
