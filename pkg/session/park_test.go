package session

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// parkOptions park a reader after 50ms without input.
func parkOptions() Options {
	return Options{IdlePark: 50 * time.Millisecond, HeartbeatTimeout: time.Minute, CloseLinger: 500 * time.Millisecond}
}

// newParkHarness serves with Manager.Go, whose sessions may park.
func newParkHarness(t *testing.T, opts Options) (*harness, *testHandler) {
	t.Helper()
	return startHarness(t, opts, (*Manager).Go)
}

func waitParked(t *testing.T, m *Manager, n int) {
	t.Helper()
	waitFor(t, "sessions parked", func() bool { return m.Stats().Parked == n })
}

// Idle sessions give up their reader goroutines, and each resumes on input:
// the requests of every client are answered, and the sessions park again.
func TestIdleReadersParkAndResume(t *testing.T) {
	h, _ := newParkHarness(t, parkOptions())
	const n = 20
	base := runtime.NumGoroutine()
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = h.dial()
		h.auth(clients[i], "p"+string(rune('a'+i)))
	}
	waitParked(t, h.mgr, n)
	// The accept loop and the poller's goroutine are all that is left.
	if extra := runtime.NumGoroutine() - base; extra >= n/2 {
		t.Fatalf("%d goroutines more than before %d parked sessions", extra, n)
	}
	for round := range 2 {
		for i, rc := range clients {
			rc.send("EchoRequest", uint16(10+round), 0, []byte{byte(i), byte(round)})
		}
		for i, rc := range clients {
			r := rc.read()
			if r.MsgSeq != uint16(10+round) || len(r.Payload) != 2 || r.Payload[0] != byte(i) || r.Payload[1] != byte(round) {
				t.Fatalf("client %d round %d: reply %+v", i, round, r)
			}
		}
		waitParked(t, h.mgr, n)
	}
	if st := h.mgr.Stats(); st.Active != n {
		t.Fatalf("%d sessions active, want %d", st.Active, n)
	}
}

// A frame whose first bytes arrived before the reader parked is completed
// by the bytes after it.
func TestParkedReaderKeepsPartialFrame(t *testing.T) {
	h, _ := newParkHarness(t, parkOptions())
	rc := h.dial()
	h.auth(rc, "partial")
	req := frame(t, "EchoRequest", 7, 0, []byte("split across a park"))
	rc.write(req[:3])
	waitParked(t, h.mgr, 1)
	rc.write(req[3:])
	if r := rc.read(); r.MsgSeq != 7 || string(r.Payload) != "split across a park" {
		t.Fatalf("reply %+v", r)
	}
}

// A heartbeating session that parks keeps its idle deadline: it ends
// IdleTimeout once HeartbeatTimeout has passed since its last input, not
// sooner and not never; one that heartbeats in time stays open across many
// parks.
func TestParkedSessionKeepsIdleDeadline(t *testing.T) {
	const hb = 600 * time.Millisecond
	h, _ := newParkHarness(t, Options{IdlePark: 50 * time.Millisecond, HeartbeatTimeout: hb})

	live := h.dial()
	h.auth(live, "live")
	start := time.Now()
	for i := range 15 { // each round waits for a park (>= 50ms): longer than hb in all
		live.send("@Heart@Beat@", 0, 0, nil)
		if r := live.read(); r.ID != "@Heart@Beat@" {
			t.Fatalf("heartbeat %d reply %+v", i, r)
		}
		waitParked(t, h.mgr, 1)
	}
	if time.Since(start) <= hb {
		t.Fatalf("the rounds took %s, not longer than the heartbeat timeout", time.Since(start))
	}
	live.send("EchoRequest", 3, 0, []byte("still here"))
	if r := live.read(); string(r.Payload) != "still here" {
		t.Fatalf("reply %+v", r)
	}

	quiet := h.dial()
	s := h.auth(quiet, "quiet")
	sent := time.Now()
	quiet.send("@Heart@Beat@", 0, 0, nil)
	quiet.read()
	if got := h.waitReason(s.ID()); got != IdleTimeout {
		t.Fatalf("close reason %v, want IdleTimeout", got)
	}
	if d := time.Since(sent); d < hb {
		t.Fatalf("closed %s after the last heartbeat, before the %s timeout", d, hb)
	}
	quiet.expectClosed()
}

