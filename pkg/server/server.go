// Package server wires a configuration into running transports, the session
// manager and the admin HTTP endpoint, and owns the process lifecycle.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/metrics"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Server is one session-engine process: listeners, sessions and admin HTTP.
type Server struct {
	opts    Options
	log     *slog.Logger
	mgr     *session.Manager
	metrics *metrics.Metrics
	certExp atomic.Int64 // served certificate's NotAfter, Unix seconds; 0 without TLS
	started atomic.Bool
	ready   atomic.Bool

	mu          sync.Mutex
	listeners   map[transport.Kind]net.Listener
	admin       *http.Server
	adminLn     net.Listener
	tlsConfig   *tls.Config
	httpServers []*http.Server
	queues      []*connQueue
	cancel      context.CancelFunc
	runCtx      context.Context // Start's context, canceled when accepting stops
	mounted     []net.Listener  // the listeners given to AdmitListener
	serving     sync.WaitGroup  // accept loops and upgrade servers
	conns       sync.WaitGroup  // connection goroutines (see acceptLoop, handOff)
	open        atomic.Int64    // admitted connections of the own listeners and AdmitListener's not yet closed
	budget      *protocol.Budget
	proxy       *transport.ProxyPolicy
	abortCtx    context.Context    // canceled by Abort
	abort       context.CancelFunc // cancels abortCtx
}

// New builds a server from opts. opts.Session.Handler is required; the
// Session options' Observer and InboundBudget are set by New (the engine's
// metrics and the InboundBudgetBytes budget), and Tokens, when nil, get a
// random per-process key (reconnect tokens valid on this instance only,
// lifetime DefaultReconnectTokenLifetime).
func New(opts Options) (*Server, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	log := opts.Logger
	met := metrics.New()
	sopts := opts.Session
	sopts.Logger = log
	sopts.Observer = met
	budget := protocol.NewBudget(max(opts.InboundBudgetBytes, 0)) // 0: unlimited
	sopts.InboundBudget = budget
	if sopts.Tokens == nil {
		// Reconnect tokens (the drain's push carries one) signed with a
		// random key: valid on this instance only.
		key := make([]byte, session.MinSigningKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
		t, err := session.NewTokens(key, DefaultReconnectTokenLifetime)
		if err != nil {
			return nil, err
		}
		sopts.Tokens = t
	}
	mgr, err := session.NewManager(sopts)
	if err != nil {
		return nil, err
	}
	if eff := mgr.Options(); eff.MaxPendingOutboundBytes < eff.MaxPacketSize+protocol.LengthSize {
		return nil, fmt.Errorf("limits.maxPendingOutboundBytes (%d) must be at least limits.maxPacketSize + 4 (%d): a maximum-size reply would never fit", eff.MaxPendingOutboundBytes, eff.MaxPacketSize+protocol.LengthSize)
	}
	s := &Server{opts: opts, log: log, mgr: mgr, metrics: met, listeners: make(map[transport.Kind]net.Listener), budget: budget}
	if pp := opts.ProxyProtocol; len(pp.TrustedCIDRs) > 0 {
		if s.proxy, err = transport.NewProxyPolicy(pp.TrustedCIDRs, pp.HeaderTimeout); err != nil {
			return nil, err
		}
	}
	s.abortCtx, s.abort = context.WithCancel(context.Background())
	met.Attach(mgr, mgr.Draining, s.certExpiry)
	met.AttachBudget(budget)
	met.AttachOpenConnections(s.OpenConnections)
	met.AttachLimits(mgr.Options().MaxConnections)
	return s, nil
}

// Metrics returns the engine's metrics (served at /metrics on the admin port).
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// certExpiry is the served certificate's expiry, or zero without TLS.
func (s *Server) certExpiry() time.Time {
	if v := s.certExp.Load(); v != 0 {
		return time.Unix(v, 0)
	}
	return time.Time{}
}

// InboundBudget returns the process-wide budget of bytes held by partly
// received frames (limits.inboundBudgetBytes).
func (s *Server) InboundBudget() *protocol.Budget { return s.budget }

// OpenConnections reports the client connections accepted on the server's
// own listeners (and on AdmitListener's) and not yet closed: sessions, and
// connections still in their PROXY-header, TLS-handshake or HTTP-upgrade
// phase. Each holds an admission slot.
func (s *Server) OpenConnections() int64 { return s.open.Load() }

// Manager returns the session manager.
func (s *Server) Manager() *session.Manager { return s.mgr }

// Start binds every enabled listener and the admin endpoint (when
// Options.Admin.Addr is set) and starts serving. With no listener at all it
// serves only the handlers the caller mounts (WebSocketHandler,
// AdminHandler). Addresses with port 0 get a free port (see Addr). It returns once all are
// bound; a bind failure closes what was bound and returns the error.
func (s *Server) Start(ctx context.Context) (err error) {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("server already started")
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	defer func() {
		if err != nil {
			s.cancel()
			s.closeListeners()
		}
	}()
	o := s.opts
	if o.TLSTCP.Addr != "" || o.WSS.Addr != "" {
		if err := s.setupTLS(ctx); err != nil {
			return err
		}
	}
	for _, l := range []struct {
		kind transport.Kind
		addr string
	}{
		{transport.KindTCP, o.TCP.Addr},
		{transport.KindTLSTCP, o.TLSTCP.Addr},
		{transport.KindWebSocket, o.WebSocket.Addr},
		{transport.KindWSS, o.WSS.Addr},
	} {
		if l.addr == "" {
			continue
		}
		if err := s.listen(l.kind, l.addr); err != nil {
			return err
		}
	}
	if err := s.startAdmin(); err != nil {
		return err
	}
	for kind, ln := range s.listeners {
		next := s.serveStreamConn(kind)
		switch kind {
		case transport.KindWebSocket, transport.KindWSS:
			l := o.WebSocket
			if kind == transport.KindWSS {
				l = o.WSS
			}
			q, err := s.serveWebSocket(ctx, kind, ln.Addr(), l)
			if err != nil {
				return err
			}
			next = s.handOff(q)
		}
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			s.acceptLoop(ctx, kind, ln, next)
		}()
	}
	s.ready.Store(true)
	return nil
}

