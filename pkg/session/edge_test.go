package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// A drain reaches every session: authenticated ones get a reconnect token
// whose lifetime counts from their retry moment, unauthenticated ones get
// @Drain@ too, and a session still in OnConnect when the drain starts gets
// its @Drain@ when it registers and is closed ServerShutdown (not aborted).
func TestDrainReachesEverySession(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tokens, _ := NewTokens(key, time.Minute)
	connecting := make(chan struct{}, 1)
	release := make(chan struct{})
	h, _ := newHarness(t, Options{Tokens: tokens, Handler: HandlerFuncs{
		Connect: func(s *Session) error {
			if s.ID() == 3 {
				connecting <- struct{}{}
				<-release
			}
			return nil
		},
		Auth:   func(_ *Session, p *Packet) AuthResult { return AuthResult{AccountID: string(p.Payload)} },
		Packet: echoPacket,
	}})
	authed := h.dial() // session 1
	h.auth(authed, "drained")
	anon := h.dial() // session 2: heartbeats only
	anon.send("@Heart@Beat@", 0, 0, nil)
	anon.read()
	late := h.dial() // session 3: blocked in OnConnect
	<-connecting

	// Long enough that the retry moments (80% of it, spread) pass the
	// one-second precision of a token's expiry.
	const timeout = 4 * time.Second
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- h.mgr.Drain(t.Context(), timeout) }()
	waitFor(t, "drain to start", h.mgr.Draining)
	close(release)

	for _, tc := range []struct {
		name string
		rc   *rawClient
	}{{"authenticated", authed}, {"unauthenticated", anon}, {"in OnConnect", late}} {
		name, rc := tc.name, tc.rc
		r := rc.read()
		var n DrainNotice
		if r.ID != DrainMsgID || json.Unmarshal(r.Payload, &n) != nil {
			t.Fatalf("%s: first packet %+v", name, r)
		}
		if (n.ReconnectToken != "") != (name == "authenticated") {
			t.Fatalf("%s: token %q", name, n.ReconnectToken)
		}
		if n.ReconnectToken != "" {
			c, err := tokens.check(n.ReconnectToken)
			if err != nil {
				t.Fatal(err)
			}
			retry := start.Add(time.Duration(n.RetryAfterMs) * time.Millisecond)
			// Expiry has one-second precision.
			if exp := c.ExpiresAt.Time; exp.Before(retry.Add(tokens.Lifetime()).Add(-time.Second)) {
				t.Fatalf("token expires at %s, before retry %s + lifetime", exp, retry)
			}
		}
		rc.expectClosed()
	}
	if err := <-done; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if st := h.mgr.Stats(); st.Closed[ServerShutdown] != 3 {
		t.Fatalf("closes: %v", st.Closed)
	}
}

// Before authentication frames are bounded by PreAuthMaxPacketSize; after
// it, by MaxPacketSize.
func TestPreAuthMaxPacketSize(t *testing.T) {
	h, _ := newHarness(t, Options{PreAuthMaxPacketSize: 1024, MaxPacketSize: 64 << 10})
	rc := h.dial()
	h.auth(rc, "big")
	rc.send("EchoRequest", 2, 0, make([]byte, 4000))
	if r := rc.read(); r.MsgSeq != 2 || len(r.Payload) != 4000 {
		t.Fatalf("large echo after auth = %+v", r.Header)
	}
	pre := h.dial()
	pre.send("AuthenticateRequest", 1, 0, make([]byte, 2000))
	pre.expectClosed()
	waitFor(t, "FrameTooLarge close", func() bool { return h.mgr.Stats().Closed[FrameTooLarge] == 1 })
}

// A reply too large to encode is answered by the engine with ErrorCode
// InternalError (exactly one answer) and counted.
func TestReplyTooLargeAnsweredWithInternalError(t *testing.T) {
	h, _ := newHarness(t, Options{MaxPacketSize: 1024})
	rc := h.dial()
	h.auth(rc, "echoer")
	body := frame(t, "EchoRequest", 5, 9, nil)
	payload := make([]byte, 1024-(len(body)-protocol.LengthSize)) // the request body is exactly MaxPacketSize
	rc.send("EchoRequest", 5, 9, payload)
	r := rc.read()
	if r.MsgSeq != 5 || r.ErrorCode != protocol.InternalError || r.ID != "EchoReply" || r.StageID != 9 {
		t.Fatalf("answer = %+v", r.Header)
	}
	if n := h.mgr.Stats().UnencodableReplies; n != 1 {
		t.Fatalf("UnencodableReplies = %d", n)
	}
	rc.send("EchoRequest", 6, 0, []byte("ok"))
	if r := rc.read(); r.MsgSeq != 6 || r.ErrorCode != 0 {
		t.Fatalf("session after = %+v", r.Header)
	}
}

