package adversarial

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/apps/echo"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// wait bounds every wait; conditions normally hold within milliseconds.
const wait = testutil.Timeout

// handshakeTimeout is the TLS and HTTP-upgrade timeout of the test servers:
// short, so tests that wait for a server-side timeout stay fast.
const handshakeTimeout = time.Second

// edge is a running server under attack.
type edge struct {
	srv  *server.Server
	cert *testcert.Bundle
}

// start runs a server with every transport on loopback port 0, no per-IP
// exemption (loopback addresses are limited like any other) and short
// handshake timeouts; mutate adjusts the config before start.
func start(t *testing.T, mutate func(*config.Config)) *edge {
	t.Helper()
	return startWith(t, nil, mutate)
}

// startWith is start with an application handler (nil: the echo app).
func startWith(t *testing.T, h session.Handler, mutate func(*config.Config)) *edge {
	t.Helper()
	c, b := testutil.LoopbackConfig(t)
	c.Limits.PerIPExempt = nil
	c.Limits.TLSHandshakeTimeout = config.D(handshakeTimeout)
	if mutate != nil {
		mutate(&c)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("ADVERSARIAL_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if h == nil {
		h = echo.New()
	}
	srv, err := serverconfig.New(c, h, log)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StartServer(t, srv, wait)
	return &edge{srv: srv, cert: b}
}

// addr is the listener address of a transport.
func (e *edge) addr(k transport.Kind) string { return e.srv.Addr(k).String() }

// rejected is the count of refused connections for reason.
func (e *edge) rejected(r session.RejectReason) uint64 {
	return e.srv.Manager().Stats().Rejected[r]
}

// closed is the count of sessions ended with reason.
func (e *edge) closed(r session.CloseReason) uint64 {
	return e.srv.Manager().Stats().Closed[r]
}

// waitRejected waits until at least n connections were refused for reason.
func (e *edge) waitRejected(t *testing.T, r session.RejectReason, n uint64) {
	t.Helper()
	testutil.WaitFor(t, "rejected{"+r.String()+"} >= "+itoa(n), func() bool { return e.rejected(r) >= n })
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// dialFrom opens a TCP connection to addr from the loopback address src
// (for example "127.0.0.2"), so per-IP limits see distinct clients.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: wait}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectClosedByServer reads from c until the server closes it, failing
// when it is still open after wait. It returns what was read.
func expectClosedByServer(t *testing.T, c net.Conn, what string) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: still open after %s (read %q)", what, wait, truncate(got))
			}
			return got
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// frames reads and writes compact requests and responses on a stream.
type frames struct {
	t  *testing.T
	c  net.Conn
	fr *protocol.FrameReader
}

func newFrames(t *testing.T, c net.Conn) *frames {
	return &frames{t: t, c: c, fr: protocol.NewFrameReader(c, 8<<20)}
}

// send writes one compact request.
func (f *frames) send(msgID string, seq uint16, payload []byte) {
	f.t.Helper()
	b, err := protocol.AppendRequest(nil, msgID, seq, 0, payload)
	if err != nil {
		f.t.Fatal(err)
	}
	_ = f.c.SetWriteDeadline(time.Now().Add(wait))
	if _, err := f.c.Write(b); err != nil {
		f.t.Fatalf("send %s: %v", msgID, err)
	}
}

// recv reads one response.
func (f *frames) recv() (protocol.Header, []byte) {
	f.t.Helper()
	_ = f.c.SetReadDeadline(time.Now().Add(wait))
	body, err := f.fr.Next()
	if err != nil {
		f.t.Fatalf("recv: %v", err)
	}
	h, p, err := protocol.ParseResponse(body)
	if err != nil {
		f.t.Fatalf("parse response: %v", err)
	}
	return h, p
}

// auth authenticates as account and checks the reply.
func (f *frames) auth(account string) {
	f.t.Helper()
	f.send("AuthenticateRequest", 1, []byte(account))
	if h, _ := f.recv(); h.ErrorCode != 0 || h.MsgSeq != 1 {
		f.t.Fatalf("authenticate %s: %+v", account, h)
	}
}

// tlsClient wraps c in a TLS client trusting the test certificate.
func (e *edge) tlsClient(c net.Conn) *tls.Conn {
	cfg := e.cert.ClientConfig()
	return tls.Client(c, cfg)
}

// wsDial upgrades a connection from src to the WebSocket listener of kind
// (ws or wss), with header (nil: none).
func (e *edge) wsDial(t *testing.T, kind transport.Kind, src string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	scheme := "ws"
	d := websocket.Dialer{
		HandshakeTimeout: wait,
		NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			return nd.DialContext(ctx, network, a)
		},
	}
	if kind == transport.KindWSS {
		scheme = "wss"
		d.TLSClientConfig = e.cert.ClientConfig()
	}
	ws, resp, err := d.Dial(scheme+"://"+e.addr(kind)+"/ws", header)
	if ws != nil {
		t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// httpStatus reads an HTTP response status line from c ("" when none).
func httpStatus(c net.Conn) string {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		return ""
	}
	return strings.TrimSpace(line)
}
