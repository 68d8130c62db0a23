package adversarial

import (
	"encoding/binary"
	"testing"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Zero, negative and huge length prefixes close the connection with a typed
// reason, without allocating for the claimed size.
func TestBadLengthPrefixes(t *testing.T) {
	e := start(t, nil)
	for _, tc := range []struct {
		name   string
		length uint32
		reason session.CloseReason
	}{
		{"zero", 0, session.MalformedFrame},
		{"negative", 0x80000000, session.MalformedFrame},
		{"huge", 0x7fffffff, session.FrameTooLarge},
	} {
		before := e.closed(tc.reason)
		c := dialFrom(t, "127.0.0.2", e.addr(transport.KindTCP))
		_, _ = c.Write(binary.LittleEndian.AppendUint32(nil, tc.length))
		expectClosedByServer(t, c, tc.name+" length")
		waitClosed(t, e, tc.reason, before+1)
	}
}

func waitClosed(t *testing.T, e *edge, r session.CloseReason, n uint64) {
	t.Helper()
	testutil.WaitFor(t, "closed{"+r.String()+"} >= "+itoa(n), func() bool { return e.closed(r) >= n })
}

// Slowloris on TCP (a frame trickled byte by byte never authenticates) and
// on TLS (a handshake never finished) is not kept past the timeouts, and
// each is counted.
func TestStreamSlowloris(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Limits.AuthTimeout = config.D(handshakeTimeout) })
	tcp := dialFrom(t, "127.0.0.2", e.addr(transport.KindTCP))
	_, _ = tcp.Write([]byte{100, 0}) // half a length prefix, then nothing
	tlsc := dialFrom(t, "127.0.0.2", e.addr(transport.KindTLSTCP))
	_, _ = tlsc.Write([]byte{0x16, 0x03, 0x01}) // a record header, then nothing
	expectClosedByServer(t, tcp, "TCP slowloris")
	expectClosedByServer(t, tlsc, "TLS slowloris")
	waitClosed(t, e, session.AuthTimeout, 1)
	e.waitRejected(t, session.RejectTLS, 1)
}

// The per-IP limit holds on every transport for loopback addresses when the
// exemption list is empty, each address on its own.
func TestPerIPFromSeveralLoopbackAddresses(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Limits.MaxConnectionsPerIP = 2 })
	for i, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		for _, kind := range []transport.Kind{transport.KindTCP, transport.KindWebSocket} {
			_ = dialFrom(t, src, e.addr(kind))
		}
		testutil.WaitFor(t, "held connections open", func() bool { return e.srv.OpenConnections() == int64(2*(i+1)) })
		before := e.rejected(session.RejectPerIP)
		for _, kind := range []transport.Kind{transport.KindTCP, transport.KindTLSTCP, transport.KindWebSocket, transport.KindWSS} {
			over := dialFrom(t, src, e.addr(kind))
			expectClosedByServer(t, over, string(kind)+" from "+src+" past the limit")
		}
		e.waitRejected(t, session.RejectPerIP, before+4)
	}
}
