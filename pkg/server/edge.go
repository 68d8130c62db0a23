package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Admission at the network edge.
//
// Every client listener (TCP, TLS-TCP, WebSocket, WSS) runs the same accept
// loop, and a connection is admitted (Manager.Admit: draining,
// maxConnections, per-IP) the moment it is accepted, before anything is read
// from it: a PROXY header, a TLS handshake and an HTTP upgrade all happen
// while the connection already holds its slot, and the slot is given back
// exactly once, when the connection closes (edgeConn.Close) or its session
// ends.
//
// Behind a PROXY-protocol load balancer the peer address is the balancer's,
// so a connection from a trusted peer is admitted at accept against
// maxConnections only (it holds a file descriptor, so it must count), and,
// once its header has named the real client, re-admitted under the client's
// address, which is where the per-IP limit applies. The re-admission gives
// the first slot back before taking the second, so a full server refuses the
// connection as max_connections rather than counting it twice. A trusted
// peer that sends no header (a health check) is re-admitted under its own
// address.

// edgeConn is an accepted client connection holding an admission slot.
type edgeConn struct {
	net.Conn
	s        *Server
	remote   net.Addr
	adm      *session.Admission
	viaProxy bool        // from a trusted proxy: admitted unkeyed until its header is read
	http     atomic.Bool // handed to an upgrade server
	served   atomic.Bool // became a session
	hijacked atomic.Bool // taken over by the WebSocket upgrade
	once     sync.Once
	httpOnce sync.Once
}

func (c *edgeConn) RemoteAddr() net.Addr { return c.remote }

// NetConn returns the underlying connection.
func (c *edgeConn) NetConn() net.Conn { return c.Conn }

// Close closes the connection and, the first time, gives back its slot; a
// connection of an upgrade port that never became a session is counted as
// a failed upgrade.
func (c *edgeConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.http.Load() && !c.served.Load() {
			c.s.mgr.CountReject(session.RejectUpgrade)
		}
		if c.adm != nil {
			c.adm.Release()
		}
		c.s.open.Add(-1)
	})
	return err
}

// httpDone ends the upgrade server's share of the connection (see
// Server.conns).
func (c *edgeConn) httpDone() { c.httpOnce.Do(c.s.conns.Done) }

// unkeyedAddr stands for a trusted proxy peer before its header is read: it
// is not an IP address, so Admit counts it against maxConnections only.
type unkeyedAddr struct{ peer net.Addr }

func (unkeyedAddr) Network() string  { return "tcp" }
func (a unkeyedAddr) String() string { return "proxy peer " + a.peer.String() }

// longAgo is a deadline in the past, to end blocked reads at shutdown.
var longAgo = time.Unix(1, 0)

// acceptLoop serves a client listener: each connection is admitted in the
// accept loop itself (in accept order), then goes, in its own goroutine,
// through its prelude (PROXY header, TLS handshake) and is handed to next.
// It returns when ctx ends or ln is closed.
func (s *Server) acceptLoop(ctx context.Context, kind transport.Kind, ln net.Listener, next func(ec *edgeConn, c net.Conn)) {
	gate := func(raw net.Conn) (net.Conn, bool) {
		peer := raw.RemoteAddr()
		var admitAs net.Addr = peer
		viaProxy := s.proxy != nil && s.proxy.Trusts(peer)
		if viaProxy {
			admitAs = unkeyedAddr{peer}
		}
		adm, err := s.mgr.Admit(admitAs)
		if err != nil {
			s.log.Debug("connection refused", "transport", string(kind), "err", err)
			raw.Close()
			return nil, false
		}
		s.open.Add(1)
		return &edgeConn{Conn: raw, s: s, remote: peer, adm: adm, viaProxy: viaProxy}, true
	}
	err := transport.Serve(ctx, ln, transport.AcceptOptions{Logger: s.log, Conns: &s.conns, Gate: gate}, func(c net.Conn) {
		ec := c.(*edgeConn)
		// Shutdown ends a prelude that is still waiting for the client.
		raw := ec.Conn // prelude replaces ec.Conn; the socket stays the same
		stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(longAgo) })
		c, ok := s.prelude(ctx, kind, ec)
		if !stop() && ok {
			c.Close()
			return
		}
		if ok {
			next(ec, c)
		}
	})
	if err != nil {
		s.log.Error("accept loop stopped", "transport", string(kind), "err", err)
	}
}

// prelude reads the PROXY header (re-admitting the connection under the
// client address it names) and does the TLS handshake, each within its
// timeout. On failure the connection is closed and counted, and ok is false.
func (s *Server) prelude(ctx context.Context, kind transport.Kind, ec *edgeConn) (c net.Conn, ok bool) {
	if s.proxy != nil {
		pc, err := s.proxy.ReadHeader(ec.Conn)
		if err != nil {
			if ctx.Err() == nil { // not ended by shutdown
				s.mgr.CountReject(session.RejectProxyProtocol)
				s.log.Info("connection refused", "transport", string(kind), "err", err)
			}
			ec.Close()
			return nil, false
		}
		ec.Conn, ec.remote = pc, pc.RemoteAddr()
		if ec.viaProxy {
			ec.adm.Release()
			if ec.adm, err = s.mgr.Admit(ec.remote); err != nil {
				s.log.Debug("connection refused", "transport", string(kind), "err", err)
				ec.Close()
				return nil, false
			}
		}
	}
	if kind != transport.KindTLSTCP && kind != transport.KindWSS {
		return ec, true
	}
	tc := tls.Server(ec, s.tlsConfig)
	hctx, cancel := context.WithTimeout(ctx, s.opts.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		reason := session.TLSHandshakeFailed
		if errors.Is(err, context.DeadlineExceeded) {
			reason = session.TLSHandshakeTimeout
		}
		if ctx.Err() != nil { // ended by shutdown
			ec.Close()
			return nil, false
		}
		s.mgr.CountReject(session.RejectTLS)
		s.log.Info("tls handshake failed", "transport", string(kind), "remote", ec.remote.String(), "reason", reason.String(), "err", err)
		ec.Close()
		return nil, false
	}
	return tc, true
}

