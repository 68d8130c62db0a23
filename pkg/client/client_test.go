package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// quiet disables automatic heartbeats so tests see only their own traffic.
var quiet = Options{HeartbeatInterval: -1}

func dial(t *testing.T, s *fakeServer, opts Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, s.addr(), opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRequestReply(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, quiet)
	r, err := c.Request(ctxT(t), "EchoRequest", 1234, []byte("hi"))
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if r.MsgID != "EchoReply" || r.MsgSeq != 1 || r.StageID != 1234 || r.ErrorCode != 0 || string(r.Payload) != "hi" {
		t.Fatalf("reply = %+v", r)
	}
	if r.Err() != nil {
		t.Fatalf("Response.Err = %v", r.Err())
	}
	r, err = c.Request(ctxT(t), "EchoRequest", 0, nil)
	if err != nil || r.MsgSeq != 2 || len(r.Payload) != 0 {
		t.Fatalf("second request: %+v, %v", r, err)
	}
	if c.LocalAddr() == nil || c.RemoteAddr().String() != s.addr() {
		t.Fatalf("addrs: %v %v", c.LocalAddr(), c.RemoteAddr())
	}
}

// TestWireBytes checks the exact bytes against protocol.md section 5.
func TestWireBytes(t *testing.T) {
	cli, srv := net.Pipe()
	c := New(cli, quiet)
	t.Cleanup(func() { c.Close() })
	go func() { _, _ = c.Request(ctxT(t), "EchoRequest", 1234, []byte{0x0a, 0x02, 0x68, 0x69, 0x10, 0x07}) }()

	want := []byte{0x1c, 0, 0, 0, 0x0b}
	want = append(want, "EchoRequest"...)
	want = append(want, 0x01, 0x00, 0xd2, 0x04, 0, 0, 0, 0, 0, 0, 0x0a, 0x02, 0x68, 0x69, 0x10, 0x07)
	got := make([]byte, len(want))
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(srv, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("EchoRequest frame\n got % x\nwant % x", got, want)
	}

	go func() { _ = c.Send("@Heart@Beat@", 1234, nil) }()
	want = []byte{0x17, 0, 0, 0, 0x0c}
	want = append(want, "@Heart@Beat@"...)
	want = append(want, 0, 0, 0xd2, 0x04, 0, 0, 0, 0, 0, 0)
	got = make([]byte, len(want))
	if _, err := io.ReadFull(srv, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("heartbeat frame\n got % x\nwant % x", got, want)
	}
	srv.Close()
}

