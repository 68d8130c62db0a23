package session

import (
	"context"
	"encoding/binary"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// A session closed by its auth timeout while Authenticate runs must neither
// bind the account nor supersede the healthy session holding it.
func TestTimedOutSessionNeverBindsOrSupersedes(t *testing.T) {
	entered := make(chan *Session, 1)
	release := make(chan struct{})
	h, _ := newHarness(t, Options{AuthTimeout: 300 * time.Millisecond, Handler: HandlerFuncs{
		Auth: func(s *Session, p *Packet) AuthResult {
			acct, slow := strings.CutPrefix(string(p.Payload), "slow:")
			if slow {
				entered <- s
				<-release
			}
			return AuthResult{AccountID: acct}
		},
		Packet: echoPacket,
	}})
	first := h.dial()
	firstS := h.auth(first, "acc")
	second := h.dial()
	second.send("AuthenticateRequest", 1, 0, []byte("slow:acc"))
	secondS := <-entered
	waitFor(t, "second session to time out", func() bool { return secondS.CloseReason() == AuthTimeout })
	close(release)
	if r := second.read(); r.MsgSeq != 1 || r.ErrorCode == protocol.Success {
		t.Fatalf("a timed-out session's authentication was accepted: %+v", r)
	}
	second.expectClosed()
	if s, ok := h.mgr.ByAccount("acc"); !ok || s != firstS {
		t.Fatalf("account bound to %v, want the first session", s)
	}
	if firstS.CloseReason() != ReasonNone || secondS.Authenticated() {
		t.Fatalf("first session reason %s, second authenticated %v", firstS.CloseReason(), secondS.Authenticated())
	}
	first.send("EchoRequest", 2, 0, []byte("alive"))
	if r := first.read(); string(r.Payload) != "alive" {
		t.Fatalf("first session = %+v", r)
	}
}

// Regression: the auth timeout never closes a session that has authenticated.
func TestAuthTimeoutSparesAuthenticatedSession(t *testing.T) {
	h, _ := newHarness(t, Options{AuthTimeout: 100 * time.Millisecond})
	rc := h.dial()
	s := h.auth(rc, "quick")
	// Well past the auth timeout, the session still works.
	deadline := time.Now().Add(500 * time.Millisecond)
	for seq := uint16(2); time.Now().Before(deadline); seq++ {
		rc.send("EchoRequest", seq, 0, []byte("x"))
		if r := rc.read(); r.MsgSeq != seq || r.ErrorCode != 0 {
			t.Fatalf("reply = %+v", r)
		}
		time.Sleep(20 * time.Millisecond) // pacing the client, not waiting for a condition
	}
	if s.CloseReason() != ReasonNone {
		t.Fatalf("authenticated session closed: %s", s.CloseReason())
	}
}

// SetStageID in OnConnect is indexed: StageMembers and Broadcast see it.
func TestSetStageIDInOnConnectIsIndexed(t *testing.T) {
	h, _ := newHarness(t, Options{Handler: HandlerFuncs{
		Connect: func(s *Session) error { s.SetStageID(5); return nil },
		Auth:    func(_ *Session, p *Packet) AuthResult { return AuthResult{AccountID: string(p.Payload)} },
	}})
	rc := h.dial()
	s := h.auth(rc, "staged")
	if s.StageID() != 5 {
		t.Fatalf("StageID = %d", s.StageID())
	}
	if m := h.mgr.StageMembers(5); len(m) != 1 || m[0] != s {
		t.Fatalf("StageMembers(5) = %v", m)
	}
	if n, err := h.mgr.Broadcast(5, "RoomNotify", []byte("hi"), nil); err != nil || n != 1 {
		t.Fatalf("Broadcast = %d, %v", n, err)
	}
	if r := rc.read(); r.ID != "RoomNotify" {
		t.Fatalf("push = %+v", r)
	}
}

// Manager.Wait returns when its context ends without leaving a goroutine behind.
func TestWaitDoesNotLeakGoroutines(t *testing.T) {
	h, th := newHarness(t, Options{})
	rc := h.dial()
	h.auth(rc, "busy")
	rc.send("SlowRequest", 2, 0, nil)
	<-th.entered // the session cannot end while its handler blocks
	before := runtime.NumGoroutine()
	for range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := h.mgr.Wait(ctx); err == nil {
			t.Fatal("Wait returned nil with a session open")
		}
	}
	if after := runtime.NumGoroutine(); after > before+20 {
		t.Fatalf("goroutines grew from %d to %d over 200 canceled waits", before, after)
	}
}

// countingObserver sums what the Observer sees.
type countingObserver struct{ sent, sentBytes, recv atomic.Int64 }

func (o *countingObserver) PacketReceived(int)        { o.recv.Add(1) }
func (o *countingObserver) PacketSent(n int)          { o.sent.Add(1); o.sentBytes.Add(int64(n)) }
func (o *countingObserver) HandlerDone(time.Duration) {}

