package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// seqFrame appends a frame whose body is producer, seq and pad bytes.
func seqFrame(dst []byte, producer, seq uint32, pad int) []byte {
	body := make([]byte, 8+pad)
	binary.LittleEndian.PutUint32(body, producer)
	binary.LittleEndian.PutUint32(body[4:], seq)
	return protocol.AppendFrame(dst, body)
}

// framedPair returns a server Conn of kind "tcp" or "ws" over loopback and
// a function reading the client's next frame body (checking, on WebSocket,
// that each message holds exactly one frame).
func framedPair(t *testing.T, kind string) (Conn, func() ([]byte, error)) {
	t.Helper()
	if kind == "tcp" {
		srv, cli := tcpPair(t)
		return NewStreamConn(srv, KindTCP, 1<<20), protocol.NewFrameReader(cli, 1<<20).Next
	}
	c, cli := wsPair(t, WebSocketOptions{})
	return c, func() ([]byte, error) {
		_, msg, err := cli.ReadMessage()
		if err != nil {
			return nil, err
		}
		if len(msg) < protocol.LengthSize || int(binary.LittleEndian.Uint32(msg)) != len(msg)-protocol.LengthSize {
			return nil, fmt.Errorf("message of %d bytes is not one frame", len(msg))
		}
		return msg[protocol.LengthSize:], nil
	}
}

// startedOutbox runs an outbox on c and counts what its hook reports written.
func startedOutbox(t *testing.T, c Conn, max int) (*Outbox, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	o := NewOutbox(max)
	var frames, bytes atomic.Int64
	o.SetWriteObserver(WriteObserverFunc(func(b []byte) {
		for rest := b; len(rest) > 0; {
			frame, r, err := nextFrame(rest)
			if err != nil {
				t.Errorf("onWrite got a partial frame: %v", err)
				return
			}
			frames.Add(1)
			bytes.Add(int64(len(frame)))
			rest = r
		}
	}))
	done := make(chan error, 1)
	o.Start(c, testutil.Timeout, func(err error) { done <- err })
	t.Cleanup(func() {
		o.Abort()
		<-done
	})
	return o, &frames, &bytes
}

// With nothing queued, Append puts the frame on the wire before it returns,
// on the caller's goroutine: no writer goroutine, nothing pending.
func TestDirectWriteBeforeAppendReturns(t *testing.T) {
	for _, kind := range []string{"tcp", "ws"} {
		t.Run(kind, func(t *testing.T) {
			c, next := framedPair(t, kind)
			o, frames, _ := startedOutbox(t, c, 1<<20)
			for i := range uint32(200) {
				if err := o.Append(func(dst []byte) ([]byte, error) { return seqFrame(dst, 1, i, 32), nil }); err != nil {
					t.Fatal(err)
				}
				if p, r := o.Pending(), o.Running(); p != 0 || r {
					t.Fatalf("frame %d: after Append pending=%d writer running=%v, want it written in place", i, p, r)
				}
				body, err := next()
				if err != nil {
					t.Fatal(err)
				}
				if got := binary.LittleEndian.Uint32(body[4:]); got != i {
					t.Fatalf("read frame %d, want %d", got, i)
				}
			}
			if n := frames.Load(); n != 200 {
				t.Fatalf("onWrite reported %d frames, want 200", n)
			}
		})
	}
}

// A peer that does not read fills the socket: the direct write takes what
// fits, the rest of that batch and everything after it go to the writer
// goroutine, no Append waits, and the peer gets every frame once, in order.
func TestDirectWriteLeftoverKeepsOrder(t *testing.T) {
	srv, cli := tcpPair(t)
	if tc, ok := cli.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(32 << 10)
	}
	if tc, ok := srv.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(32 << 10)
	}
	o, frames, bytes := startedOutbox(t, NewStreamConn(srv, KindTCP, 1<<20), 64<<20)
	const n = 400 // 400 frames of 16 KiB: far more than the socket buffers
	appended := make(chan error, 1)
	var total int64
	go func() {
		for i := range uint32(n) {
			if err := o.Append(func(dst []byte) ([]byte, error) { return seqFrame(dst, 1, i, 16<<10), nil }); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	// Every Append returns while the peer reads nothing.
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testutil.Timeout):
		t.Fatal("Append waited for the peer")
	}
	if o.Pending() == 0 {
		t.Fatal("nothing pending although the peer has read nothing")
	}
	fr := protocol.NewFrameReader(cli, 1<<20)
	for i := range uint32(n) {
		body, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got := binary.LittleEndian.Uint32(body[4:]); got != i || len(body) != 8+16<<10 {
			t.Fatalf("frame %d: got seq %d, %d bytes", i, got, len(body))
		}
		total += int64(len(body) + protocol.LengthSize)
	}
	waitFor(t, "all written", func() bool { return o.Pending() == 0 && !o.Running() })
	if frames.Load() != n || bytes.Load() != total {
		t.Fatalf("onWrite reported %d frames / %d bytes, want %d / %d", frames.Load(), bytes.Load(), n, total)
	}
}

