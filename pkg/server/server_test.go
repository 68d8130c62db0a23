package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/apps"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	. "github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/server/serverconfig"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

const testTimeout = testutil.Timeout

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, cond)
}

// testConfig enables every transport on loopback port 0 with a test certificate.
func testConfig(t *testing.T) (config.Config, *testcert.Bundle) {
	t.Helper()
	return testutil.LoopbackConfig(t)
}

// newServer builds a server from a configuration the way playhouse-server
// does; a nil handler takes the config's built-in app.
func newServer(c config.Config, h session.Handler, log *slog.Logger) (*Server, error) {
	if h == nil {
		var err error
		if h, err = apps.Builtin().Handler(c.App); err != nil {
			return nil, err
		}
	}
	return serverconfig.New(c, h, log)
}

func startServer(t *testing.T, c config.Config) *Server {
	t.Helper()
	srv, err := newServer(c, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	testutil.StartServer(t, srv, testTimeout)
	return srv
}

// echoOverStream authenticates and runs one echo request over a byte stream.
func echoOverStream(t *testing.T, c net.Conn, account string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	fr := protocol.NewFrameReader(c, 1<<20)
	for i, req := range []struct{ id, payload string }{{"AuthenticateRequest", account}, {"EchoRequest", "hello " + account}} {
		b, _ := protocol.AppendRequest(nil, req.id, uint16(i+1), 42, []byte(req.payload))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		body, err := fr.Next()
		if err != nil {
			t.Fatal(err)
		}
		h, p, err := protocol.ParseResponse(body)
		if err != nil || h.ErrorCode != 0 || h.MsgSeq != uint16(i+1) || string(p) != req.payload || string(h.MsgID) != strings.Replace(req.id, "Request", "Reply", 1) {
			t.Fatalf("reply %d: %+v %q %v", i, h, p, err)
		}
	}
}

func wsURL(scheme string, a net.Addr) string { return scheme + "://" + a.String() + "/ws" }

// echoOverWS does the same over WebSocket, one frame per binary message.
func echoOverWS(t *testing.T, ws *websocket.Conn, account string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(testTimeout))
	for i, req := range []struct{ id, payload string }{{"AuthenticateRequest", account}, {"EchoRequest", "hello " + account}} {
		b, _ := protocol.AppendRequest(nil, req.id, uint16(i+1), 42, []byte(req.payload))
		if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
			t.Fatal(err)
		}
		typ, msg, err := ws.ReadMessage()
		if err != nil || typ != websocket.BinaryMessage {
			t.Fatalf("read: %v (type %d)", err, typ)
		}
		h, p, err := protocol.ParseResponse(msg[protocol.LengthSize:])
		if err != nil || h.MsgSeq != uint16(i+1) || string(p) != req.payload {
			t.Fatalf("ws reply %d: %+v %q %v", i, h, p, err)
		}
	}
}

