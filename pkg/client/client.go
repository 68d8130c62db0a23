// Package client is the Go connector for the PlayHouse client protocol
// (shared/protocol.md). It speaks what the official connectors speak: compact
// request headers, full-header responses and pushes (LZ4 payloads are
// decompressed), and a heartbeat every 10 s.
//
// A Client is safe for concurrent use: many goroutines may have Requests in
// flight on one connection; replies are matched by MsgSeq in any order.
// Server-initiated packets (MsgSeq 0, other than heartbeat replies) arrive on
// Pushes.
//
// By default a Client follows a server's drain: on @Drain@ it reconnects
// after the notice's retryAfterMs, authenticates with the reconnect token,
// and carries its requests over so that each still gets exactly one answer;
// the application sees an EventResumed on Events (see Options.DisableResume).
package client

import (
	"bytes"
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

// Client is a connection to a PlayHouse server. Create one with Dial,
// DialWebSocket or New. Unless Options.DisableResume is set, a Client
// outlives the server's drain: it follows the @Drain@ notice onto a new
// connection (see Options.DisableResume and Events), so "the connection" below
// means the client's current one.
type Client struct {
	opts Options

	// mu guards the fields below and the fields of every link marked as such.
	mu       sync.Mutex
	err      error              // why the client ended; nil while it runs
	active   *link              // where new packets go; nil while a resume is between connections
	last     *link              // the latest active link (for the addresses)
	links    map[*link]struct{} // links not yet ended
	linkUp   chan struct{}      // closed (and replaced) when active is set, or when the client ends
	pending  map[uint16]*call   // requests awaiting their answer, by MsgSeq
	parked   []*call            // requests waiting for a connection to be sent (again) on
	lastSeq  uint16
	seqSpace int  // highest MsgSeq used (maxSeq; tests shrink it)
	resuming bool // a resume goroutine is running

	ctx      context.Context // canceled when the client ends; bounds resume dials
	cancel   context.CancelFunc
	done     chan struct{}
	finished chan struct{} // closed once every goroutine has exited
	pushes   chan *Response
	events   chan Event

	dropped       atomic.Uint64
	discarded     atomic.Uint64 // replies for no waiting request (late or unknown)
	resent        atomic.Uint64
	droppedEvents atomic.Uint64

	wg sync.WaitGroup // readers, heartbeat loop, resume goroutine
}

// call is one Request waiting for its answer.
type call struct {
	msgID   string
	stageID int64
	payload []byte
	owned   bool // payload is the client's copy
	seq     uint16
	ch      chan answer // buffered: receives the one answer
	on      *link       // link last written to; nil while parked (guarded by Client.mu)
	sends   int         // times written (guarded by Client.mu)
	pinned  bool        // belongs to its link (a resume's authentication): never resent
}

// answer is what a call ends with.
type answer struct {
	r   *Response
	err error
}

// errLinkGone means the link ended before the packet could be written.
var errLinkGone = errors.New("connection ended")

// errReleased means the call was abandoned (its context ended) before it was written.
var errReleased = errors.New("request abandoned")

// Dial connects to addr over TCP, or TLS when opts.TLSConfig is set, and
// returns a running Client. ctx bounds connecting (and the TLS handshake)
// only; when it has no deadline, Options.RequestTimeout (default 30s) does.
// Unless opts.Reconnect is set, a resume after a drain dials addr again with
// the same options.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if _, ok := ctx.Deadline(); !ok {
		if t := opts.withDefaults().RequestTimeout; t > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t)
			defer cancel()
		}
	}
	conn, err := dialConn(ctx, addr, opts)
	if err != nil {
		return nil, err
	}
	if opts.Reconnect == nil {
		o := opts
		opts.Reconnect = func(ctx context.Context) (io.ReadWriteCloser, error) { return dialConn(ctx, addr, o) }
	}
	return New(conn, opts), nil
}

func dialConn(ctx context.Context, addr string, opts Options) (net.Conn, error) {
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
	return conn, nil
}

