// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"context"
	"net"
	"testing"
	"time"
)

// Timeout bounds every wait in the tests. Conditions usually hold within
// milliseconds; the bound only keeps a broken build from hanging.
const Timeout = 10 * time.Second

// WaitFor polls cond until it holds, failing the test after Timeout.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Server is what StartServer needs of a server (pkg/server.Server).
type Server interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// StartServer starts srv and shuts it down (within shutdown) when the test
// ends, failing the test if either fails.
func StartServer(t testing.TB, srv Server, shutdown time.Duration) {
	t.Helper()
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdown)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

// TCPPair returns both ends of a real loopback TCP connection, closed at
// cleanup.
func TCPPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}
