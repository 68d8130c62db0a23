package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// WebSocket close codes used for protocol violations (RFC 6455).
const (
	closeProtocolError = websocket.CloseProtocolError   // 1002: partial or malformed frame
	closeUnsupported   = websocket.CloseUnsupportedData // 1003: text message
	closeTooBig        = websocket.CloseMessageTooBig   // 1009: message over MaxPacketSize+4
	closeControlWait   = time.Second                    // how long a close frame may take to write
)

// WebSocketOptions configure a WebSocketHandler.
type WebSocketOptions struct {
	// Kind is KindWebSocket or KindWSS (when served over TLS).
	Kind Kind
	// MaxPacketSize bounds a frame body; a message may be at most
	// MaxPacketSize+4 bytes.
	MaxPacketSize int
	// AllowedOrigins lists accepted Origin header values; empty accepts any.
	// Scheme and host are compared without regard to case.
	AllowedOrigins []string
	// RefuseMissingOrigin refuses a request without an Origin header when
	// AllowedOrigins is set. By default such a request is accepted: native
	// game clients send no Origin, browsers always do.
	RefuseMissingOrigin bool
	// Budget, when set, is charged with each connection's message buffer
	// above its idle size (4 KiB) while a message is received and handled;
	// a message that would pass it fails the read with an error wrapping
	// protocol.ErrBudgetExceeded.
	Budget *protocol.Budget
	// DisableDirectWrites makes every message go out on the outbox's writer
	// goroutine. By default, on plain TCP, a producer writes the messages
	// itself when nothing is queued (see DirectWriter).
	DisableDirectWrites bool
	// HandshakeTimeout bounds the HTTP upgrade (default 5s).
	HandshakeTimeout time.Duration
	// Accept is called before the upgrade. It returns serve, which runs the
	// connection to its end, and release, called instead of serve when the
	// upgrade fails (a bad request or a refused Origin). An error refuses the
	// request with 503.
	Accept func(r *http.Request) (serve func(Conn), release func(), err error)
}

// WebSocketHandler is an http.Handler that upgrades requests to framed
// connections. Mount it on any http.ServeMux, next to your own HTTP API.
type WebSocketHandler struct {
	opts     WebSocketOptions
	upgrader websocket.Upgrader
}

// NewWebSocketHandler returns a handler serving the PlayHouse protocol over
// binary WebSocket messages.
func NewWebSocketHandler(opts WebSocketOptions) (*WebSocketHandler, error) {
	if opts.Accept == nil {
		return nil, errors.New("websocket handler: Accept is required")
	}
	if opts.MaxPacketSize <= 0 {
		opts.MaxPacketSize = protocol.DefaultMaxPacketSize
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 5 * time.Second
	}
	if opts.Kind == "" {
		opts.Kind = KindWebSocket
	}
	h := &WebSocketHandler{opts: opts}
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout: opts.HandshakeTimeout,
		ReadBufferSize:   wsReadBuffer,
		WriteBufferSize:  4 << 10,
		// The library writes only control frames (data messages are
		// written by wsConn, see wswrite.go); with a pool it keeps no
		// write buffer per connection.
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     h.checkOrigin,
	}
	return h, nil
}

func (h *WebSocketHandler) checkOrigin(r *http.Request) bool {
	if len(h.opts.AllowedOrigins) == 0 {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return !h.opts.RefuseMissingOrigin
	}
	// An origin is scheme://host[:port]: ASCII, and case-insensitive in
	// scheme and host (RFC 6454); the port is digits.
	return slices.ContainsFunc(h.opts.AllowedOrigins, func(o string) bool {
		return strings.EqualFold(strings.TrimSuffix(o, "/"), strings.TrimSuffix(origin, "/"))
	})
}

