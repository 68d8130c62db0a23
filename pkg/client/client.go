// Package client is the Go connector for the PlayHouse client protocol
// (shared/protocol.md). It speaks what the official connectors speak: compact
// request headers, full-header responses and pushes (LZ4 payloads are
// decompressed), and a heartbeat every 10 s.
//
// A Client is safe for concurrent use: many goroutines may have Requests in
// flight on one connection; replies are matched by MsgSeq in any order.
// Server-initiated packets (MsgSeq 0, other than heartbeat replies) arrive on
// Pushes.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

const (
	// maxSeq is the largest MsgSeq; 0 means one-way.
	maxSeq = 65535
	// maxHeartbeatQueue bounds the heartbeats remembered as awaiting an echo,
	// in case a server never answers them.
	maxHeartbeatQueue = 1024
	// maxRetainedWriteBuffer is the largest encode buffer kept between writes.
	maxRetainedWriteBuffer = 64 << 10
	// maxInterned bounds the reader's cache of MsgId strings.
	maxInterned = 512
)

// Response is a reply or push received from the server. It and its Payload
// belong to the caller.
type Response struct {
	// MsgID is the packet's message name.
	MsgID string
	// MsgSeq is the request's sequence for a reply, 0 for a push or heartbeat.
	MsgSeq uint16
	// StageID is the packet's stage.
	StageID int64
	// ErrorCode is the server's status for the request; 0 is success.
	ErrorCode protocol.ErrorCode
	// Payload is the (decompressed) payload.
	Payload []byte
}

// Err returns an *ErrorCodeError when r.ErrorCode is not Success, else nil.
func (r *Response) Err() error {
	if r == nil || r.ErrorCode == protocol.Success {
		return nil
	}
	return &ErrorCodeError{MsgID: r.MsgID, Code: r.ErrorCode}
}

// Client is a connection to a PlayHouse server. Create one with Dial or New.
type Client struct {
	conn      io.ReadWriteCloser
	opts      Options
	deadliner interface{ SetWriteDeadline(time.Time) error }

	// wmu serializes frame writes and guards wbuf and comp.
	wmu  sync.Mutex
	wbuf []byte
	comp protocol.Compressor

	// mu guards the fields below.
	mu       sync.Mutex
	err      error // why the connection ended; nil while open
	pending  map[uint16]chan *Response
	lastSeq  uint16
	seqSpace int              // highest MsgSeq used (maxSeq; tests shrink it)
	hbQueue  []chan *Response // heartbeats sent and not yet echoed, in send order; nil = automatic

	done      chan struct{}
	pushes    chan *Response
	dropped   atomic.Uint64
	discarded atomic.Uint64 // replies for no waiting request (late or unknown)

	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
	intern    map[string]string // reader goroutine only
}

// Dial connects to addr over TCP, or TLS when opts.TLSConfig is set, and
// returns a running Client. ctx bounds connecting (and the TLS handshake)
// only; when it has no deadline, Options.RequestTimeout (default 30s) does.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if _, ok := ctx.Deadline(); !ok {
		if t := opts.withDefaults().RequestTimeout; t > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t)
			defer cancel()
		}
	}
	d := opts.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	var (
		conn net.Conn
		err  error
	)
	if opts.TLSConfig != nil {
		td := &tls.Dialer{NetDialer: d, Config: opts.TLSConfig}
		conn, err = td.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("playhouse client: dial %s: %w", addr, err)
	}
	return New(conn, opts), nil
}

