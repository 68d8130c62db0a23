//go:build !unix

package transport

import "syscall"

// writeNow writes nothing where a non-blocking write is not available: the
// outbox's writer goroutine writes everything.
func writeNow(syscall.RawConn, []byte) (int, error) { return 0, nil }