// An address that uses up its failed-authentication budget is refused
// (auth_cooldown) until the cool-down passes; the table forgets it after.
func TestAuthFailureCooldown(t *testing.T) {
	h, _ := newHarness(t, Options{PerIPExempt: []netip.Prefix{}, MaxAuthAttempts: 10,
		AuthFailuresPerIP: 3, AuthFailureWindow: time.Minute, AuthCooldown: time.Second})
	rc := h.dial()
	for i := 1; i <= 3; i++ {
		rc.send("AuthenticateRequest", uint16(i), 0, []byte("bad"))
		if r := rc.read(); r.ErrorCode != protocol.AuthenticationFailed {
			t.Fatalf("attempt %d = %+v", i, r.Header)
		}
	}
	// The next connection from the address is refused at once.
	refused := h.dial()
	refused.expectClosed()
	if n := h.mgr.Stats().Rejected[RejectAuthCooldown]; n != 1 {
		t.Fatalf("auth_cooldown rejects = %d", n)
	}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	waitFor(t, "cool-down to end", func() bool {
		adm, err := h.mgr.Admit(addr)
		if err == nil {
			adm.Release()
		}
		return err == nil
	})
	if n := h.mgr.authFailureEntries(); n != 1 {
		t.Fatalf("entries = %d", n) // still counting within its window
	}
	// Another address was never limited.
	if adm, err := h.mgr.Admit(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 1}); err != nil {
		t.Fatal(err)
	} else {
		adm.Release()
	}
}

// The failed-auth table forgets an address once its window and cool-down
// have passed (bounded memory).
func TestAuthFailureEntriesExpire(t *testing.T) {
	m, err := NewManager(Options{Handler: HandlerFuncs{}, PerIPExempt: []netip.Prefix{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AuthFailuresPerIP: 2, AuthFailureWindow: 50 * time.Millisecond, AuthCooldown: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 1}
	m.authFailed(addr)
	m.authFailed(addr)
	if _, err := m.Admit(addr); !errors.As(err, new(*RejectError)) {
		t.Fatalf("Admit during cool-down: %v", err)
	}
	waitFor(t, "entry to expire", func() bool {
		adm, err := m.Admit(addr)
		if err != nil {
			return false
		}
		adm.Release()
		return m.authFailureEntries() == 0
	})
}

// LZ4 requests (full header): decompressed bytes come from reused buffers,
// so many large compressed requests allocate a bounded amount; they count
// against the inbound budget and the byte rate. (The allocation bound is
// checked without the race detector, which makes sync.Pool drop buffers on
// purpose; make test runs it in its non-race step.)
func TestLZ4RequestsBoundedAlloc(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const size = 256 << 10
	payload := bytes.Repeat([]byte("playhouse "), size/10)
	var comp protocol.Compressor
	block, orig := comp.Compress(payload)
	req := mustFull(t, protocol.Header{MsgSeq: 1, OriginalSize: orig}, "IgnoredRequest", block)
	body := req[protocol.LengthSize:]
	var seen int
	handler := HandlerFuncs{Packet: func(_ *Session, p *Packet) { seen += len(p.Payload) }}

	m, err := NewManager(Options{Handler: handler, Logger: log, RequestHeader: protocol.FullHeader, RatePerSecond: -1, BytesPerSecond: -1})
	if err != nil {
		t.Fatal(err)
	}
	s := m.newSession(nullConn{})
	s.authenticated.Store(true)
	s.dispatch(body, time.Now()) // warm up
	const n = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if !s.dispatch(body, time.Now()) {
			t.Fatal("dispatch refused a valid request")
		}
	}
	runtime.ReadMemStats(&after)
	if seen != (n+1)*len(payload) {
		t.Fatalf("handler saw %d bytes", seen)
	}
	// Without reuse this is n*size (50 MiB); allow a few buffers lost to GC.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*size && !raceEnabled {
		t.Fatalf("%d compressed requests allocated %d bytes", n, alloc)
	}

	// The inbound budget bounds decompressed bytes.
	budget := protocol.NewBudget(size / 2)
	m2, _ := NewManager(Options{Handler: handler, Logger: log, RequestHeader: protocol.FullHeader, InboundBudget: budget})
	s2 := m2.newSession(nullConn{})
	s2.authenticated.Store(true)
	if s2.dispatch(body, time.Now()) || s2.CloseReason() != InboundBudgetExceeded || m2.Stats().InboundBudgetExceeded != 1 || budget.Used() != 0 {
		t.Fatalf("over budget: reason %s, used %d", s2.CloseReason(), budget.Used())
	}

	// The byte rate counts decompressed bytes: a 1 KiB/s session gets
	// RateLimitExceeded for a request that is small on the wire.
	m3, _ := NewManager(Options{Handler: handler, Logger: log, RequestHeader: protocol.FullHeader, BytesPerSecond: 1024, BytesBurst: 64 << 10})
	s3 := m3.newSession(nullConn{})
	s3.authenticated.Store(true)
	s3.dispatch(body, time.Now()) // the first takes the whole burst
	if s3.dispatch(body, time.Now()); m3.Stats().RateLimited == 0 {
		t.Fatal("decompressed bytes not charged to the byte rate")
	}
	_ = transport.KindTCP
}

