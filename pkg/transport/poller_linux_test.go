package transport

import (
	"net"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
)

// socketOf returns the server side's socket of a loopback pair.
func socketOf(t *testing.T, c net.Conn) syscall.RawConn {
	t.Helper()
	raw := readSocket(c)
	if raw == nil {
		t.Fatal("no socket under the connection")
	}
	return raw
}

// A parked socket wakes once on input and once on the peer's close; a
// cancelled wait never wakes; the poller releases its epoll instance and
// goroutine once nothing is parked.
func TestPollerWakesOnInputAndClose(t *testing.T) {
	p := NewPoller()
	server, client := testutil.TCPPair(t)
	raw := socketOf(t, server)

	var woke atomic.Int32
	k, err := p.Park(raw, func() { woke.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if p.Parked() != 1 {
		t.Fatalf("parked %d, want 1", p.Parked())
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "wake on input", func() bool { return woke.Load() == 1 })
	if k.Cancel() {
		t.Fatal("Cancel succeeded after the wake")
	}
	k.Done()
	if p.Parked() != 0 {
		t.Fatalf("parked %d after the wake, want 0", p.Parked())
	}
	buf := make([]byte, 8)
	if n, err := server.Read(buf); n != 1 || err != nil {
		t.Fatalf("read after the wake: %d, %v", n, err)
	}

	// Cancelled before any input: its wake never runs, even when input
	// comes later and the socket parks again (the second wake runs).
	var first, second atomic.Int32
	k1, err := p.Park(raw, func() { first.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Cancel() {
		t.Fatal("Cancel of a waiting park failed")
	}
	k1.Done()
	if _, err := client.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	k2, err := p.Park(raw, func() { second.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "wake of the second park", func() bool { return second.Load() == 1 })
	k2.Done()
	if first.Load() != 0 {
		t.Fatal("a cancelled park woke")
	}
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}

	// The peer's close wakes a parked socket.
	var closed atomic.Int32
	k3, err := p.Park(raw, func() { closed.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	testutil.WaitFor(t, "wake on the peer's close", func() bool { return closed.Load() == 1 })
	k3.Done()

	testutil.WaitFor(t, "the poller released its instance", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.running && p.epfd < 0
	})
}

// Parking a closed socket fails with an error; nothing stays parked.
func TestPollerRefusesClosedSocket(t *testing.T) {
	p := NewPoller()
	server, _ := testutil.TCPPair(t)
	raw := socketOf(t, server)
	server.Close()
	if _, err := p.Park(raw, func() {}); err == nil {
		t.Fatal("Park of a closed socket succeeded")
	}
	if p.Parked() != 0 {
		t.Fatalf("parked %d, want 0", p.Parked())
	}
}

// ReadSocket finds the socket through TLS and wrappers, and is nil when
// parking is disabled or the connection is not TCP.
func TestReadSocket(t *testing.T) {
	server, _ := testutil.TCPPair(t)
	if NewStreamConnWith(server, KindTCP, StreamOptions{}).(Parker).ReadSocket() == nil {
		t.Fatal("no socket for a TCP connection")
	}
	if NewStreamConnWith(server, KindTCP, StreamOptions{DisableParking: true}).(Parker).ReadSocket() != nil {
		t.Fatal("a socket with parking disabled")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if NewStreamConn(a, KindTCP, 0).(Parker).ReadSocket() != nil {
		t.Fatal("a socket for a pipe")
	}
}
