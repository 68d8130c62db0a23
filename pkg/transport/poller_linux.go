package transport

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollerIdleWait is how long the poller's goroutine waits for an event
// before it checks whether any connection is still parked; when a wait that
// long brought nothing and nothing is parked, it ends and closes its epoll
// instance.
const pollerIdleWait = time.Second

// pollerBatch is how many readiness events one epoll_wait returns at most.
const pollerBatch = 128

// Poller waits for input on parked connections with one epoll instance and
// one goroutine, both made on the first Park and released once nothing has
// been parked for about a second. Its methods are safe for concurrent use.
type Poller struct {
	mu      sync.Mutex
	epfd    int // -1 when there is no epoll instance
	next    uint64
	parked  map[uint64]*Parking
	running bool
}

// Parking is one connection's wait in a Poller. Exactly one of its wake
// (run by the poller) and a successful Cancel happens.
type Parking struct {
	p    *Poller
	id   uint64
	raw  syscall.RawConn
	wake func()
}

// NewPoller returns a Poller; it holds no file descriptor until the first
// Park.
func NewPoller() *Poller { return &Poller{epfd: -1, parked: make(map[uint64]*Parking)} }

// Park waits for raw to become readable (or to reach its end or an error)
// and then runs wake on a new goroutine, once. The caller must call Done on
// the returned Parking when it resumes (in wake, or after a successful
// Cancel).
func (p *Poller) Park(raw syscall.RawConn, wake func()) (*Parking, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("park: epoll_create1: %w", err)
		}
		p.epfd = fd
	}
	p.next++
	k := &Parking{p: p, id: p.next, raw: raw, wake: wake}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(k.id)), Pad: int32(uint32(k.id >> 32))}
	var cerr error
	err := raw.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		if errors.Is(cerr, unix.EEXIST) { // a registration Done could not remove
			cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("park: epoll_ctl: %w", err)
	}
	p.parked[k.id] = k
	if !p.running {
		p.running = true
		go p.loop(p.epfd)
	}
	return k, nil
}

// Cancel ends the wait unless the poller has already ended it; it reports
// whether it did, in which case wake will not run and the caller resumes the
// connection itself (and calls Done).
func (k *Parking) Cancel() bool {
	k.p.mu.Lock()
	defer k.p.mu.Unlock()
	if k.p.parked[k.id] != k {
		return false
	}
	delete(k.p.parked, k.id)
	return true
}

// Done removes the socket from the poller; call it once the wait has ended
// (in wake, or after a successful Cancel), before reading again.
func (k *Parking) Done() {
	p := k.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 {
		return // the poller has closed its instance, and the registration with it
	}
	// A closed socket has left the epoll set by itself: Control fails.
	_ = k.raw.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
}

// Parked reports how many connections wait in the poller.
func (p *Poller) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// loop delivers readiness events until nothing is parked, then closes epfd.
func (p *Poller) loop(epfd int) {
	events := make([]unix.EpollEvent, pollerBatch)
	for {
		n, err := unix.EpollWait(epfd, events, int(pollerIdleWait.Milliseconds()))
		if err != nil && !errors.Is(err, unix.EINTR) {
			// Not expected with a valid instance; wake everything so no
			// connection waits forever, and start over on the next Park.
			p.mu.Lock()
			for id, k := range p.parked {
				delete(p.parked, id)
				go k.wake()
			}
			p.stopLocked(epfd)
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if k, ok := p.parked[id]; ok {
				delete(p.parked, id)
				go k.wake()
			}
		}
		if n <= 0 && len(p.parked) == 0 { // a quiet second with nothing parked
			p.stopLocked(epfd)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// stopLocked ends the loop's instance (p.mu held).
func (p *Poller) stopLocked(epfd int) {
	p.running = false
	p.epfd = -1
	_ = unix.Close(epfd)
}
