package client

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// link is one connection of a Client: the first one, and one more per
// resume. Its reader goroutine dispatches what it receives to the Client.
type link struct {
	c         *Client
	conn      io.ReadWriteCloser
	deadliner interface{ SetWriteDeadline(time.Time) error }

	// wmu serializes frame writes and guards wbuf and comp.
	wmu  sync.Mutex
	wbuf []byte
	comp protocol.Compressor

	done        chan struct{} // closed when the link has ended
	closing     chan struct{} // closed at the server's close point (see markClosing)
	closingOnce sync.Once
	closeOnce   sync.Once
	closeErr    error
	intern      map[string]string // reader goroutine only

	// Guarded by Client.mu.
	ended        bool
	hbQueue      []chan *Response // heartbeats sent and not yet echoed, in send order; nil = automatic
	drain        *drainNotice     // the @Drain@ the client follows, once received
	abandoned    bool             // closed by the client after DrainedConnTimeout
	abandonTimer *time.Timer
}

// linkWriteError is a write that failed and ended its link.
type linkWriteError struct{ cause error }

func (e *linkWriteError) Error() string { return e.cause.Error() }
func (e *linkWriteError) Unwrap() error { return e.cause }

func (c *Client) newLink(conn io.ReadWriteCloser) *link {
	l := &link{
		c:       c,
		conn:    conn,
		comp:    protocol.Compressor{Threshold: c.opts.Compress},
		done:    make(chan struct{}),
		closing: make(chan struct{}),
		intern:  make(map[string]string),
	}
	if d, ok := conn.(interface{ SetWriteDeadline(time.Time) error }); ok && c.opts.WriteTimeout > 0 {
		l.deadliner = d
	}
	return l
}

func (l *link) closeConn() error {
	l.closeOnce.Do(func() { l.closeErr = l.conn.Close() })
	return l.closeErr
}

// markClosing records that the server has reached its close point for this
// link: it ended, or answered a request ServerDraining.
func (l *link) markClosing() {
	l.closingOnce.Do(func() { close(l.closing) })
}

// write encodes and sends one frame. onSend runs, under the write lock, just
// before the frame is written; an error from it cancels the write. An
// encoding error leaves the link open; a write error ends it (the stream may
// hold a partial frame) and is returned as a *linkWriteError.
func (l *link) write(msgID string, seq uint16, stageID int64, payload []byte, onSend func() error) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	opts := &l.c.opts
	buf, err := l.encode(l.wbuf[:0], msgID, seq, stageID, payload)
	if err != nil {
		return err
	}
	if n := len(buf) - protocol.LengthSize; n > opts.MaxPacketSize {
		return fmt.Errorf("%w: body of %d bytes exceeds %d", ErrPacketTooLarge, n, opts.MaxPacketSize)
	}
	if cap(buf) <= maxRetainedWriteBuffer {
		l.wbuf = buf
	}
	if err := onSend(); err != nil {
		return err
	}
	if l.deadliner != nil {
		if err := l.deadliner.SetWriteDeadline(time.Now().Add(opts.WriteTimeout)); err != nil {
			return l.writeFailed(fmt.Errorf("playhouse client: setting write deadline: %w", err))
		}
	}
	if _, err := l.conn.Write(buf); err != nil {
		return l.writeFailed(fmt.Errorf("playhouse client: writing %s: %w", msgID, err))
	}
	return nil
}

func (l *link) writeFailed(cause error) error {
	l.c.linkEnded(l, cause)
	return &linkWriteError{cause: cause}
}

func (l *link) encode(dst []byte, msgID string, seq uint16, stageID int64, payload []byte) ([]byte, error) {
	if l.c.opts.RequestHeader != protocol.FullHeader {
		return protocol.AppendRequest(dst, msgID, seq, stageID, payload)
	}
	var orig int32
	if l.c.opts.Compress > 0 {
		payload, orig = l.comp.Compress(payload)
	}
	return protocol.AppendFull(dst, protocol.Header{MsgSeq: seq, StageID: stageID, OriginalSize: orig}, msgID, payload)
}

func (c *Client) readLoop(l *link) {
	defer c.wg.Done()
	fr := protocol.NewFrameReader(l.conn, c.opts.MaxPacketSize)
	for {
		body, err := fr.Next()
		if err != nil {
			c.linkEnded(l, readError(err))
			return
		}
		r, err := l.decode(body)
		if err != nil {
			c.linkEnded(l, fmt.Errorf("playhouse client: malformed packet from server: %w", err))
			return
		}
		c.dispatch(l, r)
	}
}

