// Package serverconfig maps playhouse-server's configuration file
// (pkg/config) onto the options of pkg/server and pkg/session. It is the
// only engine package that links the YAML library: a program that embeds
// the engine with server.Options built in code does not import it.
package serverconfig

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
	"github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/session"
)

// New validates c and builds a server around handler (required: pick a
// built-in one with apps.Builtin().Handler(c.App), or pass your own).
func New(c config.Config, handler session.Handler, log *slog.Logger) (*server.Server, error) {
	o, err := Options(c, handler, log)
	if err != nil {
		return nil, err
	}
	return server.New(o)
}

// Apps finds an application's handler by name (apps.Registry is one).
type Apps interface {
	Handler(name string) (session.Handler, error)
}

// NewApp validates c and builds a server around the application that c.App
// names in apps.
func NewApp(c config.Config, apps Apps, log *slog.Logger) (*server.Server, error) {
	h, err := apps.Handler(c.App)
	if err != nil {
		return nil, err
	}
	return New(c, h, log)
}

// Options validates c and maps it onto server.Options around handler. The
// signing key file is read here (or a random key made when none is set).
func Options(c config.Config, handler session.Handler, log *slog.Logger) (server.Options, error) {
	if err := c.Validate(); err != nil {
		return server.Options{}, err
	}
	if handler == nil {
		return server.Options{}, fmt.Errorf("no handler for app %q: pass one (apps.Builtin().Handler picks a built-in)", c.App)
	}
	if log == nil {
		log = slog.Default()
	}
	so, err := SessionOptions(c, handler, log)
	if err != nil {
		return server.Options{}, err
	}
	if so.Tokens, err = loadTokens(c.Auth, log); err != nil {
		return server.Options{}, err
	}
	t := c.Transports
	addr := func(l config.Listener) string {
		if !l.Enabled {
			return ""
		}
		return c.ListenAddr(l)
	}
	ws := func(l config.WebSocketListener) server.WebSocketListener {
		return server.WebSocketListener{
			Addr:                addr(l.Listener),
			Path:                l.Path,
			AllowedOrigins:      l.AllowedOrigins,
			RefuseMissingOrigin: !l.AllowMissingOrigin,
		}
	}
	o := server.Options{
		Session:   so,
		Logger:    log,
		TCP:       server.Listener{Addr: addr(t.TCP)},
		TLSTCP:    server.Listener{Addr: addr(t.TLSTCP)},
		WebSocket: ws(t.WebSocket),
		WSS:       ws(t.WSS),
		TLS: server.TLSOptions{
			CertFile:       t.TLS.CertFile,
			KeyFile:        t.TLS.KeyFile,
			ReloadInterval: t.TLS.ReloadInterval.Duration,
		},
		HandshakeTimeout:   c.Limits.TLSHandshakeTimeout.Duration,
		MaxHeaderBytes:     c.Limits.MaxHeaderBytes,
		InboundBudgetBytes: c.Limits.InboundBudgetBytes,
		DrainTimeout:       c.DrainTimeout.Duration,
	}
	if o.InboundBudgetBytes == 0 { // limits.inboundBudgetBytes: 0 disables
		o.InboundBudgetBytes = -1
	}
	if t.ProxyProtocol.Enabled {
		o.ProxyProtocol = server.ProxyProtocolOptions{TrustedCIDRs: t.ProxyProtocol.TrustedCIDRs, HeaderTimeout: t.ProxyProtocol.HeaderTimeout.Duration}
	}
	if c.Admin.Enabled {
		o.Admin.Addr = c.AdminAddr()
	}
	return o, nil
}

// SessionOptions maps a configuration onto session.Options.
func SessionOptions(c config.Config, h session.Handler, log *slog.Logger) (session.Options, error) {
	o := session.Options{
		Handler:                 h,
		Logger:                  log,
		HeartbeatMsgID:          c.Protocol.HeartbeatMsgID,
		AuthenticateMsgID:       c.Protocol.AuthenticateMsgID,
		AuthenticateMsgIDs:      c.Protocol.AuthenticateMsgIDs.Names(),
		Compression:             c.Protocol.Compression.Enabled,
		CompressionThreshold:    c.Protocol.Compression.Threshold,
		MaxPacketSize:           c.Limits.MaxPacketSize,
		MaxConnections:          c.Limits.MaxConnections,
		MaxConnectionsPerIP:     c.Limits.MaxConnectionsPerIP,
		RatePerSecond:           c.Limits.RateLimit.PacketsPerSecond,
		RateBurst:               c.Limits.RateLimit.Burst,
		MaxRateViolations:       c.Limits.RateLimit.MaxViolations,
		HeartbeatTimeout:        c.Limits.HeartbeatTimeout.Duration,
		AuthTimeout:             c.Limits.AuthTimeout.Duration,
		MaxAuthAttempts:         c.Limits.MaxAuthAttempts,
		MaxPendingOutboundBytes: c.Limits.MaxPendingOutboundBytes,
		WriteTimeout:            c.Limits.WriteTimeout.Duration,
		PerIPExempt:             []netip.Prefix{},
		TokenAuth:               c.Auth.Mode == config.AuthModeToken,

		PreAuthMaxPacketSize: c.Limits.PreAuthMaxPacketSize,
		BytesPerSecond:       c.Limits.RateLimit.BytesPerSecond,
		BytesBurst:           c.Limits.RateLimit.BytesBurst,
		CloseLinger:          c.Limits.CloseLinger.Duration,
		CloseQuiet:           c.Limits.CloseQuiet.Duration,
		ReplyHold:            c.Limits.ReplyHold.Duration,
		IdlePark:             c.Limits.IdlePark.Duration,
		AuthFailuresPerIP:    c.Limits.AuthFailures.PerIP,
		AuthFailureWindow:    c.Limits.AuthFailures.Window.Duration,
		AuthCooldown:         c.Limits.AuthFailures.Cooldown.Duration,
	}
	if c.Limits.AuthFailures.PerIP == 0 {
		o.AuthFailuresPerIP = -1
	}
	if c.Limits.IdlePark.Duration == 0 {
		o.IdlePark = -1 // 0s disables parking
	}
	if c.Limits.RateLimit.PacketsPerSecond == 0 {
		o.RatePerSecond = -1
	}
	if c.Protocol.RequestHeader == config.RequestHeaderFull {
		o.RequestHeader = protocol.FullHeader
	}
	for _, s := range c.Limits.PerIPExempt {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return session.Options{}, fmt.Errorf("limits.perIPExempt: %w", err)
		}
		o.PerIPExempt = append(o.PerIPExempt, p.Masked())
	}
	return o, nil
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