func TestConcurrentRequestsOutOfOrder(t *testing.T) {
	const n = 100
	var (
		mu   sync.Mutex
		held []serverReq
	)
	s := newFakeServer(t, withHandler(func(sc *serverConn, req serverReq) {
		mu.Lock()
		held = append(held, req)
		if len(held) < n {
			mu.Unlock()
			return
		}
		all := held
		held = nil
		mu.Unlock()
		// Odd positions first, then even ones backwards.
		for i := 1; i < len(all); i += 2 {
			echo(sc, all[i])
		}
		for i := len(all) - 2; i >= 0; i -= 2 {
			echo(sc, all[i])
		}
	}))
	c := dial(t, s, quiet)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			want := fmt.Sprintf("payload-%d", i)
			r, err := c.Request(ctx, "EchoRequest", int64(i), []byte(want))
			switch {
			case err != nil:
				errs <- err
			case string(r.Payload) != want || r.StageID != int64(i):
				errs <- fmt.Errorf("request %d got %q stage %d", i, r.Payload, r.StageID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 0 {
		t.Fatalf("%d sequences still pending", len(c.pending))
	}
}

func TestTimeoutFreesSeqAndDiscardsLateReply(t *testing.T) {
	s := newFakeServer(t, forwarding)
	c := dial(t, s, quiet)
	c.mu.Lock()
	c.seqSpace = 1 // the next request must reuse the timed-out one's MsgSeq
	c.mu.Unlock()
	sc := s.waitConn()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Request(ctx, "SlowRequest", 0, []byte("first"))
	requireErrorIs(t, err, context.DeadlineExceeded)
	c.mu.Lock()
	pending := len(c.pending)
	c.mu.Unlock()
	if pending != 0 {
		t.Fatalf("timed-out request still holds its MsgSeq (%d pending)", pending)
	}

	late := s.nextReq()
	if late.MsgSeq != 1 {
		t.Fatalf("first request MsgSeq = %d", late.MsgSeq)
	}
	if err := sc.send("SlowReply", late.MsgSeq, 0, 0, []byte("late")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "late reply discarded", func() bool { return c.discarded.Load() == 1 })

	done := make(chan struct{})
	go func() {
		defer close(done)
		r := s.nextReq()
		_ = sc.send("SlowReply", r.MsgSeq, 0, 0, []byte("second"))
	}()
	r, err := c.Request(ctxT(t), "SlowRequest", 0, []byte("second"))
	if err != nil || r.MsgSeq != 1 || string(r.Payload) != "second" {
		t.Fatalf("second request: %+v, %v", r, err)
	}
	<-done
	select {
	case p := <-c.Pushes():
		t.Fatalf("late reply delivered as a push: %+v", p)
	default:
	}

	// A context that is already done sends nothing.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := c.Request(cctx, "EchoRequest", 0, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled ctx: %v", err)
	}
}

func TestRequestTimeoutOption(t *testing.T) {
	s := newFakeServer(t, forwarding)
	c := dial(t, s, Options{HeartbeatInterval: -1, RequestTimeout: 30 * time.Millisecond})
	_, err := c.Request(context.Background(), "SlowRequest", 0, nil)
	requireErrorIs(t, err, context.DeadlineExceeded)
}

func TestServerCloseFailsPendingRequests(t *testing.T) {
	s := newFakeServer(t, forwarding)
	c := dial(t, s, quiet)
	sc := s.waitConn()

	const n = 5
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Request(context.Background(), "EchoRequest", 0, nil) // 30s default timeout
			errs <- err
		}()
	}
	for range n {
		s.nextReq()
	}
	start := time.Now()
	sc.Close()
	for range n {
		select {
		case err := <-errs:
			requireErrorIs(t, err, io.EOF)
		case <-time.After(5 * time.Second):
			t.Fatal("pending request not failed after the server closed")
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("pending requests took %v to fail", d)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed")
	}
	if c.Err() != io.EOF {
		t.Fatalf("Err = %v, want io.EOF", c.Err())
	}
	_, err := c.Request(context.Background(), "EchoRequest", 0, nil)
	requireErrorIs(t, err, io.EOF)
	requireErrorIs(t, c.Send("Ping", 0, nil), io.EOF)
	if _, ok := <-c.Pushes(); ok {
		t.Fatal("Pushes not closed")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close after server close: %v", err)
	}
}

func TestServerCloseMidRequest(t *testing.T) {
	s := newFakeServer(t, withHandler(func(sc *serverConn, req serverReq) { sc.Close() }))
	c := dial(t, s, quiet)
	_, err := c.Request(ctxT(t), "CloseRequest", 0, nil)
	if err == nil {
		t.Fatal("request succeeded")
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		// A reset is also a legitimate end, but the error must say so.
		t.Logf("request error: %v", err)
	}
	<-c.Done()
}

