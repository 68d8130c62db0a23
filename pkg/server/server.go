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
	"os"
	"sync"
	"sync/atomic"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"github.com/playhouse-k8s/playhouse/pkg/apps/echo"
	"github.com/playhouse-k8s/playhouse/pkg/apps/relay"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/metrics"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/session"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// Server is one session-engine process: listeners, sessions and admin HTTP.
type Server struct {
	cfg     config.Config
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
	serving     sync.WaitGroup // accept loops and upgrade servers
	conns       sync.WaitGroup // connection goroutines (see acceptLoop, handOff)
	open        atomic.Int64   // admitted connections of the own listeners not yet closed
	budget      *protocol.Budget
	proxy       *transport.ProxyPolicy
	abortCtx    context.Context    // canceled by Abort
	abort       context.CancelFunc // cancels abortCtx
}

// ManagerSetter is implemented by handlers that need the session manager
// (for example to Broadcast to a stage); New hands it to them.
type ManagerSetter interface {
	SetManager(*session.Manager)
}

// AppHandler returns the built-in application named in the config.
func AppHandler(name string) (session.Handler, error) {
	switch name {
	case "echo":
		return echo.New(), nil
	case "relay":
		return relay.New(), nil
	default:
		return nil, fmt.Errorf("unknown app %q (built in: echo, relay)", name)
	}
}

// loadTokens reads the signing key, or makes a random one when none is
// configured (tokens are then valid on this instance only).
func loadTokens(a config.Auth, log *slog.Logger) (*session.Tokens, error) {
	var key []byte
	if a.SigningKeyFile != "" {
		var err error
		if key, err = os.ReadFile(a.SigningKeyFile); err != nil {
			return nil, fmt.Errorf("auth.signingKeyFile: %w", err)
		}
	} else {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
		log.Info("no auth.signingKeyFile: signed tokens are valid on this instance only")
	}
	t, err := session.NewTokens(key, a.ReconnectTokenLifetime.Duration)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return t, nil
}

