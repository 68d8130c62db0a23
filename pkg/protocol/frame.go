package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// LengthSize is the size of the frame length prefix.
const LengthSize = 4

// DefaultMaxPacketSize is the default largest frame body (2 MiB).
const DefaultMaxPacketSize = 2 << 20

// Protocol errors. Callers map them to close reasons with errors.Is.
var (
	// ErrFrameTooLarge: a frame claims a body larger than MaxPacketSize.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrMalformedFrame: a frame claims a zero or negative length, or a message
	// holds a partial frame.
	ErrMalformedFrame = errors.New("malformed frame")
	// ErrMalformedHeader: a body is too short for its header or its fields are invalid.
	ErrMalformedHeader = errors.New("malformed header")
	// ErrBadCompression: an LZ4 payload is invalid, too large, or not of its stated size.
	ErrBadCompression = errors.New("bad compressed payload")
	// ErrWouldBlock is returned by a non-blocking source that has no bytes
	// now. FrameReader.Next returns it as it is (compare with ==), keeps what
	// it has buffered, and can be called again once input may be there.
	ErrWouldBlock = errors.New("no input ready")
)

// initialReadBuffer is the size of the buffer a FrameReader borrows while
// bytes are buffered; more is taken from the budget.
const initialReadBuffer = 4 << 10

// waitBuffer is the array inside a FrameReader that an idle reader waits on:
// a small frame arriving alone is read into it and returned from it; a
// longer one moves to a borrowed buffer.
const waitBuffer = 256

// FrameReader reads length-prefixed frames from a byte stream. It handles
// frames split across reads and several frames per read, allocates at most
// MaxPacketSize+LengthSize for any claimed length, and never allocates for a
// length it rejects. An idle reader holds no buffer: it waits on a small
// array of its own and borrows a 4 KiB buffer (from its BufferPool) only
// while bytes are buffered.
//
// A FrameReader is not safe for concurrent use.
type FrameReader struct {
	r      io.Reader
	max    int
	buf    []byte // wait[:], a borrowed buffer, or a grown one
	start  int    // first unconsumed byte
	end    int    // end of valid data
	err    error
	budget *Budget
	pool   *BufferPool
	// drained: the last read returned less than it was offered (the
	// stream had nothing more), so the reader can wait on its array.
	drained bool
	held    atomic.Int64 // bytes taken from budget: len(buf) above initialReadBuffer
	closed  atomic.Bool  // Release was called
	wait    [waitBuffer]byte
}

// NewFrameReader returns a reader of frames whose bodies are at most maxPacketSize bytes.
func NewFrameReader(r io.Reader, maxPacketSize int) *FrameReader {
	fr := new(FrameReader)
	fr.Init(r, maxPacketSize)
	return fr
}

// Init makes a zero FrameReader ready, in place (for a reader embedded in a
// connection's struct): the same as NewFrameReader.
func (fr *FrameReader) Init(r io.Reader, maxPacketSize int) {
	if maxPacketSize <= 0 {
		maxPacketSize = DefaultMaxPacketSize
	}
	fr.r, fr.max, fr.drained = r, maxPacketSize, true
	fr.buf = fr.wait[:]
}

// SetReader makes later reads come from r and returns the reader it
// replaces. Bytes already buffered stay: r must go on with the same stream
// (for example the socket under a connection that has nothing of its own
// buffered).
func (fr *FrameReader) SetReader(r io.Reader) (previous io.Reader) {
	previous, fr.r = fr.r, r
	return previous
}

// Reader returns the reader the frames are read from.
func (fr *FrameReader) Reader() io.Reader { return fr.r }

// Err returns the error that ended the stream (sticky: every later Next
// returns it), or nil.
func (fr *FrameReader) Err() error { return fr.err }

// SetBufferPool makes the reader borrow its 4 KiB buffers from p (shared by
// many readers) instead of allocating them. Call it before the first Next. A
// nil p allocates.
func (fr *FrameReader) SetBufferPool(p *BufferPool) { fr.pool = p }

