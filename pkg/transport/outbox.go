package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
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

// Outbox is a bounded per-connection send queue. Producers append encoded
// frames without blocking on the socket. Once started, a writer goroutine
// runs only while frames are queued: the first Append after the queue drained
// starts one, and it takes everything queued and writes it in pieces of whole
// frames (about 64 KiB, or one larger frame), in order, until the queue is
// empty; then it returns its buffer to the pool and ends. An idle outbox holds
// neither a goroutine nor a buffer. Pending bytes are every byte not yet
// written: the queue plus what is left of the batch being written. They never
// pass the limit: a producer that would push them over it gets
// ErrSlowConsumer.
//
// When the connection is a DirectWriter (plain TCP) and nothing is queued or
// being written, Append writes the frame on the producer's goroutine with
// one non-blocking write, the way a plain Go server answers on its reading
// goroutine; only what the socket does not take at once is left to a writer
// goroutine (a batch a direct write left unfinished counts whole in Pending
// until it is written). Either way one writer at a time owns the socket, so
// frames keep their order, and a producer never waits for the peer.
type Outbox struct {
	// What every Append and direct write touches, first (one cache line,
	// then the next one's first half).
	mu       sync.Mutex
	buf      []byte // queued frames not yet taken by the writer
	frames   int    // number of frames in buf
	inflight int    // bytes of the batch being written, not yet written
	max      int
	closing  bool         // flush what is queued, then stop
	aborted  bool         // stop now, drop what is queued
	started  bool         // Start was called: writers may run
	held     bool         // Hold: Append queues only, until Flush
	running  bool         // a writer goroutine is active
	ended    bool         // the outbox has finished (onDone called or due)
	direct   DirectWriter // conn, when it can write without waiting
	pool     *protocol.BufferPool
	onWrite  WriteObserver
	headOf   []byte // a batch a direct write left unfinished: the writer goroutine flushes it first
	conn     Conn
	timeout  time.Duration
	onDone   func(error)
	loop     func() // o.writeLoop, bound once so starting a writer does not allocate
	finished chan struct{}
}

// WriteObserver is told about every frame an Outbox has written.
type WriteObserver interface {
	// FramesWritten is called after whole frames have been written, with
	// those frames (length prefixes included), exactly once for every frame
	// written, on the goroutine that wrote them. It must not keep or change
	// them.
	FramesWritten(frames []byte)
}

// WriteObserverFunc is a func used as a WriteObserver.
type WriteObserverFunc func(frames []byte)

// FramesWritten implements WriteObserver.
func (f WriteObserverFunc) FramesWritten(frames []byte) { f(frames) }

// SetWriteObserver sets, before Start, what is told about written frames
// (nil: nothing). An interface rather than a func value: a method on the
// owner's own struct costs no separate object to load per write.
func (o *Outbox) SetWriteObserver(w WriteObserver) { o.onWrite = w }

// NewOutbox returns an outbox that holds at most maxPending unwritten bytes
// (one frame larger than that is still accepted when nothing is pending;
// servers refuse a limit below MaxPacketSize+4, so this never matters there).
// Its queue starts in a 4 KiB buffer borrowed from a pool shared by the
// process's connections.
func NewOutbox(maxPending int) *Outbox {
	o := new(Outbox)
	o.Init(maxPending)
	return o
}

// Init makes a zero Outbox ready, in place (for an outbox embedded in a
// session's struct): the same as NewOutbox. The outbox must not be copied
// afterwards.
func (o *Outbox) Init(maxPending int) {
	o.max, o.finished, o.pool = maxPending, make(chan struct{}), sharedBuffers
	o.loop = o.writeLoop
}