// A client that never heartbeats stays connected past HeartbeatTimeout (its
// peer is watched by TCP keepalive instead), while one that has heartbeated
// and goes quiet is closed IdleTimeout within a bound from above.
func TestSilentClientStaysHeartbeatingClientTimesOut(t *testing.T) {
	const idle = 300 * time.Millisecond
	h, _ := newHarness(t, Options{HeartbeatTimeout: idle})
	silent := h.dial()
	silentS := h.auth(silent, "cpp-client")
	beating := h.dial()
	beatingS := h.auth(beating, "js-client")
	beating.send("@Heart@Beat@", 0, 0, nil)
	beating.read()
	quietSince := time.Now()
	// The close point (not the end of the lingering close that follows).
	waitFor(t, "the idle close", func() bool { return beatingS.CloseReason() != ReasonNone })
	took := time.Since(quietSince)
	if reason := beatingS.CloseReason(); reason != IdleTimeout {
		t.Fatalf("heartbeating client closed %s", reason)
	}
	// Lower bound: not before the timeout; upper bound: a generous margin
	// for a loaded 2-core machine, far below "never" or "90s".
	if took < idle || took > idle+2*time.Second {
		t.Fatalf("idle close after %s, want within [%s, %s]", took, idle, idle+2*time.Second)
	}
	if time.Since(silentS.LastActivity()) < idle || silentS.CloseReason() != ReasonNone {
		t.Fatalf("silent client: quiet %s, reason %s", time.Since(silentS.LastActivity()), silentS.CloseReason())
	}
	silent.send("EchoRequest", 2, 0, []byte("still here"))
	if r := silent.read(); string(r.Payload) != "still here" {
		t.Fatalf("silent client echo = %+v", r.Header)
	}
}

// Regression (issue 7): a permitted packet between rate-limit violations
// resets the consecutive count.
func TestPermittedPacketResetsViolations(t *testing.T) {
	h, _ := newHarness(t, Options{RatePerSecond: 2, RateBurst: 2, MaxRateViolations: 3})
	rc := h.dial()
	s := h.auth(rc, "bursty") // takes one token
	seq := uint16(2)
	violate := func(n int) {
		for range n {
			rc.send("EchoRequest", seq, 0, nil)
			seq++
			if r := rc.read(); r.ErrorCode != protocol.RateLimitExceeded && r.ErrorCode != 0 {
				t.Fatalf("reply = %+v", r.Header)
			}
		}
	}
	rc.send("EchoRequest", seq, 0, nil) // the last token
	seq++
	rc.read()
	violate(2)
	waitFor(t, "a token to refill", func() bool { return s.limiterTokens() >= 1 })
	violate(1) // permitted: resets the count
	violate(2) // two more violations: 2 consecutive, under the 3 allowed
	if s.CloseReason() != ReasonNone {
		t.Fatalf("closed %s although no 3 violations were consecutive", s.CloseReason())
	}
	violate(1)
	rc.expectClosed()
	if got := h.waitReason(s.ID()); got != RateLimited {
		t.Fatalf("reason = %s", got)
	}
}

