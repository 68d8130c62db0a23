package protocol

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// partialReader returns its data, then a stall error (standing for a peer
// that stopped sending) so the reader keeps its partial frame.
type partialReader struct {
	data []byte
}

var errStall = errors.New("stalled")

func (r *partialReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errStall
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// A partial frame takes its buffer's growth from the budget; one that would
// pass it fails with ErrBudgetExceeded, and Release gives everything back.
func TestFrameReaderBudget(t *testing.T) {
	b := NewBudget(100 << 10)
	frame := AppendFrame(nil, make([]byte, 60<<10))
	a := NewFrameReader(&partialReader{data: frame[:50<<10]}, 1<<20)
	a.SetBudget(b)
	if _, err := a.Next(); !errors.Is(err, errStall) {
		t.Fatalf("partial frame: %v", err)
	}
	if a.Held() == 0 || int64(a.Held()) != b.Used() {
		t.Fatalf("held %d, budget used %d", a.Held(), b.Used())
	}
	c := NewFrameReader(&partialReader{data: frame[:50<<10]}, 1<<20)
	c.SetBudget(b)
	if _, err := c.Next(); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("second partial frame past the budget: %v", err)
	}
	if b.Used() > b.Max() {
		t.Fatalf("budget used %d of %d", b.Used(), b.Max())
	}
	a.Release()
	c.Release()
	if b.Used() != 0 {
		t.Fatalf("budget used %d after Release", b.Used())
	}
}

// A completed large frame gives its charge back when the reader next waits.
func TestFrameReaderBudgetReturnsAfterFrame(t *testing.T) {
	b := NewBudget(1 << 20)
	var stream bytes.Buffer
	stream.Write(AppendFrame(nil, make([]byte, 300<<10)))
	stream.Write(AppendFrame(nil, []byte("small")))
	fr := NewFrameReader(&stream, 1<<20)
	fr.SetBudget(b)
	if body, err := fr.Next(); err != nil || len(body) != 300<<10 {
		t.Fatalf("large frame: %d, %v", len(body), err)
	}
	if b.Used() == 0 {
		t.Fatal("large frame not charged")
	}
	if body, err := fr.Next(); err != nil || string(body) != "small" {
		t.Fatalf("small frame: %q, %v", body, err)
	}
	if b.Used() != 0 {
		t.Fatalf("budget used %d after the large frame was consumed", b.Used())
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}