// linkEnded handles the end of l (read or write error, or a close): the
// client ends when l was its connection and no drain is being followed;
// otherwise the requests still unanswered on l are parked for the next
// connection (or failed, when l was abandoned or belongs to a resume's
// authentication).
func (c *Client) linkEnded(l *link, cause error) {
	var (
		toClose []*link
		failed  []*call
		failErr error
		resend  bool
	)
	c.mu.Lock()
	if l.ended {
		c.mu.Unlock()
		return
	}
	l.ended = true
	l.hbQueue = nil
	delete(c.links, l)
	if l.abandonTimer != nil {
		l.abandonTimer.Stop()
	}
	switch {
	case c.err != nil:
		// The client has ended: its waiters see done.
	case l == c.active && l.drain == nil:
		toClose = c.endLocked(cause)
	default:
		// A drained link (the resume goroutine takes over), or a link a
		// resume was authenticating.
		if l == c.active {
			c.active = nil
		}
		failErr = fmt.Errorf("connection ended: %w", cause)
		if l.abandoned {
			failErr = fmt.Errorf("%w (after %s): %w", ErrDrainedConnTimeout, c.opts.DrainedConnTimeout, cause)
		}
		for _, cl := range c.pending {
			if cl.on != l {
				continue
			}
			if cl.pinned || l.abandoned {
				delete(c.pending, cl.seq)
				failed = append(failed, cl)
			} else {
				c.parkLocked(cl)
			}
		}
		resend = c.active != nil && len(c.parked) > 0
	}
	close(l.done)
	c.mu.Unlock()
	l.markClosing()
	l.closeConn()
	for _, o := range toClose {
		o.closeConn()
	}
	for _, cl := range failed {
		cl.ch <- answer{err: failErr}
	}
	if resend {
		c.flushParked()
	}
}

func readError(err error) error {
	switch {
	case err == io.EOF:
		return io.EOF
	case errors.Is(err, protocol.ErrFrameTooLarge), errors.Is(err, protocol.ErrMalformedFrame):
		return fmt.Errorf("playhouse client: malformed frame from server: %w", err)
	default:
		return fmt.Errorf("playhouse client: reading from server: %w", err)
	}
}

func (l *link) decode(body []byte) (*Response, error) {
	h, payload, err := protocol.ParseResponse(body)
	if err != nil {
		return nil, err
	}
	if h.OriginalSize > 0 {
		payload, err = protocol.DecompressPayload(nil, payload, int(h.OriginalSize), l.c.opts.MaxPacketSize)
		if err != nil {
			return nil, fmt.Errorf("%s (MsgSeq %d): %w", h.MsgID, h.MsgSeq, err)
		}
	} else {
		payload = append([]byte(nil), payload...)
	}
	return &Response{
		MsgID:     l.internMsgID(h.MsgID),
		MsgSeq:    h.MsgSeq,
		StageID:   h.StageID,
		ErrorCode: h.ErrorCode,
		Payload:   payload,
	}, nil
}

func (l *link) internMsgID(b []byte) string {
	if s, ok := l.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(l.intern) < maxInterned {
		l.intern[s] = s
	}
	return s
}

func (c *Client) dispatch(l *link, r *Response) {
	if r.MsgSeq != 0 {
		c.dispatchReply(l, r)
		return
	}
	if r.MsgID == c.opts.HeartbeatMsgID {
		var w chan *Response
		c.mu.Lock()
		if len(l.hbQueue) > 0 {
			w = l.hbQueue[0]
			l.hbQueue[0] = nil
			l.hbQueue = l.hbQueue[1:]
		}
		c.mu.Unlock()
		if w != nil {
			w <- r // buffered, one echo per heartbeat
		}
		return
	}
	if r.MsgID == DrainMsgID && c.followDrain(l, r) {
		return
	}
	for {
		select {
		case c.pushes <- r:
			return
		default:
		}
		// Full: drop the oldest (a consumer may have made room meanwhile).
		select {
		case <-c.pushes:
			c.dropped.Add(1)
		default:
		}
	}
}

// dispatchReply hands a reply to the request written on l with its MsgSeq.
// ServerDraining from a drained link means the request was not handled: it
// is sent again on the next connection.
func (c *Client) dispatchReply(l *link, r *Response) {
	c.mu.Lock()
	cl, ok := c.pending[r.MsgSeq]
	if !ok || cl.on != l {
		c.mu.Unlock()
		c.discarded.Add(1)
		return
	}
	if r.ErrorCode == protocol.ServerDraining && !cl.pinned && l.drain != nil {
		c.parkLocked(cl)
		if c.active == l {
			c.active = nil // past its close point: send nothing more here
		}
		resend := c.active != nil
		c.mu.Unlock()
		l.markClosing()
		if resend {
			c.flushParked()
		}
		return
	}
	delete(c.pending, r.MsgSeq)
	c.mu.Unlock()
	cl.ch <- answer{r: r} // buffered, one answer per call
}