// hijackWriter hands the WebSocket library a connection whose writes renew
// their deadline while they make progress (see progressWriter) and keeps it
// for the wsConn, which writes its data messages through the same lock.
type hijackWriter struct {
	http.ResponseWriter
	pc *progressConn
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.pc = newProgressConn(c)
	return w.pc, brw, nil
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP upgrades the request and hands the connection to the serve
// function from Accept. When serve returns at once (it starts the session on
// a goroutine of its own, as session.Manager.Go does), ServeHTTP returns
// right after the hijack, so net/http's goroutine and buffers for the
// request are freed; a serve that runs the connection to its end works too,
// on any mux.
func (h *WebSocketHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	serve, release, err := h.opts.Accept(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := h.upgrader.Upgrade(hw, r, nil)
	if err != nil {
		// The upgrader has already answered with an HTTP error.
		release()
		return
	}
	ws.SetReadLimit(int64(h.opts.MaxPacketSize) + protocol.LengthSize)
	c := &wsConn{ws: ws, pc: hw.pc, kind: h.opts.Kind, max: h.opts.MaxPacketSize, budget: h.opts.Budget, pool: sharedBuffers}
	if !h.opts.DisableDirectWrites {
		c.raw = directSocket(hw.pc.Conn)
	}
	serve(c)
}

// wsConn frames a WebSocket: each inbound binary message holds one or more
// whole frames; each outbound frame is one binary message (see wswrite.go).
type wsConn struct {
	ws     *websocket.Conn
	pc     *progressConn   // the hijacked connection the library writes to
	raw    syscall.RawConn // its plain TCP socket for direct writes, or nil
	kind   Kind
	max    int
	msg    []byte // rest of the current inbound message
	buf    []byte // message buffer while a message is handled (borrowed from pool when 4 KiB), nil when idle
	pool   *protocol.BufferPool
	budget *protocol.Budget
	held   atomic.Int64 // bytes taken from budget: cap(buf) above wsIdleBuffer
	closed atomic.Bool
	// closeSent: a Close frame went out; no message may follow it.
	closeSent atomic.Bool
	// Left by TryWriteFrames for FlushRest: encoded bytes (in scratch, a
	// pooled buffer) and frames not yet encoded.
	rest, restFrames, scratch []byte
}

// wsIdleBuffer is the message buffer a connection borrows from the pool
// while it reads and handles a message; a larger one is charged to the
// budget. Both are given back once the message is consumed, before the
// connection waits for the next one.
const wsIdleBuffer = protocol.PooledBufferSize

// wsReadBuffer is the WebSocket library's read buffer per connection (frame
// headers and small messages); larger payloads are read past it.
const wsReadBuffer = 1 << 10

func (c *wsConn) ReadFrame() ([]byte, error) {
	if len(c.msg) == 0 {
		c.releaseBuffer()
		if err := c.readMessage(); err != nil {
			return nil, err
		}
	}
	// readMessage validated the whole message.
	n := int(binary.LittleEndian.Uint32(c.msg))
	body := c.msg[protocol.LengthSize : protocol.LengthSize+n]
	c.msg = c.msg[protocol.LengthSize+n:]
	return body, nil
}

// readMessage reads the next binary message into the reusable buffer.
func (c *wsConn) readMessage() error {
	typ, r, err := c.ws.NextReader()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			return c.violation(closeTooBig, fmt.Errorf("%w: message over %d bytes", protocol.ErrFrameTooLarge, c.max+protocol.LengthSize))
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return fmt.Errorf("websocket closed by peer (%d): %w", ce.Code, io.EOF)
		}
		return err
	}
	if typ != websocket.BinaryMessage {
		return c.violation(closeUnsupported, fmt.Errorf("%w: text message", ErrProtocol))
	}
	if c.buf == nil {
		c.buf = c.pool.Get()[:0]
	}
	buf := c.buf[:0]
	for {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), 2*cap(buf))
			if err := c.take(cap(nb) - cap(buf)); err != nil {
				return err
			}
			copy(nb, buf)
			if cap(buf) == wsIdleBuffer {
				c.pool.Put(buf[:cap(buf)])
			}
			buf = nb
			c.buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				return c.violation(closeTooBig, fmt.Errorf("%w: message over %d bytes", protocol.ErrFrameTooLarge, c.max+protocol.LengthSize))
			}
			return err
		}
	}
	// A message is all or nothing: validate every frame before handing out
	// the first, so a bad message has no partial effect.
	if err := protocol.SplitFrames(buf, c.max, func([]byte) error { return nil }); err != nil {
		code := closeProtocolError
		if errors.Is(err, protocol.ErrFrameTooLarge) {
			code = closeTooBig
		}
		return c.violation(code, err)
	}
	c.buf, c.msg = buf, buf
	return nil
}

// releaseBuffer gives the consumed message's buffer back: a pooled one to
// the pool, a larger one's charge to the budget.
func (c *wsConn) releaseBuffer() {
	switch {
	case c.buf == nil:
	case cap(c.buf) == wsIdleBuffer:
		c.pool.Put(c.buf[:cap(c.buf)])
	default:
		c.budget.Release(int(c.held.Swap(0)))
	}
	c.buf, c.msg = nil, nil
}

// take charges n more buffer bytes to the budget.
func (c *wsConn) take(n int) error {
	if c.budget == nil {
		return nil
	}
	if !c.budget.Acquire(n) {
		return fmt.Errorf("%w: %d more bytes for a partial message (%d of %d in use)", protocol.ErrBudgetExceeded, n, c.budget.Used(), c.budget.Max())
	}
	c.held.Add(int64(n))
	if c.closed.Load() {
		c.budget.Release(int(c.held.Swap(0)))
	}
	return nil
}

// violation sends a close frame with code and returns err.
func (c *wsConn) violation(code int, err error) error {
	c.closeSent.Store(true)
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncate(err.Error(), 120)), time.Now().Add(closeControlWait))
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// CloseWrite sends a Close frame with code and text; reads go on until the
// peer answers with its own Close frame (reported as io.EOF).
func (c *wsConn) CloseWrite(code int, text string) error {
	c.closeSent.Store(true)
	err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncate(text, 120)), time.Now().Add(closeControlWait))
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		return fmt.Errorf("websocket close frame: %w", err)
	}
	return nil
}

func (c *wsConn) SetReadLimit(maxPacketSize int) {
	c.max = maxPacketSize
	c.ws.SetReadLimit(int64(maxPacketSize) + protocol.LengthSize)
}

func (c *wsConn) SetControlHook(fn func(size int) error) {
	c.ws.SetPingHandler(func(data string) error {
		if err := fn(len(data)); err != nil {
			return err
		}
		err := c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(closeControlWait))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
		}
		return nil
	})
	c.ws.SetPongHandler(func(data string) error { return fn(len(data)) })
}

func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline sets the no-progress span of the next WriteFrames (see
// Conn): each write that made progress renews it.
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// Close closes the connection and gives back the buffer's budget.
func (c *wsConn) Close() error {
	c.closed.Store(true)
	c.budget.Release(int(c.held.Swap(0)))
	return c.ws.Close()
}

func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }
func (c *wsConn) Kind() Kind           { return c.kind }
