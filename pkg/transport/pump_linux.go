package transport

import (
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// canPump: sockets can be read directly here.
const canPump = true

// sockReader reads a non-blocking TCP socket for a pump, with recvmsg(2)
// and TCP_INQ, so that every read also says how many bytes the socket still
// holds: when none, and when waiting is allowed, the next read reports
// protocol.ErrWouldBlock without a system call, and the pump waits for the
// poller, which reports any input that came in since. An end of stream
// counts as bytes held (TCP_INQ reports it), so it is never waited past.
type sockReader struct {
	fd      int32
	calls   uint32 // system calls made to read (tests count them)
	mayWait bool   // PumpFrames' idleWatched
	inq     int8   // TCP_INQ: 0 not tried yet, 1 on, -1 unavailable
	skip    bool   // the last read left nothing in the socket
}

// start readies the reader for a pump on fd (the pump's first read always
// reads: the raw read began by forgetting the poller's readiness).
func (r *sockReader) start(mayWait bool) {
	r.mayWait, r.skip = mayWait, false
}

// Read implements io.Reader.
func (r *sockReader) Read(p []byte) (int, error) {
	if r.skip {
		r.skip = false
		return 0, protocol.ErrWouldBlock
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.mayWait && r.inq == 0 {
		r.inq = -1
		if unix.SetsockoptInt(int(r.fd), unix.SOL_TCP, unix.TCP_INQ, 1) == nil {
			r.inq = 1
		}
	}
	if !r.mayWait || r.inq < 0 {
		return r.read(p)
	}
	var (
		iov = unix.Iovec{Base: &p[0]}
		oob [unix.SizeofCmsghdr + 8]byte // one cmsg holding an int
		msg = unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &oob[0]}
	)
	iov.SetLen(len(p))
	msg.SetControllen(len(oob))
	for {
		r.calls++
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, uintptr(r.fd), uintptr(unsafe.Pointer(&msg)), 0)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return 0, protocol.ErrWouldBlock
		case errno != 0:
			return 0, os.NewSyscallError("recvmsg", errno)
		case n == 0:
			return 0, io.EOF
		}
		r.skip = msg.Controllen >= unix.SizeofCmsghdr+4 && inqLeft(&oob) == 0
		return int(n), nil
	}
}

// inqLeft is the TCP_CM_INQ control message's count, or -1 without one.
func inqLeft(oob *[unix.SizeofCmsghdr + 8]byte) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if h.Level != unix.SOL_TCP || h.Type != unix.TCP_CM_INQ || h.Len < unix.SizeofCmsghdr+4 {
		return -1
	}
	return int(*(*int32)(unsafe.Pointer(&oob[unix.SizeofCmsghdr])))
}

// read is one read(2), for a pump that may not wait without reading.
func (r *sockReader) read(p []byte) (int, error) {
	for {
		r.calls++
		n, err := syscall.Read(int(r.fd), p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, protocol.ErrWouldBlock
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// shutdownSocket shuts both directions of the socket down without closing
// it: no wait for the references held on it.
func shutdownSocket(raw syscall.RawConn) {
	_ = raw.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
}
