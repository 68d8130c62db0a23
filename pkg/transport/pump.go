package transport

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Pumping: a session's reader loop can run inside the socket's wait for
// input instead of around it.
//
// A plain read loop over a net.Conn makes two read(2) calls per request
// that arrives alone: the one that returns it, and, once it is handled, one
// that finds nothing and makes the goroutine wait for the poller. That
// second read cannot be skipped from outside: every Read (and every
// syscall.RawConn.Read) first forgets the readiness the poller recorded, so
// only a read can tell whether input came in meanwhile. Inside one
// RawConn.Read call the poller's readiness is kept between waits, so after
// a read that left nothing in the socket the loop can wait at once: input
// that arrives later is reported by the wait, never lost.
//
// "Left nothing" must be known, not guessed: a read that returns the last
// bytes before an end of stream leaves nothing readable but the end, and
// the readiness that announced both was used up by the wait before that
// read. On Linux each read therefore asks the kernel what is left
// (recvmsg(2) with TCP_INQ, which counts a received FIN as something to
// read). A connection reset that arrives together with the last bytes is
// not counted, so it is seen only when the wait ends for another reason:
// the pump waits without reading only for callers that cut long waits
// short (PumpFrames' idleWatched), such as a session's idle timer.
//
// The handler runs while the read holds a reference on the socket, and
// closing a socket waits for its references: a Close while frames are
// pumped (from the handler itself, or from another goroutine while a
// handler runs) therefore shuts the socket down at once and closes it on a
// goroutine of its own, which finishes once the pump returns (see
// streamConn.Close).

// FrameHandler receives the frames a FramePump reads.
type FrameHandler interface {
	// Frame handles one frame body, valid until it returns, and reports
	// whether to go on reading.
	Frame(body []byte) bool
}

// FramePump is a Conn that can run the reader's loop itself. Every stream
// connection is one; on a plain TCP socket (Linux) it reads the socket
// directly and can wait on the poller without the read(2) that finds
// nothing (see above).
type FramePump interface {
	// PumpFrames reads frames and hands them to h, one at a time and in
	// order, until h returns false (PumpFrames then returns nil) or a read
	// fails: it returns the error ReadFrame would have (end of stream, the
	// read deadline, a frame error, the connection closed). The read
	// deadline bounds each wait for input, as it bounds a ReadFrame; h may
	// set it. Only one goroutine may read at a time.
	//
	// idleWatched says that the caller cuts a wait without input short
	// after a while (a read deadline in the past, as a session's idle timer
	// does): only then may the pump wait without first reading a socket it
	// knows to be empty, since a reset that came with the last input shows
	// only when such a wait ends (the next PumpFrames reads first).
	PumpFrames(h FrameHandler, idleWatched bool) error
}

var _ FramePump = (*streamConn)(nil)

// Pump states (streamConn.pumpState).
const (
	pumpIdle    int32 = iota // not pumping: Close closes at once
	pumpRunning              // in PumpFrames' socket loop: Close closes on its own goroutine
	pumpClosed               // Close was called
)

// pump is a stream connection's state for reading the socket directly.
type pump struct {
	state atomic.Int32
	raw   syscall.RawConn // the socket under the frame reader's source, or nil: never pump
	h     FrameHandler
	step  func(fd uintptr) bool // pumpStep, bound on first use
}

// init finds the socket a pump reads: the frame reader's source src itself,
// or the socket under a PROXY-protocol connection (pumped once its replayed
// bytes are read). Other wrappers, and TLS, are read through their Read.
func (p *pump) init(src io.Reader, disabled bool) {
	if disabled || !canPump {
		return
	}
	r := src
	if pc, ok := r.(*proxiedConn); ok {
		r = pc.Conn
	}
	tcp, ok := r.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return
	}
	p.raw = raw
}

// PumpFrames implements FramePump.
func (c *streamConn) PumpFrames(h FrameHandler, idleWatched bool) error {
	raw := c.p.raw
	if raw == nil {
		return readEach(c, h)
	}
	if pc, ok := c.fr.Reader().(*proxiedConn); ok && len(pc.rest) > 0 {
		return readEach(c, h) // replayed bytes first
	}
	if !c.p.state.CompareAndSwap(pumpIdle, pumpRunning) {
		return readEach(c, h) // closed: the read fails as a ReadFrame would
	}
	if c.p.step == nil {
		c.p.step = c.pumpStep
	}
	c.p.h = h
	c.sock.start(idleWatched)
	src := c.fr.SetReader(&c.sock)
	err := raw.Read(c.p.step)
	c.fr.SetReader(src)
	c.p.h = nil
	c.p.state.CompareAndSwap(pumpRunning, pumpIdle)
	if err == nil {
		// pumpStep stopped on the frame reader's error (sticky), or the
		// handler said stop.
		if ferr := c.fr.Err(); ferr != nil {
			err = c.readError(ferr)
		}
	}
	return err
}

// PumpFrames runs c's reader loop: its own when c is a FramePump, else
// ReadFrame in a loop with the same contract (see FramePump).
func PumpFrames(c Conn, h FrameHandler, idleWatched bool) error {
	if p, ok := c.(FramePump); ok {
		return p.PumpFrames(h, idleWatched)
	}
	return readEach(c, h)
}

// readEach hands the frames ReadFrame returns to h until h says stop (nil)
// or a read fails (its error).
func readEach(c Conn, h FrameHandler) error {
	for {
		body, err := c.ReadFrame()
		if err != nil {
			return err
		}
		if !h.Frame(body) {
			return nil
		}
	}
}

// pumpStep is the function the socket's RawConn.Read calls: it hands every
// whole frame to the handler and returns false to wait for input.
func (c *streamConn) pumpStep(fd uintptr) bool {
	c.sock.fd = int32(fd)
	for {
		body, err := c.fr.Next()
		if err == protocol.ErrWouldBlock {
			return false
		}
		if err != nil {
			return true // PumpFrames takes the error from the frame reader
		}
		if !c.p.h.Frame(body) {
			return true
		}
	}
}

// readError gives a failed read(2) the shape net.Conn.Read gives it.
func (c *streamConn) readError(err error) error {
	if se, ok := err.(*os.SyscallError); ok {
		return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: se}
	}
	return err
}