func (s *Server) listen(kind transport.Kind, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s on %s: %w", kind, addr, err)
	}
	s.mu.Lock()
	s.listeners[kind] = ln
	s.mu.Unlock()
	s.log.Info("listening", "transport", string(kind), "addr", ln.Addr().String())
	return nil
}

// WebSocketHandler returns an http.Handler serving the protocol over
// WebSocket into this server's sessions, for mounting on your own mux (for
// WSS, on your own TLS server: pass transport.KindWSS). Connections reaching
// it through your own http.Server are admitted in ServeHTTP (draining,
// maxConnections, per-IP) and their sessions are counted, listed in /status
// and drained like those of the server's own listeners, which admit at
// accept time and are not admitted twice. The handler refuses upgrade
// requests without an Origin header only when allowedOrigins is set and the
// kind's listener options say RefuseMissingOrigin. Behind a PROXY-protocol
// load balancer, serve your http.Server on AdmitListener's listener and set
// its ConnContext to the server's ConnContext.
func (s *Server) WebSocketHandler(kind transport.Kind, allowedOrigins []string) (http.Handler, error) {
	l := s.opts.WebSocket
	if kind == transport.KindWSS {
		l = s.opts.WSS
	}
	return transport.NewWebSocketHandler(transport.WebSocketOptions{
		Kind:                kind,
		MaxPacketSize:       s.mgr.Options().MaxPacketSize,
		AllowedOrigins:      allowedOrigins,
		RefuseMissingOrigin: l.RefuseMissingOrigin,
		HandshakeTimeout:    s.opts.HandshakeTimeout,
		Budget:              s.budget,
		DisableDirectWrites: s.opts.DisableDirectWrites,
		Accept: func(r *http.Request) (func(transport.Conn), func(), error) {
			if ec := edgeFrom(r.Context()); ec != nil {
				// Admitted at accept; its Close gives the slot back and
				// counts a failed upgrade.
				return func(c transport.Conn) {
					ec.served.Store(true)
					s.mgr.Go(c, ec.adm)
				}, func() {}, nil
			}
			adm, err := s.mgr.Admit(remoteAddr(r))
			if err != nil {
				return nil, nil, err
			}
			return func(c transport.Conn) { s.mgr.Go(c, adm) }, func() {
				s.mgr.CountReject(session.RejectUpgrade)
				adm.Release()
			}, nil
		},
	})
}

