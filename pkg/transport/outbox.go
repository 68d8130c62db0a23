package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Outbox errors.
var (
	// ErrSlowConsumer: the peer does not read fast enough; pending bytes passed
	// the limit or a write missed its deadline.
	ErrSlowConsumer = errors.New("slow consumer")
	// ErrOutboxClosed: the outbox no longer accepts frames.
	ErrOutboxClosed = errors.New("outbox closed")
)

// keepSpare is the largest write buffer kept between batches; a larger one is
// released so a burst does not pin memory for the life of the connection.
const keepSpare = 64 << 10

// Outbox is a bounded per-connection send queue. Producers append encoded
// frames without blocking on the socket; one writer goroutine (Run) takes
// everything queued and writes it in pieces of whole frames (about 64 KiB, or
// one larger frame). Pending bytes are every byte not yet written: the queue
// plus what is left of the batch being written. They never pass the limit: a
// producer that would push them over it gets ErrSlowConsumer.
type Outbox struct {
	mu       sync.Mutex
	buf      []byte // queued frames not yet taken by the writer
	frames   int    // number of frames in buf
	inflight int    // bytes of the batch being written, not yet written
	spare    []byte // the writer's empty buffer, swapped with buf
	max      int
	closing  bool // flush what is queued, then stop
	aborted  bool // stop now, drop what is queued
	wake     chan struct{}
	finished chan struct{}
	onWrite  func(frames, bytes int)
}

// SetOnWrite sets, before Run, a function the writer calls after each
// successful write with the frames and bytes it carried.
func (o *Outbox) SetOnWrite(fn func(frames, bytes int)) { o.onWrite = fn }

// NewOutbox returns an outbox that holds at most maxPending unwritten bytes
// (one frame larger than that is still accepted when nothing is pending;
// servers refuse a limit below MaxPacketSize+4, so this never matters there).
func NewOutbox(maxPending int) *Outbox {
	return &Outbox{max: maxPending, wake: make(chan struct{}, 1), finished: make(chan struct{})}
}

// Append encodes a frame directly into the queue: encode receives the queue
// and returns it with one whole frame appended. It returns
// ErrSlowConsumer (nothing queued) when the limit would be passed, and
// ErrOutboxClosed after Close or Abort. It never blocks on I/O.
func (o *Outbox) Append(encode func(dst []byte) ([]byte, error)) error {
	o.mu.Lock()
	if o.closing || o.aborted {
		o.mu.Unlock()
		return ErrOutboxClosed
	}
	before := len(o.buf)
	buf, err := encode(o.buf)
	if err != nil {
		o.buf = o.buf[:before]
		o.mu.Unlock()
		return err
	}
	if pending := len(buf) + o.inflight; pending > o.max && before+o.inflight > 0 {
		o.buf = buf[:before]
		o.mu.Unlock()
		return fmt.Errorf("%w: %d bytes pending, limit %d", ErrSlowConsumer, pending, o.max)
	}
	o.buf = buf
	o.frames++
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// Pending reports the bytes not yet written: queued, and left of the batch
// being written.
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.buf) + o.inflight
}

// Retained reports the capacity of the buffers the outbox keeps between
// writes (for memory checks: it returns to at most 2 x 64 KiB after a burst).
func (o *Outbox) Retained() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return cap(o.buf) + cap(o.spare)
}

// Close stops accepting frames; the writer flushes what is queued, then Run
// returns nil.
func (o *Outbox) Close() {
	o.mu.Lock()
	o.closing = true
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Abort stops accepting frames and drops what is queued; Run returns at once
// (a write already in progress ends at its deadline or when the conn closes).
func (o *Outbox) Abort() {
	o.mu.Lock()
	o.aborted = true
	o.buf = nil
	o.frames = 0
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Done is closed when Run has returned.
func (o *Outbox) Done() <-chan struct{} { return o.finished }

// Run is the writer loop: it writes every batch to c until Close (after
// flushing) or Abort. Each piece of a batch gets the write timeout as a
// no-progress deadline (see Conn.SetWriteDeadline): a piece during which the
// peer accepts nothing for writeTimeout returns an error wrapping
// ErrSlowConsumer; other write errors are returned wrapped.
func (o *Outbox) Run(c Conn, writeTimeout time.Duration) error {
	defer close(o.finished)
	defer func() {
		o.mu.Lock()
		o.inflight = 0
		o.mu.Unlock()
	}()
	for {
		<-o.wake
		for {
			o.mu.Lock()
			if o.aborted {
				o.mu.Unlock()
				return nil
			}
			batch := o.buf
			o.buf, o.frames, o.spare = o.spare, 0, nil
			o.inflight = len(batch)
			closing := o.closing
			o.mu.Unlock()
			if len(batch) == 0 {
				o.keep(batch)
				if closing {
					return nil
				}
				break
			}
			if err := o.write(c, batch, writeTimeout); err != nil {
				return err
			}
			o.keep(batch)
		}
	}
}

// keep stores an emptied batch as the next spare buffer unless it is larger
// than keepSpare, so a burst does not pin memory.
func (o *Outbox) keep(batch []byte) {
	if cap(batch) > keepSpare {
		batch = nil
	}
	o.mu.Lock()
	o.spare = batch[:0]
	o.inflight = 0
	o.mu.Unlock()
}

// write writes batch in pieces of whole frames of about writeChunk bytes
// (one larger frame is a piece on its own), lowering inflight after each.
func (o *Outbox) write(c Conn, batch []byte, writeTimeout time.Duration) error {
	for len(batch) > 0 {
		n, frames := piece(batch)
		if writeTimeout > 0 {
			if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
				return fmt.Errorf("set write deadline: %w", err)
			}
		}
		if err := c.WriteFrames(batch[:n]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("%w: no progress writing for %s (%d bytes pending)", ErrSlowConsumer, writeTimeout, o.Pending())
			}
			return err
		}
		batch = batch[n:]
		o.mu.Lock()
		o.inflight = len(batch)
		o.mu.Unlock()
		if o.onWrite != nil {
			o.onWrite(frames, n)
		}
	}
	return nil
}

// piece returns the length of the first piece of b: whole frames up to
// writeChunk bytes, or the first frame when it alone is larger; and the
// number of frames in it. b holds whole frames (written by Append).
func piece(b []byte) (n, frames int) {
	for n < len(b) {
		if len(b)-n < protocol.LengthSize {
			return len(b), frames + 1 // not a whole frame: let the writer report it
		}
		size := protocol.LengthSize + int(binary.LittleEndian.Uint32(b[n:]))
		if size > len(b)-n {
			size = len(b) - n
		}
		if frames > 0 && n+size > writeChunk {
			return n, frames
		}
		n += size
		frames++
	}
	return n, frames
}