// New returns a running Client over any byte stream carrying PlayHouse frames
// (for example a WebSocket adapter). The Client owns conn: Close closes it,
// and closing it must unblock a pending Read.
func New(conn io.ReadWriteCloser, opts Options) *Client {
	opts = opts.withDefaults()
	c := &Client{
		conn:     conn,
		opts:     opts,
		pending:  make(map[uint16]chan *Response),
		seqSpace: maxSeq,
		done:     make(chan struct{}),
		pushes:   make(chan *Response, opts.PushBuffer),
		intern:   make(map[string]string),
		comp:     protocol.Compressor{Threshold: opts.Compress},
	}
	if d, ok := conn.(interface{ SetWriteDeadline(time.Time) error }); ok && opts.WriteTimeout > 0 {
		c.deadliner = d
	}
	c.wg.Add(1)
	go c.readLoop()
	if opts.HeartbeatInterval > 0 {
		c.wg.Add(1)
		go c.heartbeatLoop(opts.HeartbeatInterval)
	}
	return c
}

// Request sends msgID with a fresh MsgSeq to stageID and waits for the reply.
// It returns the reply whatever its ErrorCode (see Response.Err). When ctx has
// no deadline, Options.RequestTimeout applies. If ctx ends first the error
// wraps ctx.Err() and the MsgSeq is freed (a late reply is discarded); if the
// connection ends first the error wraps its cause (see Err). Sending itself
// is bounded by Options.WriteTimeout rather than ctx: a write cannot be
// abandoned halfway without corrupting the stream.
func (c *Client) Request(ctx context.Context, msgID string, stageID int64, payload []byte) (*Response, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("playhouse client: request %s: %w", msgID, err)
	}
	seq, ch, err := c.allocSeq()
	if err != nil {
		return nil, fmt.Errorf("playhouse client: request %s: %w", msgID, err)
	}
	if err := c.write(msgID, seq, stageID, payload, nil); err != nil {
		c.releaseSeq(seq, ch)
		return nil, fmt.Errorf("playhouse client: request %s: %w", msgID, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		c.releaseSeq(seq, ch)
		return nil, fmt.Errorf("playhouse client: request %s (MsgSeq %d): %w", msgID, seq, ctx.Err())
	case <-c.done:
		c.releaseSeq(seq, ch)
		// A reply may have arrived just before the connection ended.
		select {
		case r := <-ch:
			return r, nil
		default:
		}
		return nil, fmt.Errorf("playhouse client: request %s (MsgSeq %d): connection ended: %w", msgID, seq, c.Err())
	}
}

// Authenticate sends an authentication request (for example
// "AuthenticateRequest") and waits for its reply, like Request with StageId 0.
// When the reply's ErrorCode is not Success it returns both the reply and an
// *ErrorCodeError; the connection stays open so the caller may retry.
func (c *Client) Authenticate(ctx context.Context, msgID string, payload []byte) (*Response, error) {
	r, err := c.Request(ctx, msgID, 0, payload)
	if err != nil {
		return nil, err
	}
	return r, r.Err()
}

// Send sends a one-way packet (MsgSeq 0); the server sends no reply.
func (c *Client) Send(msgID string, stageID int64, payload []byte) error {
	if err := c.write(msgID, 0, stageID, payload, nil); err != nil {
		return fmt.Errorf("playhouse client: send %s: %w", msgID, err)
	}
	return nil
}

// Heartbeat sends one heartbeat and waits for its echo, which it returns.
// Heartbeats carry MsgSeq 0, so echoes are matched to heartbeats (automatic
// ones included) in the order they were sent. When ctx has no deadline,
// Options.RequestTimeout applies.
func (c *Client) Heartbeat(ctx context.Context) (*Response, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	w := make(chan *Response, 1)
	if err := c.sendHeartbeat(w); err != nil {
		return nil, fmt.Errorf("playhouse client: heartbeat: %w", err)
	}
	select {
	case r := <-w:
		return r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("playhouse client: heartbeat: %w", ctx.Err())
	case <-c.done:
		select {
		case r := <-w:
			return r, nil
		default:
		}
		return nil, fmt.Errorf("playhouse client: heartbeat: connection ended: %w", c.Err())
	}
}

// Pushes returns the channel of packets with MsgSeq 0 other than heartbeat
// echoes (pushes and server notices such as @Kick@ and @Drain@). When the
// buffer is full the oldest push is dropped (see DroppedPushes). The channel
// is closed after the connection ends and the reader has stopped.
func (c *Client) Pushes() <-chan *Response { return c.pushes }