// remoteAddr is the client address of an HTTP request as a net.Addr.
func remoteAddr(r *http.Request) net.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return &net.TCPAddr{}
}

// serveWebSocket starts the upgrade server of a WebSocket listener and
// returns the queue the accept loop feeds it through.
func (s *Server) serveWebSocket(ctx context.Context, kind transport.Kind, addr net.Addr, l WebSocketListener) (*connQueue, error) {
	h, err := s.WebSocketHandler(kind, l.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(l.Path, h)
	srv := s.upgradeServer(mux)
	srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	q := newConnQueue(addr)
	s.mu.Lock()
	s.httpServers = append(s.httpServers, srv)
	s.queues = append(s.queues, q)
	s.mu.Unlock()
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := srv.Serve(q); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
			s.log.Error("websocket server stopped", "transport", string(kind), "err", err)
		}
	}()
	return q, nil
}

// Addr returns the bound address of a transport's listener, or nil.
func (s *Server) Addr(kind transport.Kind) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ln, ok := s.listeners[kind]; ok {
		return ln.Addr()
	}
	return nil
}

// AdminAddr returns the bound admin address, or nil.
func (s *Server) AdminAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.listeners {
		ln.Close()
	}
	for _, ln := range s.mounted {
		ln.Close()
	}
	for _, q := range s.queues {
		q.Close()
	}
	for _, srv := range s.httpServers {
		// Upgraded connections are hijacked: Close stops only the listener and
		// idle HTTP connections; sessions are closed by the manager.
		srv.Close()
	}
}

// Status is the JSON document served at /status.
type Status struct {
	// Sessions is the number of open sessions, those of mounted handlers
	// included.
	Sessions int `json:"sessions"`
	// SessionsByTransport is the number of open sessions per transport
	// (tcp, tls-tcp, ws, wss), whichever listener or mounted handler
	// they came through.
	SessionsByTransport map[string]int64 `json:"sessionsByTransport"`
	// Draining is true once shutdown has begun.
	Draining bool `json:"draining"`
	// Listeners maps transport to bound address (the server's own listeners).
	Listeners map[string]string `json:"listeners"`
}

// Status returns the document served at /status.
func (s *Server) Status() Status {
	st := Status{Sessions: s.mgr.Count(), Draining: s.mgr.Draining(), Listeners: map[string]string{}, SessionsByTransport: map[string]int64{}}
	for k, ts := range s.mgr.Stats().Transports {
		if ts.Active > 0 {
			st.SessionsByTransport[string(k)] = ts.Active
		}
	}
	s.mu.Lock()
	for k, ln := range s.listeners {
		st.Listeners[string(k)] = ln.Addr().String()
	}
	s.mu.Unlock()
	return st
}

// AdminHandler returns the admin endpoints (GET /healthz, /readyz, /metrics
// and /status) as an http.Handler, for mounting on your own mux when
// Options.Admin.Addr is empty (no admin listener). /readyz answers 503
// until Start has returned and once a drain or shutdown has begun.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() || s.mgr.Draining() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Status())
	})
	return mux
}

// startAdmin binds the admin listener, when one is configured.
func (s *Server) startAdmin() error {
	addr := s.opts.Admin.Addr
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen admin on %s: %w", addr, err)
	}
	o := s.opts
	srv := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: o.HandshakeTimeout,
		ReadTimeout:       o.HandshakeTimeout,
		WriteTimeout:      o.HandshakeTimeout + s.mgr.Options().WriteTimeout,
		IdleTimeout:       adminIdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.admin, s.adminLn = srv, ln
	s.mu.Unlock()
	s.log.Info("admin listening", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin server stopped", "err", err)
		}
	}()
	return nil
}