// Closing, kicking or aborting a parked session, or the client closing,
// ends it with its reason.
func TestParkedSessionEnds(t *testing.T) {
	h, _ := newParkHarness(t, parkOptions())
	kicked, closed, aborted, gone := h.dial(), h.dial(), h.dial(), h.dial()
	sk := h.auth(kicked, "kicked")
	sc := h.auth(closed, "closed")
	sa := h.auth(aborted, "aborted")
	sg := h.auth(gone, "gone")
	waitParked(t, h.mgr, 4)

	sk.Kick("bye")
	if r := kicked.read(); r.ID != KickMsgID {
		t.Fatalf("kicked client read %+v", r)
	}
	kicked.expectClosed()
	if got := h.waitReason(sk.ID()); got != Kicked {
		t.Fatalf("kicked: reason %v", got)
	}

	sc.Close(AppClosed)
	// The lingering close answers a request read after the close point.
	closed.send("EchoRequest", 9, 0, nil)
	if r := closed.read(); r.MsgSeq != 9 || r.ErrorCode != protocol.ServerDraining {
		t.Fatalf("request after the close point: %+v", r)
	}
	closed.expectClosed()
	if got := h.waitReason(sc.ID()); got != AppClosed {
		t.Fatalf("closed: reason %v", got)
	}

	waitParked(t, h.mgr, 2)
	sa.abort(ServerShutdown, nil)
	aborted.expectClosed()
	if got := h.waitReason(sa.ID()); got != ServerShutdown {
		t.Fatalf("aborted: reason %v", got)
	}

	gone.c.Close()
	if got := h.waitReason(sg.ID()); got != ClientClosed {
		t.Fatalf("client closed: reason %v", got)
	}
	waitFor(t, "no session left", func() bool { return h.mgr.Count() == 0 && h.mgr.Stats().Parked == 0 })
	ctx, cancel := contextWithTimeout()
	defer cancel()
	if err := h.mgr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// CloseAll reaches parked sessions: each client is told and closed.
func TestCloseAllWakesParked(t *testing.T) {
	h, _ := newParkHarness(t, parkOptions())
	clients := []*rawClient{h.dial(), h.dial(), h.dial()}
	for i, rc := range clients {
		h.auth(rc, string(rune('x'+i)))
	}
	waitParked(t, h.mgr, len(clients))
	h.closeAll(clients)
}

// Sessions run by Serve, and sessions of a manager with parking disabled,
// keep their reader: they get no idle timer.
func TestNoParkingWithServeOrDisabled(t *testing.T) {
	for name, start := range map[string]func(*testing.T) *harness{
		"serve": func(t *testing.T) *harness { h, _ := newHarness(t, parkOptions()); return h },
		"disabled": func(t *testing.T) *harness {
			h, _ := newParkHarness(t, Options{IdlePark: -1})
			return h
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := start(t)
			rc := h.dial()
			s := h.auth(rc, "reader")
			s.lmu.Lock()
			timer := s.idleTimer
			s.lmu.Unlock()
			if timer != nil {
				t.Fatal("the session has an idle timer: it would park")
			}
			rc.send("EchoRequest", 2, 0, []byte("x"))
			if r := rc.read(); string(r.Payload) != "x" {
				t.Fatalf("reply %+v", r)
			}
		})
	}
}

// splitConn writes one chosen Write in two parts, the second once released.
type splitConn struct {
	net.Conn
	mu      sync.Mutex
	split   int           // > 0: the next Write sends this many bytes first
	release chan struct{} // closed to send the rest
}

