package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// testTimeout bounds every wait in these tests; conditions usually hold in
// milliseconds, the bound only keeps a broken build from hanging.
const testTimeout = testutil.Timeout

// disconnect records one OnDisconnect call.
type disconnect struct {
	s      *Session
	reason CloseReason
}

// harness runs a Manager behind a real loopback TCP listener.
type harness struct {
	t    *testing.T
	mgr  *Manager
	addr string
	gone chan disconnect
	mu   sync.Mutex
	byID map[uint64]CloseReason
}

// testHandler is an echo handler with hooks for the tests: credentials
// "bad" fail, anything else authenticates as that account; "SlowRequest"
// blocks until release is closed; "FloodRequest" pushes until the session fails.
type testHandler struct {
	h       *harness
	release chan struct{}
	entered chan uint64
}

func (th *testHandler) OnConnect(*Session) error { return nil }

func (th *testHandler) Authenticate(_ *Session, p *Packet) AuthResult {
	if string(p.Payload) == "panic" {
		panic("auth bug")
	}
	if string(p.Payload) == "bad" || len(p.Payload) == 0 {
		return AuthResult{ReplyPayload: []byte("denied")}
	}
	return AuthResult{AccountID: string(p.Payload), ReplyPayload: []byte("welcome")}
}

func (th *testHandler) OnPacket(s *Session, p *Packet) {
	switch p.MsgID {
	case "PanicRequest":
		panic("handler bug")
	case "SlowRequest":
		th.entered <- s.ID()
		<-th.release
	case "QuietRequest": // never answered
		return
	case "FloodRequest":
		big := make([]byte, 16<<10)
		for i := 0; i < 20000; i++ {
			if err := s.Push("FloodPush", 0, big); err != nil {
				return
			}
		}
		return
	}
	if p.IsRequest() {
		_ = s.Reply(p, protocol.Success, p.Payload)
	} else {
		_ = s.Push(p.MsgID, p.StageID, p.Payload)
	}
}

func (th *testHandler) OnDisconnect(s *Session, reason CloseReason) {
	th.h.mu.Lock()
	th.h.byID[s.ID()] = reason
	th.h.mu.Unlock()
	th.h.gone <- disconnect{s, reason}
}

// newHarness starts a manager with opts (Handler filled in) on 127.0.0.1:0;
// each connection is served with Manager.Serve.
func newHarness(t *testing.T, opts Options) (*harness, *testHandler) {
	t.Helper()
	return startHarness(t, opts, (*Manager).Serve)
}

// startHarness is newHarness serving each connection with serve
// (Manager.Serve or Manager.Go).
func startHarness(t *testing.T, opts Options, serve func(*Manager, transport.Conn, *Admission)) (*harness, *testHandler) {
	t.Helper()
	h := &harness{t: t, gone: make(chan disconnect, 1024), byID: map[uint64]CloseReason{}}
	th := &testHandler{h: h, release: make(chan struct{}), entered: make(chan uint64, 16)}
	if opts.Handler == nil {
		opts.Handler = th
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mgr, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.mgr = mgr
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = transport.Serve(ctx, ln, transport.AcceptOptions{Logger: opts.Logger}, func(c net.Conn) {
			serve(mgr, transport.NewStreamConn(c, transport.KindTCP, mgr.Options().MaxPacketSize), nil)
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		select {
		case <-th.release:
		default:
			close(th.release)
		}
		wctx, wcancel := context.WithTimeout(context.Background(), testTimeout)
		defer wcancel()
		if err := mgr.CloseAll(wctx, ServerShutdown); err != nil {
			t.Errorf("sessions did not end: %v", err)
		}
	})
	return h, th
}

// closeAll closes every session with ServerShutdown and checks that each
// of clients sees its connection closed.
func (h *harness) closeAll(clients []*rawClient) {
	h.t.Helper()
	ctx, cancel := contextWithTimeout()
	defer cancel()
	if err := h.mgr.CloseAll(ctx, ServerShutdown); err != nil {
		h.t.Fatal(err)
	}
	for _, rc := range clients {
		rc.expectClosed()
	}
}

// waitReason waits for the session with the given id to end and returns its reason.
func (h *harness) waitReason(id uint64) CloseReason {
	h.t.Helper()
	deadline := time.After(testTimeout)
	for {
		h.mu.Lock()
		r, ok := h.byID[id]
		h.mu.Unlock()
		if ok {
			return r
		}
		select {
		case <-h.gone:
		case <-deadline:
			h.t.Fatalf("session %d did not end", id)
		}
	}
}

// waitFor polls cond until it holds or the test timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, cond)
}

// rawClient speaks the protocol over a plain socket, byte by byte if asked.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	fr *protocol.FrameReader
}

func (h *harness) dial() *rawClient {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return &rawClient{t: h.t, c: c, fr: protocol.NewFrameReader(c, 64<<20)}
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func frame(t *testing.T, msgID string, seq uint16, stage int64, payload []byte) []byte {
	t.Helper()
	b, err := protocol.AppendRequest(nil, msgID, seq, stage, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (rc *rawClient) send(msgID string, seq uint16, stage int64, payload []byte) {
	rc.t.Helper()
	rc.write(frame(rc.t, msgID, seq, stage, payload))
}

// reply is a decoded response or push.
type reply struct {
	protocol.Header
	ID      string
	Payload []byte
}

func (rc *rawClient) read() reply {
	rc.t.Helper()
	r, err := rc.tryRead()
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	return r
}

func (rc *rawClient) tryRead() (reply, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(testTimeout))
	body, err := rc.fr.Next()
	if err != nil {
		return reply{}, err
	}
	h, p, err := protocol.ParseResponse(body)
	if err != nil {
		return reply{}, err
	}
	if h.OriginalSize > 0 {
		if p, err = protocol.DecompressPayload(nil, p, int(h.OriginalSize), 64<<20); err != nil {
			return reply{}, err
		}
	}
	return reply{Header: h, ID: string(h.MsgID), Payload: append([]byte(nil), p...)}, nil
}

// expectClosed reads until the server closes the connection, then closes
// its side, as a client does when it sees the end of the stream.
func (rc *rawClient) expectClosed() {
	rc.t.Helper()
	for {
		if _, err := rc.tryRead(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				rc.t.Fatalf("connection still open after %s", testTimeout)
			}
			rc.c.Close()
			return
		}
	}
}

// auth authenticates as account and returns the session.
func (h *harness) auth(rc *rawClient, account string) *Session {
	h.t.Helper()
	rc.send("AuthenticateRequest", 1, 0, []byte(account))
	r := rc.read()
	if r.ID != "AuthenticateReply" || r.ErrorCode != 0 || r.MsgSeq != 1 {
		h.t.Fatalf("auth reply = %+v", r)
	}
	var s *Session
	waitFor(h.t, "session bound to account", func() bool {
		var ok bool
		s, ok = h.mgr.ByAccount(account)
		return ok
	})
	return s
}

func contextWithTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), testTimeout)
}
