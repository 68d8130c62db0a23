package transport

import (
	"net"
	"syscall"
)

// Parking: an idle session need not keep a goroutine blocked in a read. Its
// reader can end, leaving the connection's socket with a Poller, which
// starts a fresh reader when the socket becomes readable (input, end of
// stream, error) or when the session cancels the wait (a close from another
// goroutine, a deadline). A blocked read costs the session its goroutine's
// stack (2-8 KiB) for as long as the client is silent; a parked one costs a
// few dozen bytes.
//
// Parking is safe after a read failed with a timeout from the socket: every
// layer above the socket (the frame reader, crypto/tls, the PROXY-protocol
// reader) reads the socket only when what it has buffered is not enough to
// go on, so such a read needs new socket input to make progress, and what is
// buffered stays in the connection's structs while it waits.

// Parker is a Conn whose reader can wait for input without a goroutine.
type Parker interface {
	// ReadSocket returns the socket whose readability ends a wait for
	// input, or nil when the connection cannot park (not TCP, a wrapper
	// that hides its socket, parking disabled).
	ReadSocket() syscall.RawConn
}

var _ Parker = (*streamConn)(nil)

// ReadSocket implements Parker: the TCP socket under the connection, found
// through wrappers that expose NetConn, including *tls.Conn.
func (c *streamConn) ReadSocket() syscall.RawConn {
	if c.noPark {
		return nil
	}
	return readSocket(c.Conn)
}

// readSocket finds the TCP socket under c through wrappers that expose
// NetConn (crypto/tls, PROXY protocol, admission). It returns nil when there
// is none.
func readSocket(c net.Conn) syscall.RawConn {
	tcp, ok := tcpConn(c)
	if !ok {
		return nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}