// Next returns the body of the next frame. The slice is valid until the next
// call. At a clean end of stream between frames it returns io.EOF; a stream that
// ends inside a frame returns io.ErrUnexpectedEOF; an invalid length returns an
// error wrapping ErrFrameTooLarge or ErrMalformedFrame. Errors are sticky,
// except a read deadline's (os.ErrDeadlineExceeded) and ErrWouldBlock: Next
// can be called again and goes on with the frame it was reading.
func (fr *FrameReader) Next() ([]byte, error) {
	if fr.err != nil {
		return nil, fr.err
	}
	if fr.start == fr.end {
		fr.start, fr.end = 0, 0
		switch {
		case fr.drained || len(fr.buf) > initialReadBuffer:
			// Nothing buffered and the stream had no more: give the
			// buffer back before waiting (a large one always).
			fr.idle()
		case len(fr.buf) == waitBuffer:
			// The last read filled the array: more is likely waiting,
			// read it in one go.
			fr.buf = fr.pool.Get()
		}
	}
	if err := fr.fill(LengthSize); err != nil {
		return nil, fr.fail(err, fr.end > fr.start)
	}
	n, err := CheckLength(binary.LittleEndian.Uint32(fr.buf[fr.start:]), fr.max)
	if err != nil {
		fr.err = err
		return nil, err
	}
	if err := fr.fill(LengthSize + n); err != nil {
		return nil, fr.fail(err, true)
	}
	body := fr.buf[fr.start+LengthSize : fr.start+LengthSize+n]
	fr.start += LengthSize + n
	if fr.start == fr.end {
		fr.start, fr.end = 0, 0
	}
	return body, nil
}

// SetBudget makes the reader take the bytes of its buffer above the idle
// size (4 KiB) from b before growing it, and give them back when the buffer
// shrinks after a large frame or on Release. Call it before the first Next.
// A frame that would pass the budget fails Next with an error wrapping
// ErrBudgetExceeded. A nil b is unlimited.
func (fr *FrameReader) SetBudget(b *Budget) { fr.budget = b }

// Release gives the budget back and drops the buffer's reference to the
// budget. It is safe to call from another goroutine than Next's (for example
// when the connection is closed); later calls of Next take from the budget
// no more.
func (fr *FrameReader) Release() {
	fr.closed.Store(true)
	fr.budget.Release(int(fr.held.Swap(0)))
}

// Held reports the bytes the reader has taken from its budget.
func (fr *FrameReader) Held() int { return int(fr.held.Load()) }

// SetMaxPacketSize changes the largest frame body accepted by later calls to
// Next (values <= 0 mean DefaultMaxPacketSize).
func (fr *FrameReader) SetMaxPacketSize(n int) {
	if n <= 0 {
		n = DefaultMaxPacketSize
	}
	fr.max = n
}

// Buffered reports how many bytes have been read from the stream but not yet
// returned as frames.
func (fr *FrameReader) Buffered() int { return fr.end - fr.start }

// FrameBuffered reports whether the next Next returns without reading from
// the stream: a whole frame is buffered (or a length Next will refuse, or a
// sticky error).
func (fr *FrameReader) FrameBuffered() bool {
	if fr.err != nil {
		return true
	}
	if fr.end-fr.start < LengthSize {
		return false
	}
	n, err := CheckLength(binary.LittleEndian.Uint32(fr.buf[fr.start:]), fr.max)
	return err != nil || fr.end-fr.start >= LengthSize+n
}

// fail records a read error as sticky, except a deadline or ErrWouldBlock:
// as with a net.Conn, a read that timed out can be tried again once the deadline is
// moved, and goes on where it stopped (a partial frame stays buffered). With
// nothing buffered, the borrowed buffer goes back before the caller waits.
func (fr *FrameReader) fail(err error, midFrame bool) error {
	if err == ErrWouldBlock || errors.Is(err, os.ErrDeadlineExceeded) {
		if fr.start == fr.end {
			fr.idle()
		}
		return err
	}
	if errors.Is(err, io.EOF) && midFrame {
		err = io.ErrUnexpectedEOF
	}
	fr.err = err
	return err
}

// fill makes at least need bytes available from fr.start. The buffer grows
// with the data actually received (doubling, capped at need), never straight
// to a claimed length: a peer that announces a large frame and then stalls
// holds at most about twice what it really sent.
func (fr *FrameReader) fill(need int) error {
	if fr.end-fr.start >= need {
		return nil
	}
	if len(fr.buf)-fr.start < need && fr.start > 0 {
		copy(fr.buf, fr.buf[fr.start:fr.end])
		fr.end -= fr.start
		fr.start = 0
	}
	empty := 0
	for fr.end-fr.start < need {
		// The wait array serves only the read that ends a wait; the rest
		// of a frame is read into a borrowed buffer in as few reads as
		// the stream allows.
		if fr.end == len(fr.buf) || (len(fr.buf) == waitBuffer && fr.end > 0) {
			if err := fr.grow(need); err != nil {
				return err
			}
		}
		n, err := fr.r.Read(fr.buf[fr.end:])
		fr.drained = fr.end+n < len(fr.buf)
		fr.end += n
		if fr.end-fr.start >= need {
			return nil
		}
		if err != nil {
			return err
		}
		if n == 0 {
			// io.Reader allows (0, nil) only transiently; don't spin on a broken one.
			if empty++; empty >= 100 {
				return io.ErrNoProgress
			}
			continue
		}
		empty = 0
	}
	return nil
}

