package transport

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
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
// everything queued and writes it in a single call. It never grows past the
// limit: a producer that would push pending bytes over it gets ErrSlowConsumer.
type Outbox struct {
	mu       sync.Mutex
	buf      []byte // queued frames not yet taken by the writer
	frames   int    // number of frames in buf
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

// NewOutbox returns an outbox that holds at most maxPending queued bytes
// (one frame larger than that is still accepted into an empty queue).
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
	if before > 0 && len(buf) > o.max {
		o.buf = buf[:before]
		o.mu.Unlock()
		return fmt.Errorf("%w: %d bytes pending, limit %d", ErrSlowConsumer, len(buf), o.max)
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

// Pending reports the bytes queued and not yet taken by the writer.
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.buf)
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

// Run is the writer loop: it writes every batch to c with the given write
// timeout until Close (after flushing) or Abort. A missed deadline returns an
// error wrapping ErrSlowConsumer; other write errors are returned wrapped.
func (o *Outbox) Run(c Conn, writeTimeout time.Duration) error {
	defer close(o.finished)
	var spare []byte
	for {
		<-o.wake
		for {
			o.mu.Lock()
			if o.aborted {
				o.mu.Unlock()
				return nil
			}
			batch, frames := o.buf, o.frames
			o.buf, o.frames = spare, 0
			closing := o.closing
			o.mu.Unlock()
			if len(batch) == 0 {
				spare = batch
				if closing {
					return nil
				}
				break
			}
			if writeTimeout > 0 {
				if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
					return fmt.Errorf("set write deadline: %w", err)
				}
			}
			if err := c.WriteFrames(batch); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return fmt.Errorf("%w: write of %d bytes missed its %s deadline", ErrSlowConsumer, len(batch), writeTimeout)
				}
				return err
			}
			if o.onWrite != nil {
				o.onWrite(frames, len(batch))
			}
			if cap(batch) > keepSpare {
				batch = nil
			}
			spare = batch[:0]
		}
	}
}
