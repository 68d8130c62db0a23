package rawecho

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

func startTCP(t *testing.T) (*Server, string) {
	t.Helper()
	s := New(64 << 10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeTCP(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	})
	return s, ln.Addr().String()
}

type tcpClient struct {
	t  *testing.T
	c  net.Conn
	fr *protocol.FrameReader
}

func dialTCP(t *testing.T, addr string) *tcpClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &tcpClient{t: t, c: c, fr: protocol.NewFrameReader(c, 1<<20)}
}

func frame(t *testing.T, msgID string, seq uint16, stage int64, payload []byte) []byte {
	t.Helper()
	f, err := protocol.AppendRequest(nil, msgID, seq, stage, payload)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (c *tcpClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *tcpClient) read() (protocol.Header, []byte) {
	c.t.Helper()
	body, err := c.fr.Next()
	if err != nil {
		c.t.Fatal(err)
	}
	h, p, err := protocol.ParseResponse(body)
	if err != nil {
		c.t.Fatal(err)
	}
	return h, append([]byte(nil), p...)
}

func (c *tcpClient) expect(msgID string, seq uint16, stage int64, payload []byte) {
	c.t.Helper()
	h, p := c.read()
	if string(h.MsgID) != msgID || h.MsgSeq != seq || h.StageID != stage || h.ErrorCode != 0 || !bytes.Equal(p, payload) {
		c.t.Fatalf("got %s seq %d stage %d code %d payload %d bytes; want %s seq %d stage %d payload %d bytes",
			h.MsgID, h.MsgSeq, h.StageID, h.ErrorCode, len(p), msgID, seq, stage, len(payload))
	}
}

func TestTCPRequestsHeartbeatAndFraming(t *testing.T) {
	s, addr := startTCP(t)
	c := dialTCP(t, addr)
	c.write(frame(t, "AuthenticateRequest", 1, 0, []byte("alice")))
	c.expect("AuthenticateReply", 1, 0, []byte("alice"))
	c.write(frame(t, "@Heart@Beat@", 0, 1234, nil))
	c.expect("@Heart@Beat@", 0, 1234, nil)

	// Several frames in one write, then one frame a byte at a time.
	var batch []byte
	for i := range 5 {
		batch = append(batch, frame(t, "EchoRequest", uint16(10+i), 7, []byte{byte(i)})...)
	}
	c.write(batch)
	for i := range 5 {
		c.expect("EchoReply", uint16(10+i), 7, []byte{byte(i)})
	}
	for _, b := range frame(t, "PingRequest", 20, 0, []byte("split")) {
		c.write([]byte{b})
	}
	c.expect("PingReply", 20, 0, []byte("split"))

	// A frame larger than the 4 KiB read buffer, with a small one behind it
	// in the same write.
	big := bytes.Repeat([]byte("x"), 10_000)
	c.write(append(frame(t, "EchoRequest", 30, 0, big), frame(t, "EchoRequest", 31, 0, []byte("after"))...))
	c.expect("EchoReply", 30, 0, big)
	c.expect("EchoReply", 31, 0, []byte("after"))

	if n := s.Count(); n != 1 {
		t.Fatalf("Count = %d, want 1", n)
	}
}

func TestTCPBadLengthCloses(t *testing.T) {
	s, addr := startTCP(t)
	for _, bad := range [][]byte{{0, 0, 0, 0}, {0, 0, 2, 0}} { // zero, and 128 KiB > 64 KiB max
		c := dialTCP(t, addr)
		c.write(bad)
		if _, err := c.fr.Next(); err != io.EOF {
			t.Fatalf("after length %v: %v, want EOF", bad, err)
		}
	}
	testutil.WaitFor(t, "connections released", func() bool { return s.Count() == 0 })
}

func TestTCPStageBroadcast(t *testing.T) {
	_, addr := startTCP(t)
	var members []*tcpClient
	for range 3 {
		c := dialTCP(t, addr)
		c.write(frame(t, "JoinStageRequest", 1, 42, nil))
		c.expect("JoinStageReply", 1, 42, nil)
		members = append(members, c)
	}
	outsider := dialTCP(t, addr)
	outsider.write(frame(t, "JoinStageRequest", 1, 43, nil))
	outsider.expect("JoinStageReply", 1, 43, nil)

	payload := bytes.Repeat([]byte("b"), 256)
	members[0].write(frame(t, "Chat", 0, 42, payload))
	for _, m := range members[1:] {
		m.expect("Chat", 0, 42, payload)
	}
	// The sender and the other stage got nothing: their next frame is the
	// reply to a request sent now.
	for _, c := range []*tcpClient{members[0], outsider} {
		c.write(frame(t, "EchoRequest", 9, 0, nil))
		c.expect("EchoReply", 9, 0, nil)
	}
	// A one-way packet outside any stage goes nowhere.
	solo := dialTCP(t, addr)
	solo.write(frame(t, "Chat", 0, 0, payload))
	solo.write(frame(t, "EchoRequest", 2, 0, nil))
	solo.expect("EchoReply", 2, 0, nil)
}

func TestWebSocketEchoAndBroadcast(t *testing.T) {
	s := New(0)
	hs := httptest.NewServer(s.WebSocketHandler())
	t.Cleanup(func() {
		s.Close()
		hs.Close()
	})
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	dial := func() *websocket.Conn {
		ws, resp, err := websocket.DefaultDialer.Dial(url, http.Header{})
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		t.Cleanup(func() { _ = ws.Close() })
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		return ws
	}
	read := func(ws *websocket.Conn) (protocol.Header, []byte) {
		t.Helper()
		mt, msg, err := ws.ReadMessage()
		if err != nil || mt != websocket.BinaryMessage {
			t.Fatalf("read: type %d, %v", mt, err)
		}
		var h protocol.Header
		var p []byte
		n := 0
		if err := protocol.SplitFrames(msg, 1<<20, func(body []byte) error {
			n++
			h, p, err = protocol.ParseResponse(body)
			return err
		}); err != nil || n != 1 {
			t.Fatalf("message of %d frames: %v", n, err)
		}
		return h, p
	}
	a, b := dial(), dial()
	// Two requests in one message get two replies, one message each.
	msg := append(frame(t, "EchoRequest", 1, 0, []byte("one")), frame(t, "JoinStageRequest", 2, 5, nil)...)
	if err := a.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatal(err)
	}
	if h, p := read(a); string(h.MsgID) != "EchoReply" || h.MsgSeq != 1 || string(p) != "one" {
		t.Fatalf("reply %s %d %q", h.MsgID, h.MsgSeq, p)
	}
	if h, _ := read(a); string(h.MsgID) != "JoinStageReply" || h.MsgSeq != 2 {
		t.Fatalf("reply %s %d", h.MsgID, h.MsgSeq)
	}
	if err := b.WriteMessage(websocket.BinaryMessage, frame(t, "JoinStageRequest", 1, 5, nil)); err != nil {
		t.Fatal(err)
	}
	read(b)
	big := bytes.Repeat([]byte("z"), 9000)
	if err := b.WriteMessage(websocket.BinaryMessage, frame(t, "Chat", 0, 5, big)); err != nil {
		t.Fatal(err)
	}
	if h, p := read(a); string(h.MsgID) != "Chat" || h.MsgSeq != 0 || h.StageID != 5 || !bytes.Equal(p, big) {
		t.Fatalf("push %s %d %d, %d bytes", h.MsgID, h.MsgSeq, h.StageID, len(p))
	}
	// A text message closes the connection.
	if err := a.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.ReadMessage(); err == nil {
		t.Fatal("text message accepted")
	}
	testutil.WaitFor(t, "the text sender released", func() bool { return s.Count() == 1 })
}
