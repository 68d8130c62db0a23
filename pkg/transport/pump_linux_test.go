package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// handlerFunc adapts a function to FrameHandler.
type handlerFunc func(body []byte) bool

func (f handlerFunc) Frame(body []byte) bool { return f(body) }

// echoHandler writes every frame back on c.
func echoHandler(t *testing.T, c Conn) FrameHandler {
	return handlerFunc(func(body []byte) bool {
		if err := c.WriteFrames(protocol.AppendFrame(nil, body)); err != nil {
			t.Errorf("echo: %v", err)
			return false
		}
		return true
	})
}

// pingPong runs n request/response round trips from cli through a pump
// echoing on srv and returns the system calls the pump made to read.
// Waiting for each answer before the next request is the case in which an
// input that arrives while the pump decides to wait must not be lost: a
// lost wake-up hangs the client (its deadline then fails the test).
func pingPong(t *testing.T, idleWatched bool, n int) int {
	srv, cli := tcpPair(t)
	c := NewStreamConn(srv, KindTCP, 1024)
	done := make(chan error, 1)
	go func() { done <- c.(FramePump).PumpFrames(echoHandler(t, c), idleWatched) }()
	_ = cli.SetDeadline(time.Now().Add(testutil.Timeout))
	req := protocol.AppendFrame(nil, []byte("ping-0123456789"))
	resp := make([]byte, len(req))
	for i := range n {
		if _, err := cli.Write(req); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, err := io.ReadFull(cli, resp); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if !bytes.Equal(resp, req) {
			t.Fatalf("round %d: %q", i, resp)
		}
	}
	cli.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("pump ended with %v, want EOF", err)
	}
	return int(c.(*streamConn).sock.calls)
}

// A pump answers every request of a ping-pong client. Watched for idle
// reads, it skips the read that finds nothing: about one read per request
// (a wake-up that finds nothing new costs one more now and then), against
// two (the request, then nothing) for a pump that may not wait unread.
func TestPumpPingPong(t *testing.T) {
	const n = 2000
	watched := pingPong(t, true, n)
	plain := pingPong(t, false, n)
	t.Logf("reads per request: watched %.2f, not watched %.2f", float64(watched)/n, float64(plain)/n)
	if watched < n || float64(watched)/n > 1.25 {
		t.Fatalf("watched pump: %d reads for %d requests", watched, n)
	}
	if float64(plain)/n < 1.75 {
		t.Fatalf("pump not watched: %d reads for %d requests", plain, n)
	}
}

// Frames split across writes, and several in one write, come out whole and
// in order; a partial frame waits in the reader across a read deadline.
func TestPumpSplitFramesAndDeadline(t *testing.T) {
	srv, cli := tcpPair(t)
	c := NewStreamConnWith(srv, KindTCP, StreamOptions{MaxPacketSize: 1 << 16})
	var stream []byte
	for i := range 50 {
		stream = protocol.AppendFrame(stream, bytes.Repeat([]byte{byte(i)}, 1+i*97))
	}
	// The first half of the first frame, then a deadline.
	if _, err := cli.Write(stream[:3]); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	got := 0
	check := handlerFunc(func(body []byte) bool {
		if len(body) != 1+got*97 || body[0] != byte(got) || body[len(body)-1] != byte(got) {
			t.Errorf("frame %d: %d bytes of %d", got, len(body), body[0])
			return false
		}
		got++
		return got < 50
	})
	if err := c.(FramePump).PumpFrames(check, true); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pump before the deadline: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	go func() {
		for rest := stream[3:]; len(rest) > 0; {
			k := min(len(rest), 1+len(rest)/7)
			if _, err := cli.Write(rest[:k]); err != nil {
				return
			}
			rest = rest[k:]
		}
	}()
	if err := c.(FramePump).PumpFrames(check, true); err != nil || got != 50 {
		t.Fatalf("pump: %v after %d frames", err, got)
	}
}

// A handler may close the connection it is pumped from (a kick, an abort):
// the pump returns and the peer sees the end of the stream.
func TestPumpCloseFromHandler(t *testing.T) {
	srv, cli := tcpPair(t)
	c := NewStreamConn(srv, KindTCP, 1024)
	_, _ = cli.Write(protocol.AppendFrame(nil, []byte("bye")))
	done := make(chan error, 1)
	go func() {
		done <- c.(FramePump).PumpFrames(handlerFunc(func([]byte) bool {
			if err := c.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			return true // read on: the read fails, the connection is closed
		}), true)
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("pump on a closed connection returned nil")
		}
	case <-time.After(testutil.Timeout):
		t.Fatal("pump did not return after the handler closed the connection")
	}
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if n, err := cli.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("peer read %d, %v; want EOF", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

// A close from another goroutine ends the connection at once, even while a
// handler that does not return holds the pump: the peer sees the end of the
// stream, and the pump returns once the handler does.
func TestPumpCloseWhileHandlerBlocked(t *testing.T) {
	srv, cli := tcpPair(t)
	c := NewStreamConn(srv, KindTCP, 1024)
	release, inHandler := make(chan struct{}), make(chan struct{})
	_, _ = cli.Write(protocol.AppendFrame(nil, []byte("block")))
	done := make(chan error, 1)
	go func() {
		done <- c.(FramePump).PumpFrames(handlerFunc(func([]byte) bool {
			close(inHandler)
			<-release
			return true
		}), true)
	}()
	<-inHandler
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if n, err := cli.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("peer read %d, %v while the handler blocks; want EOF", n, err)
	}
	close(release)
	if err := <-done; err == nil {
		t.Fatal("pump on a closed connection returned nil")
	}
}