// Regression (issue 7): per-session buffers are not kept after a burst.
// After every session has written a 1 MiB burst and gone idle, the heap is
// back near where it was before (retaining the burst's buffers would keep
// at least 1 MiB per session).
func TestBuffersReleasedAfterBurst(t *testing.T) {
	const sessions, burst, chunk = 20, 1 << 20, 64 << 10
	h, _ := newHarness(t, Options{MaxPendingOutboundBytes: 4 << 20, RatePerSecond: -1})
	clients := make([]*rawClient, sessions)
	list := make([]*Session, sessions)
	for i := range clients {
		clients[i] = h.dial()
		list[i] = h.auth(clients[i], fmt.Sprint("burst-", i))
	}
	roundTrip := func() {
		for _, rc := range clients {
			rc.send("@Heart@Beat@", 0, 0, nil)
			if r := rc.read(); r.ID != "@Heart@Beat@" {
				t.Fatalf("heartbeat reply = %+v", r.Header)
			}
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	roundTrip()
	before := heap()
	payload := make([]byte, chunk)
	for _, s := range list {
		for range burst / chunk {
			if err := s.Push("Burst", 0, payload); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, rc := range clients {
		for range burst / chunk {
			if r := rc.read(); r.ID != "Burst" {
				t.Fatalf("push = %+v", r.Header)
			}
		}
	}
	roundTrip() // every reader and writer is back to waiting
	payload = nil
	after := heap()
	if after > before && after-before > sessions*burst/4 {
		t.Fatalf("heap grew by %d bytes after a %d-byte burst on each of %d sessions", after-before, burst, sessions)
	}
}

// Large frames are limited by size, not only by count: over the byte rate a
// request gets RateLimitExceeded, and sustained abuse closes RateLimited.
func TestByteRateLimitsLargeFrames(t *testing.T) {
	h, _ := newHarness(t, Options{RatePerSecond: -1, BytesPerSecond: 1024, BytesBurst: 64 << 10, MaxRateViolations: 3})
	rc := h.dial()
	s := h.auth(rc, "bulky")
	big := make([]byte, 60<<10)
	rc.send("EchoRequest", 2, 0, big) // within the burst
	if r := rc.read(); r.MsgSeq != 2 || r.ErrorCode != 0 {
		t.Fatalf("first large request = %+v", r.Header)
	}
	for seq := uint16(3); seq <= 5; seq++ {
		rc.send("EchoRequest", seq, 0, big)
		if r := rc.read(); r.MsgSeq != seq || r.ErrorCode != protocol.RateLimitExceeded {
			t.Fatalf("request %d over the byte rate = %+v", seq, r.Header)
		}
	}
	rc.expectClosed()
	if got := h.waitReason(s.ID()); got != RateLimited {
		t.Fatalf("reason = %s", got)
	}
}

// Over real sockets: a reconnect token authenticates once on a server; a
// replay, a forged and an expired token get ErrorCode 5 and the connection
// stays open.
func TestReconnectTokenReplayRefused(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tokens, _ := NewTokens(key, time.Minute)
	h, _ := newHarness(t, Options{Tokens: tokens})
	tok, _ := tokens.Issue("traveller", 7)
	first := h.dial()
	first.send("AuthenticateRequest", 1, 0, []byte(tok))
	if r := first.read(); r.ErrorCode != 0 {
		t.Fatalf("token = %+v", r.Header)
	}
	if s, ok := h.mgr.ByAccount("traveller"); !ok || s.StageID() != 7 {
		t.Fatal("token did not restore account and stage")
	}
	forger, _ := NewTokens([]byte("another-key-another-key-another!"), time.Minute)
	forged, _ := forger.Issue("traveller", 7)
	expiredIssuer, _ := NewTokens(key, time.Nanosecond)
	expired, _ := expiredIssuer.Issue("traveller", 7)
	second := h.dial()
	for i, bad := range []string{tok, forged, expired} {
		second.send("AuthenticateRequest", uint16(i+1), 0, []byte(bad))
		if r := second.read(); r.ErrorCode != protocol.AuthenticationFailed {
			t.Fatalf("bad token %d = %+v", i, r.Header)
		}
	}
	second.send("@Heart@Beat@", 0, 0, nil)
	if r := second.read(); r.ID != "@Heart@Beat@" {
		t.Fatalf("connection closed after refused tokens: %+v", r.Header)
	}
}