func TestPushesAndHeartbeats(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, quiet)
	sc := s.waitConn()

	hb, err := c.Heartbeat(ctxT(t))
	if err != nil || hb.MsgID != DefaultHeartbeatMsgID || hb.MsgSeq != 0 {
		t.Fatalf("Heartbeat: %+v, %v", hb, err)
	}
	if err := sc.send("@Kick@", 0, 0, 0, []byte(`{"reason":"test"}`)); err != nil {
		t.Fatal(err)
	}
	// An unsolicited heartbeat echo is swallowed, not pushed.
	if err := sc.send(DefaultHeartbeatMsgID, 0, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := sc.send("ChatNotify", 0, 77, 0, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"@Kick@", "ChatNotify"} {
		select {
		case p := <-c.Pushes():
			if p.MsgID != want {
				t.Fatalf("push %q, want %q", p.MsgID, want)
			}
			if want == "ChatNotify" && (p.StageID != 77 || string(p.Payload) != "hello") {
				t.Fatalf("push = %+v", p)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("push %q not delivered", want)
		}
	}
	// Echo ordering: several heartbeats in flight each get an echo.
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := c.Heartbeat(ctxT(t)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := s.heartbeats.Load(); got != 6 {
		t.Fatalf("server counted %d heartbeats, want 6", got)
	}
	select {
	case p := <-c.Pushes():
		t.Fatalf("unexpected push %+v", p)
	default:
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	s := newFakeServer(t, func(s *fakeServer) { s.noHeartbeatEcho = true })
	c := dial(t, s, quiet)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := c.Heartbeat(ctx)
	requireErrorIs(t, err, context.DeadlineExceeded)
}

func TestAutomaticHeartbeat(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, Options{HeartbeatInterval: 20 * time.Millisecond})
	eventually(t, 5*time.Second, "3 automatic heartbeats", func() bool { return s.heartbeats.Load() >= 3 })
	select {
	case p := <-c.Pushes():
		t.Fatalf("heartbeat echo delivered as a push: %+v", p)
	default:
	}
	// Custom MsgId.
	s2 := newFakeServer(t, forwarding)
	dial(t, s2, Options{HeartbeatInterval: 20 * time.Millisecond, HeartbeatMsgID: "Ping"})
	if r := s2.nextReq(); r.MsgID != "Ping" || r.MsgSeq != 0 {
		t.Fatalf("custom heartbeat = %+v", r)
	}
}

func TestPushOverflowDropsOldest(t *testing.T) {
	const pushes, buffer = 10, 4
	s := newFakeServer(t, withHandler(func(sc *serverConn, req serverReq) {
		for i := range pushes {
			_ = sc.send("Notify", 0, 0, 0, []byte{byte(i)})
		}
		echo(sc, req)
	}))
	c := dial(t, s, Options{HeartbeatInterval: -1, PushBuffer: buffer})
	// The reply follows the pushes on the wire, so all are dispatched by now.
	if _, err := c.Request(ctxT(t), "SyncRequest", 0, nil); err != nil {
		t.Fatal(err)
	}
	if got := c.DroppedPushes(); got != pushes-buffer {
		t.Fatalf("DroppedPushes = %d, want %d", got, pushes-buffer)
	}
	for want := pushes - buffer; want < pushes; want++ {
		p := <-c.Pushes()
		if p.Payload[0] != byte(want) {
			t.Fatalf("push %d, want %d (oldest must be dropped)", p.Payload[0], want)
		}
	}
}

func TestCompressedResponse(t *testing.T) {
	big := bytes.Repeat([]byte("playhouse compressed payload "), 1000)
	s := newFakeServer(t, withHandler(func(sc *serverConn, req serverReq) {
		_ = sc.sendCompressed("BigReply", req.MsgSeq, req.StageID, big)
	}))
	c := dial(t, s, quiet)
	r, err := c.Request(ctxT(t), "BigRequest", 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Payload, big) {
		t.Fatalf("payload of %d bytes, want %d", len(r.Payload), len(big))
	}

	// A compressed payload larger than MaxPacketSize ends the connection.
	c2 := dial(t, s, Options{HeartbeatInterval: -1, MaxPacketSize: 8 << 10})
	_, err = c2.Request(ctxT(t), "BigRequest", 5, nil)
	requireErrorIs(t, err, protocol.ErrBadCompression)
	requireErrorIs(t, c2.Err(), protocol.ErrBadCompression)
}

func TestFullHeaderCompressedRequest(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []serverReq
	)
	s := newFakeServer(t, withFormat(protocol.FullHeader), withHandler(func(sc *serverConn, req serverReq) {
		mu.Lock()
		seen = append(seen, req)
		mu.Unlock()
		echo(sc, req)
	}))
	c := dial(t, s, Options{HeartbeatInterval: -1, RequestHeader: protocol.FullHeader, Compress: 64})
	big := bytes.Repeat([]byte("abcdefgh"), 512)
	r, err := c.Request(ctxT(t), "BigRequest", 9, big)
	if err != nil || !bytes.Equal(r.Payload, big) {
		t.Fatalf("big request: %v", err)
	}
	if _, err := c.Request(ctxT(t), "SmallRequest", 9, []byte("tiny")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen[0].OriginalSize != int32(len(big)) || !bytes.Equal(seen[0].Payload, big) || seen[0].StageID != 9 {
		t.Fatalf("server saw OriginalSize %d, payload %d bytes", seen[0].OriginalSize, len(seen[0].Payload))
	}
	if seen[1].OriginalSize != 0 || string(seen[1].Payload) != "tiny" {
		t.Fatalf("small payload: %+v", seen[1])
	}
}

func TestSeqExhaustion(t *testing.T) {
	s := newFakeServer(t, forwarding)
	c := dial(t, s, quiet)
	const space = 4
	c.mu.Lock()
	c.seqSpace = space
	c.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, space)
	for range space {
		go func() {
			_, err := c.Request(ctx, "StuckRequest", 0, nil)
			errs <- err
		}()
	}
	for range space {
		s.nextReq()
	}
	start := time.Now()
	_, err := c.Request(ctxT(t), "OneTooManyRequest", 0, nil)
	requireErrorIs(t, err, ErrTooManyInFlight)
	if time.Since(start) > time.Second {
		t.Fatal("exhausted Request blocked")
	}
	cancel()
	for range space {
		requireErrorIs(t, <-errs, context.Canceled)
	}
	// Everything was freed: requests work again.
	go func() {
		r := s.nextReq()
		_ = s.waitConn().send("OkReply", r.MsgSeq, 0, 0, nil)
	}()
	if _, err := c.Request(ctxT(t), "OkRequest", 0, nil); err != nil {
		t.Fatal(err)
	}
}

// TestSeqAllocation walks the whole 1..65535 space without a server.
func TestSeqAllocation(t *testing.T) {
	cli, srv := net.Pipe()
	defer srv.Close()
	c := New(cli, quiet)
	defer c.Close()

	alloc := func() (uint16, *call, error) {
		cl, err := c.allocCall("SeqRequest", 0, nil, false)
		if err != nil {
			return 0, nil, err
		}
		return cl.seq, cl, nil
	}
	seen := make(map[uint16]*call, maxSeq)
	for i := 1; i <= maxSeq; i++ {
		seq, cl, err := alloc()
		if err != nil {
			t.Fatalf("alloc %d: %v", i, err)
		}
		if int(seq) != i {
			t.Fatalf("alloc %d gave MsgSeq %d", i, seq)
		}
		seen[seq] = cl
	}
	if _, _, err := alloc(); !errors.Is(err, ErrTooManyInFlight) {
		t.Fatalf("alloc past 65535: %v", err)
	}
	c.releaseCall(seen[30000])
	if seq, cl, _ := alloc(); seq != 30000 {
		t.Fatalf("reuse gave %d, want 30000", seq)
	} else {
		seen[seq] = cl
	}
	c.releaseCall(seen[7])
	c.releaseCall(seen[5])
	c.releaseCall(seen[65535])
	// After 30000 the scan skips the in-flight 30001..65534, finds 65535,
	// then wraps past 0 to 1..4 (busy) and 5.
	for _, want := range []uint16{65535, 5, 7} {
		seq, cl, err := alloc()
		if err != nil || seq != want {
			t.Fatalf("alloc gave %d (%v), want %d", seq, err, want)
		}
		seen[seq] = cl
	}
	// A stale release (another call) must not free a reused sequence.
	c.releaseCall(&call{seq: 5})
	if _, _, err := alloc(); !errors.Is(err, ErrTooManyInFlight) {
		t.Fatalf("stale release freed a sequence: %v", err)
	}
}

func TestMalformedServerFrames(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"zero length", []byte{0, 0, 0, 0}, protocol.ErrMalformedFrame},
		{"negative length", []byte{0xff, 0xff, 0xff, 0xff}, protocol.ErrMalformedFrame},
		{"too large", binary.LittleEndian.AppendUint32(nil, 1<<20), protocol.ErrFrameTooLarge},
		{"short header", protocol.AppendFrame(nil, []byte{3, 'a', 'b', 'c', 1, 0}), protocol.ErrMalformedHeader},
		{"empty MsgId", protocol.AppendFrame(nil, make([]byte, 17)), protocol.ErrMalformedHeader},
		{"bad LZ4", func() []byte {
			f, _ := protocol.AppendFull(nil, protocol.Header{MsgSeq: 1, OriginalSize: 100}, "X", []byte{0xff, 0xff, 0xff})
			return f
		}(), protocol.ErrBadCompression},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t, withHandler(func(sc *serverConn, req serverReq) { _ = sc.writeRaw(tc.frame) }))
			c := dial(t, s, Options{HeartbeatInterval: -1, MaxPacketSize: 64 << 10})
			_, err := c.Request(ctxT(t), "EchoRequest", 0, nil)
			requireErrorIs(t, err, tc.want)
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("connection not ended")
			}
			requireErrorIs(t, c.Err(), tc.want)
		})
	}
}

