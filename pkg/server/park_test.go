package server_test

import (
	"net"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Idle TCP and TLS-TCP sessions of a server park their readers after
// limits.idlePark (WebSocket sessions keep theirs), the gauge counts them,
// and a parked session answers its next request.
func TestIdleSessionsPark(t *testing.T) {
	c, certs := testConfig(t)
	c.Limits.IdlePark = config.D(100 * time.Millisecond)
	srv := startServer(t, c)

	tcp, tlsConn, _ := echoedConns(t, srv, certs)

	parked := func() bool { return srv.Manager().Stats().Parked == 2 }
	testutil.WaitFor(t, "the TCP and TLS sessions parked", parked)
	if got := value(scrape(t, srv), "playhouse_sessions_parked", nil); got != 2 {
		t.Fatalf("playhouse_sessions_parked = %v, want 2", got)
	}
	for _, conn := range []net.Conn{tcp, tlsConn} {
		b, _ := protocol.AppendRequest(nil, "EchoRequest", 3, 0, []byte("after a park"))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		body, err := protocol.NewFrameReader(conn, 1<<20).Next()
		if err != nil {
			t.Fatal(err)
		}
		if h, p, err := protocol.ParseResponse(body); err != nil || h.MsgSeq != 3 || string(p) != "after a park" {
			t.Fatalf("reply %+v %q %v", h, p, err)
		}
	}
	testutil.WaitFor(t, "the sessions parked again", parked)
	if n := srv.Manager().Count(); n != 3 {
		t.Fatalf("%d sessions open, want 3", n)
	}
}