// Append encodes a frame directly into the queue: encode receives the queue
// and returns it with one whole frame appended. It returns
// ErrSlowConsumer (nothing queued) when the limit would be passed, and
// ErrOutboxClosed after Close or Abort. It never blocks on I/O; it starts a
// writer goroutine when none is running.
func (o *Outbox) Append(encode func(dst []byte) ([]byte, error)) error {
	o.mu.Lock()
	if o.closing || o.aborted {
		o.mu.Unlock()
		return ErrOutboxClosed
	}
	if o.buf == nil {
		o.buf = o.pool.Get()[:0]
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
	spawn := !o.held && o.wakeLocked()
	if spawn && o.direct != nil {
		o.writeQueueDirect() // nothing else queued or in flight: write it here
		return nil
	}
	o.mu.Unlock()
	if spawn {
		go o.loop()
	}
	return nil
}

// Hold makes Append only queue frames, without writing in place or starting
// a writer, until Flush; a writer already running goes on, and Close and
// Abort work as usual. A session holds its replies while it reads requests
// that arrived together, so the replies to one read leave in one write.
func (o *Outbox) Hold() {
	o.mu.Lock()
	o.held = true
	o.mu.Unlock()
}

// Flush ends a Hold: what is queued is written, in place when the
// connection allows and nothing is being written, else by a writer.
func (o *Outbox) Flush() {
	o.mu.Lock()
	o.held = false
	if len(o.buf) == 0 || !o.wakeLocked() {
		o.mu.Unlock()
		return
	}
	if o.direct != nil {
		o.writeQueueDirect()
		return
	}
	o.mu.Unlock()
	go o.loop()
}

// writeQueueDirect takes the queue as a batch and writes it in place; it is
// called with mu held by the caller that has just become the running writer,
// and unlocks it.
func (o *Outbox) writeQueueDirect() {
	batch := o.buf
	o.buf, o.frames = nil, 0
	o.inflight = len(batch)
	o.mu.Unlock()
	o.writeDirect(batch)
}

// writeDirect writes batch on the caller's goroutine without waiting, as the
// running writer (the caller set running). What the socket does not take,
// and whatever was queued meanwhile, is left to a writer goroutine; a socket
// error is left to it too, so it is reported the usual way.
func (o *Outbox) writeDirect(batch []byte) {
	if left, _ := o.direct.TryWriteFrames(batch); left {
		o.mu.Lock()
		o.headOf = batch
		o.mu.Unlock()
		go o.loop()
		return
	}
	if o.onWrite != nil {
		o.onWrite.FramesWritten(batch)
	}
	o.release(batch)
	o.mu.Lock()
	o.inflight = 0
	more := len(o.buf) > 0 || o.closing || o.aborted
	o.running = more
	o.mu.Unlock()
	if more {
		go o.loop()
	}
}

// wakeLocked marks a writer as running and reports whether the caller must
// start it: when the outbox is started, has not ended and has none running.
func (o *Outbox) wakeLocked() bool {
	if !o.started || o.running || o.ended {
		return false
	}
	o.running = true
	return true
}

// Pending reports the bytes not yet written: queued, and left of the batch
// being written.
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.buf) + o.inflight
}

// Retained reports the capacity of the queue's buffer (for memory checks:
// it is 0 once the queue has drained).
func (o *Outbox) Retained() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return cap(o.buf)
}

// Running reports whether a writer goroutine is active.
func (o *Outbox) Running() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.running
}

// Close stops accepting frames; the writer flushes what is queued, then the
// outbox finishes with nil.
func (o *Outbox) Close() {
	o.mu.Lock()
	o.closing = true
	spawn := o.wakeLocked()
	o.mu.Unlock()
	if spawn {
		go o.loop()
	}
}

// Abort stops accepting frames and drops what is queued; the outbox finishes
// with nil at once (a write already in progress ends at its deadline or when
// the conn closes).
func (o *Outbox) Abort() {
	o.mu.Lock()
	o.aborted = true
	o.release(o.buf)
	o.buf = nil
	o.frames = 0
	spawn := o.wakeLocked()
	o.mu.Unlock()
	if spawn {
		go o.loop()
	}
}

// Done is closed when the outbox has finished.
func (o *Outbox) Done() <-chan struct{} { return o.finished }

// Start lets writers run on c: from now on a writer goroutine writes what is
// queued whenever there is something. Each piece of a batch gets the write
// timeout as a no-progress deadline (see Conn.SetWriteDeadline). onDone is
// called once, on a writer goroutine, when the outbox finishes: with nil
// after Close (once flushed) or Abort, with an error wrapping
// ErrSlowConsumer when a piece made no progress for writeTimeout, or with
// the write error. Call Start once.
func (o *Outbox) Start(c Conn, writeTimeout time.Duration, onDone func(error)) {
	o.mu.Lock()
	o.conn, o.timeout, o.onDone = c, writeTimeout, onDone
	o.direct, _ = c.(DirectWriter)
	o.started = true
	spawn := (len(o.buf) > 0 || o.closing || o.aborted) && o.wakeLocked()
	o.mu.Unlock()
	if spawn {
		go o.loop()
	}
}

