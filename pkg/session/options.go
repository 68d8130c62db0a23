package session

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/config"
	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Options configure a Manager. Zero values take the defaults of
// protocol.md section 6 (see config.Default).
type Options struct {
	// Handler is the application (required).
	Handler Handler
	// Logger receives session events (default slog.Default()).
	Logger *slog.Logger

	// RequestHeader is the inbound header layout (default compact).
	RequestHeader protocol.HeaderFormat
	// HeartbeatMsgID is the heartbeat message name (default "@Heart@Beat@").
	HeartbeatMsgID string
	// AuthenticateMsgID must open a session (default "AuthenticateRequest").
	AuthenticateMsgID string
	// Compression compresses outbound payloads of at least CompressionThreshold bytes.
	Compression bool
	// CompressionThreshold is the smallest payload compressed (default 512).
	CompressionThreshold int

	// MaxPacketSize bounds a frame body (default 2 MiB).
	MaxPacketSize int
	// MaxConnections bounds concurrent connections (default 10,000).
	MaxConnections int
	// MaxConnectionsPerIP bounds connections per address, IPv6 per /64 (default 10).
	MaxConnectionsPerIP int
	// PerIPExempt lists addresses not subject to MaxConnectionsPerIP (default loopback).
	PerIPExempt []netip.Prefix
	// RatePerSecond is the sustained packets per second per session (default 100; negative disables).
	RatePerSecond float64
	// RateBurst is the token bucket size (default 200).
	RateBurst int
	// MaxRateViolations closes a session after this many consecutive over-limit packets (default 100).
	MaxRateViolations int
	// HeartbeatTimeout closes a session with no inbound frame for this long (default 90s).
	HeartbeatTimeout time.Duration
	// AuthTimeout closes a session not authenticated within this long (default 10s).
	AuthTimeout time.Duration
	// MaxAuthAttempts closes a session after this many failed authentications (default 5).
	MaxAuthAttempts int
	// MaxPendingOutboundBytes bounds a session's unsent bytes (default 1 MiB).
	MaxPendingOutboundBytes int
	// WriteTimeout bounds one socket write (default 5s).
	WriteTimeout time.Duration

	// InboundBudget, when set, is the process-wide budget of bytes held by
	// partly received frames; the server creates it and hands the same one
	// to its transports.
	InboundBudget *protocol.Budget

	// Observer, when set, receives per-packet measurements (metrics histograms).
	Observer Observer

	// Tokens verifies signed tokens (reconnect tokens, and credentials in
	// token mode). When set, an authenticate payload that is a JWT is checked
	// by the engine: a valid one authenticates its account without calling
	// Handler.Authenticate; an expired, tampered or wrongly-signed one fails
	// with ErrorCode 5.
	Tokens *Tokens
	// TokenAuth (auth mode "token") requires every authenticate payload to be
	// a valid token; Handler.Authenticate is never called. Needs Tokens.
	TokenAuth bool
}

// OptionsFromConfig maps a server configuration onto Options.
func OptionsFromConfig(c config.Config, h Handler, log *slog.Logger) (Options, error) {
	o := Options{
		Handler:                 h,
		Logger:                  log,
		HeartbeatMsgID:          c.Protocol.HeartbeatMsgID,
		AuthenticateMsgID:       c.Protocol.AuthenticateMsgID,
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
			return Options{}, fmt.Errorf("limits.perIPExempt: %w", err)
		}
		o.PerIPExempt = append(o.PerIPExempt, p.Masked())
	}
	return o, nil
}

func (o *Options) setDefaults() error {
	if o.Handler == nil {
		return fmt.Errorf("session options: Handler is required")
	}
	d := config.Default()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	setStr := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setStr(&o.HeartbeatMsgID, d.Protocol.HeartbeatMsgID)
	setStr(&o.AuthenticateMsgID, d.Protocol.AuthenticateMsgID)
	setInt(&o.CompressionThreshold, d.Protocol.Compression.Threshold)
	setInt(&o.MaxPacketSize, d.Limits.MaxPacketSize)
	setInt(&o.MaxConnections, d.Limits.MaxConnections)
	setInt(&o.MaxConnectionsPerIP, d.Limits.MaxConnectionsPerIP)
	setInt(&o.RateBurst, d.Limits.RateLimit.Burst)
	setInt(&o.MaxRateViolations, d.Limits.RateLimit.MaxViolations)
	setInt(&o.MaxAuthAttempts, d.Limits.MaxAuthAttempts)
	setInt(&o.MaxPendingOutboundBytes, d.Limits.MaxPendingOutboundBytes)
	setDur(&o.HeartbeatTimeout, d.Limits.HeartbeatTimeout.Duration)
	setDur(&o.AuthTimeout, d.Limits.AuthTimeout.Duration)
	setDur(&o.WriteTimeout, d.Limits.WriteTimeout.Duration)
	if o.RatePerSecond == 0 {
		o.RatePerSecond = d.Limits.RateLimit.PacketsPerSecond
	}
	if o.PerIPExempt == nil {
		for _, s := range d.Limits.PerIPExempt {
			o.PerIPExempt = append(o.PerIPExempt, netip.MustParsePrefix(s))
		}
	}
	if o.TokenAuth && o.Tokens == nil {
		return fmt.Errorf("session options: TokenAuth needs Tokens")
	}
	if len(o.HeartbeatMsgID) > protocol.MaxMsgIDLen || len(o.AuthenticateMsgID) > protocol.MaxMsgIDLen {
		return fmt.Errorf("session options: message ids must be at most %d bytes", protocol.MaxMsgIDLen)
	}
	return nil
}