func TestAllTransportsEchoAndUniqueIDs(t *testing.T) {
	c, certs := testConfig(t)
	srv := startServer(t, c)

	echoedConns(t, srv, certs)

	d := websocket.Dialer{TLSClientConfig: certs.ClientConfig(), HandshakeTimeout: testTimeout}
	wss, _, err := d.Dial(wsURL("wss", srv.Addr(transport.KindWSS)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wss.Close()
	echoOverWS(t, wss, "wss-user")

	ids := map[uint64]transport.Kind{}
	srv.Manager().Range(func(s *session.Session) bool {
		ids[s.ID()] = s.Transport()
		return true
	})
	if len(ids) != 4 {
		t.Fatalf("sessions by id: %v", ids)
	}
	kinds := map[transport.Kind]bool{}
	for _, k := range ids {
		kinds[k] = true
	}
	if len(kinds) != 4 {
		t.Fatalf("transports: %v", kinds)
	}
}

// With DisableDirectWrites every transport still serves (replies go out on
// writer goroutines; transport tests check that the connections decline
// direct writes).
func TestDisableDirectWritesServes(t *testing.T) {
	c, certs := testConfig(t)
	h, err := apps.Builtin().Handler(c.App)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := serverconfig.Options(c, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	opts.DisableDirectWrites = true
	opts.DisableParking = true
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	testutil.StartServer(t, srv, testTimeout)
	echoedConns(t, srv, certs)
}

// echoedConns dials srv over TCP, TLS-TCP and WebSocket, authenticates and
// echoes once on each (accounts tcp-user, tls-user, ws-user), and returns
// the connections, closed when the test ends.
func echoedConns(t *testing.T, srv *Server, certs *testcert.Bundle) (tcp, tlsConn net.Conn, ws *websocket.Conn) {
	t.Helper()
	tcp, err := net.Dial("tcp", srv.Addr(transport.KindTCP).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	echoOverStream(t, tcp, "tcp-user")
	tlsConn, err = tls.Dial("tcp", srv.Addr(transport.KindTLSTCP).String(), certs.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tlsConn.Close() })
	echoOverStream(t, tlsConn, "tls-user")
	ws, _, err = websocket.DefaultDialer.Dial(wsURL("ws", srv.Addr(transport.KindWebSocket)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	echoOverWS(t, ws, "ws-user")
	return tcp, tlsConn, ws
}

func TestAdminEndpoints(t *testing.T) {
	c, _ := testConfig(t)
	srv := startServer(t, c)
	base := "http://" + srv.AdminAddr().String()
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s = %d", path, resp.StatusCode)
		}
	}
	tcp, err := net.Dial("tcp", srv.Addr(transport.KindTCP).String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	echoOverStream(t, tcp, "status-user")
	resp, err := http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Sessions != 1 || st.Draining || st.Listeners["tcp"] != srv.Addr(transport.KindTCP).String() || len(st.Listeners) != 4 {
		t.Fatalf("status = %+v", st)
	}
	// Draining: not ready, still healthy.
	srv.Manager().SetDraining(true)
	resp, err = http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining = %d", resp.StatusCode)
	}
}

func TestWebSocketViolations(t *testing.T) {
	c, _ := testConfig(t)
	c.Limits.MaxPacketSize = 1024
	srv := startServer(t, c)
	url := wsURL("ws", srv.Addr(transport.KindWebSocket))
	good, _ := protocol.AppendRequest(nil, "@Heart@Beat@", 0, 0, nil)
	cases := []struct {
		name string
		typ  int
		msg  []byte
		code int
	}{
		{"text message", websocket.TextMessage, []byte("hello"), websocket.CloseUnsupportedData},
		{"message too large", websocket.BinaryMessage, make([]byte, 1024+5), websocket.CloseMessageTooBig},
		{"frame too large", websocket.BinaryMessage, append([]byte{0x01, 0x04, 0, 0}, make([]byte, 10)...), websocket.CloseMessageTooBig},
		{"partial frame", websocket.BinaryMessage, good[:len(good)-1], websocket.CloseProtocolError},
		{"trailing bytes", websocket.BinaryMessage, append(append([]byte{}, good...), 1, 2), websocket.CloseProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, _, err := websocket.DefaultDialer.Dial(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			_ = ws.SetReadDeadline(time.Now().Add(testTimeout))
			if err := ws.WriteMessage(tc.typ, tc.msg); err != nil {
				t.Fatal(err)
			}
			// A bad message is refused whole: even its valid first frame
			// (in "trailing bytes") gets no reply, only the close.
			for {
				_, _, err := ws.ReadMessage()
				if err == nil {
					t.Fatal("got a reply to a refused message")
				}
				if !websocket.IsCloseError(err, tc.code) {
					t.Fatalf("got %v, want close code %d", err, tc.code)
				}
				return
			}
		})
	}
}

func TestWebSocketSeveralFramesPerMessage(t *testing.T) {
	c, _ := testConfig(t)
	srv := startServer(t, c)
	ws, _, err := websocket.DefaultDialer.Dial(wsURL("ws", srv.Addr(transport.KindWebSocket)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var msg []byte
	msg, _ = protocol.AppendRequest(msg, "AuthenticateRequest", 1, 0, []byte("multi"))
	msg, _ = protocol.AppendRequest(msg, "EchoRequest", 2, 0, []byte("a"))
	msg, _ = protocol.AppendRequest(msg, "EchoRequest", 3, 0, []byte("b"))
	if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(testTimeout))
	for seq := uint16(1); seq <= 3; seq++ {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := protocol.ParseResponse(m[protocol.LengthSize:])
		if err != nil || h.MsgSeq != seq {
			t.Fatalf("message %d: %+v %v", seq, h, err)
		}
		if int(uint32(m[0])|uint32(m[1])<<8) != len(m)-protocol.LengthSize {
			t.Fatalf("message %d holds more than one frame", seq)
		}
	}
}

func TestWebSocketAllowedOrigins(t *testing.T) {
	c, _ := testConfig(t)
	c.Transports.WebSocket.AllowedOrigins = []string{"https://game.example"}
	srv := startServer(t, c)
	url := wsURL("ws", srv.Addr(transport.KindWebSocket))
	if _, resp, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err %v resp %v", err, resp)
	}
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"https://game.example"}})
	if err != nil {
		t.Fatal(err)
	}
	ws.Close()
	// A refused upgrade must not leak its connection slot.
	waitFor(t, "slots released", func() bool { return srv.Manager().Count() == 0 })
}

