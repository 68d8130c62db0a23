//go:build !linux

package transport

import (
	"errors"
	"syscall"
)

// Poller waits for input on parked connections. Parking needs epoll; on
// this system Park always fails and sessions keep their reader goroutine.
type Poller struct{}

// Parking is one connection's wait in a Poller.
type Parking struct{}

// NewPoller returns a Poller.
func NewPoller() *Poller { return &Poller{} }

// Park fails with errors.ErrUnsupported on this system.
func (p *Poller) Park(syscall.RawConn, func()) (*Parking, error) {
	return nil, errors.ErrUnsupported
}

// Cancel reports false: nothing is ever parked here.
func (k *Parking) Cancel() bool { return false }

// Done does nothing here.
func (k *Parking) Done() {}

// Parked reports 0: nothing is ever parked here.
func (p *Poller) Parked() int { return 0 }
