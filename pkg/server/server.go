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
	cancel      context.CancelFunc
	serving     sync.WaitGroup
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
	mgr, err := session.NewManager(opts)
	if err != nil {
		return nil, err
	}
	if h, ok := handler.(ManagerSetter); ok {
		h.SetManager(mgr)
	}
	s := &Server{cfg: cfg, log: log, mgr: mgr, metrics: met, listeners: make(map[transport.Kind]net.Listener)}
	s.abortCtx, s.abort = context.WithCancel(context.Background())
	met.Attach(mgr, mgr.Draining, s.certExpiry)
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
		switch kind {
		case transport.KindWebSocket:
			if err := s.serveWebSocket(ctx, kind, ln, t.WebSocket); err != nil {
				return err
			}
		case transport.KindWSS:
			if err := s.serveWebSocket(ctx, kind, tls.NewListener(ln, s.tlsConfig), t.WSS); err != nil {
				return err
			}
		default:
			s.serving.Add(1)
			go func() {
				defer s.serving.Done()
				s.serveStream(ctx, kind, ln)
			}()
		}
	}
	s.ready.Store(true)
	return nil
}

func (s *Server) listen(kind transport.Kind, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s on %s: %w", kind, addr, err)
	}
	if pp := s.cfg.Transports.ProxyProtocol; pp.Enabled {
		if ln, err = transport.ProxyListener(ln, pp.TrustedCIDRs, pp.HeaderTimeout.Duration); err != nil {
			return fmt.Errorf("listen %s: %w", kind, err)
		}
	}
	s.mu.Lock()
	s.listeners[kind] = ln
	s.mu.Unlock()
	s.log.Info("listening", "transport", string(kind), "addr", ln.Addr().String())
	return nil
}

// serveStream runs the accept loop of a byte-stream listener (TCP or TLS-TCP).
func (s *Server) serveStream(ctx context.Context, kind transport.Kind, ln net.Listener) {
	maxPacket := s.mgr.Options().MaxPacketSize
	err := transport.Serve(ctx, ln, transport.AcceptOptions{Logger: s.log}, func(c net.Conn) {
		if err := transport.ReadProxyHeader(c); err != nil {
			s.mgr.CountReject(session.RejectProxyProtocol)
			s.log.Info("connection refused", "transport", string(kind), "err", err)
			c.Close()
			return
		}
		adm, err := s.mgr.Admit(c.RemoteAddr())
		if err != nil {
			s.log.Debug("connection refused", "transport", string(kind), "err", err)
			c.Close()
			return
		}
		if kind == transport.KindTLSTCP {
			tc := tls.Server(c, s.tlsConfig)
			hctx, cancel := context.WithTimeout(ctx, s.cfg.Limits.TLSHandshakeTimeout.Duration)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				reason := session.TLSHandshakeFailed
				if errors.Is(err, context.DeadlineExceeded) {
					reason = session.TLSHandshakeTimeout
				}
				s.mgr.CountReject(session.RejectTLS)
				s.log.Info("tls handshake failed", "remote", c.RemoteAddr().String(), "reason", reason.String(), "err", err)
				c.Close()
				adm.Release()
				return
			}
			c = tc
		}
		s.mgr.Serve(transport.NewStreamConn(c, kind, maxPacket), adm)
	})
	if err != nil {
		s.log.Error("accept loop stopped", "transport", string(kind), "err", err)
	}
}

// WebSocketHandler returns an http.Handler serving the protocol over
// WebSocket into this server's sessions, for mounting on your own mux.
func (s *Server) WebSocketHandler(kind transport.Kind, allowedOrigins []string) (http.Handler, error) {
	return transport.NewWebSocketHandler(transport.WebSocketOptions{
		Kind:             kind,
		MaxPacketSize:    s.mgr.Options().MaxPacketSize,
		AllowedOrigins:   allowedOrigins,
		HandshakeTimeout: s.cfg.Limits.TLSHandshakeTimeout.Duration,
		Accept: func(r *http.Request) (func(transport.Conn), func(), error) {
			adm, err := s.mgr.Admit(remoteAddr(r))
			if err != nil {
				return nil, nil, err
			}
			return func(c transport.Conn) { s.mgr.Serve(c, adm) }, adm.Release, nil
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

func (s *Server) serveWebSocket(ctx context.Context, kind transport.Kind, ln net.Listener, l config.WebSocketListener) error {
	h, err := s.WebSocketHandler(kind, l.AllowedOrigins)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(l.Path, h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: s.cfg.Limits.TLSHandshakeTimeout.Duration,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.httpServers = append(s.httpServers, srv)
	s.mu.Unlock()
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
			s.log.Error("websocket server stopped", "transport", string(kind), "err", err)
		}
	}()
	return nil
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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
