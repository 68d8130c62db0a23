package transport

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// writeChunk is the largest single socket write: a write deadline is
// renewed after each chunk that made progress.
const writeChunk = 64 << 10

// progressWriter writes to a connection with a no-progress deadline instead
// of an absolute one: SetWriteDeadline records the span (t - now) and every
// chunk that moves bytes renews the deadline by that span. A write fails only
// when the peer accepts nothing for a whole span.
type progressWriter struct {
	c    net.Conn
	span atomic.Int64 // time.Duration; 0: no deadline
}

// SetWriteDeadline sets the deadline of the next chunk and the span by which
// later chunks renew it.
func (w *progressWriter) SetWriteDeadline(t time.Time) error {
	w.span.Store(int64(spanUntil(t)))
	return w.c.SetWriteDeadline(t)
}

// Write writes b in chunks, renewing the deadline after each chunk that
// made progress.
func (w *progressWriter) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		n, err := w.c.Write(b[:min(len(b), writeChunk)])
		total += n
		b = b[n:]
		span := time.Duration(w.span.Load())
		if err != nil && (n == 0 || span == 0 || !errors.Is(err, os.ErrDeadlineExceeded)) {
			return total, err
		}
		if len(b) > 0 && span > 0 {
			if err := w.c.SetWriteDeadline(time.Now().Add(span)); err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

// spanUntil is the span from now to t (0 for the zero time, at least 1ms).
func spanUntil(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return max(time.Until(t), time.Millisecond)
}

// renew moves the deadline on by the span (after a write that made
// progress, before the next one).
func (w *progressWriter) renew() error {
	if span := time.Duration(w.span.Load()); span > 0 {
		return w.c.SetWriteDeadline(time.Now().Add(span))
	}
	return nil
}

// progressConn is a net.Conn whose writes use a progressWriter. The
// WebSocket library writes its control frames through it, and wsConn its
// data messages, so a large message to a peer reading at a normal pace is
// not cut by the write deadline. mu keeps whole WebSocket frames apart:
// every Write holds it, and wsConn holds it across the writes of one batch.
type progressConn struct {
	net.Conn
	w  progressWriter
	mu sync.Mutex
}

func newProgressConn(c net.Conn) *progressConn {
	pc := &progressConn{Conn: c}
	pc.w.c = c
	return pc
}

func (c *progressConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(b)
}
func (c *progressConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }
func (c *progressConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.w.SetWriteDeadline(t)
}

// NetConn returns the underlying connection.
func (c *progressConn) NetConn() net.Conn { return c.Conn }
