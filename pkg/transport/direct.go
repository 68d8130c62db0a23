package transport

import (
	"crypto/tls"
	"net"
	"syscall"
)

// DirectWriter is a Conn that can write without waiting for the socket, so a
// producer (a session replying on its own goroutine, a broadcast loop) can
// put frames on the wire itself when nothing else is queued, instead of
// waking a writer goroutine (see Outbox). Only one goroutine writes at a
// time: the Outbox guarantees it.
type DirectWriter interface {
	// TryWriteFrames writes as much of b (whole frames) as the socket
	// accepts now, without waiting, and reports whether some is left. What
	// is left stays with the connection (it may alias b, so b must stay
	// untouched) until FlushRest writes it; no other write may come in
	// between. On an error, what was not written is left too.
	TryWriteFrames(b []byte) (left bool, err error)
	// FlushRest writes what TryWriteFrames left, waiting for the socket
	// within the write deadline as WriteFrames does.
	FlushRest() error
}

// FrameBufferer is a Conn that can tell whether its next ReadFrame returns
// without waiting for the network. A session holds its replies while it
// reads frames that were buffered together, so that the replies to one read
// leave in one write (see Outbox.Hold).
type FrameBufferer interface {
	// FrameBuffered reports whether a whole frame (or a read error) is
	// buffered.
	FrameBuffered() bool
}

var (
	_ DirectWriter  = (*streamConn)(nil)
	_ FrameBufferer = (*streamConn)(nil)
	_ FrameBufferer = (*wsConn)(nil)
)

// FrameBuffered implements FrameBufferer.
func (c *streamConn) FrameBuffered() bool { return c.fr.FrameBuffered() }

// FrameBuffered implements FrameBufferer: the rest of the current message
// (messages the WebSocket library has buffered are not visible).
func (c *wsConn) FrameBuffered() bool { return len(c.msg) > 0 }

// directSocket finds the TCP socket under c whose bytes are exactly the
// connection's: it looks through wrappers that expose NetConn (PROXY
// protocol, admission) and stops at TLS, whose records must go through
// crypto/tls. It returns nil when there is none.
func directSocket(c net.Conn) syscall.RawConn {
	for range 8 {
		switch v := c.(type) {
		case *tls.Conn:
			return nil
		case *net.TCPConn:
			raw, err := v.SyscallConn()
			if err != nil {
				return nil
			}
			return raw
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// TryWriteFrames implements DirectWriter: one non-blocking write(2) on the
// socket. Without a direct socket (TLS, or not TCP) nothing is written and
// all of b is left.
func (c *streamConn) TryWriteFrames(b []byte) (bool, error) {
	if c.raw == nil {
		c.rest = b
		return true, nil
	}
	n, err := writeNow(c.raw, b)
	c.rest = restOf(b, n)
	return c.rest != nil, err
}

// FlushRest implements DirectWriter.
func (c *streamConn) FlushRest() error {
	rest := c.rest
	c.rest = nil
	if rest == nil {
		return nil
	}
	return c.WriteFrames(rest)
}

// restOf is b without its first n bytes, or nil when all are written.
func restOf(b []byte, n int) []byte {
	if n >= len(b) {
		return nil
	}
	return b[n:]
}
