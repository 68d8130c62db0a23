package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestFrameReaderGoesOnAfterTimeout: a read deadline's error is not sticky;
// the frame being read when it came (its first bytes buffered) is returned
// whole by the next Next, and the frame after it too.
func TestFrameReaderGoesOnAfterTimeout(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	fr := NewFrameReader(server, 1024)

	body := bytes.Repeat([]byte("x"), 300) // longer than the wait array
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	frame = append(frame, body...)
	frame = append(frame, 2, 0, 0, 0, 'o', 'k')

	sent := make(chan error, 1)
	go func() { _, err := client.Write(frame[:3]); sent <- err }()
	// net.Pipe is synchronous: the write returns once Next has read it.
	if err := server.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Next = %v, want a deadline error", err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if fr.Buffered() != 3 {
		t.Fatalf("buffered %d bytes after the timeout, want the 3 read", fr.Buffered())
	}

	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() { _, err := client.Write(frame[3:]); sent <- err }()
	got, err := fr.Next()
	if err != nil {
		t.Fatalf("Next after the deadline moved: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("frame after the timeout: %d bytes, want the %d sent", len(got), len(body))
	}
	if got, err = fr.Next(); err != nil || string(got) != "ok" {
		t.Fatalf("next frame = %q, %v", got, err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// TestFrameReaderTimeoutReturnsBuffer: a timeout with nothing buffered gives
// the borrowed buffer back before the caller waits again.
func TestFrameReaderTimeoutReturnsBuffer(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	fr := NewFrameReader(server, 1024)
	// A frame that exactly fills the wait array makes the next read borrow
	// a 4 KiB buffer.
	body := bytes.Repeat([]byte("y"), waitBuffer-LengthSize)
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	go func() { _, _ = client.Write(append(frame, body...)) }()
	if _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if err := server.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Next = %v, want a deadline error", err)
	}
	if len(fr.buf) != waitBuffer {
		t.Fatalf("after the timeout the reader holds a %d-byte buffer, want its %d-byte array", len(fr.buf), waitBuffer)
	}
}