// New returns a running Client over any byte stream carrying PlayHouse frames
// (for example a WebSocket adapter). The Client owns conn: Close closes it,
// and closing it must unblock a pending Read. It can follow a drain only when
// opts.Reconnect is set.
func New(conn io.ReadWriteCloser, opts Options) *Client {
	opts = opts.withDefaults()
	c := &Client{
		opts:     opts,
		links:    make(map[*link]struct{}),
		linkUp:   make(chan struct{}),
		pending:  make(map[uint16]*call),
		seqSpace: maxSeq,
		done:     make(chan struct{}),
		finished: make(chan struct{}),
		pushes:   make(chan *Response, opts.PushBuffer),
		events:   make(chan Event, opts.EventBuffer),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	l := c.newLink(conn)
	c.links[l] = struct{}{}
	c.active, c.last = l, l
	c.wg.Add(1)
	go c.readLoop(l)
	if opts.HeartbeatInterval > 0 {
		c.wg.Add(1)
		go c.heartbeatLoop(opts.HeartbeatInterval)
	}
	go c.finish()
	return c
}

// finish closes the channels handed to the application once the client has
// ended and every goroutine that could send on them has exited.
func (c *Client) finish() {
	<-c.done
	c.wg.Wait()
	close(c.pushes)
	close(c.events)
	close(c.finished)
}

// Request sends msgID with a fresh MsgSeq to stageID and waits for the reply.
// It returns the reply whatever its ErrorCode (see Response.Err). When ctx has
// no deadline, Options.RequestTimeout applies. If ctx ends first the error
// wraps ctx.Err() and the MsgSeq is freed (a late reply is discarded); if the
// client ends first the error wraps its cause (see Err). Sending itself
// is bounded by Options.WriteTimeout rather than ctx: a write cannot be
// abandoned halfway without corrupting the stream.
//
// While the client follows a drain (see Options.DisableResume), a request
// the drained server did not answer, or answered ServerDraining, is sent
// again (same MsgSeq) on the new connection: the caller sees one answer.
func (c *Client) Request(ctx context.Context, msgID string, stageID int64, payload []byte) (*Response, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("playhouse client: request %s: %w", msgID, err)
	}
	cl, err := c.allocCall(msgID, stageID, payload, false)
	if err != nil {
		return nil, fmt.Errorf("playhouse client: request %s: %w", msgID, err)
	}
	if err := c.route(cl); err != nil {
		c.releaseCall(cl)
		return nil, fmt.Errorf("playhouse client: request %s: %w", msgID, err)
	}
	select {
	case a := <-cl.ch:
		return a.result(msgID, cl.seq)
	case <-ctx.Done():
		c.releaseCall(cl)
		return nil, fmt.Errorf("playhouse client: request %s (MsgSeq %d): %w", msgID, cl.seq, ctx.Err())
	case <-c.done:
		c.releaseCall(cl)
		// A reply may have arrived just before the client ended.
		select {
		case a := <-cl.ch:
			return a.result(msgID, cl.seq)
		default:
		}
		return nil, fmt.Errorf("playhouse client: request %s (MsgSeq %d): connection ended: %w", msgID, cl.seq, c.Err())
	}
}

