package transport

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// livenessPair returns both ends of a loopback TCP connection.
func livenessPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// EnableKeepAlive turns on TCP keepalive and sets TCP_USER_TIMEOUT, so the
// kernel finds a dead peer of a client that never heartbeats.
func TestEnableKeepAliveSetsSocketOptions(t *testing.T) {
	server, _ := livenessPair(t)
	c := NewStreamConn(server, KindTCP, 1024)
	if err := c.(KeepAliver).EnableKeepAlive(3 * time.Second); err != nil {
		t.Fatal(err)
	}
	raw, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var keepalive, userTimeout, idle int
	var gerr error
	_ = raw.Control(func(fd uintptr) {
		if keepalive, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE); gerr != nil {
			return
		}
		if userTimeout, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); gerr != nil {
			return
		}
		idle, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	if keepalive != 1 || userTimeout != 3000 || idle != 1 {
		t.Fatalf("SO_KEEPALIVE %d, TCP_USER_TIMEOUT %d ms, TCP_KEEPIDLE %d s", keepalive, userTimeout, idle)
	}
}

// DiscardInput reads and drops what the peer sends until it closes.
func TestDiscardInputUntilPeerCloses(t *testing.T) {
	server, client := livenessPair(t)
	c := NewStreamConn(server, KindTCP, 16)
	go func() {
		_, _ = client.Write(make([]byte, 1<<20)) // far more than any frame
		client.Close()
	}()
	if err := c.(InputDiscarder).DiscardInput(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatalf("DiscardInput = %v, want nil at the peer's close", err)
	}
}