// idle makes the reader wait on its own array again, returning a borrowed
// buffer to the pool and a grown one's charge to the budget. Nothing may be
// buffered.
func (fr *FrameReader) idle() {
	fr.start, fr.end = 0, 0
	if len(fr.buf) == waitBuffer {
		return
	}
	if len(fr.buf) > initialReadBuffer {
		fr.budget.Release(int(fr.held.Swap(0)))
	} else if fr.buf != nil {
		fr.pool.Put(fr.buf)
	}
	fr.buf = fr.wait[:]
}

// grow replaces the full buffer with a larger one: the wait array moves to
// a borrowed 4 KiB buffer, which then doubles (capped at need), the bytes
// above 4 KiB taken from the budget.
func (fr *FrameReader) grow(need int) error {
	old := fr.buf
	var nb []byte
	if len(old) < initialReadBuffer {
		nb = fr.pool.Get()
	} else {
		size := min(need, 2*len(old))
		if err := fr.take(size - len(old)); err != nil {
			return err
		}
		nb = make([]byte, size)
	}
	copy(nb, old[:fr.end])
	fr.buf = nb
	if len(old) == initialReadBuffer {
		fr.pool.Put(old)
	}
	return nil
}

// take charges n more buffer bytes to the budget.
func (fr *FrameReader) take(n int) error {
	if fr.budget == nil {
		return nil
	}
	if !fr.budget.Acquire(n) {
		return fmt.Errorf("%w: %d more bytes for a partial frame (%d of %d in use)", ErrBudgetExceeded, n, fr.budget.Used(), fr.budget.Max())
	}
	fr.held.Add(int64(n))
	if fr.closed.Load() {
		fr.budget.Release(int(fr.held.Swap(0)))
	}
	return nil
}

// CheckLength validates a frame's length prefix against maxPacketSize and
// returns it as an int.
func CheckLength(length uint32, maxPacketSize int) (int, error) {
	n := int32(length)
	if n <= 0 {
		return 0, fmt.Errorf("%w: length %d", ErrMalformedFrame, n)
	}
	if int64(n) > int64(maxPacketSize) {
		return 0, fmt.Errorf("%w: length %d exceeds %d", ErrFrameTooLarge, n, maxPacketSize)
	}
	return int(n), nil
}

// SplitFrames calls fn for every frame body in b, which must hold only whole
// frames (as a WebSocket message does). It stops at the first error from fn.
func SplitFrames(b []byte, maxPacketSize int, fn func(body []byte) error) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty message", ErrMalformedFrame)
	}
	for len(b) > 0 {
		if len(b) < LengthSize {
			return fmt.Errorf("%w: %d trailing bytes", ErrMalformedFrame, len(b))
		}
		n, err := CheckLength(binary.LittleEndian.Uint32(b), maxPacketSize)
		if err != nil {
			return err
		}
		if len(b)-LengthSize < n {
			return fmt.Errorf("%w: partial frame (%d of %d bytes)", ErrMalformedFrame, len(b)-LengthSize, n)
		}
		if err := fn(b[LengthSize : LengthSize+n]); err != nil {
			return err
		}
		b = b[LengthSize+n:]
	}
	return nil
}

// AppendFrame appends a length prefix and body to dst.
func AppendFrame(dst, body []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}

// ErrBudgetExceeded: taking more bytes for partly received frames would pass
// the process-wide inbound budget (see Budget).
var ErrBudgetExceeded = errors.New("inbound memory budget exceeded")

// Budget bounds the bytes held, across every connection of a process, by
// frames that have been announced but not yet fully received. Readers take
// bytes from it before growing a buffer for a partial frame and give them
// back once the frame is complete (or the connection ends). A nil *Budget is
// unlimited. It is safe for concurrent use.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a budget of max bytes (max <= 0: unlimited).
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Acquire takes n bytes and reports whether they fit; nothing is taken when
// they do not.
func (b *Budget) Acquire(n int) bool {
	if b == nil || n <= 0 {
		return true
	}
	if b.max <= 0 {
		b.used.Add(int64(n))
		return true
	}
	for {
		cur := b.used.Load()
		if cur+int64(n) > b.max {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+int64(n)) {
			return true
		}
	}
}

// Release gives back n bytes taken with Acquire.
func (b *Budget) Release(n int) {
	if b != nil && n > 0 {
		b.used.Add(-int64(n))
	}
}

// Used reports the bytes currently taken.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Max reports the budget's size (0: unlimited).
func (b *Budget) Max() int64 {
	if b == nil || b.max < 0 {
		return 0
	}
	return b.max
}