// New validates cfg and builds a server around handler (nil: the config's app).
func New(cfg config.Config, handler session.Handler, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	if handler == nil {
		h, err := AppHandler(cfg.App)
		if err != nil {
			return nil, err
		}
		handler = h
	}
	opts, err := session.OptionsFromConfig(cfg, handler, log)
	if err != nil {
		return nil, err
	}
	if opts.Tokens, err = loadTokens(cfg.Auth, log); err != nil {
		return nil, err
	}
	met := metrics.New()
	opts.Observer = met
	budget := protocol.NewBudget(cfg.Limits.InboundBudgetBytes)
	opts.InboundBudget = budget
	mgr, err := session.NewManager(opts)
	if err != nil {
		return nil, err
	}
	if eff := mgr.Options(); eff.MaxPendingOutboundBytes < eff.MaxPacketSize+protocol.LengthSize {
		return nil, fmt.Errorf("limits.maxPendingOutboundBytes (%d) must be at least limits.maxPacketSize + 4 (%d): a maximum-size reply would never fit", eff.MaxPendingOutboundBytes, eff.MaxPacketSize+protocol.LengthSize)
	}
	s := &Server{cfg: cfg, log: log, mgr: mgr, metrics: met, listeners: make(map[transport.Kind]net.Listener), budget: budget}
	if pp := cfg.Transports.ProxyProtocol; pp.Enabled {
		if s.proxy, err = transport.NewProxyPolicy(pp.TrustedCIDRs, pp.HeaderTimeout.Duration); err != nil {
			return nil, err
		}
	}
	if h, ok := handler.(ManagerSetter); ok {
		h.SetManager(mgr)
	}
	s.abortCtx, s.abort = context.WithCancel(context.Background())
	met.Attach(mgr, mgr.Draining, s.certExpiry)
	met.AttachBudget(budget)
	met.AttachOpenConnections(s.OpenConnections)
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
// own listeners and not yet closed: sessions, and connections still in their
// PROXY-header, TLS-handshake or HTTP-upgrade phase. Each holds an admission
// slot.
func (s *Server) OpenConnections() int64 { return s.open.Load() }

// Manager returns the session manager.
func (s *Server) Manager() *session.Manager { return s.mgr }

// Start binds every enabled listener and the admin endpoint and starts serving.
// Addresses with port 0 get a free port (see Addr). It returns once all are
// bound; a bind failure closes what was bound and returns the error.
func (s *Server) Start(ctx context.Context) (err error) {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("server already started")
	}
	ctx, s.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			s.cancel()
			s.closeListeners()
		}
	}()
	t := s.cfg.Transports
	if t.TLSTCP.Enabled || t.WSS.Enabled {
		if err := s.watchCertificate(ctx, t.TLS); err != nil {
			return err
		}
	}
	for _, l := range []struct {
		kind    transport.Kind
		enabled bool
		addr    string
	}{
		{transport.KindTCP, t.TCP.Enabled, s.cfg.ListenAddr(t.TCP)},
		{transport.KindTLSTCP, t.TLSTCP.Enabled, s.cfg.ListenAddr(t.TLSTCP)},
		{transport.KindWebSocket, t.WebSocket.Enabled, s.cfg.ListenAddr(t.WebSocket.Listener)},
		{transport.KindWSS, t.WSS.Enabled, s.cfg.ListenAddr(t.WSS.Listener)},
	} {
		if !l.enabled {
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
			l := t.WebSocket
			if kind == transport.KindWSS {
				l = t.WSS
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
// WebSocket into this server's sessions, for mounting on your own mux.
// Connections reaching it through your own http.Server are admitted in
// ServeHTTP (it cannot see them accepted); the server's own WebSocket
// listeners admit at accept time and are not admitted twice. The handler
// allows requests without an Origin header as the kind's listener config
// says (allowMissingOrigin).
func (s *Server) WebSocketHandler(kind transport.Kind, allowedOrigins []string) (http.Handler, error) {
	l := s.cfg.Transports.WebSocket
	if kind == transport.KindWSS {
		l = s.cfg.Transports.WSS
	}
	return transport.NewWebSocketHandler(transport.WebSocketOptions{
		Kind:                kind,
		MaxPacketSize:       s.mgr.Options().MaxPacketSize,
		AllowedOrigins:      allowedOrigins,
		RefuseMissingOrigin: !l.AllowMissingOrigin,
		HandshakeTimeout:    s.cfg.Limits.TLSHandshakeTimeout.Duration,
		Budget:              s.budget,
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
func (s *Server) serveWebSocket(ctx context.Context, kind transport.Kind, addr net.Addr, l config.WebSocketListener) (*connQueue, error) {
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
	// Sessions is the number of open sessions.
	Sessions int `json:"sessions"`
	// Draining is true once shutdown has begun.
	Draining bool `json:"draining"`
	// Listeners maps transport to bound address.
	Listeners map[string]string `json:"listeners"`
}

func (s *Server) startAdmin() error {
	ln, err := net.Listen("tcp", s.cfg.AdminAddr())
	if err != nil {
		return fmt.Errorf("listen admin on %s: %w", s.cfg.AdminAddr(), err)
	}
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
		st := Status{Sessions: s.mgr.Count(), Draining: s.mgr.Draining(), Listeners: map[string]string{}}
		s.mu.Lock()
		for k, ln := range s.listeners {
			st.Listeners[string(k)] = ln.Addr().String()
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	l := s.cfg.Limits
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: l.TLSHandshakeTimeout.Duration,
		ReadTimeout:       l.TLSHandshakeTimeout.Duration,
		WriteTimeout:      l.TLSHandshakeTimeout.Duration + l.WriteTimeout.Duration,
		IdleTimeout:       adminIdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
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

// watchCertificate loads the TLS certificate and keeps it current: when the
// files change (a renewed Kubernetes Secret, cert-manager), new handshakes use
// the new certificate without a restart.
func (s *Server) watchCertificate(ctx context.Context, c config.TLS) error {
	cw, err := certwatcher.New(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	cw.WithWatchInterval(c.ReloadInterval.Duration)
	cw.RegisterCallback(func(cert tls.Certificate) {
		if cert.Leaf != nil {
			s.certExp.Store(cert.Leaf.NotAfter.Unix())
			s.log.Info("TLS certificate loaded", "subject", cert.Leaf.Subject.String(), "notAfter", cert.Leaf.NotAfter)
		}
	})
	go func() {
		if err := cw.Start(ctx); err != nil {
			s.log.Error("TLS certificate watch stopped", "err", err)
		}
	}()
	s.tlsConfig = &tls.Config{GetCertificate: cw.GetCertificate, MinVersion: tls.VersionTLS12}
	return nil
}

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
	err := s.mgr.Drain(ctx, s.cfg.DrainTimeout.Duration)
	wctx, wcancel := context.WithTimeout(context.Background(), connWait)
	if werr := s.waitConns(wctx); werr != nil {
		s.log.Warn("connections still running after the drain", "err", werr)
	}
	wcancel()
	s.stopAdmin()
	if err != nil {
		s.log.Warn("drain ended early", "err", err)
	}
	return nil
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