func (a answer) result(msgID string, seq uint16) (*Response, error) {
	if a.err != nil {
		return nil, fmt.Errorf("playhouse client: request %s (MsgSeq %d): %w", msgID, seq, a.err)
	}
	return a.r, nil
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

// Send sends a one-way packet (MsgSeq 0); the server sends no reply. While a
// resume is between connections, Send waits for the new one (bounded by
// Options.RequestTimeout). A one-way packet is never sent twice: one whose
// write fails is lost, and the error says why.
func (c *Client) Send(msgID string, stageID int64, payload []byte) error {
	ctx, cancel := c.withTimeout(context.Background())
	defer cancel()
	for {
		l, err := c.waitLink(ctx)
		if err != nil {
			return fmt.Errorf("playhouse client: send %s: %w", msgID, err)
		}
		err = l.write(msgID, 0, stageID, payload, func() error { return c.usableLocked(l) })
		if errors.Is(err, errLinkGone) && c.Err() == nil {
			continue
		}
		if err != nil {
			return fmt.Errorf("playhouse client: send %s: %w", msgID, err)
		}
		return nil
	}
}

// Heartbeat sends one heartbeat and waits for its echo, which it returns.
// Heartbeats carry MsgSeq 0, so echoes are matched to heartbeats (automatic
// ones included) in the order they were sent on a connection; one whose
// connection ends during a resume is sent again on the next. When ctx has no
// deadline, Options.RequestTimeout applies.
func (c *Client) Heartbeat(ctx context.Context) (*Response, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	for {
		l, err := c.waitLink(ctx)
		if err != nil {
			return nil, fmt.Errorf("playhouse client: heartbeat: %w", err)
		}
		w := make(chan *Response, 1)
		if err := c.sendHeartbeat(l, w); err != nil {
			if errors.Is(err, errLinkGone) && c.Err() == nil {
				continue
			}
			return nil, fmt.Errorf("playhouse client: heartbeat: %w", err)
		}
		select {
		case r := <-w:
			return r, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("playhouse client: heartbeat: %w", ctx.Err())
		case <-l.done:
			select {
			case r := <-w:
				return r, nil
			default:
			}
			if err := c.Err(); err != nil {
				return nil, fmt.Errorf("playhouse client: heartbeat: connection ended: %w", err)
			}
			// The connection ended during a resume: heartbeat on the next one.
		}
	}
}

// Pushes returns the channel of packets with MsgSeq 0 other than heartbeat
// echoes (pushes and server notices such as @Kick@, and @Drain@ when the
// client does not follow it). When the buffer is full the oldest push is
// dropped (see DroppedPushes). During a resume, pushes from the drained and
// the new connection may interleave. The channel is closed after the client
// ends and its readers have stopped.
func (c *Client) Pushes() <-chan *Response { return c.pushes }

// DroppedPushes reports how many pushes were dropped because Pushes was full.
func (c *Client) DroppedPushes() uint64 { return c.dropped.Load() }

// DiscardedReplies reports how many replies arrived for no waiting request:
// late replies to requests whose context had ended, or replies the server
// should not have sent.
func (c *Client) DiscardedReplies() uint64 { return c.discarded.Load() }

// ResentRequests reports how many times a request was sent again on a new
// connection while following a drain.
func (c *Client) ResentRequests() uint64 { return c.resent.Load() }

// Done returns a channel closed when the client ends, for any reason. A
// resume that succeeds does not end it.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client ended: io.EOF when the server closed the
// connection cleanly (other than to drain it while the client resumes),
// ErrClosed after Close, an error wrapping ErrResumeFailed when a resume
// failed, or a wrapped read, write or protocol error. It returns nil while
// the client runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the client and its connections, fails every waiting call with an
// error wrapping ErrClosed, and waits for the client's goroutines to exit. It
// returns the error from closing the current connection, or nil if the
// client had already ended. Close is idempotent.
func (c *Client) Close() error {
	err := c.end(ErrClosed)
	<-c.finished
	return err
}

// LocalAddr returns the current connection's local address, or nil when the
// underlying stream has none.
func (c *Client) LocalAddr() net.Addr {
	c.mu.Lock()
	l := c.last
	c.mu.Unlock()
	if a, ok := l.conn.(interface{ LocalAddr() net.Addr }); ok {
		return a.LocalAddr()
	}
	return nil
}

// RemoteAddr returns the current connection's remote address, or nil when
// the underlying stream has none.
func (c *Client) RemoteAddr() net.Addr {
	c.mu.Lock()
	l := c.last
	c.mu.Unlock()
	return remoteAddr(l.conn)
}

func remoteAddr(conn io.ReadWriteCloser) net.Addr {
	if a, ok := conn.(interface{ RemoteAddr() net.Addr }); ok {
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

// end records cause as the reason the client ended, wakes every waiter and
// closes every connection. Only the first call has any effect; it returns the
// error from closing the current connection.
func (c *Client) end(cause error) error {
	c.mu.Lock()
	ls := c.endLocked(cause)
	cur := c.last
	c.mu.Unlock()
	if ls == nil {
		return nil
	}
	var err error
	for _, l := range ls {
		if e := l.closeConn(); l == cur {
			err = e
		}
	}
	return err
}

// endLocked ends the client (if it runs) and returns the links to close.
func (c *Client) endLocked(cause error) []*link {
	if c.err != nil {
		return nil
	}
	c.err = cause
	close(c.done)
	close(c.linkUp)
	c.cancel()
	ls := make([]*link, 0, len(c.links))
	for l := range c.links {
		ls = append(ls, l)
	}
	if len(ls) == 0 {
		ls = append(ls, c.last) // so end reports the current connection's close
	}
	return ls
}

// usableLocked reports (under c.mu, which it takes) whether l may be written to.
func (c *Client) usableLocked(l *link) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return fmt.Errorf("connection ended: %w", c.err)
	}
	if l.ended {
		return errLinkGone
	}
	return nil
}

// waitLink returns the link new packets go to, waiting while a resume is
// between connections.
func (c *Client) waitLink(ctx context.Context) (*link, error) {
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, fmt.Errorf("connection ended: %w", err)
		}
		if l := c.active; l != nil {
			c.mu.Unlock()
			return l, nil
		}
		up := c.linkUp
		c.mu.Unlock()
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the connection to resume: %w", ctx.Err())
		}
	}
}