// Outbound traffic is counted in one place: the observer sees exactly the
// frames and bytes the transport counters see, even when a slow consumer's
// queue is dropped.
func TestOutboundCountedOnceWhenWritten(t *testing.T) {
	obs := &countingObserver{}
	h, _ := newHarness(t, Options{Observer: obs, MaxPendingOutboundBytes: 256 << 10, WriteTimeout: 500 * time.Millisecond})
	rc := h.dial()
	_ = rc.c.(interface{ SetReadBuffer(int) error }).SetReadBuffer(4 << 10)
	s := h.auth(rc, "flood")
	rc.send("FloodRequest", 2, 0, nil) // pushes until the queue overflows; the client never reads
	if got := h.waitReason(s.ID()); got != SlowConsumer {
		t.Fatalf("reason = %s", got)
	}
	st := h.mgr.Stats().Transports["tcp"]
	if uint64(obs.sent.Load()) != st.PacketsOut || uint64(obs.sentBytes.Load()) != st.BytesOut {
		t.Fatalf("observer saw %d frames / %d bytes, transport counters %d / %d", obs.sent.Load(), obs.sentBytes.Load(), st.PacketsOut, st.BytesOut)
	}
}

// An empty MsgId (MsgIdLen 0) is handed to the application, not refused.
func TestEmptyMsgIDHandedToApplication(t *testing.T) {
	h, _ := newHarness(t, Options{})
	rc := h.dial()
	s := h.auth(rc, "cpp")
	// MsgIdLen 0, MsgSeq 7, StageId 3, payload "edge" (AppendRequest refuses
	// to build it, the C++ connector's edge-case test sends it).
	req := binary.LittleEndian.AppendUint32(nil, 11+4)
	req = append(req, 0)
	req = binary.LittleEndian.AppendUint16(req, 7)
	req = binary.LittleEndian.AppendUint64(req, 3)
	rc.write(append(req, "edge"...))
	_ = rc.c.SetReadDeadline(time.Now().Add(testTimeout))
	body, err := rc.fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	// The reply has the same layout as a full request; ParseResponse (for Go
	// clients, which never send an empty MsgId) would refuse it.
	r, payload, err := protocol.ParseRequest(body, protocol.FullHeader)
	if err != nil || len(r.MsgID) != 0 || r.MsgSeq != 7 || r.StageID != 3 || r.ErrorCode != 0 || string(payload) != "edge" {
		t.Fatalf("reply to an empty MsgId = %+v %q %v", r, payload, err)
	}
	if s.CloseReason() != ReasonNone {
		t.Fatalf("session closed: %s", s.CloseReason())
	}
}

// Every configured authentication MsgId authenticates; a second
// authentication re-authenticates (same account: fine; another: rebind).
func TestAuthenticateMsgIDsAndReauthentication(t *testing.T) {
	h, _ := newHarness(t, Options{})
	if ids := h.mgr.Options().AuthenticateMsgIDs; len(ids) != 2 || ids[0] != "AuthenticateRequest" || ids[1] != "AuthenticateReq" {
		t.Fatalf("default AuthenticateMsgIDs = %q", ids)
	}
	rc := h.dial()
	rc.send("AuthenticateReq", 1, 0, []byte("js"))
	if r := rc.read(); r.ID != "AuthenticateReq" || r.ErrorCode != 0 || r.MsgSeq != 1 {
		t.Fatalf("AuthenticateReq reply = %+v", r)
	}
	s, ok := h.mgr.ByAccount("js")
	if !ok {
		t.Fatal("AuthenticateReq did not bind the account")
	}
	// Same account again: success, nothing changes.
	rc.send("AuthenticateRequest", 2, 0, []byte("js"))
	if r := rc.read(); r.ID != "AuthenticateReply" || r.ErrorCode != 0 || r.MsgSeq != 2 {
		t.Fatalf("second authentication = %+v", r)
	}
	// Another account: the session is rebound.
	rc.send("AuthenticateRequest", 3, 0, []byte("js2"))
	if r := rc.read(); r.ErrorCode != 0 || r.MsgSeq != 3 {
		t.Fatalf("rebind = %+v", r)
	}
	if got, ok := h.mgr.ByAccount("js2"); !ok || got != s || s.AccountID() != "js2" {
		t.Fatalf("account js2 bound to %v (%q)", got, s.AccountID())
	}
	if _, ok := h.mgr.ByAccount("js"); ok {
		t.Fatal("the old account is still bound")
	}
	// A failed re-authentication answers the failure and keeps the session as it was.
	rc.send("AuthenticateRequest", 4, 0, []byte("bad"))
	if r := rc.read(); r.ErrorCode != protocol.AuthenticationFailed || r.MsgSeq != 4 {
		t.Fatalf("failed re-authentication = %+v", r)
	}
	if !s.Authenticated() || s.AccountID() != "js2" {
		t.Fatalf("after a failed re-authentication: %v %q", s.Authenticated(), s.AccountID())
	}
}

