package session

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Per-session memory of idle authenticated sessions, measured in-process:
// Go heap in use plus goroutine stacks after a forced GC, above the figure
// before the listener started, divided by the number of sessions. Client
// and server live in the same process; the clients hold only their sockets
// (no goroutine, no buffer), which the "raw" mode (a plain Go echo server:
// one goroutine and a 4 KiB buffer per connection) pays in the same way.

// memSessions is how many sessions the memory test and benchmark open
// (PLAYHOUSE_MEM_SESSIONS overrides; client+server use two files each).
func memSessions() int {
	if v, err := strconv.Atoi(os.Getenv("PLAYHOUSE_MEM_SESSIONS")); err == nil && v > 0 && v <= 8000 {
		return v
	}
	return 2000
}

// inUse is Go heap plus stacks in use after a forced GC.
func inUse() uint64 {
	heap, stack := inUseSplit()
	return heap + stack
}

// inUseSplit is Go heap and stacks in use after a forced GC.
func inUseSplit() (heap, stack uint64) {
	for range 4 { // each cycle halves a stack that is mostly unused
		runtime.GC()
	}
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

// memServer is a server under measurement: its address, how to dial and
// authenticate one client, and how to wait until n sessions are idle.
type memServer struct {
	addr  string
	open  func(tb testing.TB, addr string, i int) net.Conn
	ready func(n int) bool
	burst func(tb testing.TB, c net.Conn)
	stop  func()
}

// measureIdle opens n authenticated idle sessions on the named server kind
// ("raw", "tcp", "ws") and returns heap+stack bytes per session. With burst,
// every client first exchanges a burst of traffic that then passes.
func measureIdle(tb testing.TB, kind string, n int, burst bool) float64 {
	heap, stack := measureIdleSplit(tb, kind, n, burst)
	return heap + stack
}

// measureIdleSplit is measureIdle with heap and stack bytes apart.
func measureIdleSplit(tb testing.TB, kind string, n int, burst bool) (heap, stack float64) {
	tb.Helper()
	baseHeap, baseStack := inUseSplit()
	srv := startMemServer(tb, kind)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		srv.stop()
	}()
	for i := range n {
		c := srv.open(tb, srv.addr, i)
		conns = append(conns, c)
		if burst && srv.burst != nil {
			srv.burst(tb, c)
		}
	}
	testutil.WaitFor(tb, fmt.Sprintf("%d idle sessions", n), func() bool { return srv.ready(n) })
	usedHeap, usedStack := inUseSplit()
	if f := os.Getenv("PLAYHOUSE_MEM_PROFILE"); f != "" {
		if out, err := os.Create(f + "." + kind); err == nil {
			_ = pprof.WriteHeapProfile(out)
			out.Close()
		}
	}
	runtime.KeepAlive(conns)
	return float64(int64(usedHeap)-int64(baseHeap)) / float64(n), float64(int64(usedStack)-int64(baseStack)) / float64(n)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startMemServer(tb testing.TB, kind string) *memServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ms := &memServer{addr: ln.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	switch kind {
	case "raw":
		var mu sync.Mutex
		var count int
		var conns []net.Conn
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = transport.Serve(ctx, ln, transport.AcceptOptions{Logger: quietLogger()}, func(c net.Conn) {
				mu.Lock()
				count++
				conns = append(conns, c)
				mu.Unlock()
				buf := make([]byte, 4<<10)
				for {
					n, err := c.Read(buf)
					if err != nil {
						c.Close()
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						c.Close()
						return
					}
				}
			})
		}()
		ms.open = func(tb testing.TB, addr string, i int) net.Conn {
			c := dialMem(tb, addr)
			req := authFrame(tb, i)
			writeAll(tb, c, req)
			readN(tb, c, len(req))
			return c
		}
		ms.burst = rawBurst
		ms.ready = func(n int) bool { mu.Lock(); defer mu.Unlock(); return count >= n }
		ms.stop = func() {
			cancel()
			wg.Wait()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
		}
		return ms
	}
	mgr, err := NewManager(Options{Handler: echoHandler{HandlerFuncs{Auth: func(_ *Session, p *Packet) AuthResult {
		return AuthResult{AccountID: string(p.Payload)}
	}}}, Logger: quietLogger(), MaxConnections: 20000, MaxConnectionsPerIP: 20000, RatePerSecond: -1, BytesPerSecond: -1})
	if err != nil {
		tb.Fatal(err)
	}
	authenticated := func(n int) bool {
		count := 0
		mgr.Range(func(s *Session) bool {
			if s.Authenticated() {
				count++
			}
			return true
		})
		return count >= n
	}
	ms.ready = authenticated
	switch kind {
	case "tcp":
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = transport.Serve(ctx, ln, transport.AcceptOptions{Logger: quietLogger()}, func(c net.Conn) {
				mgr.Go(transport.NewStreamConn(c, transport.KindTCP, mgr.Options().MaxPacketSize), nil)
			})
		}()
		ms.open = func(tb testing.TB, addr string, i int) net.Conn {
			c := dialMem(tb, addr)
			writeAll(tb, c, authFrame(tb, i))
			readFrame(tb, c)
			return c
		}
		ms.burst = streamBurst
	case "ws":
		wh, err := transport.NewWebSocketHandler(transport.WebSocketOptions{Accept: func(*http.Request) (func(transport.Conn), func(), error) {
			return func(c transport.Conn) { mgr.Go(c, nil) }, func() {}, nil
		}})
		if err != nil {
			tb.Fatal(err)
		}
		hs := &http.Server{Handler: wh, ErrorLog: nil, ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = hs.Serve(ln)
		}()
		ms.open = func(tb testing.TB, addr string, i int) net.Conn {
			c := dialMem(tb, addr)
			wsHandshake(tb, c, addr)
			writeAll(tb, c, wsClientFrame(authFrame(tb, i)))
			readWSFrame(tb, c)
			return c
		}
		ms.burst = wsBurst
		cancel = func() { hs.Close() }
	default:
		tb.Fatalf("unknown kind %q", kind)
	}
	ms.stop = func() {
		cancel()
		wg.Wait()
		wctx, wcancel := context.WithTimeout(context.Background(), testutil.Timeout)
		defer wcancel()
		mgr.AbortAll(ServerShutdown)
		_ = mgr.Wait(wctx)
	}
	return ms
}

