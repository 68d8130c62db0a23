package session

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// The protocol.md section 5 examples, over a real socket.
func TestHeartbeatAndEchoByteExamples(t *testing.T) {
	h, _ := newHarness(t, Options{})
	rc := h.dial()
	// Heartbeat before authentication is allowed and answered exactly.
	rc.write([]byte{0x17, 0, 0, 0, 0x0c, '@', 'H', 'e', 'a', 'r', 't', '@', 'B', 'e', 'a', 't', '@', 0, 0, 0xd2, 0x04, 0, 0, 0, 0, 0, 0})
	want := []byte{0x1d, 0, 0, 0, 0x0c, '@', 'H', 'e', 'a', 'r', 't', '@', 'B', 'e', 'a', 't', '@', 0, 0, 0xd2, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	got := make([]byte, len(want))
	_ = rc.c.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := readFull(rc.c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("heartbeat reply\n got %x (%v)\nwant %x", got, err, want)
	}
	h.auth(rc, "alice")
	rc.write([]byte{0x1c, 0, 0, 0, 0x0b, 'E', 'c', 'h', 'o', 'R', 'e', 'q', 'u', 'e', 's', 't', 1, 0, 0xd2, 0x04, 0, 0, 0, 0, 0, 0, 0x0a, 0x02, 0x68, 0x69, 0x10, 0x07})
	r := rc.read()
	if r.ID != "EchoReply" || r.MsgSeq != 1 || r.StageID != 1234 || r.ErrorCode != 0 || !bytes.Equal(r.Payload, []byte{0x0a, 0x02, 0x68, 0x69, 0x10, 0x07}) {
		t.Fatalf("echo reply = %+v", r)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestManyInFlightCoalescedAndSplit(t *testing.T) {
	h, _ := newHarness(t, Options{RateBurst: 1000, RatePerSecond: 1000})
	rc := h.dial()
	h.auth(rc, "bob")
	// 200 requests in one write: the server sees them coalesced in few reads.
	var batch []byte
	for i := 1; i <= 200; i++ {
		batch = append(batch, frame(t, "EchoRequest", uint16(i), 7, []byte(fmt.Sprintf("payload-%d", i)))...)
	}
	rc.write(batch)
	for i := 1; i <= 200; i++ {
		r := rc.read()
		if r.MsgSeq != uint16(i) || string(r.Payload) != fmt.Sprintf("payload-%d", i) || r.ID != "EchoReply" {
			t.Fatalf("reply %d = %+v", i, r)
		}
	}
	// The same requests one byte per write: the server must reassemble them.
	for _, b := range batch[:len(batch)/4] {
		rc.write([]byte{b})
	}
	rc.write(batch[len(batch)/4:])
	for i := 1; i <= 200; i++ {
		if r := rc.read(); r.MsgSeq != uint16(i) {
			t.Fatalf("split: reply %d has seq %d", i, r.MsgSeq)
		}
	}
}

func TestOneWayEchoedAsPush(t *testing.T) {
	h, _ := newHarness(t, Options{})
	rc := h.dial()
	h.auth(rc, "carol")
	rc.send("ChatNotify", 0, 3, []byte("hi"))
	r := rc.read()
	if r.ID != "ChatNotify" || r.MsgSeq != 0 || r.StageID != 3 || string(r.Payload) != "hi" {
		t.Fatalf("push = %+v", r)
	}
}

func TestProtocolViolationsCloseWithReason(t *testing.T) {
	long := func(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }
	cases := []struct {
		name   string
		auth   bool
		opts   Options
		input  []byte
		reason CloseReason
	}{
		{"frame too large", false, Options{MaxPacketSize: 1024}, long(1025), FrameTooLarge},
		{"huge claimed length", false, Options{}, long(0x7fffffff), FrameTooLarge},
		{"zero length", false, Options{}, long(0), MalformedFrame},
		{"negative length", false, Options{}, long(0xfffffff0), MalformedFrame},
		{"empty MsgId before auth", false, Options{}, append(long(11), make([]byte, 11)...), Unauthenticated},
		{"body shorter than header", false, Options{}, append(long(3), 1, 'x', 0), MalformedHeader},
		{"MsgIdLen past body", false, Options{}, append(long(12), append([]byte{200}, make([]byte, 11)...)...), MalformedHeader},
		{"packet before auth", false, Options{}, frame(t, "EchoRequest", 1, 0, nil), Unauthenticated},
		{"bad LZ4 payload", true, Options{RequestHeader: protocol.FullHeader}, mustFull(t, protocol.Header{MsgSeq: 2, OriginalSize: 100}, "EchoRequest", []byte{0xff, 0xff}), BadCompression},
		{"OriginalSize over max", true, Options{RequestHeader: protocol.FullHeader, MaxPacketSize: 1024}, mustFull(t, protocol.Header{MsgSeq: 2, OriginalSize: 4096}, "EchoRequest", []byte{0x1f, 0}), BadCompression},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newHarness(t, tc.opts)
			rc := h.dial()
			if tc.auth {
				if tc.opts.RequestHeader == protocol.FullHeader {
					rc.write(mustFull(t, protocol.Header{MsgSeq: 1}, "AuthenticateRequest", []byte("dave")))
					if r := rc.read(); r.ErrorCode != 0 {
						t.Fatalf("auth failed: %+v", r)
					}
				} else {
					h.auth(rc, "dave")
				}
			}
			var id uint64
			waitFor(t, "session registered", func() bool {
				h.mgr.Range(func(s *Session) bool { id = s.ID(); return false })
				return id != 0
			})
			rc.write(tc.input)
			rc.expectClosed()
			if got := h.waitReason(id); got != tc.reason {
				t.Fatalf("close reason = %s, want %s", got, tc.reason)
			}
			if h.mgr.Stats().Closed[tc.reason] != 1 {
				t.Errorf("close not counted: %+v", h.mgr.Stats().Closed)
			}
		})
	}
}

func mustFull(t *testing.T, hd protocol.Header, msgID string, payload []byte) []byte {
	t.Helper()
	b, err := protocol.AppendFull(nil, hd, msgID, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFullHeaderCompressedRequestAndCompressedReply(t *testing.T) {
	h, _ := newHarness(t, Options{RequestHeader: protocol.FullHeader, Compression: true, CompressionThreshold: 512})
	rc := h.dial()
	rc.write(mustFull(t, protocol.Header{MsgSeq: 1}, "AuthenticateRequest", []byte("erin")))
	if r := rc.read(); r.ErrorCode != 0 {
		t.Fatalf("auth: %+v", r)
	}
	payload := bytes.Repeat([]byte("compress me please "), 200)
	comp := protocol.Compressor{Threshold: 1}
	block, orig := comp.Compress(payload)
	rc.write(mustFull(t, protocol.Header{MsgSeq: 2, OriginalSize: orig}, "EchoRequest", block))
	_ = rc.c.SetReadDeadline(time.Now().Add(testTimeout))
	body, err := rc.fr.Next()
	if err != nil {
		t.Fatal(err)
	}
	hd, p, err := protocol.ParseResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	if hd.OriginalSize != int32(len(payload)) || len(p) >= len(payload) {
		t.Fatalf("reply not compressed: OriginalSize=%d len=%d", hd.OriginalSize, len(p))
	}
	out, err := protocol.DecompressPayload(nil, p, int(hd.OriginalSize), 1<<20)
	if err != nil || !bytes.Equal(out, payload) {
		t.Fatalf("reply payload differs: %v", err)
	}
	// Small payloads stay raw.
	rc.write(mustFull(t, protocol.Header{MsgSeq: 3}, "EchoRequest", []byte("tiny")))
	if r := rc.read(); r.OriginalSize != 0 || string(r.Payload) != "tiny" {
		t.Fatalf("small reply = %+v", r)
	}
}

func TestHeartbeatKeepsSessionAliveAndSilenceCloses(t *testing.T) {
	const idle = 300 * time.Millisecond
	h, _ := newHarness(t, Options{HeartbeatTimeout: idle})
	rc := h.dial()
	s := h.auth(rc, "frank")
	// Heartbeat every idle/6 for 4 idle periods: the session must survive.
	tick := time.NewTicker(idle / 6)
	defer tick.Stop()
	start := time.Now()
	for time.Since(start) < 4*idle {
		<-tick.C
		rc.send("@Heart@Beat@", 0, 0, nil)
		if r := rc.read(); r.ID != "@Heart@Beat@" {
			t.Fatalf("heartbeat reply = %+v", r)
		}
	}
	if s.CloseReason() != ReasonNone {
		t.Fatalf("session closed despite heartbeats: %s", s.CloseReason())
	}
	tick.Stop()
	silent := time.Now()
	rc.expectClosed()
	if got := h.waitReason(s.ID()); got != IdleTimeout {
		t.Fatalf("reason = %s, want IdleTimeout", got)
	}
	if time.Since(silent) < idle {
		t.Fatalf("closed after %s of silence, before the %s timeout", time.Since(silent), idle)
	}
}

func TestAuthTimeout(t *testing.T) {
	h, _ := newHarness(t, Options{AuthTimeout: 100 * time.Millisecond})
	rc := h.dial()
	// Heartbeats do not authenticate: the session still times out.
	rc.send("@Heart@Beat@", 0, 0, nil)
	rc.read()
	rc.expectClosed()
	var reason CloseReason
	waitFor(t, "disconnect", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, r := range h.byID {
			reason = r
			return true
		}
		return false
	})
	if reason != AuthTimeout {
		t.Fatalf("reason = %s, want AuthTimeout", reason)
	}
}

func TestFailedAuthKeepsConnectionUntilMaxAttempts(t *testing.T) {
	h, _ := newHarness(t, Options{MaxAuthAttempts: 3})
	rc := h.dial()
	for i := 1; i <= 2; i++ {
		rc.send("AuthenticateRequest", uint16(i), 0, []byte("bad"))
		r := rc.read()
		if r.ID != "AuthenticateReply" || r.ErrorCode != protocol.AuthenticationFailed || r.MsgSeq != uint16(i) || string(r.Payload) != "denied" {
			t.Fatalf("failed auth reply = %+v", r)
		}
	}
	// Still open: a good attempt succeeds.
	s := h.auth(rc, "grace")
	if !s.Authenticated() || s.AccountID() != "grace" {
		t.Fatal("session not authenticated")
	}
	// Authenticating again for the same account succeeds and changes nothing
	// (as the official server does).
	rc.send("AuthenticateRequest", 9, 0, []byte("grace"))
	if r := rc.read(); r.ErrorCode != protocol.Success || r.MsgSeq != 9 || s.AccountID() != "grace" {
		t.Fatalf("second auth = %+v", r)
	}
	if h.mgr.Stats().AuthFailures != 2 {
		t.Errorf("auth failures = %d", h.mgr.Stats().AuthFailures)
	}

	// A client that keeps failing is closed after MaxAuthAttempts, and still
	// gets the last failure reply before the close.
	rc2 := h.dial()
	for i := 1; i <= 3; i++ {
		rc2.send("AuthenticateRequest", uint16(i), 0, []byte("bad"))
		if r := rc2.read(); r.ErrorCode != protocol.AuthenticationFailed {
			t.Fatalf("attempt %d reply = %+v", i, r)
		}
	}
	rc2.expectClosed()
	waitFor(t, "AuthFailed close", func() bool { return h.mgr.Stats().Closed[AuthFailed] == 1 })
}

func TestSupersedeKicksOlderSession(t *testing.T) {
	h, _ := newHarness(t, Options{})
	old := h.dial()
	oldS := h.auth(old, "henry")
	newer := h.dial()
	newer.send("AuthenticateRequest", 1, 0, []byte("henry"))
	if r := newer.read(); r.ErrorCode != 0 {
		t.Fatalf("new auth = %+v", r)
	}
	kick := old.read()
	var body struct{ Reason string }
	if kick.ID != "@Kick@" || kick.MsgSeq != 0 || json.Unmarshal(kick.Payload, &body) != nil || body.Reason != "Superseded" {
		t.Fatalf("kick push = %+v (%s)", kick, kick.Payload)
	}
	old.expectClosed()
	if got := h.waitReason(oldS.ID()); got != Superseded {
		t.Fatalf("old reason = %s", got)
	}
	s, ok := h.mgr.ByAccount("henry")
	if !ok || s == oldS {
		t.Fatal("account not bound to the newer session")
	}
	newer.send("EchoRequest", 2, 0, []byte("still here"))
	if r := newer.read(); string(r.Payload) != "still here" {
		t.Fatalf("newer session broken: %+v", r)
	}
}

func TestSlowConsumerClosedOthersUnaffected(t *testing.T) {
	h, _ := newHarness(t, Options{MaxPendingOutboundBytes: 256 << 10, WriteTimeout: 2 * time.Second})
	// The slow client shrinks its receive buffer and never reads.
	d := net.Dialer{}
	c, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	slow := &rawClient{t: t, c: c, fr: protocol.NewFrameReader(c, 1<<20)}
	slowS := h.auth(slow, "slow")
	fast := h.dial()
	h.auth(fast, "fast")

	slow.send("FloodRequest", 2, 0, nil)
	if got := h.waitReason(slowS.ID()); got != SlowConsumer {
		t.Fatalf("slow reason = %s", got)
	}
	// The other session is still served.
	for i := 1; i <= 10; i++ {
		fast.send("EchoRequest", uint16(10+i), 0, []byte("ok"))
		if r := fast.read(); string(r.Payload) != "ok" {
			t.Fatalf("fast session reply = %+v", r)
		}
	}
	if pending := slowS.PendingBytes(); pending != 0 {
		t.Errorf("slow session still holds %d pending bytes", pending)
	}
}

func TestSlowHandlerSlowsOnlyItsSession(t *testing.T) {
	h, th := newHarness(t, Options{})
	a := h.dial()
	aS := h.auth(a, "ann")
	b := h.dial()
	h.auth(b, "ben")
	a.send("SlowRequest", 1, 0, nil)
	a.send("EchoRequest", 2, 0, []byte("after slow"))
	select {
	case id := <-th.entered:
		if id != aS.ID() {
			t.Fatalf("slow handler entered for session %d", id)
		}
	case <-time.After(testTimeout):
		t.Fatal("slow handler not entered")
	}
	b.send("EchoRequest", 1, 0, []byte("b"))
	if r := b.read(); string(r.Payload) != "b" {
		t.Fatalf("b = %+v", r)
	}
	close(th.release)
	// Per-session order: the slow request's reply comes before the next one.
	if r := a.read(); r.MsgSeq != 1 {
		t.Fatalf("first reply seq = %d", r.MsgSeq)
	}
	if r := a.read(); r.MsgSeq != 2 || string(r.Payload) != "after slow" {
		t.Fatalf("second reply = %+v", r)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("max connections", func(t *testing.T) {
		h, _ := newHarness(t, Options{MaxConnections: 2})
		a, b := h.dial(), h.dial()
		h.auth(a, "a")
		h.auth(b, "b")
		c := h.dial()
		c.expectClosed()
		if h.mgr.Stats().Rejected[RejectMaxConnections] != 1 {
			t.Fatalf("rejections = %+v", h.mgr.Stats().Rejected)
		}
		// Closing one frees a slot.
		a.c.Close()
		waitFor(t, "slot freed", func() bool { return h.mgr.Count() == 1 })
		waitFor(t, "new connection admitted", func() bool {
			d := h.dial()
			d.send("@Heart@Beat@", 0, 0, nil)
			_, err := d.tryRead()
			d.c.Close()
			return err == nil
		})
	})
	t.Run("per ip", func(t *testing.T) {
		h, _ := newHarness(t, Options{MaxConnectionsPerIP: 2, PerIPExempt: []netip.Prefix{}})
		a, b := h.dial(), h.dial()
		h.auth(a, "a")
		h.auth(b, "b")
		h.dial().expectClosed()
		if h.mgr.Stats().Rejected[RejectPerIP] != 1 {
			t.Fatalf("rejections = %+v", h.mgr.Stats().Rejected)
		}
	})
	t.Run("loopback exempt by default", func(t *testing.T) {
		h, _ := newHarness(t, Options{MaxConnectionsPerIP: 1})
		for i := 0; i < 3; i++ {
			h.auth(h.dial(), fmt.Sprintf("u%d", i))
		}
	})
	t.Run("draining", func(t *testing.T) {
		h, _ := newHarness(t, Options{})
		h.mgr.SetDraining(true)
		h.dial().expectClosed()
		if h.mgr.Stats().Rejected[RejectDraining] != 1 {
			t.Fatalf("rejections = %+v", h.mgr.Stats().Rejected)
		}
	})
}

func TestIPv6GroupedBySlash64(t *testing.T) {
	a, _ := ipKey(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1"), Port: 1})
	b, _ := ipKey(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9"), Port: 2})
	c, _ := ipKey(&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 3})
	if a != b || a == c {
		t.Fatalf("keys: %v %v %v", a, b, c)
	}
	d, _ := ipKey(&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 4})
	if d.String() != "10.0.0.1/32" {
		t.Fatalf("mapped v4 key = %v", d)
	}
}

func TestRateLimit(t *testing.T) {
	h, _ := newHarness(t, Options{RatePerSecond: 0.001, RateBurst: 3, MaxRateViolations: 4})
	rc := h.dial()
	s := h.auth(rc, "rita") // uses 1 token
	rc.send("EchoRequest", 2, 0, []byte("x"))
	rc.send("EchoRequest", 3, 0, []byte("y"))
	for _, want := range []uint16{2, 3} {
		if r := rc.read(); r.MsgSeq != want || r.ErrorCode != 0 {
			t.Fatalf("allowed reply = %+v", r)
		}
	}
	rc.send("EchoRequest", 4, 0, []byte("z"))
	if r := rc.read(); r.MsgSeq != 4 || r.ErrorCode != protocol.RateLimitExceeded {
		t.Fatalf("limited reply = %+v", r)
	}
	rc.send("Notify", 0, 0, []byte("dropped")) // one-way over the limit: dropped
	rc.send("EchoRequest", 5, 0, nil)
	if r := rc.read(); r.MsgSeq != 5 || r.ErrorCode != protocol.RateLimitExceeded {
		t.Fatalf("expected no push, then a limited reply; got %+v", r)
	}
	rc.send("EchoRequest", 6, 0, nil) // 4th consecutive violation closes
	rc.expectClosed()
	if got := h.waitReason(s.ID()); got != RateLimited {
		t.Fatalf("reason = %s", got)
	}
	if h.mgr.Stats().RateLimited != 4 {
		t.Errorf("rate limited count = %d", h.mgr.Stats().RateLimited)
	}
}

func TestRegistryAndCloseAll(t *testing.T) {
	h, _ := newHarness(t, Options{})
	ids := map[uint64]bool{}
	var clients []*rawClient
	for i := 0; i < 20; i++ {
		rc := h.dial()
		s := h.auth(rc, fmt.Sprintf("user-%d", i))
		if ids[s.ID()] {
			t.Fatalf("duplicate session id %d", s.ID())
		}
		ids[s.ID()] = true
		if got, ok := h.mgr.Get(s.ID()); !ok || got != s {
			t.Fatal("Get by id failed")
		}
		if s.Transport() != "tcp" || s.RemoteAddr() == nil || s.ConnectedAt().IsZero() || s.LastActivity().Before(s.ConnectedAt()) {
			t.Fatalf("session state: %v %v %v %v", s.Transport(), s.RemoteAddr(), s.ConnectedAt(), s.LastActivity())
		}
		clients = append(clients, rc)
	}
	if h.mgr.Count() != 20 {
		t.Fatalf("count = %d", h.mgr.Count())
	}
	n := 0
	h.mgr.Range(func(*Session) bool { n++; return true })
	if n != 20 {
		t.Fatalf("range visited %d", n)
	}
	h.closeAll(clients)
	if h.mgr.Count() != 0 || h.mgr.Stats().Closed[ServerShutdown] != 20 {
		t.Fatalf("after CloseAll: count %d, stats %+v", h.mgr.Count(), h.mgr.Stats().Closed)
	}
}

func TestPushQueuedBeforeCloseIsDelivered(t *testing.T) {
	h, _ := newHarness(t, Options{})
	rc := h.dial()
	s := h.auth(rc, "ivy")
	for i := 0; i < 100; i++ {
		if err := s.Push("News", 0, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Kick("maintenance")
	for i := 0; i < 100; i++ {
		if r := rc.read(); string(r.Payload) != fmt.Sprint(i) {
			t.Fatalf("push %d = %+v", i, r)
		}
	}
	if r := rc.read(); r.ID != "@Kick@" || !bytes.Contains(r.Payload, []byte("maintenance")) {
		t.Fatalf("kick = %+v", r)
	}
	rc.expectClosed()
	if got := h.waitReason(s.ID()); got != Kicked {
		t.Fatalf("reason = %s", got)
	}
	if err := s.Push("Late", 0, nil); err == nil {
		t.Fatal("push on a closed session succeeded")
	}
}
