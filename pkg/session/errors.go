package session

import (
	"errors"
	"syscall"
)

// isConnReset reports whether err means the peer reset or abandoned the connection.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}
