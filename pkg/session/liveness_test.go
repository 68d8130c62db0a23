package session

import (
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Liveness of WebSocket sessions that never heartbeat (protocol.md section
// 3): the server pings them every third of HeartbeatTimeout and closes them
// IdleTimeout once nothing (frame, pong) has arrived for HeartbeatTimeout,
// and it holds no goroutine while it waits for the next ping.

// wsHarness runs a manager behind the WebSocket handler on 127.0.0.1:0.
type wsHarness struct {
	*harness
}

// newWSHarness is newHarness over WebSocket.
func newWSHarness(t *testing.T, opts Options) *wsHarness {
	t.Helper()
	h, _ := newHarness(t, opts) // its TCP listener stays unused
	wh, err := transport.NewWebSocketHandler(transport.WebSocketOptions{Accept: func(*http.Request) (func(transport.Conn), func(), error) {
		return func(c transport.Conn) { h.mgr.Serve(c, nil) }, func() {}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: wh, ReadHeaderTimeout: testTimeout}
	go func() { _ = hs.Serve(ln) }()
	// Registered after newHarness's cleanup, so it runs first: no new
	// session arrives while the manager closes its sessions.
	t.Cleanup(func() { _ = hs.Close() })
	h.addr = ln.Addr().String()
	return &wsHarness{h}
}

// wsClient is a raw WebSocket client: it sees every frame the server sends,
// control frames included, and answers pings only when asked to.
type wsClient struct {
	t *testing.T
	c net.Conn
}

// dialWS opens a WebSocket and authenticates as account.
func (h *wsHarness) dialWS(account string) (*wsClient, *Session) {
	h.t.Helper()
	c := dialMem(h.t, h.addr)
	h.t.Cleanup(func() { c.Close() })
	wsHandshake(h.t, c, h.addr)
	wc := &wsClient{t: h.t, c: c}
	wc.sendData(frame(h.t, "AuthenticateRequest", 1, 0, []byte(account)))
	op, body := wc.next()
	if op != wsBinary {
		h.t.Fatalf("auth answer: opcode %#x", op)
	}
	checkAnswer(h.t, body[4:])
	var s *Session
	waitFor(h.t, "session bound to account", func() bool {
		var ok bool
		s, ok = h.mgr.ByAccount(account)
		return ok
	})
	return wc, s
}

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	wsBinary = 0x2
	wsClose  = 0x8
	wsPing   = 0x9
	wsPong   = 0xA
)

// sendData writes one masked binary frame.
func (wc *wsClient) sendData(payload []byte) {
	wc.t.Helper()
	writeAll(wc.t, wc.c, wsClientFrame(payload))
}

// sendPong writes one masked pong frame with payload (under 126 bytes).
func (wc *wsClient) sendPong(payload []byte) {
	wc.t.Helper()
	b := append([]byte{0x80 | wsPong, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
	writeAll(wc.t, wc.c, b)
}

// next reads one server frame (unmasked, unfragmented) and returns its
// opcode and payload; it fails the test when none comes within testTimeout.
func (wc *wsClient) next() (op byte, payload []byte) {
	wc.t.Helper()
	op, payload, err := wc.tryNext(time.Now().Add(testTimeout))
	if err != nil {
		wc.t.Fatalf("read websocket frame: %v", err)
	}
	return op, payload
}

// tryNext reads one server frame before deadline.
func (wc *wsClient) tryNext(deadline time.Time) (op byte, payload []byte, err error) {
	_ = wc.c.SetReadDeadline(deadline)
	var h [2]byte
	if _, err := readFull(wc.c, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := readFull(wc.c, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := readFull(wc.c, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 || n > 1<<20 {
		return 0, nil, errors.New("unexpected frame header")
	}
	payload = make([]byte, n)
	if _, err := readFull(wc.c, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// TestIdleWebSocketSessionHoldsOneGoroutine: an idle authenticated WebSocket
// session holds its reader goroutine only; nothing else waits on its behalf
// for the next ping (issue 9: a second goroutine per session costs its
// stack, 2-8 KiB).
func TestIdleWebSocketSessionHoldsOneGoroutine(t *testing.T) {
	const n = 200 // two descriptors each (client and server in this process)
	srv := startMemServer(t, "ws")
	defer srv.stop()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	open := func(k int) {
		for range k {
			conns = append(conns, srv.open(t, srv.addr, len(conns)))
		}
		waitReady(t, srv, len(conns))
	}
	open(10) // the server's own goroutines are running by now
	// Writers run only while frames are queued, so the count settles once
	// every answer is written: take the lowest count seen.
	settled := func() int {
		low := runtime.NumGoroutine()
		for range 50 {
			runtime.Gosched()
			low = min(low, runtime.NumGoroutine())
		}
		return low
	}
	before := settled()
	open(n)
	// Poll (no fixed sleep): a goroutine still finishing a write may
	// linger for a moment on a busy machine.
	var per float64
	deadline := time.Now().Add(testTimeout)
	for {
		per = float64(settled()-before) / n
		if per <= 1.1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%.2f goroutines per idle authenticated WebSocket session (%d sessions)", per, n)
	if per > 1.1 {
		t.Fatalf("an idle WebSocket session holds %.2f goroutines, want 1 (the reader)", per)
	}
	if per < 0.9 {
		t.Fatalf("%.2f goroutines per session: the sessions are not being measured", per)
	}
}

// waitReady waits until n sessions of srv are authenticated.
func waitReady(t *testing.T, srv *memServer, n int) {
	t.Helper()
	waitFor(t, "sessions authenticated", func() bool { return srv.ready(n) })
}

// A WebSocket client that never heartbeats and answers pings stays
// connected past HeartbeatTimeout, pinged about every third of it; one that
// answers nothing is closed IdleTimeout within a bound of HeartbeatTimeout.
func TestWebSocketPingKeepsSilentClientAndFindsDeadOne(t *testing.T) {
	const timeout = 600 * time.Millisecond
	h := newWSHarness(t, Options{HeartbeatTimeout: timeout})
	alive, aliveS := h.dialWS("answers-pings")
	_, deadS := h.dialWS("answers-nothing")
	deadSince := deadS.LastActivity()
	closedAt := make(chan time.Time, 1)
	go func() {
		<-deadS.Done() // the close point
		closedAt <- time.Now()
	}()
	// The live client answers every ping, as a browser does.
	var pings, others atomic.Int32
	go func() {
		for {
			op, payload, err := alive.tryNext(time.Now().Add(testTimeout))
			if err != nil {
				return
			}
			if op != wsPing {
				others.Add(1)
				continue
			}
			pings.Add(1)
			_, _ = alive.c.Write(append([]byte{0x80 | wsPong, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...))
		}
	}()

	var took time.Duration
	select {
	case at := <-closedAt:
		took = at.Sub(deadSince)
	case <-time.After(testTimeout):
		t.Fatalf("a client answering nothing still open after %s", testTimeout)
	}
	if r := deadS.CloseReason(); r != IdleTimeout {
		t.Fatalf("a client answering nothing was closed %s, want IdleTimeout", r)
	}
	// Not before the timeout; within a generous margin after it (a check
	// every third of the timeout, a loaded 2-core machine).
	if took < timeout || took > timeout+3*time.Second {
		t.Fatalf("closed %s after its last activity, want within [%s, %s]", took, timeout, timeout+3*time.Second)
	}

	// Five pings, a third of the timeout apart: the live client has sent
	// nothing but pongs for well over the timeout.
	waitFor(t, "five pings", func() bool { return pings.Load() >= 5 || aliveS.CloseReason() != ReasonNone })
	if r := aliveS.CloseReason(); r != ReasonNone {
		t.Fatalf("a client answering pings was closed %s after %d pings", r, pings.Load())
	}
	if n := others.Load(); n != 0 {
		t.Fatalf("%d unexpected frames", n)
	}
}

// A WebSocket session that heartbeats is watched by the idle read deadline:
// it is not pinged.
func TestHeartbeatingWebSocketNotPinged(t *testing.T) {
	const timeout = 600 * time.Millisecond
	h := newWSHarness(t, Options{HeartbeatTimeout: timeout})
	wc, s := h.dialWS("beats")
	start := time.Now()
	pings := 0
	for seq := uint16(2); time.Since(start) < 2*timeout; seq++ {
		wc.sendData(frame(t, "@Heart@Beat@", 0, 0, nil))
		// Read until the heartbeat's answer; count pings on the way.
		for {
			op, _ := wc.next()
			if op == wsPing {
				pings++
				continue
			}
			if op != wsBinary {
				t.Fatalf("unexpected frame, opcode %#x", op)
			}
			break
		}
		// Wait a quarter of the timeout for a ping that should not come.
		if op, _, err := wc.tryNext(time.Now().Add(timeout / 4)); err == nil {
			if op == wsPing {
				pings++
			} else {
				t.Fatalf("unexpected frame, opcode %#x", op)
			}
		}
	}
	// A ping may have been due before the first heartbeat was read.
	if pings > 1 {
		t.Fatalf("a heartbeating session was pinged %d times in %s", pings, time.Since(start))
	}
	if r := s.CloseReason(); r != ReasonNone {
		t.Fatalf("a heartbeating session was closed %s", r)
	}
}

// After the close point a WebSocket session sends no more pings, even while
// its lingering close waits for the client.
func TestNoPingAfterClose(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// The answering phase of the lingering close lasts CloseQuiet (no
	// request arrives), several ping periods; then the Close frame goes out
	// and the server waits up to CloseLinger for the client's.
	h := newWSHarness(t, Options{HeartbeatTimeout: timeout, CloseQuiet: time.Second, CloseLinger: 3 * time.Second})
	wc, s := h.dialWS("closed")
	// The client answers pings (activity) until the session closes.
	op, payload := wc.next()
	if op != wsPing {
		t.Fatalf("unexpected frame, opcode %#x", op)
	}
	wc.sendPong(payload)
	s.Close(AppClosed)
	// Until the Close frame, one ping already on its way may arrive.
	pings := 0
	for {
		op, payload := wc.next()
		if op == wsClose {
			break
		}
		if op != wsPing {
			t.Fatalf("unexpected frame, opcode %#x", op)
		}
		pings++
		wc.sendPong(payload)
	}
	if pings > 1 {
		t.Fatalf("%d pings after the close point", pings)
	}
	// The client holds the connection open without answering the Close:
	// the server lingers, and must send nothing more.
	if op, _, err := wc.tryNext(time.Now().Add(3 * timeout)); err == nil {
		t.Fatalf("frame with opcode %#x after the Close frame", op)
	}
	if r := s.CloseReason(); r != AppClosed {
		t.Fatalf("reason %s", r)
	}
}
