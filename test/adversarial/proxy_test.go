package adversarial

import (
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

func proxyOn(c *config.Config) {
	c.Transports.ProxyProtocol = config.ProxyProtocol{Enabled: true, TrustedCIDRs: []string{"127.0.0.1/32"}, HeaderTimeout: config.D(2 * time.Second)}
}

// sessionAt waits for a session whose client address is addr.
func (e *edge) sessionAt(t *testing.T, addr string) *session.Session {
	t.Helper()
	var found *session.Session
	testutil.WaitFor(t, "session from "+addr, func() bool {
		e.srv.Manager().Range(func(s *session.Session) bool {
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

// Finding 12: a PROXY v1 header split across two writes 50 ms apart is
// accepted, and its source becomes the client address.
func TestProxyHeaderSplitAcrossWrites(t *testing.T) {
	e := start(t, proxyOn)
	for _, kind := range []transport.Kind{transport.KindTCP, transport.KindTLSTCP} {
		c := dialFrom(t, "127.0.0.1", e.addr(kind))
		if _, err := c.Write([]byte("PROXY TCP4 203.0.113.7 ")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the delay under test, not a wait for a condition
		if _, err := c.Write([]byte("127.0.0.1 40001 7777\r\n")); err != nil {
			t.Fatal(err)
		}
		if kind == transport.KindTLSTCP {
			tc := e.tlsClient(c)
			if err := tc.Handshake(); err != nil {
				t.Fatalf("tls after split header: %v", err)
			}
			c = tc
		}
		f := newFrames(t, c)
		f.auth("split-" + string(kind))
		e.sessionAt(t, "203.0.113.7:40001").Close(session.ClientClosed)
	}
	if n := e.rejected(session.RejectProxyProtocol); n != 0 {
		t.Fatalf("proxy_protocol rejections: %d", n)
	}
}

// Finding 12: connections still in the PROXY-header phase hold a slot:
// with maxConnections 3, three silent connections from the load balancer
// make the fourth refused and counted.
func TestProxyHeaderPhaseIsAdmitted(t *testing.T) {
	e := start(t, func(c *config.Config) {
		proxyOn(c)
		// Longer than any wait of the test: a connection in the header
		// phase is only let go by this timeout.
		c.Transports.ProxyProtocol.HeaderTimeout = config.D(2 * wait)
		c.Limits.MaxConnections = 3
	})
	for range 3 {
		dialFrom(t, "127.0.0.1", e.addr(transport.KindTCP))
	}
	testutil.WaitFor(t, "three connections open", func() bool { return e.srv.OpenConnections() == 3 })
	over := dialFrom(t, "127.0.0.1", e.addr(transport.KindTCP))
	expectClosedByServer(t, over, "connection past maxConnections")
	e.waitRejected(t, session.RejectMaxConnections, 1)
}

// Finding 12: behind a proxy the per-IP limit is keyed on the PROXY source,
// not on the load balancer's address.
func TestProxyPerIPKeyedOnSource(t *testing.T) {
	e := start(t, func(c *config.Config) {
		proxyOn(c)
		c.Limits.MaxConnectionsPerIP = 2
	})
	for i, src := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.1"} {
		c := dialFrom(t, "127.0.0.1", e.addr(transport.KindTCP))
		_, _ = c.Write([]byte("PROXY TCP4 " + src + " 127.0.0.1 4000" + itoa(uint64(i+1)) + " 7777\r\n"))
		newFrames(t, c).auth("acct" + itoa(uint64(i)))
	}
	c := dialFrom(t, "127.0.0.1", e.addr(transport.KindTCP))
	_, _ = c.Write([]byte("PROXY TCP4 203.0.113.1 127.0.0.1 40009 7777\r\n"))
	expectClosedByServer(t, c, "third connection from one PROXY source")
	e.waitRejected(t, session.RejectPerIP, 1)
}
