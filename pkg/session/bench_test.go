package session

import (
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// nullConn is an in-memory transport.Conn that discards writes; it isolates
// the engine's per-packet work from the kernel in BenchmarkDispatch.
type nullConn struct{}

func (nullConn) ReadFrame() ([]byte, error)       { return nil, io.EOF }
func (nullConn) WriteFrames([]byte) error         { return nil }
func (nullConn) SetReadDeadline(time.Time) error  { return nil }
func (nullConn) SetWriteDeadline(time.Time) error { return nil }
func (nullConn) Close() error                     { return nil }
func (nullConn) CloseWrite(int, string) error     { return nil }
func (nullConn) SetReadLimit(int)                 {}
func (nullConn) SetControlHook(func(int) error)   {}
func (nullConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (nullConn) Kind() transport.Kind             { return transport.KindTCP }

// echoHandler replies with the request payload.
type echoHandler struct{ HandlerFuncs }

func (echoHandler) OnPacket(s *Session, p *Packet) { _ = s.Reply(p, protocol.Success, p.Payload) }

// benchSession returns an authenticated session whose outbox is drained by
// the benchmark itself.
func benchSession(b *testing.B) *Session {
	b.Helper()
	m, err := NewManager(Options{Handler: echoHandler{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RatePerSecond: -1, BytesPerSecond: -1, MaxPendingOutboundBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	s := m.newSession(nullConn{})
	s.authenticated.Store(true)
	return s
}

// BenchmarkDispatch measures one request through the engine: header parse,
// rate limit, handler, reply encoded into the outbox, and the writer goroutine
// handing the batch to a connection that discards it. It must not allocate.
func BenchmarkDispatch(b *testing.B) {
	s := benchSession(b)
	go func() { _ = s.out.Run(nullConn{}, 0) }()
	defer s.out.Abort()
	req, _ := protocol.AppendRequest(nil, "EchoRequest", 1, 1234, make([]byte, 32))
	body := req[protocol.LengthSize:]
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		if !s.dispatch(body, time.Now()) {
			b.Fatal("dispatch failed")
		}
	}
}

// TestDispatchZeroAlloc pins the engine's hot path at zero allocations per
// request (deterministic: it counts allocations, not time).
func TestDispatchZeroAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	m, err := NewManager(Options{Handler: echoHandler{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxPendingOutboundBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := m.newSession(nullConn{})
	s.authenticated.Store(true)
	req, _ := protocol.AppendRequest(nil, "EchoRequest", 1, 1234, make([]byte, 32))
	body := req[protocol.LengthSize:]
	// Warm up: intern the name and grow the outbox once.
	for i := 0; i < 100; i++ {
		s.dispatch(body, time.Now())
	}
	s.limiter = nil
	s.byteLimiter = nil
	// A fresh queue with room for every reply below (nothing drains it), so
	// its growth is not what is measured.
	o := transport.NewOutbox(64 << 20)
	if err := o.Append(func(dst []byte) ([]byte, error) { return append(dst, make([]byte, 1<<20)...)[:len(dst)], nil }); err != nil {
		t.Fatal(err)
	}
	s.out = o
	s.dispatch(body, time.Now())
	if n := totalAllocs(1000, func() { s.dispatch(body, time.Now()) }); n != 0 {
		t.Fatalf("1000 dispatches allocated %d times, want 0", n)
	}
}

// The whole reply path over a real socket (the reply written in place by
// the dispatching goroutine) allocates nothing either.
func TestDispatchDirectWriteZeroAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	srv, cli := loopbackPair(t)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 64<<10)
		for {
			if _, err := cli.Read(buf); err != nil {
				return
			}
		}
	}()
	m, err := NewManager(Options{Handler: echoHandler{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RatePerSecond: -1, BytesPerSecond: -1})
	if err != nil {
		t.Fatal(err)
	}
	s := m.newSession(transport.NewStreamConn(srv, transport.KindTCP, protocol.DefaultMaxPacketSize))
	s.authenticated.Store(true)
	s.out.Start(s.conn, time.Second, nil)
	req, _ := protocol.AppendRequest(nil, "EchoRequest", 1, 1234, make([]byte, 32))
	body := req[protocol.LengthSize:]
	for range 100 { // warm up: intern the name, fill the buffer pool
		s.dispatch(body, time.Now())
	}
	if n := totalAllocs(1000, func() { s.dispatch(body, time.Now()) }); n != 0 {
		t.Fatalf("1000 dispatches with direct writes allocated %d times, want 0", n)
	}
	if s.out.Running() {
		t.Log("a writer goroutine ran (the socket buffer filled): not the path this test meant to measure")
	}
	s.out.Abort()
	srv.Close()
	<-drained
}

// loopbackPair returns both ends of a real loopback TCP connection, closed
// at cleanup.
func loopbackPair(t *testing.T) (server, client net.Conn) { return testutil.TCPPair(t) }

// totalAllocs runs fn n times and returns the total number of heap
// allocations, strictly (testing.AllocsPerRun rounds the average down, so
// 999 allocations in 1000 runs would pass as 0).
func totalAllocs(n int, fn func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	fn() // warm up once, as AllocsPerRun does
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		fn()
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

// BenchmarkEchoLoopback measures pipelined echo round trips over a real
// loopback TCP connection (client and server in this process).
func BenchmarkEchoLoopback(b *testing.B) {
	m, err := NewManager(Options{Handler: echoHandler{HandlerFuncs{Auth: func(*Session, *Packet) AuthResult { return AuthResult{AccountID: "bench"} }}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RatePerSecond: -1, BytesPerSecond: -1})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		_ = transport.Serve(b.Context(), ln, transport.AcceptOptions{}, func(c net.Conn) {
			m.Serve(transport.NewStreamConn(c, transport.KindTCP, protocol.DefaultMaxPacketSize), nil)
		})
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	auth, _ := protocol.AppendRequest(nil, "AuthenticateRequest", 1, 0, []byte("x"))
	c.Write(auth)
	fr := protocol.NewFrameReader(c, protocol.DefaultMaxPacketSize)
	fr.SetBufferPool(protocol.NewBufferPool(1))
	if _, err := fr.Next(); err != nil {
		b.Fatal(err)
	}
	const window = 64
	var batch []byte
	for i := 0; i < window; i++ {
		batch, _ = protocol.AppendRequest(batch, "EchoRequest", uint16(i+1), 1234, make([]byte, 32))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(batch) / window))
	n := 0
	for b.Loop() {
		if n%window == 0 {
			if _, err := c.Write(batch); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := fr.Next(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	for n%window != 0 {
		fr.Next()
		n++
	}
}
