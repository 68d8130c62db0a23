package transport

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// blockingConn's WriteFrames waits for release, so a batch stays in flight.
type blockingConn struct {
	Conn
	entered chan int
	release chan struct{}
}

func (c *blockingConn) WriteFrames(b []byte) error {
	c.entered <- len(b)
	<-c.release
	return nil
}
func (c *blockingConn) SetWriteDeadline(time.Time) error { return nil }

func appendFrame(o *Outbox, n int) error {
	return o.Append(func(dst []byte) ([]byte, error) { return protocol.AppendFrame(dst, make([]byte, n)), nil })
}

// Pending counts the batch being written, not only the queue: the limit
// holds for every byte not yet written.
func TestOutboxPendingCountsBatchInFlight(t *testing.T) {
	o := NewOutbox(3000)
	c := &blockingConn{entered: make(chan int, 8), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- o.Run(c, time.Second) }()
	if err := appendFrame(o, 1996); err != nil { // 2000 bytes with the prefix
		t.Fatal(err)
	}
	<-c.entered // the writer holds the batch
	if p := o.Pending(); p != 2000 {
		t.Fatalf("pending during the write = %d, want 2000", p)
	}
	if err := appendFrame(o, 1200); !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("append past the limit with a batch in flight: %v", err)
	}
	if err := appendFrame(o, 900); err != nil {
		t.Fatalf("append within the limit: %v", err)
	}
	close(c.release)
	o.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if o.Pending() != 0 {
		t.Fatalf("pending after flush = %d", o.Pending())
	}
}

// slowReader reads chunk bytes every pause until EOF.
func slowReader(c net.Conn, chunk int, pause time.Duration) {
	buf := make([]byte, chunk)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		time.Sleep(pause)
	}
}

// The write timeout is a no-progress deadline: a peer that reads steadily
// but slower than the whole batch could be written in one timeout is not
// cut, while one that stops reading is.
func TestOutboxNoProgressDeadline(t *testing.T) {
	srv, cli := tcpPair(t)
	_ = srv.(*net.TCPConn).SetWriteBuffer(64 << 10)
	_ = cli.(*net.TCPConn).SetReadBuffer(64 << 10)
	go slowReader(cli, 64<<10, 20*time.Millisecond)
	o := NewOutbox(16 << 20)
	for range 16 {
		if err := appendFrame(o, 512<<10); err != nil {
			t.Fatal(err)
		}
	}
	o.Close()
	start := time.Now()
	// 8 MiB at 64 KiB per 20 ms takes well over the 1 s timeout.
	if err := o.Run(NewStreamConn(srv, KindTCP, 1<<20), time.Second); err != nil {
		t.Fatalf("steady reader cut after %s: %v", time.Since(start), err)
	}
	if time.Since(start) < time.Second {
		t.Skip("socket buffers absorbed the batch; the deadline was never at stake")
	}
}

// After a burst the outbox keeps no buffer and no writer goroutine.
func TestOutboxReleasesBurstMemory(t *testing.T) {
	srv, cli := tcpPair(t)
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	o := NewOutbox(8 << 20)
	done := make(chan error, 1)
	go func() { done <- o.Run(NewStreamConn(srv, KindTCP, 4<<20), time.Second) }()
	for range 4 {
		if err := appendFrame(o, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "burst written", func() bool { return o.Pending() == 0 })
	testutil.WaitFor(t, "burst buffers released", func() bool { return o.Retained() == 0 && !o.Running() })
	o.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Batches go out in pieces of whole frames; onWrite sees every frame.
func TestOutboxPieces(t *testing.T) {
	var b []byte
	for range 40 {
		b = protocol.AppendFrame(b, make([]byte, 4<<10))
	}
	b = protocol.AppendFrame(b, make([]byte, 200<<10))
	total, frames := 0, 0
	for rest := b; len(rest) > 0; {
		n, f := piece(rest)
		if n > writeChunk && f != 1 {
			t.Fatalf("piece of %d bytes holds %d frames", n, f)
		}
		total += n
		frames += f
		rest = rest[n:]
	}
	if total != len(b) || frames != 41 {
		t.Fatalf("pieces cover %d of %d bytes, %d frames", total, len(b), frames)
	}
}

// The no-progress deadline holds on WebSocket too: one large message to a
// peer reading steadily is not cut by a write timeout shorter than the
// whole write.
func TestWebSocketWriteNoProgressDeadline(t *testing.T) {
	c, cli := wsPair(t, WebSocketOptions{MaxPacketSize: 32 << 20})
	if tc, ok := cli.NetConn().(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(64 << 10)
	}
	const size = 16 << 20
	got := make(chan int, 1)
	go func() {
		_, r, err := cli.NextReader()
		if err != nil {
			got <- -1
			return
		}
		buf := make([]byte, 64<<10)
		total := 0
		for {
			n, err := r.Read(buf)
			total += n
			if err != nil {
				got <- total
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	o := NewOutbox(32 << 20)
	if err := appendFrame(o, size); err != nil {
		t.Fatal(err)
	}
	o.Close()
	start := time.Now()
	// 16 MiB at 64 KiB per 10 ms takes well over the 1 s timeout.
	if err := o.Run(c, time.Second); err != nil {
		t.Fatalf("steady WebSocket reader cut after %s: %v", time.Since(start), err)
	}
	if n := <-got; n != size+4 {
		t.Fatalf("peer read %d bytes, want %d", n, size+4)
	}
}
