package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Kind names a client transport; it is also the "transport" metric label.
type Kind string

// The transports the engine serves.
const (
	KindTCP       Kind = "tcp"
	KindTLSTCP    Kind = "tls-tcp"
	KindWebSocket Kind = "ws"
	KindWSS       Kind = "wss"
)

// Kinds lists every transport, in a fixed order (see Kind.Index).
var Kinds = [...]Kind{KindTCP, KindTLSTCP, KindWebSocket, KindWSS}

// Index is the kind's position in Kinds, or -1 for an unknown kind.
func (k Kind) Index() int {
	for i, kk := range Kinds {
		if kk == k {
			return i
		}
	}
	return -1
}

// Conn is a framed client connection.
type Conn interface {
	// ReadFrame returns the next frame body, valid until the next call.
	ReadFrame() ([]byte, error)
	// WriteFrames writes b, which holds one or more whole frames (length
	// prefixes included), in as few writes as the transport allows.
	WriteFrames(b []byte) error
	// SetReadDeadline bounds the next ReadFrame.
	SetReadDeadline(t time.Time) error
	// SetWriteDeadline bounds the progress of the next WriteFrames: it fails
	// (with an error wrapping os.ErrDeadlineExceeded) when the peer accepts
	// no byte until t. Writes go out in chunks of at most 64 KiB, and each
	// chunk that makes progress moves the deadline on by the same span
	// (t - now at the call), so a large write to a peer reading at a normal
	// pace is never cut.
	SetWriteDeadline(t time.Time) error
	// CloseWrite starts a lingering close after the last write: it tells the
	// peer that nothing more will be sent (TCP FIN, TLS close_notify then FIN,
	// or a WebSocket Close frame carrying code and text) while reads keep
	// working, so the caller can read and discard until the peer closes
	// (protocol.md section 3). code and text matter only on WebSocket.
	CloseWrite(code int, text string) error
	// SetReadLimit changes the largest frame body accepted by later reads
	// (for example a smaller limit before authentication).
	SetReadLimit(maxPacketSize int)
	// SetControlHook sets fn to be called with the size of every control
	// message the transport consumes itself (WebSocket ping and pong), so the
	// session can charge it to its rate limit. A non-nil error from fn fails
	// the read in progress with that error. Stream transports have no control
	// messages and ignore it.
	SetControlHook(fn func(size int) error)
	// Close closes the connection; pending reads and writes fail.
	Close() error
	// RemoteAddr is the client address (after PROXY protocol, if any).
	RemoteAddr() net.Addr
	// Kind names the transport.
	Kind() Kind
}

// streamConn frames a byte stream (TCP or TLS over TCP).
type streamConn struct {
	// What every frame read and direct write touches comes first, so that
	// it fills the fewest cache lines: the frame reader's array holds a
	// small frame read alone.
	raw  syscall.RawConn      // the plain TCP socket for direct writes, or nil
	rest []byte               // left by TryWriteFrames for FlushRest
	sock sockReader           // the frame reader's source while pumping
	fr   protocol.FrameReader // in the same allocation: one less object per read
	net.Conn
	p      pump // see pump.go
	w      progressWriter
	kind   Kind
	noPark bool // StreamOptions.DisableParking
}

// StreamOptions tune a stream connection.
type StreamOptions struct {
	// MaxPacketSize bounds a frame body (default protocol.DefaultMaxPacketSize).
	MaxPacketSize int
	// Budget, when set, is charged with the read buffer's bytes above its
	// idle size (partly received frames); a read that would pass it fails
	// with an error wrapping protocol.ErrBudgetExceeded.
	Budget *protocol.Budget
	// ReadBuffers lends the 4 KiB read buffers a connection borrows while
	// bytes are buffered (nil: one pool shared by the process's stream
	// connections, see sharedBuffers).
	ReadBuffers *protocol.BufferPool
	// Reader, when set, is read instead of the connection itself: the inner
	// net.Conn of a wrapper that does not change reads (it only tracks
	// Close or RemoteAddr), which saves an indirection per read.
	Reader io.Reader
	// DisableDirectWrites makes every write go through the net.Conn's Write
	// on the outbox's writer goroutine. By default, on plain TCP, a producer
	// writes to the socket itself when nothing is queued (see DirectWriter);
	// the socket is found through wrappers that expose NetConn() (never
	// through *tls.Conn), so set this for a wrapper whose Write changes the
	// bytes.
	DisableDirectWrites bool
	// DisableParking makes ReadSocket return nil, so a session on this
	// connection keeps its reader goroutine while idle (see Parker). By
	// default the TCP socket is found through wrappers that expose
	// NetConn(), including *tls.Conn; every wrapper's Read must read its
	// inner connection only when it has nothing buffered (as crypto/tls
	// and bufio.Reader do), so set this for one that does otherwise.
	DisableParking bool
	// DisableSocketReads makes PumpFrames read through the connection's
	// Read, as ReadFrame does. By default, on Linux, when the frames come
	// straight from a TCP socket (the connection itself, or a
	// PROXY-protocol connection from ProxyPolicy once its replayed bytes are
	// read; never TLS), PumpFrames reads the socket itself and can skip the
	// read that would find nothing (see FramePump).
	DisableSocketReads bool
}