func TestAuthenticate(t *testing.T) {
	s := newFakeServer(t, withHandler(func(sc *serverConn, req serverReq) {
		code := protocol.Success
		if string(req.Payload) != "good" {
			code = protocol.AuthenticationFailed
		}
		_ = sc.send(protocol.ReplyMsgID(req.MsgID), req.MsgSeq, req.StageID, code, nil)
	}))
	c := dial(t, s, quiet)
	r, err := c.Authenticate(ctxT(t), "AuthenticateRequest", []byte("bad"))
	var ece *ErrorCodeError
	if !errors.As(err, &ece) || ece.Code != protocol.AuthenticationFailed || ece.MsgID != "AuthenticateReply" {
		t.Fatalf("Authenticate error = %v", err)
	}
	requireErrorIs(t, err, &ErrorCodeError{Code: protocol.AuthenticationFailed})
	if r == nil || r.ErrorCode != protocol.AuthenticationFailed {
		t.Fatalf("failed Authenticate returned %+v", r)
	}
	r, err = c.Authenticate(ctxT(t), "AuthenticateRequest", []byte("good"))
	if err != nil || r.MsgID != "AuthenticateReply" {
		t.Fatalf("retry: %+v, %v", r, err)
	}
}

func TestPacketTooLarge(t *testing.T) {
	s := newFakeServer(t)
	c := dial(t, s, Options{HeartbeatInterval: -1, MaxPacketSize: 1024})
	requireErrorIs(t, c.Send("BigNotify", 0, make([]byte, 2000)), ErrPacketTooLarge)
	_, err := c.Request(ctxT(t), "BigRequest", 0, make([]byte, 2000))
	requireErrorIs(t, err, ErrPacketTooLarge)
	if err := c.Send("", 0, nil); !errors.Is(err, protocol.ErrMalformedHeader) {
		t.Fatalf("empty MsgId: %v", err)
	}
	// The connection is still usable and no sequence leaked.
	if _, err := c.Request(ctxT(t), "EchoRequest", 0, nil); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 0 {
		t.Fatalf("%d sequences leaked", len(c.pending))
	}
}

