package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/pires/go-proxyproto"
)

// ErrProxyHeader marks a connection refused for its PROXY protocol header
// (malformed, too slow, or sent by a peer that is not trusted to send one).
var ErrProxyHeader = errors.New("bad PROXY protocol header")

// PROXY protocol signatures and sizes (haproxy's proxy-protocol.txt).
var (
	proxyV1Sig = []byte("PROXY ")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

const (
	proxyV1Max    = 107  // longest v1 line, CRLF included
	proxyV2Fixed  = 16   // signature, version/command, family, length
	proxyV2MaxTLV = 2048 // largest v2 address-and-TLV block accepted
)

// ProxyPolicy reads PROXY protocol v1/v2 headers on accepted connections.
// Peers in the trusted ranges (load balancers) may start a connection with
// a header, whose source address then becomes the connection's RemoteAddr;
// they may also connect without one (health checks). A header from any
// other peer is refused.
//
// Unlike a listener that parses the header inside Accept, the policy reads
// it in the connection's own goroutine (see ReadHeader), after the caller
// has admitted the connection by its peer address, so connections still in
// the header phase hold an admission slot like any other.
type ProxyPolicy struct {
	trusted []netip.Prefix
	timeout time.Duration
}

// NewProxyPolicy returns a policy trusting the given CIDRs or addresses,
// waiting at most headerTimeout for a header.
func NewProxyPolicy(trusted []string, headerTimeout time.Duration) (*ProxyPolicy, error) {
	if len(trusted) == 0 {
		return nil, errors.New("proxy protocol: no trusted CIDRs")
	}
	p := &ProxyPolicy{timeout: headerTimeout}
	if p.timeout <= 0 {
		p.timeout = 5 * time.Second
	}
	for _, s := range trusted {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("proxy protocol trusted CIDR %q: %w", s, err)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		p.trusted = append(p.trusted, pfx.Masked())
	}
	return p, nil
}

// Trusts reports whether addr may send a PROXY header.
func (p *ProxyPolicy) Trusts(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, pfx := range p.trusted {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// ReadHeader reads the PROXY header c may start with, within the header
// timeout. The header may arrive in any number of pieces. It returns a
// connection that replays the bytes read past the header and whose
// RemoteAddr is the header's source address (c's own when there is no
// header, or for a LOCAL/UNKNOWN header). A peer that sends nothing within
// the timeout is taken to have no header. Errors wrap ErrProxyHeader.
func (p *ProxyPolicy) ReadHeader(c net.Conn) (net.Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(p.timeout)); err != nil {
		return nil, fmt.Errorf("%w: set deadline: %v", ErrProxyHeader, err)
	}
	buf := make([]byte, 0, 128)
	for {
		n, kind := proxyScan(buf)
		switch {
		case kind == proxyNone:
			return p.done(c, nil, buf)
		case kind == proxyBad:
			return nil, fmt.Errorf("%w from %s: malformed or too long", ErrProxyHeader, c.RemoteAddr())
		case n > 0:
			if !p.Trusts(c.RemoteAddr()) {
				return nil, fmt.Errorf("%w from untrusted peer %s", ErrProxyHeader, c.RemoteAddr())
			}
			h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(buf[:n]), max(n, 16)))
			if err != nil {
				return nil, fmt.Errorf("%w from %s: %v", ErrProxyHeader, c.RemoteAddr(), err)
			}
			return p.done(c, h, buf[n:])
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && m == 0 {
			if len(buf) == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				return p.done(c, nil, nil) // silent peer: no header
			}
			return nil, fmt.Errorf("%w from %s: %v", ErrProxyHeader, c.RemoteAddr(), err)
		}
	}
}

// done clears the deadline and wraps c.
func (p *ProxyPolicy) done(c net.Conn, h *proxyproto.Header, rest []byte) (net.Conn, error) {
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("%w: clear deadline: %v", ErrProxyHeader, err)
	}
	pc := &proxiedConn{Conn: c, remote: c.RemoteAddr()}
	if len(rest) > 0 {
		pc.rest = bytes.Clone(rest)
	}
	if h != nil && !h.Command.IsLocal() && h.SourceAddr != nil {
		pc.remote = h.SourceAddr
	}
	return pc, nil
}

type proxyKind int

const (
	proxyMore proxyKind = iota // a header may be starting: read more
	proxyNone                  // the stream does not start with a header
	proxyBad                   // a header that cannot be valid
	proxyDone                  // a whole header of n bytes
)

// proxyScan classifies the first bytes of a stream: n > 0 is the length of
// a whole header.
func proxyScan(b []byte) (n int, kind proxyKind) {
	switch {
	case sigPrefix(b, proxyV1Sig):
		if len(b) < len(proxyV1Sig) {
			return 0, proxyMore
		}
		if i := bytes.IndexByte(b[:min(len(b), proxyV1Max)], '\n'); i >= 0 {
			return i + 1, proxyDone
		}
		if len(b) >= proxyV1Max {
			return 0, proxyBad
		}
		return 0, proxyMore
	case sigPrefix(b, proxyV2Sig):
		if len(b) < proxyV2Fixed {
			return 0, proxyMore
		}
		l := int(binary.BigEndian.Uint16(b[14:16]))
		if l > proxyV2MaxTLV {
			return 0, proxyBad
		}
		if len(b) >= proxyV2Fixed+l {
			return proxyV2Fixed + l, proxyDone
		}
		return 0, proxyMore
	case len(b) == 0:
		return 0, proxyMore
	}
	return 0, proxyNone
}

// sigPrefix reports whether b and sig agree on their common length.
func sigPrefix(b, sig []byte) bool {
	n := min(len(b), len(sig))
	return len(b) > 0 && bytes.Equal(b[:n], sig[:n])
}

// proxiedConn is a connection past its PROXY header: reads replay the bytes
// read with the header first; RemoteAddr is the header's source.
type proxiedConn struct {
	net.Conn
	remote net.Addr
	rest   []byte
}

func (c *proxiedConn) Read(b []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(b, c.rest)
		if c.rest = c.rest[n:]; len(c.rest) == 0 {
			c.rest = nil
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// NetConn returns the underlying connection.
func (c *proxiedConn) NetConn() net.Conn { return c.Conn }

// tcpConn returns the *net.TCPConn under c, if any, looking through
// wrappers that expose NetConn (TLS, PROXY, admission wrappers).
func tcpConn(c net.Conn) (*net.TCPConn, bool) {
	for range 8 {
		switch v := c.(type) {
		case *net.TCPConn:
			return v, true
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}