// sharedBuffers lends 4 KiB buffers to stream connections that name no pool
// (read buffers) and to every Outbox (queue buffers). It is a cache of free
// buffers (at most protocol.DefaultPooledReadBuffers), not state any
// connection depends on.
var sharedBuffers = protocol.NewBufferPool(0)

// NewStreamConn frames a byte-stream connection: frames are read with a
// protocol.FrameReader bounded by maxPacketSize and written as they are.
func NewStreamConn(c net.Conn, kind Kind, maxPacketSize int) Conn {
	return NewStreamConnWith(c, kind, StreamOptions{MaxPacketSize: maxPacketSize})
}

// NewStreamConnWith is NewStreamConn with options.
func NewStreamConnWith(c net.Conn, kind Kind, opts StreamOptions) Conn {
	if opts.ReadBuffers == nil {
		opts.ReadBuffers = sharedBuffers
	}
	sc := &streamConn{Conn: c, w: progressWriter{c: c}, kind: kind, noPark: opts.DisableParking}
	var r io.Reader = c
	if opts.Reader != nil {
		r = opts.Reader
	}
	sc.fr.Init(r, opts.MaxPacketSize)
	sc.p.init(r, opts.DisableSocketReads)
	sc.fr.SetBudget(opts.Budget)
	sc.fr.SetBufferPool(opts.ReadBuffers)
	if !opts.DisableDirectWrites {
		sc.raw = directSocket(c)
	}
	return sc
}

func (c *streamConn) ReadFrame() ([]byte, error) { return c.fr.Next() }

func (c *streamConn) WriteFrames(b []byte) error {
	if _, err := c.w.Write(b); err != nil {
		return fmt.Errorf("write %d bytes: %w", len(b), err)
	}
	return nil
}

func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// Close closes the connection and gives back the read buffer's budget. While
// frames are pumped from the socket, the socket is shut down at once (the
// peer sees the end of the stream, blocked reads and writes fail) and closed
// on a goroutine of its own, which finishes once the pump returns: closing
// waits for the pump's reference on the socket, and the pump may be the
// caller, or running a handler that does not return. A second Close does
// nothing.
func (c *streamConn) Close() error {
	c.fr.Release()
	switch c.p.state.Swap(pumpClosed) {
	case pumpRunning:
		shutdownSocket(c.p.raw)
		go c.Conn.Close()
		return nil
	case pumpClosed:
		return nil
	}
	return c.Conn.Close()
}

func (c *streamConn) Kind() Kind { return c.kind }

// CloseWrite sends TLS close_notify (on TLS) and then a TCP FIN, keeping the
// read side open.
func (c *streamConn) CloseWrite(int, string) error {
	var conn net.Conn = c.Conn
	if tc, ok := conn.(*tls.Conn); ok {
		if err := tc.CloseWrite(); err != nil {
			return fmt.Errorf("tls close_notify: %w", err)
		}
		conn = tc.NetConn()
	}
	if tcp, ok := tcpConn(conn); ok {
		if err := tcp.CloseWrite(); err != nil {
			return fmt.Errorf("tcp half-close: %w", err)
		}
		return nil
	}
	if hc, ok := conn.(interface{ CloseWrite() error }); ok {
		if err := hc.CloseWrite(); err != nil {
			return fmt.Errorf("half-close: %w", err)
		}
	}
	return nil
}

func (c *streamConn) SetReadLimit(maxPacketSize int) { c.fr.SetMaxPacketSize(maxPacketSize) }

func (c *streamConn) SetControlHook(func(int) error) {}

// ErrProtocol marks a transport-level protocol violation (for example a
// WebSocket text message); sessions close with reason ProtocolError.
var ErrProtocol = errors.New("transport protocol violation")