// TestWriteDeadline: a peer that never reads must not block a writer forever.
func TestWriteDeadline(t *testing.T) {
	cli, srv := net.Pipe() // synchronous: writes block until read
	defer srv.Close()
	c := New(cli, Options{HeartbeatInterval: -1, WriteTimeout: 30 * time.Millisecond})
	defer c.Close()
	err := c.Send("Notify", 0, []byte("x"))
	requireErrorIs(t, err, os.ErrDeadlineExceeded)
	requireErrorIs(t, c.Err(), os.ErrDeadlineExceeded)
	<-c.Done()
}

func TestCloseNoGoroutineLeak(t *testing.T) {
	eventually(t, 5*time.Second, "earlier tests' client goroutines to exit", func() bool { return len(clientGoroutines()) == 0 })
	s := newFakeServer(t)
	before := runtime.NumGoroutine()

	c := dial(t, s, Options{HeartbeatInterval: 5 * time.Millisecond})
	if _, err := c.Request(ctxT(t), "EchoRequest", 0, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a heartbeat", func() bool { return s.heartbeats.Load() >= 1 })
	// A request left waiting when Close is called fails with ErrClosed.
	s2 := newFakeServer(t, forwarding)
	c2 := dial(t, s2, quiet)
	waiting := make(chan error, 1)
	go func() {
		_, err := c2.Request(context.Background(), "StuckRequest", 0, nil)
		waiting <- err
	}()
	s2.nextReq()

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-waiting:
		requireErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("waiting request not failed by Close")
	}
	if c.Err() != ErrClosed {
		t.Fatalf("Err = %v", c.Err())
	}
	if _, ok := <-c.Pushes(); ok {
		t.Fatal("Pushes not closed")
	}
	_, err := c.Request(context.Background(), "EchoRequest", 0, nil)
	requireErrorIs(t, err, ErrClosed)
	_, err = c.Heartbeat(context.Background())
	requireErrorIs(t, err, ErrClosed)

	// Close has waited for the client's goroutines, which may still be
	// unwinding their last deferred calls.
	eventually(t, 5*time.Second, "client goroutines to exit after Close", func() bool { return len(clientGoroutines()) == 0 })
	// The fake servers' per-connection goroutines exit once they see EOF.
	eventually(t, 5*time.Second, "goroutine count back to its starting value", func() bool {
		return runtime.NumGoroutine() <= before+1 // +1: s2's accept loop
	})
}

func TestTLS(t *testing.T) {
	certs, serverCfg := testutil.ServerTLS(t)
	s := newFakeServer(t, withTLS(serverCfg))
	c := dial(t, s, Options{HeartbeatInterval: -1, TLSConfig: &tls.Config{RootCAs: certs.Pool}})
	r, err := c.Request(ctxT(t), "EchoRequest", 1, []byte("secure"))
	if err != nil || string(r.Payload) != "secure" {
		t.Fatalf("TLS request: %+v, %v", r, err)
	}
	// A client that does not trust the certificate fails to Dial.
	ctx := ctxT(t)
	if _, err := Dial(ctx, s.addr(), Options{TLSConfig: &tls.Config{}}); err == nil {
		t.Fatal("Dial trusted an unknown certificate")
	}
}

func TestDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Dial(ctxT(t), addr, Options{}); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}