func (c *splitConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	k := c.split
	c.split = 0
	c.mu.Unlock()
	if k <= 0 || k >= len(b) {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(b[:k])
	if err != nil {
		return n, err
	}
	<-c.release
	m, err := c.Conn.Write(b[k:])
	return n + m, err
}

// A TLS session parks with part of a TLS record read (inside crypto/tls)
// and goes on when the rest arrives.
func TestParkedTLSReaderKeepsPartialRecord(t *testing.T) {
	certs, scfg := testutil.ServerTLS(t)
	th := &testHandler{release: make(chan struct{}), entered: make(chan uint64, 1)}
	th.h = &harness{t: t, gone: make(chan disconnect, 16), byID: map[uint64]CloseReason{}}
	opts := parkOptions()
	opts.Handler = th
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	mgr, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(c, scfg)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return
		}
		mgr.Go(transport.NewStreamConn(tc, transport.KindTLSTCP, 1<<20), nil)
	}()
	defer func() {
		ctx, cancel := contextWithTimeout()
		defer cancel()
		_ = mgr.CloseAll(ctx, ServerShutdown)
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := &splitConn{Conn: raw, release: make(chan struct{})}
	tc := tls.Client(sc, certs.ClientConfig())
	defer tc.Close()
	rc := &rawClient{t: t, c: tc, fr: protocol.NewFrameReader(tc, 1<<20)}
	rc.send("AuthenticateRequest", 1, 0, []byte("tls"))
	if r := rc.read(); r.ErrorCode != 0 {
		t.Fatalf("auth reply %+v", r)
	}
	waitParked(t, mgr, 1)

	// The record's header and a few bytes of its body, then a park.
	sc.mu.Lock()
	sc.split = 9
	sc.mu.Unlock()
	wrote := make(chan error, 1)
	go func() { _, err := tc.Write(frame(t, "EchoRequest", 4, 0, []byte("record split"))); wrote <- err }()
	waitFor(t, "the reader resumed for the first bytes", func() bool { return mgr.Stats().Parked == 0 })
	waitParked(t, mgr, 1)
	close(sc.release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if r := rc.read(); r.MsgSeq != 4 || string(r.Payload) != "record split" {
		t.Fatalf("reply %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := mgr.CloseAll(ctx, ServerShutdown); err != nil {
		t.Fatal(err)
	}
}

// A client that resets its connection right after its last request (the
// request and the reset reach the server together) is seen gone: at once
// by a session that never parks, within IdlePark by one that may (whose
// reader may wait without reading a socket it knows to be empty, see
// transport.FramePump), never later.
func TestResetAfterLastRequestEndsSession(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(*Manager, transport.Conn, *Admission)
	}{{"serve", (*Manager).Serve}, {"go", (*Manager).Go}} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := startHarness(t, parkOptions(), tc.serve)
			for i := range 10 {
				rc := h.dial()
				s := h.auth(rc, "reset")
				rc.send("EchoRequest", 1, 0, []byte("first"))
				if r := rc.read(); r.MsgSeq != 1 {
					t.Fatalf("reply %+v", r)
				}
				if err := rc.c.(*net.TCPConn).SetLinger(0); err != nil {
					t.Fatal(err)
				}
				rc.send("QuietRequest", 2, 0, []byte("last")) // no answer finds the reset
				rc.c.Close()
				if r := h.waitReason(s.ID()); r == ReasonNone {
					t.Fatalf("round %d: session %d ended without a reason", i, s.ID())
				}
			}
		})
	}
}

// goroutineID is the calling goroutine's number (from its stack header).
func goroutineID() string {
	var b [64]byte
	f := strings.Fields(string(b[:runtime.Stack(b[:], false)]))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// A session started with Manager.Go reads on a fresh goroutine once it has
// authenticated, so that its stack has not grown with the connection's
// set-up and the authentication (an idle session then holds the smallest
// stack); Manager.Serve blocks for the session's life, so its goroutine
// reads on. Either way the packets reach the handler one at a time, in
// order.
func TestReaderMovesAfterAuthentication(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(*Manager, transport.Conn, *Admission)
		moves bool
	}{{"go", (*Manager).Go, true}, {"serve", (*Manager).Serve, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var authG string
			var packetG []string
			h, _ := startHarness(t, Options{IdlePark: -1, Handler: HandlerFuncs{
				Auth: func(_ *Session, p *Packet) AuthResult {
					mu.Lock()
					authG = goroutineID()
					mu.Unlock()
					return AuthResult{AccountID: string(p.Payload)}
				},
				Packet: func(s *Session, p *Packet) {
					mu.Lock()
					packetG = append(packetG, goroutineID())
					mu.Unlock()
					_ = s.Reply(p, protocol.Success, p.Payload)
				},
			}}, tc.serve)
			rc := h.dial()
			h.auth(rc, "mover")
			for seq := uint16(2); seq < 5; seq++ {
				rc.send("EchoRequest", seq, 0, nil)
				if r := rc.read(); r.MsgSeq != seq {
					t.Fatalf("reply %+v, want seq %d", r, seq)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if authG == "" || len(packetG) != 3 || packetG[0] != packetG[1] || packetG[1] != packetG[2] {
				t.Fatalf("authenticated on goroutine %q, packets on %q", authG, packetG)
			}
			if moved := packetG[0] != authG; moved != tc.moves {
				t.Fatalf("authenticated on goroutine %s, packets on %s: moved %v, want %v", authG, packetG[0], moved, tc.moves)
			}
		})
	}
}
