package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// oneFrameReader hands out one frame per Read, as a socket does in a closed
// request-reply loop, and stalls when its frames run out.
type oneFrameReader struct {
	frames [][]byte
	next   int
	rest   []byte // unread part of the current frame
	stall  bool
}

func (r *oneFrameReader) Read(p []byte) (int, error) {
	if len(r.rest) == 0 {
		if r.stall {
			return 0, errStall
		}
		r.rest = r.frames[r.next%len(r.frames)]
		r.next++
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// An idle reader holds no buffer of its own beyond its wait array: a frame
// larger than the array is read into a borrowed buffer, which goes back to
// the pool once the frame is consumed and the reader waits again.
func TestFrameReaderIdleHoldsNoBuffer(t *testing.T) {
	pool := NewBufferPool(4)
	small := AppendFrame(nil, make([]byte, 40))
	large := AppendFrame(nil, make([]byte, 1000))
	r := &oneFrameReader{frames: [][]byte{small, large}}
	fr := NewFrameReader(r, DefaultMaxPacketSize)
	fr.SetBufferPool(pool)
	for i, want := range []int{40, 1000} {
		body, err := fr.Next()
		if err != nil || len(body) != want {
			t.Fatalf("frame %d: %d bytes, %v", i, len(body), err)
		}
	}
	r.stall = true
	if _, err := fr.Next(); !errors.Is(err, errStall) {
		t.Fatalf("stalled read: %v", err)
	}
	if len(fr.buf) > waitBuffer {
		t.Fatalf("idle reader holds a %d-byte buffer, want at most its %d-byte wait array", len(fr.buf), waitBuffer)
	}
	if pool.Free() != 1 {
		t.Fatalf("pool holds %d free buffers after the large frame, want 1", pool.Free())
	}
}

// With a pool, a warm reader fed one frame per read (small and larger than
// its wait array, alternately) allocates nothing.
func TestFrameReaderPooledZeroAlloc(t *testing.T) {
	pool := NewBufferPool(4)
	r := &oneFrameReader{frames: [][]byte{AppendFrame(nil, make([]byte, 40)), AppendFrame(nil, make([]byte, 1000))}}
	fr := NewFrameReader(r, DefaultMaxPacketSize)
	fr.SetBufferPool(pool)
	step := func() {
		if _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		step()
	}
	if allocs := totalAllocs(1000, step); allocs != 0 {
		t.Fatalf("%d allocations in 1000 frames, want 0", allocs)
	}
}

// The pool keeps at most its bound of free buffers.
func TestBufferPoolBounded(t *testing.T) {
	p := NewBufferPool(2)
	bufs := [][]byte{p.Get(), p.Get(), p.Get()}
	for _, b := range bufs {
		if len(b) != initialReadBuffer {
			t.Fatalf("buffer of %d bytes", len(b))
		}
		p.Put(b)
	}
	if p.Free() != 2 {
		t.Fatalf("%d free buffers, bound 2", p.Free())
	}
	p.Put(make([]byte, 10)) // not one of its buffers
	if p.Free() != 2 {
		t.Fatalf("foreign buffer kept")
	}
}

// FrameBuffered is true exactly when Next will not read: a whole frame, a
// refused length, or a sticky error is buffered.
func TestFrameBuffered(t *testing.T) {
	stream := AppendFrame(nil, []byte("one"))
	stream = AppendFrame(stream, []byte("two"))
	stream = append(stream, 9, 0, 0) // half a length prefix
	fr := NewFrameReader(bytes.NewReader(stream), 1<<10)
	if fr.FrameBuffered() {
		t.Fatal("nothing read yet, but FrameBuffered")
	}
	if body, err := fr.Next(); err != nil || string(body) != "one" {
		t.Fatalf("Next = %q, %v", body, err)
	}
	if !fr.FrameBuffered() {
		t.Fatal("second frame buffered, but not reported")
	}
	if body, err := fr.Next(); err != nil || string(body) != "two" {
		t.Fatalf("Next = %q, %v", body, err)
	}
	if fr.FrameBuffered() {
		t.Fatal("only part of a length buffered, but FrameBuffered")
	}
	tooBig := binary.LittleEndian.AppendUint32(nil, 1<<20)
	fr = NewFrameReader(bytes.NewReader(append(AppendFrame(nil, []byte("x")), tooBig...)), 1<<10)
	if _, err := fr.Next(); err != nil {
		t.Fatal(err)
	}
	if !fr.FrameBuffered() {
		t.Fatal("a length Next refuses is buffered: Next will not wait")
	}
}