// DroppedPushes reports how many pushes were dropped because Pushes was full.
func (c *Client) DroppedPushes() uint64 { return c.dropped.Load() }

// Done returns a channel closed when the connection ends, for any reason.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended: io.EOF when the server closed it
// cleanly, ErrClosed after Close, or a wrapped read, write or protocol error.
// It returns nil while the connection is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection, fails every waiting call with an error wrapping
// ErrClosed, and waits for the client's goroutines to exit. It returns the
// error from closing the underlying connection, or nil if the connection had
// already ended. Close is idempotent.
func (c *Client) Close() error {
	var err error
	if c.end(ErrClosed) {
		err = c.closeConn()
	}
	c.wg.Wait()
	return err
}

// LocalAddr returns the connection's local address, or nil when the
// underlying stream has none.
func (c *Client) LocalAddr() net.Addr {
	if a, ok := c.conn.(interface{ LocalAddr() net.Addr }); ok {
		return a.LocalAddr()
	}
	return nil
}

// RemoteAddr returns the connection's remote address, or nil when the
// underlying stream has none.
func (c *Client) RemoteAddr() net.Addr {
	if a, ok := c.conn.(interface{ RemoteAddr() net.Addr }); ok {
		return a.RemoteAddr()
	}
	return nil
}

func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); !ok && c.opts.RequestTimeout > 0 {
		return context.WithTimeout(ctx, c.opts.RequestTimeout)
	}
	return context.WithCancel(ctx)
}

// end records cause as the reason the connection ended, wakes every waiter and
// closes the connection. Only the first call has any effect; it reports
// whether this call was it.
func (c *Client) end(cause error) bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return false
	}
	c.err = cause
	c.hbQueue = nil
	close(c.done)
	c.mu.Unlock()
	c.closeConn()
	return true
}

func (c *Client) closeConn() error {
	c.closeOnce.Do(func() { c.closeErr = c.conn.Close() })
	return c.closeErr
}

// allocSeq reserves the next free MsgSeq after the last one handed out,
// wrapping from seqSpace to 1 and skipping sequences still in flight.
func (c *Client) allocSeq() (uint16, chan *Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, nil, fmt.Errorf("connection ended: %w", c.err)
	}
	if len(c.pending) >= c.seqSpace {
		return 0, nil, fmt.Errorf("%w (%d requests waiting)", ErrTooManyInFlight, len(c.pending))
	}
	for {
		c.lastSeq++
		if c.lastSeq == 0 || int(c.lastSeq) > c.seqSpace {
			c.lastSeq = 1
		}
		if _, busy := c.pending[c.lastSeq]; !busy {
			break
		}
	}
	ch := make(chan *Response, 1)
	c.pending[c.lastSeq] = ch
	return c.lastSeq, ch, nil
}

// releaseSeq frees seq if it still belongs to ch.
func (c *Client) releaseSeq(seq uint16, ch chan *Response) {
	c.mu.Lock()
	if c.pending[seq] == ch {
		delete(c.pending, seq)
	}
	c.mu.Unlock()
}

func (c *Client) sendHeartbeat(w chan *Response) error {
	return c.write(c.opts.HeartbeatMsgID, 0, 0, nil, func() {
		c.mu.Lock()
		if c.err == nil {
			if len(c.hbQueue) >= maxHeartbeatQueue {
				c.hbQueue = c.hbQueue[1:]
			}
			c.hbQueue = append(c.hbQueue, w)
		}
		c.mu.Unlock()
	})
}

