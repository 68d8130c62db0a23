package transport

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pires/go-proxyproto"
)

// ErrProxyHeader marks a connection refused for its PROXY protocol header
// (malformed, or sent by a peer that is not trusted to send one).
var ErrProxyHeader = errors.New("bad PROXY protocol header")

// ProxyListener wraps ln so that connections from peers in trusted (CIDRs
// or addresses) may start with a PROXY protocol v1 or v2 header, whose source
// address then becomes the connection's RemoteAddr. A trusted peer may also
// connect without a header (load balancer health checks); a header from any
// other peer is refused. The header is read lazily, in the connection's own
// goroutine (see ReadProxyHeader), within headerTimeout.
func ProxyListener(ln net.Listener, trusted []string, headerTimeout time.Duration) (net.Listener, error) {
	if len(trusted) == 0 {
		return nil, errors.New("proxy protocol: no trusted CIDRs")
	}
	policy, err := proxyproto.PolicyFromRanges(trusted, proxyproto.USE, proxyproto.REJECT)
	if err != nil {
		return nil, fmt.Errorf("proxy protocol trusted CIDRs: %w", err)
	}
	return &proxyproto.Listener{Listener: ln, ConnPolicy: policy, ReadHeaderTimeout: headerTimeout}, nil
}

// ReadProxyHeader reads the PROXY header of a connection accepted from a
// ProxyListener (a no-op for any other connection), so that RemoteAddr is
// final. Errors wrap ErrProxyHeader.
func ReadProxyHeader(c net.Conn) error {
	pc, ok := c.(*proxyproto.Conn)
	if !ok {
		return nil
	}
	// A zero-length read processes the header and reports its error.
	if _, err := pc.Read(nil); err != nil {
		return fmt.Errorf("%w from %s: %v", ErrProxyHeader, pc.Raw().RemoteAddr(), err)
	}
	return nil
}

// tcpConn returns the *net.TCPConn under c, if any.
func tcpConn(c net.Conn) (*net.TCPConn, bool) {
	switch v := c.(type) {
	case *net.TCPConn:
		return v, true
	case *proxyproto.Conn:
		return v.TCPConn()
	}
	return nil, false
}