// resetAfter writes b on cli and resets the connection (SO_LINGER 0).
func resetAfter(t *testing.T, cli net.Conn, b []byte) {
	t.Helper()
	if err := cli.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write(b); err != nil {
		t.Fatal(err)
	}
	cli.Close()
}

// isReset reports whether err is a reset read, shaped as a net.Conn read's.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "read" && errors.Is(err, syscall.ECONNRESET)
}

// A reset connection fails the pump with the error a net.Conn read gives:
// at once for a caller that does not watch for idle reads; for one that
// does, a reset that came with the last input shows once the wait is cut
// (here by the read deadline), on the next pump's first read.
func TestPumpReset(t *testing.T) {
	nothing := handlerFunc(func([]byte) bool { return true })
	srv, cli := tcpPair(t)
	c := NewStreamConn(srv, KindTCP, 1024)
	resetAfter(t, cli, []byte{1})
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if err := c.(FramePump).PumpFrames(nothing, false); !isReset(err) {
		t.Fatalf("pump on a reset connection: %v (%T)", err, err)
	}

	for range 20 {
		srv, cli := tcpPair(t)
		c := NewStreamConn(srv, KindTCP, 1024)
		resetAfter(t, cli, []byte{1})
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		err := c.(FramePump).PumpFrames(nothing, true)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
			err = c.(FramePump).PumpFrames(nothing, true)
		}
		if !isReset(err) {
			t.Fatalf("watched pump on a reset connection: %v (%T)", err, err)
		}
	}
}

// An end of stream right after the last input ends the pump, also when the
// input and the end arrive together while the pump waits (one readiness for
// both): the pump never waits past a pending end of stream.
func TestPumpEndOfStreamAfterLastInput(t *testing.T) {
	for i := range 100 {
		srv, cli := tcpPair(t)
		c := NewStreamConn(srv, KindTCP, 1024)
		_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
		_ = cli.SetDeadline(time.Now().Add(testutil.Timeout))
		frames := 0
		done := make(chan error, 1)
		go func() {
			done <- c.(FramePump).PumpFrames(handlerFunc(func(body []byte) bool {
				if frames++; frames == 1 {
					_ = c.WriteFrames(protocol.AppendFrame(nil, body))
				}
				return true
			}), true)
		}()
		// The answer to the first frame: the pump runs, and then waits.
		first := protocol.AppendFrame(nil, []byte("first"))
		if _, err := cli.Write(first); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(cli, make([]byte, len(first))); err != nil {
			t.Fatal(err)
		}
		last := protocol.AppendFrame(nil, []byte("last"))
		want := io.EOF
		if i%2 == 1 {
			last, want = append(last, 4, 0), io.ErrUnexpectedEOF // and part of a frame
		}
		_, _ = cli.Write(last)
		cli.Close()
		if err := <-done; frames != 2 || !errors.Is(err, want) {
			t.Fatalf("round %d: %d frames, then %v; want 2, then %v", i, frames, err, want)
		}
	}
}

// Behind a PROXY-protocol header, the bytes read with the header are
// replayed first (through the wrapper), then the socket is pumped.
func TestPumpAfterProxyHeader(t *testing.T) {
	p, err := NewProxyPolicy([]string{"127.0.0.1/32"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := tcpPair(t)
	msg := []byte("PROXY TCP4 203.0.113.7 10.0.0.1 40001 7777\r\n")
	msg = protocol.AppendFrame(msg, []byte("first"))
	msg = append(msg, 9, 0) // half of the next frame's length
	if _, err := cli.Write(msg); err != nil {
		t.Fatal(err)
	}
	pc, err := p.ReadHeader(srv)
	if err != nil {
		t.Fatal(err)
	}
	c := NewStreamConnWith(pc, KindTCP, StreamOptions{MaxPacketSize: 1024, Reader: pc})
	var got []string
	h := handlerFunc(func(body []byte) bool {
		got = append(got, string(body))
		return len(got) < 3
	})
	go func() {
		_, _ = cli.Write([]byte{0, 0})
		_, _ = cli.Write([]byte("second!!!"))
		_, _ = cli.Write(protocol.AppendFrame(nil, []byte("third")))
	}()
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	for len(got) < 3 {
		if err := c.(FramePump).PumpFrames(h, true); err != nil {
			t.Fatalf("pump: %v after %q", err, got)
		}
	}
	if fmt.Sprint(got) != "[first second!!! third]" {
		t.Fatalf("frames %q", got)
	}
}

// Over TLS the pump reads through crypto/tls.
func TestPumpOverTLS(t *testing.T) {
	srv, cli := tlsPair(t)
	c := NewStreamConn(srv, KindTLSTCP, 1024)
	go func() {
		w := bufio.NewWriter(cli)
		for i := range 3 {
			_, _ = w.Write(protocol.AppendFrame(nil, []byte{byte('a' + i)}))
		}
		_ = w.Flush()
	}()
	var got []byte
	err := c.(FramePump).PumpFrames(handlerFunc(func(body []byte) bool {
		got = append(got, body...)
		return len(got) < 3
	}), true)
	if err != nil || string(got) != "abc" {
		t.Fatalf("pump over TLS: %q, %v", got, err)
	}
}