// setupTLS prepares the TLS configuration of the TLS-TCP and WSS listeners:
// the caller's tls.Config, or the certificate files, reloaded when they
// change (see certFiles).
func (s *Server) setupTLS(ctx context.Context) error {
	t := s.opts.TLS
	if t.Config != nil {
		s.tlsConfig = s.observeCertificates(t.Config)
		return nil
	}
	cf, err := newCertFiles(t.CertFile, t.KeyFile, s.log, s.setCertExpiry)
	if err != nil {
		return err
	}
	go cf.watch(ctx, t.ReloadInterval)
	s.tlsConfig = &tls.Config{GetCertificate: cf.GetCertificate, MinVersion: tls.VersionTLS12}
	return nil
}

// setCertExpiry records the served certificate's expiry for the
// playhouse_tls_certificate_expiry metric.
func (s *Server) setCertExpiry(notAfter time.Time) { s.certExp.Store(notAfter.Unix()) }

// adminIdleTimeout closes idle keep-alive connections to the admin endpoint
// (scrapers reconnect at will).
const adminIdleTimeout = 30 * time.Second

// connWait bounds the wait for connection goroutines after every session
// has ended (they end right after their session; only a handler that never
// returns holds one longer, and that is not waited for).
const connWait = 5 * time.Second

// stopAccepting turns /readyz to 503, makes the manager refuse new
// connections and closes every listener (sessions stay open).
func (s *Server) stopAccepting() {
	s.ready.Store(false)
	s.mgr.SetDraining(true)
	s.cancel()
	s.closeListeners()
	s.serving.Wait()
}

// stopAdmin stops the admin endpoint.
func (s *Server) stopAdmin() {
	s.mu.Lock()
	admin := s.admin
	s.mu.Unlock()
	if admin != nil {
		actx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = admin.Shutdown(actx)
	}
}

// Shutdown stops accepting, closes every session at once with ServerShutdown
// (each flushes what is queued for it), and stops the admin endpoint. It
// returns when all sessions have ended; when ctx ends first, the rest are
// aborted. Use Drain for a graceful stop.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.started.Load() {
		return nil
	}
	s.stopAccepting()
	err := s.mgr.CloseAll(ctx, session.ServerShutdown)
	if err != nil {
		s.mgr.AbortAll(session.ServerShutdown)
	}
	wctx, cancel := context.WithTimeout(ctx, connWait)
	if werr := s.waitConns(wctx); werr != nil && err == nil {
		err = werr
	}
	cancel()
	s.waitSessions(ctx)
	s.stopAdmin()
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// Drain stops the server gracefully (design.md "Drain"): /readyz turns 503,
// the listeners close, every session gets an @Drain@ push with a reconnect
// token, sessions that stay are closed spread over the drain window, and all
// are gone by the drain timeout (or at once when ctx is canceled).
func (s *Server) Drain(ctx context.Context) error {
	if !s.started.Load() {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.abortCtx, cancel)
	defer stop()
	s.stopAccepting()
	err := s.mgr.Drain(ctx, s.opts.DrainTimeout)
	wctx, wcancel := context.WithTimeout(context.Background(), connWait)
	if werr := s.waitConns(wctx); werr != nil {
		s.log.Warn("connections still running after the drain", "err", werr)
	}
	wcancel()
	s.waitSessions(ctx)
	s.stopAdmin()
	if err != nil {
		s.log.Warn("drain ended early", "err", err)
	}
	return nil
}

// waitSessions waits for the sessions that connections finishing their
// handshake started after the manager closed the rest (the manager closes
// them as they register, each with its lingering close), so Shutdown and
// Drain return only once every session has ended; past ctx (or connWait,
// as a handler that never returns must not hold the process) they are
// aborted.
func (s *Server) waitSessions(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, connWait)
	defer cancel()
	if err := s.mgr.Wait(ctx); err != nil {
		s.log.Warn("sessions still open at the end of shutdown; aborting them", "err", err)
		s.mgr.AbortAll(session.ServerShutdown)
	}
}

// Abort cuts a drain in progress (or a later one) short: the sessions still
// open are closed at once. playhouse-server calls it on a second SIGTERM.
func (s *Server) Abort() { s.abort() }

// Run starts the server and serves until ctx is done, then drains within the
// configured drain timeout (Abort ends the drain sooner). A drain cut short
// is logged, not an error: the process still ends cleanly.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Drain(context.Background())
}
