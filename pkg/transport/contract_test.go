package transport

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// tlsPair returns both ends of a real loopback TLS connection.
func tlsPair(t *testing.T) (server, client *tls.Conn) {
	t.Helper()
	b, scfg := testutil.ServerTLS(t)
	s, c := tcpPair(t)
	server, client = tls.Server(s, scfg), tls.Client(c, b.ClientConfig())
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return server, client
}

// CloseWrite on TCP sends a FIN (the peer reads EOF) and keeps reading.
func TestStreamCloseWriteTCP(t *testing.T) {
	srv, cli := tcpPair(t)
	c := NewStreamConn(srv, KindTCP, 1<<10)
	if err := c.WriteFrames(protocol.AppendFrame(nil, []byte("last"))); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(1000, "ignored"); err != nil {
		t.Fatal(err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	got, err := io.ReadAll(cli)
	if err != nil || !bytes.Equal(got, protocol.AppendFrame(nil, []byte("last"))) {
		t.Fatalf("peer read %q, %v (want the frame, then EOF)", got, err)
	}
	// The read side stays open.
	_, _ = cli.Write(protocol.AppendFrame(nil, []byte("late")))
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if body, err := c.ReadFrame(); err != nil || string(body) != "late" {
		t.Fatalf("read after CloseWrite: %q, %v", body, err)
	}
}

// CloseWrite on TLS sends close_notify (the peer reads a clean io.EOF, not
// an unexpected EOF) and keeps reading.
func TestStreamCloseWriteTLS(t *testing.T) {
	srv, cli := tlsPair(t)
	c := NewStreamConn(srv, KindTLSTCP, 1<<10)
	if err := c.CloseWrite(0, ""); err != nil {
		t.Fatal(err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if n, err := cli.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read %d, %v; want close_notify (io.EOF)", n, err)
	}
	if _, err := cli.Write(protocol.AppendFrame(nil, []byte("late"))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if body, err := c.ReadFrame(); err != nil || string(body) != "late" {
		t.Fatalf("read after CloseWrite: %q, %v", body, err)
	}
}

// wsPair serves one WebSocket connection through NewWebSocketHandler and
// returns both ends.
func wsPair(t *testing.T, opts WebSocketOptions) (Conn, *websocket.Conn) {
	t.Helper()
	conns := make(chan Conn, 1)
	done := make(chan struct{})
	opts.Accept = func(*http.Request) (func(Conn), func(), error) {
		return func(c Conn) { conns <- c; <-done }, func() {}, nil
	}
	h, err := NewWebSocketHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	cli, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { cli.Close(); once.Do(func() { close(done) }); hs.Close() })
	select {
	case c := <-conns:
		t.Cleanup(func() { c.Close() })
		return c, cli
	case <-time.After(testutil.Timeout):
		t.Fatal("no connection served")
	}
	return nil, nil
}

// CloseWrite on WebSocket sends a Close frame with the code and text; reads
// continue until the peer's own Close frame.
func TestWebSocketCloseWrite(t *testing.T) {
	c, cli := wsPair(t, WebSocketOptions{})
	if err := c.CloseWrite(websocket.CloseGoingAway, "ServerShutdown"); err != nil {
		t.Fatal(err)
	}
	// The client still sends a frame, then reads the Close frame.
	if err := cli.WriteMessage(websocket.BinaryMessage, protocol.AppendFrame(nil, []byte("late"))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if body, err := c.ReadFrame(); err != nil || string(body) != "late" {
		t.Fatalf("read after CloseWrite: %q, %v", body, err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	_, _, err := cli.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "ServerShutdown" {
		t.Fatalf("client saw %v, want close 1001 ServerShutdown", err)
	}
	// The client library answers with its own Close frame: the read ends.
	if _, err := c.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer's Close: %v", err)
	}
}

// SetReadLimit lowers the frame limit of later reads on both transports.
func TestSetReadLimit(t *testing.T) {
	srv, cli := tcpPair(t)
	sc := NewStreamConn(srv, KindTCP, 1<<10)
	sc.SetReadLimit(16)
	_, _ = cli.Write(protocol.AppendFrame(nil, make([]byte, 17)))
	if _, err := sc.ReadFrame(); !errors.Is(err, protocol.ErrFrameTooLarge) {
		t.Fatalf("stream: %v", err)
	}

	wc, ws := wsPair(t, WebSocketOptions{MaxPacketSize: 1 << 10})
	_ = ws.WriteMessage(websocket.BinaryMessage, protocol.AppendFrame(nil, make([]byte, 16)))
	if body, err := wc.ReadFrame(); err != nil || len(body) != 16 {
		t.Fatalf("ws frame at the limit: %d bytes, %v", len(body), err)
	}
	wc.SetReadLimit(16)
	_ = ws.WriteMessage(websocket.BinaryMessage, protocol.AppendFrame(nil, make([]byte, 17)))
	if _, err := wc.ReadFrame(); !errors.Is(err, protocol.ErrFrameTooLarge) {
		t.Fatalf("ws: %v", err)
	}
}

// The control hook sees every ping and pong; its error fails the read.
func TestWebSocketControlHook(t *testing.T) {
	c, cli := wsPair(t, WebSocketOptions{})
	var mu sync.Mutex
	var sizes []int
	limit := errors.New("control frames over the rate limit")
	c.SetControlHook(func(n int) error {
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, n)
		if len(sizes) == 3 {
			return limit
		}
		return nil
	})
	_ = cli.WriteControl(websocket.PingMessage, []byte("abc"), time.Now().Add(time.Second))
	_ = cli.WriteControl(websocket.PongMessage, []byte("de"), time.Now().Add(time.Second))
	_ = cli.WriteMessage(websocket.BinaryMessage, protocol.AppendFrame(nil, []byte("x")))
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if body, err := c.ReadFrame(); err != nil || string(body) != "x" {
		t.Fatalf("frame after control frames: %q, %v", body, err)
	}
	_ = cli.WriteControl(websocket.PingMessage, []byte("f"), time.Now().Add(time.Second))
	if _, err := c.ReadFrame(); !errors.Is(err, limit) {
		t.Fatalf("read after a refused ping: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 3 || sizes[0] != 3 || sizes[1] != 2 || sizes[2] != 1 {
		t.Fatalf("hook saw %v", sizes)
	}
}

// Origins compare without regard to case; a missing Origin is allowed
// unless RefuseMissingOrigin.
func TestCheckOrigin(t *testing.T) {
	for _, tc := range []struct {
		origin string
		refuse bool
		want   bool
	}{
		{"", false, true},
		{"", true, false},
		{"https://game.example", false, true},
		{"HTTPS://GAME.Example", false, true},
		{"https://game.example:8443", false, false},
		{"https://evil.example", false, false},
	} {
		h, err := NewWebSocketHandler(WebSocketOptions{AllowedOrigins: []string{"https://Game.example"}, RefuseMissingOrigin: tc.refuse,
			Accept: func(*http.Request) (func(Conn), func(), error) { return nil, nil, nil }})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := h.checkOrigin(r); got != tc.want {
			t.Errorf("origin %q (refuse missing %v): %v, want %v", tc.origin, tc.refuse, got, tc.want)
		}
	}
}

// Stream and WebSocket readers charge partly received frames to the budget
// and give it back when the connection closes; a frame that would pass the
// budget fails the read with ErrBudgetExceeded.
func TestReadersChargeTheBudget(t *testing.T) {
	b := protocol.NewBudget(256 << 10)
	srv, cli := tcpPair(t)
	sc := NewStreamConnWith(srv, KindTCP, StreamOptions{MaxPacketSize: 1 << 20, Budget: b})
	_, _ = cli.Write(protocol.AppendFrame(nil, make([]byte, 100<<10))[:60<<10]) // 60 KiB of a 100 KiB frame
	go func() { _, _ = sc.ReadFrame() }()
	waitFor(t, "stream partial frame charged", func() bool { return b.Used() >= 56<<10 })
	held := b.Used()

	wc, ws := wsPair(t, WebSocketOptions{MaxPacketSize: 1 << 20, Budget: b})
	w, _ := ws.NextWriter(websocket.BinaryMessage)
	_, _ = w.Write(protocol.AppendFrame(nil, make([]byte, 300<<10))[:250<<10])
	errc := make(chan error, 1)
	go func() { _, err := wc.ReadFrame(); errc <- err }()
	select {
	case err := <-errc:
		if !errors.Is(err, protocol.ErrBudgetExceeded) {
			t.Fatalf("ws read past the budget: %v", err)
		}
	case <-time.After(testutil.Timeout):
		t.Fatal("ws read past the budget did not fail")
	}
	if b.Used() > b.Max() {
		t.Fatalf("budget used %d of %d", b.Used(), b.Max())
	}
	wc.Close()
	waitFor(t, "ws charge given back", func() bool { return b.Used() == held })
	sc.Close()
	waitFor(t, "stream charge given back", func() bool { return b.Used() == 0 })
}
