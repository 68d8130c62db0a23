package server

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/session"
)

// Defaults of Options.
const (
	// DefaultHandshakeTimeout bounds a TLS handshake, a PROXY header wait
	// and an HTTP upgrade request.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultMaxHeaderBytes bounds the head of an upgrade or admin request.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultInboundBudgetBytes bounds the bytes held process-wide by partly
	// received frames.
	DefaultInboundBudgetBytes = 256 << 20
	// DefaultDrainTimeout bounds a graceful drain.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultReloadInterval is how often certificate files are checked for
	// a change.
	DefaultReloadInterval = 10 * time.Second
	// DefaultReconnectTokenLifetime is the lifetime of reconnect tokens
	// when Session.Tokens is nil.
	DefaultReconnectTokenLifetime = 5 * time.Minute
	// DefaultWebSocketPath is the upgrade path of the WebSocket listeners.
	DefaultWebSocketPath = "/ws"
)

// Options configure a Server. Every listener is optional: an empty address
// binds nothing. Zero values take the defaults above and those of
// session.Options.
type Options struct {
	// Session configures the session manager; Session.Handler, the
	// application, is required. Observer and InboundBudget are set by New.
	Session session.Options
	// Logger receives server and session events (default slog.Default()).
	Logger *slog.Logger

	// TCP is the plain TCP listener.
	TCP Listener
	// TLSTCP is the TCP listener wrapped in TLS (needs TLS).
	TLSTCP Listener
	// WebSocket is the plain WebSocket listener.
	WebSocket WebSocketListener
	// WSS is the WebSocket listener wrapped in TLS (needs TLS).
	WSS WebSocketListener
	// TLS is the certificate of TLSTCP and WSS.
	TLS TLSOptions
	// ProxyProtocol reads PROXY protocol v1/v2 headers on every listener of
	// the server (and on AdmitListener's).
	ProxyProtocol ProxyProtocolOptions
	// Admin is the admin HTTP listener (optional; see AdminHandler).
	Admin AdminOptions

	// HandshakeTimeout bounds a TLS handshake and an HTTP upgrade request
	// (default 5s).
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds the head of an upgrade or admin request
	// (default 16 KiB); past it the request gets 431.
	MaxHeaderBytes int
	// InboundBudgetBytes bounds the bytes held process-wide by partly
	// received frames (default 256 MiB; negative: unlimited).
	InboundBudgetBytes int64
	// DrainTimeout bounds a graceful drain (default 30s).
	DrainTimeout time.Duration
	// DisableDirectWrites makes every reply and push go out on a session's
	// writer goroutine. By default, on plain TCP and WebSocket, the goroutine
	// that produces a frame writes it itself with one non-blocking write when
	// nothing else is queued (transport.DirectWriter); the socket is found
	// through connection wrappers that expose NetConn(), never through TLS.
	// Set it when a listener given to the server wraps connections in a
	// NetConn-exposing type whose Write changes the bytes.
	DisableDirectWrites bool
	// DisableParking keeps a reader goroutine per TCP and TLS-TCP session
	// even while idle. By default a session idle for the session options'
	// IdlePark parks its reader (transport.Parker); the socket is found
	// through wrappers that expose NetConn(), TLS included. Set it when a
	// listener given to the server wraps connections in a NetConn-exposing
	// type whose Read reads the inner connection while it still holds
	// unread bytes. (IdlePark < 0 turns parking off for the whole manager.)
	DisableParking bool
	// DisableSocketReads makes a TCP session read its frames through the
	// connection's Read. By default, on Linux, when a session's frames come
	// straight from its TCP socket (plain TCP, also behind a PROXY-protocol
	// header; never TLS), the session's reader reads the socket itself
	// (transport.FramePump) and a session that may park waits for input
	// without the read that would find nothing: one system call less per
	// request that arrives alone. A connection reset that arrives together
	// with the last request is then seen within IdlePark, not at once, and
	// a Close during a handler call shuts the socket down at once and closes
	// it when the call returns.
	DisableSocketReads bool
}

// Listener is one TCP listener of the server.
type Listener struct {
	// Addr is the listen address ("127.0.0.1:7777"; port 0 picks a free
	// one). Empty: no listener.
	Addr string
}

// WebSocketListener is one WebSocket listener of the server.
type WebSocketListener struct {
	// Addr is the listen address. Empty: no listener (a WebSocketHandler
	// of this kind may still be mounted on your own server).
	Addr string
	// Path is the upgrade path (default "/ws").
	Path string
	// AllowedOrigins lists the Origin header values accepted; empty allows any.
	AllowedOrigins []string
	// RefuseMissingOrigin refuses an upgrade without an Origin header when
	// AllowedOrigins is set (default false: native clients send none).
	RefuseMissingOrigin bool
}

// TLSOptions name the certificate of the TLS listeners: a tls.Config of your
// own, or certificate files that are reloaded when they change.
type TLSOptions struct {
	// Config is used as is when set (for example with GetCertificate
	// serving a certificate rotated in memory, or from ACME). The
	// playhouse_tls_certificate_expiry metric follows the certificates it
	// serves.
	Config *tls.Config
	// CertFile is the PEM certificate chain (when Config is nil).
	CertFile string
	// KeyFile is the PEM private key (when Config is nil).
	KeyFile string
	// ReloadInterval is how often the files are checked for a change
	// (modification time, size or identity), and re-read when one is seen
	// (default 10s).
	ReloadInterval time.Duration
}

// ProxyProtocolOptions enable the PROXY protocol.
type ProxyProtocolOptions struct {
	// TrustedCIDRs lists the peers (load balancers) allowed to send a PROXY
	// header; empty disables the PROXY protocol.
	TrustedCIDRs []string
	// HeaderTimeout bounds the wait for the header (default 5s).
	HeaderTimeout time.Duration
}

// AdminOptions configure the admin listener.
type AdminOptions struct {
	// Addr is the listen address of /healthz, /readyz, /metrics and
	// /status (port 0 picks a free one). Empty: no admin listener; mount
	// AdminHandler on your own mux if you want the endpoints.
	Addr string
}

// errNoCertificate is returned when a TLS listener has no certificate.
var errNoCertificate = errors.New("server options: TLSTCP and WSS need TLS.Config, or TLS.CertFile and TLS.KeyFile")

func (o *Options) setDefaults() error {
	if o.Session.Handler == nil {
		return errors.New("server options: Session.Handler is required")
	}
	if o.Logger == nil {
		o.Logger = o.Session.Logger
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.InboundBudgetBytes == 0 {
		o.InboundBudgetBytes = DefaultInboundBudgetBytes
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.TLS.ReloadInterval <= 0 {
		o.TLS.ReloadInterval = DefaultReloadInterval
	}
	for _, w := range []*WebSocketListener{&o.WebSocket, &o.WSS} {
		if w.Path == "" {
			w.Path = DefaultWebSocketPath
		}
	}
	if (o.TLSTCP.Addr != "" || o.WSS.Addr != "") && o.TLS.Config == nil && (o.TLS.CertFile == "" || o.TLS.KeyFile == "") {
		return errNoCertificate
	}
	return nil
}
