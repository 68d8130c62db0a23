//go:build unix

package transport

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// rawWrite is one non-blocking write's state. Its write method is bound once
// per object, so passing it to RawConn.Control does not allocate.
type rawWrite struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr)
}

func (w *rawWrite) write(fd uintptr) {
	for {
		w.n, w.err = syscall.Write(int(fd), w.b)
		if !errors.Is(w.err, syscall.EINTR) {
			return
		}
	}
}

// rawWrites reuses rawWrite objects across connections: a write is a few
// microseconds, so a handful serve a whole process.
var rawWrites = sync.Pool{New: func() any {
	w := new(rawWrite)
	w.fn = w.write
	return w
}}

// writeNow makes one write(2) on the non-blocking socket and returns what it
// took: 0 with a nil error when the socket buffer is full.
func writeNow(raw syscall.RawConn, b []byte) (int, error) {
	w := rawWrites.Get().(*rawWrite)
	w.b = b
	err := raw.Control(w.fn)
	n, werr := w.n, w.err
	w.b, w.n, w.err = nil, 0, nil
	rawWrites.Put(w)
	if err != nil {
		return 0, fmt.Errorf("direct write: %w", err)
	}
	if n < 0 {
		n = 0
	}
	if errors.Is(werr, syscall.EAGAIN) {
		return n, nil
	}
	if werr != nil {
		return n, fmt.Errorf("direct write: %w", werr)
	}
	return n, nil
}