// Run is Start that waits: it returns when the outbox finishes, with the
// error onDone would get.
func (o *Outbox) Run(c Conn, writeTimeout time.Duration) error {
	errc := make(chan error, 1)
	o.Start(c, writeTimeout, func(err error) { errc <- err })
	return <-errc
}

// writeLoop is a writer goroutine: it writes batches until the queue is
// empty, then ends; it finishes the outbox after Close (flushed), Abort or a
// write error.
func (o *Outbox) writeLoop() {
	yielded := false
	for {
		o.mu.Lock()
		if o.aborted {
			o.running = false
			o.inflight = 0
			headOf := o.headOf
			o.headOf = nil
			o.mu.Unlock()
			o.release(headOf)
			o.finish(nil)
			return
		}
		if o.headOf != nil {
			headOf := o.headOf
			o.mu.Unlock()
			err := o.writeHead(headOf)
			o.mu.Lock()
			o.headOf = nil
			o.inflight = 0
			o.mu.Unlock()
			o.release(headOf)
			if err != nil {
				o.mu.Lock()
				o.running = false
				o.mu.Unlock()
				o.finish(err)
				return
			}
			continue
		}
		batch := o.buf
		o.buf, o.frames = nil, 0
		o.inflight = len(batch)
		if len(batch) == 0 && !o.closing && !yielded {
			// Let a producer on this P queue the next frame (a reply
			// being encoded) before ending: one cheap yield saves
			// starting a writer again for it.
			o.buf, o.inflight = batch, 0
			o.mu.Unlock()
			yielded = true
			runtime.Gosched()
			continue
		}
		if len(batch) == 0 {
			o.running = false
			done := o.closing
			o.mu.Unlock()
			o.release(batch)
			if done {
				o.finish(nil)
			}
			return
		}
		o.mu.Unlock()
		yielded = false
		err := o.write(o.conn, batch, o.timeout)
		o.release(batch)
		if err != nil {
			o.mu.Lock()
			o.running = false
			o.inflight = 0
			o.mu.Unlock()
			o.finish(err)
			return
		}
	}
}

// finish ends the outbox once: no writer starts any more, Done is closed
// and onDone called.
func (o *Outbox) finish(err error) {
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		return
	}
	o.ended = true
	o.mu.Unlock()
	close(o.finished)
	if o.onDone != nil {
		o.onDone(err)
	}
}

// release gives a drained buffer back to the pool when it is one of its own.
func (o *Outbox) release(b []byte) {
	if cap(b) == protocol.PooledBufferSize {
		o.pool.Put(b[:cap(b)])
	}
}

// write writes batch in pieces of whole frames of about writeChunk bytes
// (one larger frame is a piece on its own), lowering inflight after each.
func (o *Outbox) write(c Conn, batch []byte, writeTimeout time.Duration) error {
	for len(batch) > 0 {
		n, _ := piece(batch)
		if writeTimeout > 0 {
			if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
				return fmt.Errorf("set write deadline: %w", err)
			}
		}
		if err := c.WriteFrames(batch[:n]); err != nil {
			return o.writeError(err)
		}
		written := batch[:n]
		batch = batch[n:]
		o.mu.Lock()
		o.inflight = len(batch)
		o.mu.Unlock()
		if o.onWrite != nil {
			o.onWrite.FramesWritten(written)
		}
	}
	return nil
}

// writeHead writes what a direct write of batch left, then reports the
// batch's frames as written.
func (o *Outbox) writeHead(batch []byte) error {
	if o.timeout > 0 {
		if err := o.conn.SetWriteDeadline(time.Now().Add(o.timeout)); err != nil {
			return fmt.Errorf("set write deadline: %w", err)
		}
	}
	if err := o.direct.FlushRest(); err != nil {
		return o.writeError(err)
	}
	if o.onWrite != nil {
		o.onWrite.FramesWritten(batch)
	}
	return nil
}

// writeError reports a failed write: a missed no-progress deadline as
// ErrSlowConsumer, anything else as it is.
func (o *Outbox) writeError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: no progress writing for %s (%d bytes pending)", ErrSlowConsumer, o.timeout, o.Pending())
	}
	return err
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
