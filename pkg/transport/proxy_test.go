package transport

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/playhouse-k8s/playhouse/internal/testutil"
)

func TestProxyScan(t *testing.T) {
	v2 := func() []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 1}, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 2})
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	for _, tc := range []struct {
		name string
		in   []byte
		n    int
		kind proxyKind
	}{
		{"empty", nil, 0, proxyMore},
		{"first byte of v1", []byte("P"), 0, proxyMore},
		{"v1 signature cut", []byte("PROX"), 0, proxyMore},
		{"v1 line cut", []byte("PROXY TCP4 1.2.3.4 "), 0, proxyMore},
		{"v1 whole", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nrest"), 32, proxyDone},
		{"v1 too long", append([]byte("PROXY "), make([]byte, 200)...), 0, proxyBad},
		{"frame starting with P", []byte("PQ\x00\x00"), 0, proxyNone},
		{"TLS", []byte{0x16, 0x03, 0x01}, 0, proxyNone},
		{"HTTP", []byte("GET / HTTP/1.1\r\n"), 0, proxyNone},
		{"v2 cut", v2[:10], 0, proxyMore},
		{"v2 fixed part only", v2[:16], 0, proxyMore},
		{"v2 whole", append(append([]byte{}, v2...), 'x'), len(v2), proxyDone},
	} {
		n, kind := proxyScan(tc.in)
		if n != tc.n || kind != tc.kind {
			t.Errorf("%s: proxyScan = %d, %d; want %d, %d", tc.name, n, kind, tc.n, tc.kind)
		}
	}
}

// ReadHeader accepts a header in pieces, replays what follows it, and
// refuses a header from an untrusted peer.
func TestReadProxyHeaderInPieces(t *testing.T) {
	p, err := NewProxyPolicy([]string{"127.0.0.1/32"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := tcpPair(t)
	go func() {
		_, _ = cli.Write([]byte("PROXY TCP4 203.0.113.7 10.0.0.1 40001 7777"))
		time.Sleep(50 * time.Millisecond) // the split under test
		_, _ = cli.Write([]byte("\r\nhello"))
	}()
	c, err := p.ReadHeader(srv)
	if err != nil {
		t.Fatal(err)
	}
	if c.RemoteAddr().String() != "203.0.113.7:40001" {
		t.Fatalf("remote %s", c.RemoteAddr())
	}
	buf := make([]byte, 5)
	_ = c.SetReadDeadline(time.Now().Add(testutil.Timeout))
	if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
		t.Fatalf("after the header: %q, %v", buf, err)
	}

	strict, _ := NewProxyPolicy([]string{"10.0.0.0/8"}, 5*time.Second)
	srv2, cli2 := tcpPair(t)
	_, _ = cli2.Write([]byte("PROXY TCP4 203.0.113.7 10.0.0.1 40001 7777\r\n"))
	if _, err := strict.ReadHeader(srv2); !errors.Is(err, ErrProxyHeader) {
		t.Fatalf("header from an untrusted peer: %v", err)
	}
	// No header: the bytes read are replayed and the address is the peer's.
	srv3, cli3 := tcpPair(t)
	_, _ = cli3.Write([]byte("GET / HTTP/1.1\r\n"))
	c3, err := strict.ReadHeader(srv3)
	if err != nil || c3.RemoteAddr().String() != cli3.LocalAddr().String() {
		t.Fatalf("no header: %v, %v", c3, err)
	}
	line := make([]byte, 3)
	if _, err := c3.Read(line); err != nil || string(line) != "GET" {
		t.Fatalf("replayed %q, %v", line, err)
	}
}

// Gate runs in accept order before each connection's goroutine; Conns
// tracks the goroutines until handle returns.
func TestServeGateAndConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	n := 0
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, AcceptOptions{Logger: quietLogger(), Conns: &conns, Gate: func(c net.Conn) (net.Conn, bool) {
			mu.Lock()
			defer mu.Unlock()
			n++
			if n%2 == 0 {
				c.Close()
				return nil, false
			}
			return c, true
		}}, func(c net.Conn) {
			<-release
			c.Close()
		})
	}()
	for range 4 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	testutil.WaitFor(t, "four connections gated", func() bool { mu.Lock(); defer mu.Unlock(); return n == 4 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { conns.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Conns done while handlers still run")
	default:
	}
	close(release)
	<-waited
}