func TestWebSocketMountedOnOwnMux(t *testing.T) {
	c, _ := testConfig(t)
	c.Transports.WebSocket.Enabled = false
	srv := startServer(t, c)
	h, err := srv.WebSocketHandler(transport.KindWebSocket, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/hello", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") })
	mux.Handle("/game/ws", h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	defer hs.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/game/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echoOverWS(t, ws, "mounted")
}

func TestTLSHandshakeTimeoutAndFailure(t *testing.T) {
	c, _ := testConfig(t)
	c.Limits.TLSHandshakeTimeout = config.D(100 * time.Millisecond)
	srv := startServer(t, c)
	addr := srv.Addr(transport.KindTLSTCP).String()
	// A client that never starts the handshake is dropped after the timeout.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Fatal("server sent data to a silent client")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("server did not close a client stuck before the handshake")
	}
	// A client that does not trust the certificate fails the handshake.
	if conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost"}); err == nil {
		conn.Close()
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
	waitFor(t, "tls rejections counted", func() bool { return srv.Manager().Stats().Rejected[session.RejectTLS] >= 2 })
	if srv.Manager().Count() != 0 {
		t.Fatalf("failed handshakes left %d sessions", srv.Manager().Count())
	}
}

func TestShutdownClosesSessionsWithReason(t *testing.T) {
	c, _ := testConfig(t)
	srv, err := newServer(c, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Dial("tcp", srv.Addr(transport.KindTCP).String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	echoOverStream(t, tcp, "leaving")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.Manager().Stats().Closed[session.ServerShutdown]; got != 1 {
		t.Fatalf("ServerShutdown closes = %d", got)
	}
	_ = tcp.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := tcp.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", srv.Addr(transport.KindTCP).String()); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
}

func TestStartFailsClearly(t *testing.T) {
	c, _ := testConfig(t)
	c.Transports.TLS.CertFile = "/nonexistent/tls.crt"
	srv, err := newServer(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "load TLS certificate") {
		t.Fatalf("Start = %v", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	c2, _ := testConfig(t)
	c2.Transports.TCP.Address = busy.Addr().String()
	srv2, err := newServer(c2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "listen tcp") {
		t.Fatalf("Start on a busy port = %v", err)
	}
	if _, err := newServer(config.Config{}, nil, nil); err == nil {
		t.Fatal("New accepted an empty config")
	}
}