// allocCall reserves the next free MsgSeq after the last one handed out,
// wrapping from seqSpace to 1 and skipping sequences still in flight.
func (c *Client) allocCall(msgID string, stageID int64, payload []byte, pinned bool) (*call, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, fmt.Errorf("connection ended: %w", c.err)
	}
	if len(c.pending) >= c.seqSpace {
		return nil, fmt.Errorf("%w (%d requests waiting)", ErrTooManyInFlight, len(c.pending))
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
	cl := &call{msgID: msgID, stageID: stageID, payload: payload, seq: c.lastSeq, ch: make(chan answer, 1), pinned: pinned}
	c.pending[cl.seq] = cl
	return cl, nil
}

// releaseCall frees cl's MsgSeq if cl still holds it.
func (c *Client) releaseCall(cl *call) {
	c.mu.Lock()
	if c.pending[cl.seq] == cl {
		delete(c.pending, cl.seq)
	}
	c.mu.Unlock()
}

// failCall ends cl with err if it is still waiting.
func (c *Client) failCall(cl *call, err error) {
	c.mu.Lock()
	ok := c.pending[cl.seq] == cl
	if ok {
		delete(c.pending, cl.seq)
	}
	c.mu.Unlock()
	if ok {
		cl.ch <- answer{err: err}
	}
}

// route writes cl to the active link, or parks it while a resume is between
// connections. A nil error means cl is on its way (or was abandoned); once
// written, a failure of the connection is handled by linkEnded.
func (c *Client) route(cl *call) error {
	for {
		c.mu.Lock()
		if c.pending[cl.seq] != cl {
			c.mu.Unlock()
			return nil
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return fmt.Errorf("connection ended: %w", err)
		}
		l := c.active
		if l == nil {
			c.parkLocked(cl)
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		err := c.writeCall(l, cl)
		if errors.Is(err, errLinkGone) {
			continue // l ended meanwhile: the next pass sees what replaced it
		}
		return err
	}
}

// writeCall writes cl on l. It returns errLinkGone when l had already ended,
// nil when cl was written, abandoned, or handed to linkEnded by a failed
// write, and otherwise an encoding error (nothing was sent).
func (c *Client) writeCall(l *link, cl *call) error {
	err := l.write(cl.msgID, cl.seq, cl.stageID, cl.payload, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.pending[cl.seq] != cl {
			return errReleased
		}
		if c.err != nil {
			return fmt.Errorf("connection ended: %w", c.err)
		}
		if l.ended {
			return errLinkGone
		}
		cl.on = l
		cl.sends++
		if cl.sends > 1 {
			c.resent.Add(1)
		}
		return nil
	})
	var we *linkWriteError
	if errors.Is(err, errReleased) || errors.As(err, &we) {
		return nil
	}
	return err
}

// parkLocked queues cl to be sent on the next connection. The payload is
// copied: the caller is still waiting (cl is pending), but may return as
// soon as its context ends, while the copy is written later.
func (c *Client) parkLocked(cl *call) {
	if !cl.owned {
		cl.payload = bytes.Clone(cl.payload)
		cl.owned = true
	}
	cl.on = nil
	c.parked = append(c.parked, cl)
}

// flushParked sends the parked calls on the active link, if there is one.
func (c *Client) flushParked() {
	c.mu.Lock()
	if c.err != nil || c.active == nil {
		c.mu.Unlock()
		return
	}
	batch := c.parked
	c.parked = nil
	c.mu.Unlock()
	for _, cl := range batch {
		if err := c.route(cl); err != nil {
			c.failCall(cl, err)
		}
	}
}

func (c *Client) sendHeartbeat(l *link, w chan *Response) error {
	return l.write(c.opts.HeartbeatMsgID, 0, 0, nil, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.err != nil {
			return fmt.Errorf("connection ended: %w", c.err)
		}
		if l.ended {
			return errLinkGone
		}
		if len(l.hbQueue) >= maxHeartbeatQueue {
			l.hbQueue = l.hbQueue[1:]
		}
		l.hbQueue = append(l.hbQueue, w)
		return nil
	})
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
			c.mu.Lock()
			l := c.active
			c.mu.Unlock()
			if l != nil {
				// A failed write ends the connection; the next loop sees done.
				_ = c.sendHeartbeat(l, nil)
			}
		}
	}
}