func dialMem(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(testutil.Timeout))
	return c
}

func authFrame(tb testing.TB, i int) []byte {
	b, err := protocol.AppendRequest(nil, "AuthenticateRequest", 1, 0, []byte("acct-"+strconv.Itoa(i)))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func writeAll(tb testing.TB, c net.Conn, b []byte) {
	tb.Helper()
	if _, err := c.Write(b); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

func readN(tb testing.TB, c net.Conn, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		tb.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// readFrame reads one length-prefixed frame and checks it is a Success answer.
func readFrame(tb testing.TB, c net.Conn) {
	tb.Helper()
	n := binary.LittleEndian.Uint32(readN(tb, c, 4))
	checkAnswer(tb, readN(tb, c, int(n)))
}

func checkAnswer(tb testing.TB, body []byte) {
	tb.Helper()
	h, _, err := protocol.ParseResponse(body)
	if err != nil || h.ErrorCode != protocol.Success {
		tb.Fatalf("answer %+v, %v", h, err)
	}
}

// burstPayload is the payload of each request of a burst: 16 requests of
// 16 KiB, pipelined, make the outbox and the read buffer grow.
var burstPayload = make([]byte, 16<<10)

const burstRequests = 16

func burstFrames(tb testing.TB) []byte {
	var all []byte
	for i := range burstRequests {
		b, err := protocol.AppendRequest(nil, "EchoRequest", uint16(i+2), 0, burstPayload)
		if err != nil {
			tb.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

func streamBurst(tb testing.TB, c net.Conn) {
	frames := burstFrames(tb)
	go func() { _, _ = c.Write(frames) }()
	for range burstRequests {
		readFrame(tb, c)
	}
}

func rawBurst(tb testing.TB, c net.Conn) {
	frames := burstFrames(tb)
	go func() { _, _ = c.Write(frames) }()
	readN(tb, c, len(frames))
}

func wsBurst(tb testing.TB, c net.Conn) {
	frames := burstFrames(tb)
	go func() { _, _ = c.Write(wsClientFrame(frames)) }()
	for range burstRequests {
		readWSFrame(tb, c)
	}
}

// wsHandshake performs a minimal client upgrade on c.
func wsHandshake(tb testing.TB, c net.Conn, addr string) {
	tb.Helper()
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	writeAll(tb, c, []byte(req))
	// Read the response byte by byte up to the blank line, so no frame
	// byte is consumed into a buffer the test would then have to keep.
	var head []byte
	one := make([]byte, 1)
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if _, err := io.ReadFull(c, one); err != nil {
			tb.Fatalf("handshake: %v (%q)", err, head)
		}
		head = append(head, one[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(head))), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("handshake response %q: %v", head, err)
	}
}

// wsClientFrame wraps payload in one masked binary WebSocket frame (zero mask).
func wsClientFrame(payload []byte) []byte {
	b := []byte{0x82}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, 0, 0, 0, 0) // a zero mask leaves the payload as it is
	return append(b, payload...)
}

// readWSFrame reads one unmasked server frame holding one PlayHouse frame.
func readWSFrame(tb testing.TB, c net.Conn) {
	tb.Helper()
	h := readN(tb, c, 2)
	if h[0] != 0x82 {
		tb.Fatalf("websocket frame type %#x", h[0])
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		n = int(binary.BigEndian.Uint16(readN(tb, c, 2)))
	case 127:
		n = int(binary.BigEndian.Uint64(readN(tb, c, 8)))
	}
	msg := readN(tb, c, n)
	checkAnswer(tb, msg[protocol.LengthSize:])
}

// idleTargets are issue 9's targets for an idle authenticated session
// (heap+stack after GC), with a margin for what a loaded machine and the
// in-process clients add.
var idleTargets = map[string]float64{"tcp": 8 << 10, "ws": 16 << 10}

// idleMargin is the slack over the target the test allows.
const idleMargin = 1.25

// TestIdleSessionMemory checks the heap+stack cost of an idle authenticated
// session on TCP and WebSocket, right after authentication and after a burst
// of traffic has passed, against issue 9's targets with a margin.
func TestIdleSessionMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("memory figures need a full, non-race run")
	}
	n := min(memSessions(), 1000)
	for _, kind := range []string{"tcp", "ws"} {
		for _, burst := range []bool{false, true} {
			name := kind
			if burst {
				name += "/after-burst"
			}
			t.Run(name, func(t *testing.T) {
				per := measureIdle(t, kind, n, burst)
				t.Logf("%s: %.0f bytes per idle session (%d sessions)", name, per, n)
				if limit := idleTargets[kind] * idleMargin; per > limit {
					t.Errorf("%s: %.0f bytes per idle session, want <= %.0f", name, per, limit)
				}
			})
		}
	}
}

// BenchmarkIdleSessionMemory reports heap+stack bytes per idle authenticated
// session ("B/session") for the engine on TCP and WebSocket and for a raw Go
// echo server, each with and without a burst of traffic first.
// Run: go test -run '^$' -bench IdleSessionMemory -benchtime 1x ./pkg/session
func BenchmarkIdleSessionMemory(b *testing.B) {
	n := memSessions()
	for _, kind := range []string{"raw", "tcp", "ws"} {
		for _, burst := range []bool{false, true} {
			name := kind
			if burst {
				name += "-burst"
			}
			b.Run(name, func(b *testing.B) {
				var heap, stack float64
				for b.Loop() {
					heap, stack = measureIdleSplit(b, kind, n, burst)
				}
				b.ReportMetric(heap+stack, "B/session")
				b.ReportMetric(heap, "heap-B/session")
				b.ReportMetric(stack, "stack-B/session")
			})
		}
	}
}

// BenchmarkConnectAuth measures connect + authenticate + close cycles over
// loopback TCP, one at a time (the client is in the same process).
func BenchmarkConnectAuth(b *testing.B) {
	srv := startMemServer(b, "tcp")
	defer srv.stop()
	i := 0
	for b.Loop() {
		c := srv.open(b, srv.addr, i)
		c.Close()
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}