// Producers on many goroutines (a broadcast, replies, pushes) share the
// socket: each producer's frames arrive in its order, each exactly once.
func TestDirectWriteConcurrentProducers(t *testing.T) {
	for _, kind := range []string{"tcp", "ws"} {
		t.Run(kind, func(t *testing.T) {
			c, next := framedPair(t, kind)
			o, frames, _ := startedOutbox(t, c, 64<<20)
			const producers, each = 8, 500
			var wg sync.WaitGroup
			for p := range uint32(producers) {
				wg.Go(func() {
					for i := range uint32(each) {
						pad := int(i%7) * 700 // some frames cross the 4 KiB batch buffer
						if err := o.Append(func(dst []byte) ([]byte, error) { return seqFrame(dst, p, i, pad), nil }); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			nextSeq := make([]uint32, producers)
			for range producers * each {
				body, err := next()
				if err != nil {
					t.Fatal(err)
				}
				p, seq := binary.LittleEndian.Uint32(body), binary.LittleEndian.Uint32(body[4:])
				if p >= producers || seq != nextSeq[p] {
					t.Fatalf("producer %d: got seq %d, want %d", p, seq, nextSeq[p])
				}
				nextSeq[p]++
			}
			wg.Wait()
			waitFor(t, "all reported written", func() bool { return frames.Load() == producers*each })
		})
	}
}

// TLS records must go through crypto/tls: a TLS stream never writes to the
// socket directly, and DisableDirectWrites turns it off for plain TCP.
func TestNoDirectWriteUnderTLSOrWhenDisabled(t *testing.T) {
	frame := protocol.AppendFrame(nil, []byte("hello"))
	tsrv, tcli := tlsPair(t)
	srv, cli := tcpPair(t)
	conns := map[string]struct {
		c    Conn
		peer net.Conn
	}{
		"tls":      {NewStreamConn(tsrv, KindTLSTCP, 1<<10), tcli},
		"disabled": {NewStreamConnWith(srv, KindTCP, StreamOptions{MaxPacketSize: 1 << 10, DisableDirectWrites: true}), cli},
	}
	for name, tc := range conns {
		t.Run(name, func(t *testing.T) {
			d := tc.c.(DirectWriter)
			left, err := d.TryWriteFrames(frame)
			if err != nil || !left {
				t.Fatalf("TryWriteFrames = %v, %v; want everything left", left, err)
			}
			_ = tc.c.SetWriteDeadline(time.Now().Add(testutil.Timeout))
			if err := d.FlushRest(); err != nil {
				t.Fatal(err)
			}
			_ = tc.peer.SetReadDeadline(time.Now().Add(testutil.Timeout))
			body, err := protocol.NewFrameReader(tc.peer, 1<<10).Next()
			if err != nil || string(body) != "hello" {
				t.Fatalf("peer read %q, %v", body, err)
			}
		})
	}
}

// A WebSocket handler with DisableDirectWrites leaves every message to the
// blocking path.
func TestWebSocketDirectWritesDisabled(t *testing.T) {
	c, cli := wsPair(t, WebSocketOptions{DisableDirectWrites: true})
	d := c.(DirectWriter)
	left, err := d.TryWriteFrames(protocol.AppendFrame(nil, []byte("hello")))
	if err != nil || !left {
		t.Fatalf("TryWriteFrames = %v, %v; want everything left", left, err)
	}
	_ = c.SetWriteDeadline(time.Now().Add(testutil.Timeout))
	if err := d.FlushRest(); err != nil {
		t.Fatal(err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if _, msg, err := cli.ReadMessage(); err != nil || string(msg[protocol.LengthSize:]) != "hello" {
		t.Fatalf("client read %q, %v", msg, err)
	}
}

// The engine encodes WebSocket messages itself: every length form (7-bit,
// 16-bit, 64-bit) and frames larger than the batch buffer reach a standard
// client as one binary message each, and nothing is written after the
// Close frame.
func TestWebSocketMessageEncoding(t *testing.T) {
	c, cli := wsPair(t, WebSocketOptions{MaxPacketSize: 1 << 20})
	sizes := []int{0, 1, 121, 122, 125, 126, 4000, 65531, 65532, 65535, 70000, 300000}
	var batch []byte
	for i, n := range sizes {
		body := make([]byte, n)
		for j := range body {
			body[j] = byte(i + j)
		}
		batch = protocol.AppendFrame(batch, body)
	}
	_ = c.SetWriteDeadline(time.Now().Add(testutil.Timeout))
	errc := make(chan error, 1)
	go func() { errc <- c.WriteFrames(batch) }()
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	for i, n := range sizes {
		typ, msg, err := cli.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != websocket.BinaryMessage || len(msg) != n+protocol.LengthSize || int(binary.LittleEndian.Uint32(msg)) != n {
			t.Fatalf("message %d: type %d, %d bytes, want one frame of %d", i, typ, len(msg), n)
		}
		for j, b := range msg[protocol.LengthSize:] {
			if b != byte(i+j) {
				t.Fatalf("message %d: byte %d is %d", i, j, b)
			}
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(websocket.CloseNormalClosure, "done"); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFrames(protocol.AppendFrame(nil, []byte("late"))); !errors.Is(err, websocket.ErrCloseSent) {
		t.Fatalf("write after the Close frame: %v, want ErrCloseSent", err)
	}
	d := c.(DirectWriter)
	if left, _ := d.TryWriteFrames(protocol.AppendFrame(nil, []byte("late"))); !left {
		t.Fatal("direct write after the Close frame went out")
	}
	if err := d.FlushRest(); !errors.Is(err, websocket.ErrCloseSent) {
		t.Fatalf("flush after the Close frame: %v, want ErrCloseSent", err)
	}
	_, _, err := cli.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("after the messages the client read %v, want the Close frame", err)
	}
}

// Control frames the library writes (pings here) never split a message the
// engine writes: both go through one lock.
func TestWebSocketPingsBetweenMessages(t *testing.T) {
	c, cli := wsPair(t, WebSocketOptions{MaxPacketSize: 1 << 20})
	pings := 0
	cli.SetPingHandler(func(string) error { pings++; return nil })
	o, _, _ := startedOutbox(t, c, 64<<20)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := c.(Pinger).Ping(time.Now().Add(testutil.Timeout)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	const n = 2000
	wg.Go(func() {
		for i := range uint32(n) {
			pad := int(i%5) * 3000
			if err := o.Append(func(dst []byte) ([]byte, error) { return seqFrame(dst, 0, i, pad), nil }); err != nil {
				t.Error(err)
				return
			}
		}
	})
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	for i := range uint32(n) {
		_, msg, err := cli.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := binary.LittleEndian.Uint32(msg[protocol.LengthSize+4:]); got != i || len(msg) != protocol.LengthSize+8+int(i%5)*3000 {
			t.Fatalf("message %d: seq %d, %d bytes", i, got, len(msg))
		}
	}
	close(stop)
	wg.Wait()
	if pings == 0 {
		t.Log("no ping arrived between the messages (timing); the framing was still checked")
	}
}

// Frames appended while held leave together: one write when the hold ends,
// in order, and none before.
func TestOutboxHoldGathersOneWrite(t *testing.T) {
	for _, kind := range []string{"tcp", "ws"} {
		t.Run(kind, func(t *testing.T) {
			c, next := framedPair(t, kind)
			o := NewOutbox(1 << 20)
			var mu sync.Mutex
			var writes []int // frames per write
			o.SetWriteObserver(WriteObserverFunc(func(b []byte) {
				n := 0
				for rest := b; len(rest) > 0; n++ {
					_, rest, _ = nextFrame(rest)
				}
				mu.Lock()
				writes = append(writes, n)
				mu.Unlock()
			}))
			done := make(chan error, 1)
			o.Start(c, testutil.Timeout, func(err error) { done <- err })
			o.Hold()
			for i := range uint32(20) {
				if err := o.Append(func(dst []byte) ([]byte, error) { return seqFrame(dst, 0, i, 16), nil }); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			if len(writes) != 0 || o.Running() || o.Pending() != 20*(4+8+16) {
				t.Fatalf("while held: writes %v, running %v, pending %d", writes, o.Running(), o.Pending())
			}
			mu.Unlock()
			o.Flush()
			for i := range uint32(20) {
				body, err := next()
				if err != nil {
					t.Fatal(err)
				}
				if got := binary.LittleEndian.Uint32(body[4:]); got != i {
					t.Fatalf("frame %d read as %d", i, got)
				}
			}
			waitFor(t, "written", func() bool { return o.Pending() == 0 && !o.Running() })
			mu.Lock()
			if len(writes) != 1 || writes[0] != 20 {
				t.Fatalf("writes (frames each) = %v, want one write of 20", writes)
			}
			mu.Unlock()
			o.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A direct write allocates nothing (it runs once per reply and per
// broadcast recipient).
func TestDirectWriteZeroAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	srv, cli := tcpPair(t)
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	c := NewStreamConn(srv, KindTCP, 1<<10).(*streamConn)
	frame := protocol.AppendFrame(nil, make([]byte, 64))
	if n := testing.AllocsPerRun(1000, func() { _, _ = c.TryWriteFrames(frame) }); n != 0 {
		t.Fatalf("TryWriteFrames allocates %.2f times per call", n)
	}
}
