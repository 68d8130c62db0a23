//go:build unix

package transport

import (
	"errors"
	"fmt"
	"syscall"
)

// writeNow makes one write(2) on the non-blocking socket and returns what it
// took: 0 with a nil error when the socket buffer is full.
func writeNow(raw syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := raw.Control(func(fd uintptr) {
		for {
			n, werr = syscall.Write(int(fd), b)
			if !errors.Is(werr, syscall.EINTR) {
				return
			}
		}
	})
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