// write encodes and sends one frame. onSend runs, under the write lock, just
// before the frame is written. An encoding error leaves the connection open;
// a write error ends it, since the stream may hold a partial frame.
func (c *Client) write(msgID string, seq uint16, stageID int64, payload []byte, onSend func()) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return fmt.Errorf("connection ended: %w", err)
	}
	buf, err := c.encode(c.wbuf[:0], msgID, seq, stageID, payload)
	if err != nil {
		return err
	}
	if n := len(buf) - protocol.LengthSize; n > c.opts.MaxPacketSize {
		return fmt.Errorf("%w: body of %d bytes exceeds %d", ErrPacketTooLarge, n, c.opts.MaxPacketSize)
	}
	if cap(buf) <= maxRetainedWriteBuffer {
		c.wbuf = buf
	}
	if onSend != nil {
		onSend()
	}
	if c.deadliner != nil {
		if err := c.deadliner.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout)); err != nil {
			return c.writeFailed(fmt.Errorf("playhouse client: setting write deadline: %w", err))
		}
	}
	if _, err := c.conn.Write(buf); err != nil {
		return c.writeFailed(fmt.Errorf("playhouse client: writing %s: %w", msgID, err))
	}
	return nil
}

func (c *Client) writeFailed(cause error) error {
	if c.end(cause) {
		return cause
	}
	return fmt.Errorf("connection ended: %w", c.Err())
}

func (c *Client) encode(dst []byte, msgID string, seq uint16, stageID int64, payload []byte) ([]byte, error) {
	if c.opts.RequestHeader != protocol.FullHeader {
		return protocol.AppendRequest(dst, msgID, seq, stageID, payload)
	}
	var orig int32
	if c.opts.Compress > 0 {
		payload, orig = c.comp.Compress(payload)
	}
	return protocol.AppendFull(dst, protocol.Header{MsgSeq: seq, StageID: stageID, OriginalSize: orig}, msgID, payload)
}

func (c *Client) heartbeatLoop(every time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			// A failed write ends the connection; the next loop sees done.
			_ = c.sendHeartbeat(nil)
		}
	}
}

func (c *Client) readLoop() {
	defer c.wg.Done()
	defer close(c.pushes)
	fr := protocol.NewFrameReader(c.conn, c.opts.MaxPacketSize)
	for {
		body, err := fr.Next()
		if err != nil {
			c.end(readError(err))
			return
		}
		r, err := c.decode(body)
		if err != nil {
			c.end(fmt.Errorf("playhouse client: malformed packet from server: %w", err))
			return
		}
		c.dispatch(r)
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

func (c *Client) decode(body []byte) (*Response, error) {
	h, payload, err := protocol.ParseResponse(body)
	if err != nil {
		return nil, err
	}
	if h.OriginalSize > 0 {
		payload, err = protocol.DecompressPayload(nil, payload, int(h.OriginalSize), c.opts.MaxPacketSize)
		if err != nil {
			return nil, fmt.Errorf("%s (MsgSeq %d): %w", h.MsgID, h.MsgSeq, err)
		}
	} else {
		payload = append([]byte(nil), payload...)
	}
	return &Response{
		MsgID:     c.internMsgID(h.MsgID),
		MsgSeq:    h.MsgSeq,
		StageID:   h.StageID,
		ErrorCode: h.ErrorCode,
		Payload:   payload,
	}, nil
}

func (c *Client) internMsgID(b []byte) string {
	if s, ok := c.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(c.intern) < maxInterned {
		c.intern[s] = s
	}
	return s
}

func (c *Client) dispatch(r *Response) {
	if r.MsgSeq != 0 {
		c.mu.Lock()
		ch, ok := c.pending[r.MsgSeq]
		if ok {
			delete(c.pending, r.MsgSeq)
		}
		c.mu.Unlock()
		if ok {
			ch <- r // buffered, one reply per registration
		} else {
			c.discarded.Add(1)
		}
		return
	}
	if r.MsgID == c.opts.HeartbeatMsgID {
		var w chan *Response
		c.mu.Lock()
		if len(c.hbQueue) > 0 {
			w = c.hbQueue[0]
			c.hbQueue[0] = nil
			c.hbQueue = c.hbQueue[1:]
		}
		c.mu.Unlock()
		if w != nil {
			w <- r // buffered, one echo per heartbeat
		}
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