// An application may refuse a second authentication with ErrorCode 7; that
// is not counted as a failed authentication.
func TestSecondAuthenticationRefusedByApplication(t *testing.T) {
	h, _ := newHarness(t, Options{Handler: HandlerFuncs{Auth: func(s *Session, p *Packet) AuthResult {
		if s.Authenticated() {
			return AuthResult{ErrorCode: protocol.AlreadyAuthenticated}
		}
		return AuthResult{AccountID: string(p.Payload)}
	}}})
	rc := h.dial()
	s := h.auth(rc, "once")
	rc.send("AuthenticateRequest", 2, 0, []byte("other"))
	if r := rc.read(); r.ErrorCode != protocol.AlreadyAuthenticated || r.MsgSeq != 2 {
		t.Fatalf("second authentication = %+v", r.Header)
	}
	if s.AccountID() != "once" || h.mgr.Stats().AuthFailures != 0 {
		t.Fatalf("account %q, failures %d", s.AccountID(), h.mgr.Stats().AuthFailures)
	}
}

// echoPacket answers a request with its payload.
func echoPacket(s *Session, p *Packet) {
	if p.IsRequest() {
		_ = s.Reply(p, protocol.Success, p.Payload)
	}
}

// After Close from another goroutine no packet reaches OnPacket: a request
// read after the close point is answered ServerDraining by the engine.
func TestNoPacketReachesHandlerAfterClose(t *testing.T) {
	var handled atomic.Int64
	h, _ := newHarness(t, Options{Handler: HandlerFuncs{
		Auth:   func(_ *Session, p *Packet) AuthResult { return AuthResult{AccountID: string(p.Payload)} },
		Packet: func(s *Session, p *Packet) { handled.Add(1); echoPacket(s, p) },
	}})
	rc := h.dial()
	s := h.auth(rc, "closing")
	s.Close(AppClosed) // from this goroutine, while the reader waits
	rc.send("EchoRequest", 2, 0, []byte("late"))
	r := rc.read()
	if r.MsgSeq != 2 || r.ErrorCode != protocol.ServerDraining || r.ID != "EchoReply" {
		t.Fatalf("answer after the close point = %+v", r.Header)
	}
	rc.expectClosed()
	if n := handled.Load(); n != 0 {
		t.Fatalf("OnPacket called %d times after Close", n)
	}
	if got := h.mgr.Stats().Closed[AppClosed]; got != 1 {
		waitFor(t, "close counted", func() bool { return h.mgr.Stats().Closed[AppClosed] == 1 })
	}
}

// CloseAll reaches a session still in OnConnect: it is closed when it
// registers, and CloseAll returns once it has ended.
func TestCloseAllReachesSessionInOnConnect(t *testing.T) {
	connecting := make(chan struct{})
	release := make(chan struct{})
	h, _ := newHarness(t, Options{Handler: HandlerFuncs{
		Connect: func(*Session) error { close(connecting); <-release; return nil },
	}})
	rc := h.dial()
	<-connecting
	done := make(chan error, 1)
	go func() {
		ctx, cancel := contextWithTimeout()
		defer cancel()
		done <- h.mgr.CloseAll(ctx, ServerShutdown)
	}()
	// CloseAll has taken its snapshot (empty) by the time a Wait would block;
	// let the session register only then.
	waitFor(t, "CloseAll to start", func() bool {
		h.mgr.mu.RLock()
		defer h.mgr.mu.RUnlock()
		return h.mgr.closeAll != ReasonNone
	})
	close(release)
	rc.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("CloseAll: %v", err)
	}
	if got := h.mgr.Stats().Closed[ServerShutdown]; got != 1 {
		t.Fatalf("closes = %v", h.mgr.Stats().Closed)
	}
}

// A request being handled when the drain reaches the session's close point
// is still answered by the application (exactly one answer), before the
// lingering close ends the connection.
func TestReplyInFlightAtDrainClosePointDelivered(t *testing.T) {
	h, th := newHarness(t, Options{})
	rc := h.dial()
	s := h.auth(rc, "inflight")
	rc.send("SlowRequest", 2, 0, []byte("answer me"))
	<-th.entered
	done := make(chan error, 1)
	go func() { done <- h.mgr.Drain(t.Context(), 2*time.Second) }()
	waitFor(t, "the close point", func() bool { return s.CloseReason() == ServerShutdown })
	close(th.release)
	if r := rc.read(); r.ID != DrainMsgID {
		t.Fatalf("first packet = %+v", r.Header)
	}
	if r := rc.read(); r.MsgSeq != 2 || r.ErrorCode != 0 || string(r.Payload) != "answer me" {
		t.Fatalf("reply to the request in flight = %+v", r.Header)
	}
	rc.expectClosed()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
