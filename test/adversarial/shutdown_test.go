package adversarial

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Shutdown waits for every connection goroutine, including those still in
// their prelude (PROXY header, TLS handshake, HTTP upgrade): when it
// returns, each of those connections has been closed.
func TestShutdownEndsConnectionsInTheirPrelude(t *testing.T) {
	e := start(t, func(c *config.Config) {
		proxyOn(c)
		c.Transports.ProxyProtocol.HeaderTimeout = config.D(2 * wait)
		c.Limits.TLSHandshakeTimeout = config.D(2 * wait)
		c.Limits.MaxConnections = 6 // the connections below
	})
	var held []net.Conn
	for _, kind := range []transport.Kind{transport.KindTCP, transport.KindTLSTCP, transport.KindWebSocket, transport.KindWSS} {
		mid := dialFrom(t, "127.0.0.1", e.addr(kind)) // half a PROXY header
		_, _ = mid.Write([]byte("PROXY TCP4 "))
		held = append(held, mid)
	}
	tlsSilent := dialFrom(t, "127.0.0.2", e.addr(transport.KindTLSTCP))
	_, _ = tlsSilent.Write([]byte{0x16, 0x03, 0x01}) // past the PROXY phase, inside the handshake
	held = append(held, tlsSilent)
	wsHead := dialFrom(t, "127.0.0.1", e.addr(transport.KindWebSocket))
	_, _ = wsHead.Write([]byte("PROXY TCP4 203.0.113.9 127.0.0.1 4000 7778\r\nGET /ws HTTP/1.1\r\n"))
	held = append(held, wsHead)
	testutil.WaitFor(t, "six connections open", func() bool { return e.srv.OpenConnections() == 6 })
	if g := e.gauge(t, "playhouse_connections_open"); g != 6 {
		t.Fatalf("playhouse_connections_open = %v", g)
	}
	// A seventh is refused: the six hold their slots.
	expectClosedByServer(t, dialFrom(t, "127.0.0.3", e.addr(transport.KindTCP)), "seventh connection")
	e.waitRejected(t, session.RejectMaxConnections, 1)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.srv.OpenConnections(); n != 0 {
		t.Fatalf("%d connections open after Shutdown", n)
	}
	for i, c := range held {
		// Closed before Shutdown returned: the FIN is already queued.
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 512)
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("connection %d still open after Shutdown", i)
			}
			break
		}
	}
}