// serveStreamConn runs a session on an admitted byte-stream connection.
func (s *Server) serveStreamConn(kind transport.Kind) func(*edgeConn, net.Conn) {
	return func(ec *edgeConn, c net.Conn) {
		ec.served.Store(true)
		opts := transport.StreamOptions{
			MaxPacketSize:       s.mgr.Options().MaxPacketSize,
			Budget:              s.budget,
			DisableDirectWrites: s.opts.DisableDirectWrites,
			DisableParking:      s.opts.DisableParking,
			DisableSocketReads:  s.opts.DisableSocketReads,
		}
		if c == net.Conn(ec) {
			opts.Reader = ec.Conn // edgeConn does not change reads
		}
		s.mgr.Go(transport.NewStreamConnWith(c, kind, opts), ec.adm)
	}
}

// connQueue is the listener of an upgrade server: it yields connections
// that the accept loop has admitted and taken through their prelude.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// handOff gives an admitted connection to the upgrade server behind q. The
// upgrade server's part of the connection is tracked in s.conns until the
// HTTP server closes it or, after an upgrade, the session ends.
func (s *Server) handOff(q *connQueue) func(*edgeConn, net.Conn) {
	return func(ec *edgeConn, c net.Conn) {
		ec.http.Store(true)
		s.conns.Add(1)
		select {
		case q.ch <- c:
		case <-q.done:
			ec.httpDone()
			c.Close()
		}
	}
}

// edgeKey carries the *edgeConn of a request's connection in its context.
type edgeKey struct{}

// edgeOf finds the *edgeConn under an accepted connection.
func edgeOf(c net.Conn) *edgeConn {
	for range 4 {
		switch v := c.(type) {
		case *edgeConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// edgeFrom returns the admitted connection of a request, if it came through
// one of the server's own upgrade listeners.
func edgeFrom(ctx context.Context) *edgeConn {
	ec, _ := ctx.Value(edgeKey{}).(*edgeConn)
	return ec
}

// upgradeServer is the HTTP server of a WebSocket listener: one request
// per connection (no keep-alive), a small header limit, and every timeout
// set, so an HTTP client cannot hold a connection beyond the handshake
// timeout without upgrading.
func (s *Server) upgradeServer(h http.Handler) *http.Server {
	hs := s.opts.HandshakeTimeout
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ec := edgeFrom(r.Context()); ec != nil {
				defer func() {
					if ec.hijacked.Load() {
						ec.httpDone()
					}
				}()
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: hs,
		ReadTimeout:       hs,
		WriteTimeout:      hs + s.mgr.Options().WriteTimeout,
		IdleTimeout:       hs,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if ec := edgeOf(c); ec != nil {
				return context.WithValue(ctx, edgeKey{}, ec)
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			ec := edgeOf(c)
			if ec == nil {
				return
			}
			switch st {
			case http.StateHijacked:
				ec.hijacked.Store(true)
			case http.StateClosed:
				ec.httpDone()
			}
		},
	}
	srv.SetKeepAlivesEnabled(false)
	return srv
}

// waitConns waits for every connection goroutine, at most until ctx ends.
func (s *Server) waitConns(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for connection goroutines: %w", ctx.Err())
	}
}

// AdmitListener wraps a listener of your own HTTP server (one that serves
// a WebSocketHandler) the way the server runs its own listeners: every
// connection is admitted the moment it is accepted (draining,
// maxConnections, per-IP; a refused one is closed at once) and, when
// Options.ProxyProtocol is set, its PROXY header is read within
// HeaderTimeout and the client address it names becomes its RemoteAddr
// and its per-IP key. Serve your http.Server on the returned listener
// (wrapped in tls.NewListener for WSS) and set its ConnContext to the
// server's ConnContext, so that an upgrade uses the connection's admission
// instead of taking a second one. Every connection of the listener holds
// an admission slot until it closes, plain HTTP requests' included. Call
// it after Start; Drain and Shutdown close ln.
func (s *Server) AdmitListener(ln net.Listener) (net.Listener, error) {
	s.mu.Lock()
	ctx := s.runCtx
	if ctx == nil || ctx.Err() != nil {
		s.mu.Unlock()
		return nil, errors.New("AdmitListener: the server is not running (call it after Start)")
	}
	q := newConnQueue(ln.Addr())
	s.mounted = append(s.mounted, ln)
	s.queues = append(s.queues, q)
	s.serving.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.serving.Done()
		// KindWebSocket: the prelude reads the PROXY header only; TLS, if
		// any, is the caller's, above the returned listener.
		s.acceptLoop(ctx, transport.KindWebSocket, ln, func(_ *edgeConn, c net.Conn) {
			select {
			case q.ch <- c:
			case <-q.done:
				c.Close()
			}
		})
	}()
	return q, nil
}

// ConnContext is the http.Server ConnContext to set on your own server
// when it serves AdmitListener's listener: it lets WebSocketHandler find
// the admission the connection took at accept.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if ec := edgeOf(c); ec != nil {
		return context.WithValue(ctx, edgeKey{}, ec)
	}
	return ctx
}
