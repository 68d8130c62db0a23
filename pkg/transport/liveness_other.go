//go:build !linux

package transport

import "time"

// setUserTimeout is a no-op where TCP_USER_TIMEOUT does not exist; keepalive
// probes alone then find a dead peer.
func setUserTimeout(uintptr, time.Duration) error { return nil }
