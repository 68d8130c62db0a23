package session

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
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
	// AuthenticateMsgIDs lists the message names that authenticate a session
	// (default "AuthenticateRequest" and "AuthenticateReq", the JavaScript
	// connector's short form).
	AuthenticateMsgIDs []string
	// AuthenticateMsgID is the older single-name form; when set it is added to
	// AuthenticateMsgIDs.
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
	// HeartbeatTimeout closes a session that has sent a heartbeat and then no
	// inbound frame for this long (default 90s). A session that never
	// heartbeats is not timed out; its dead peer is found within about this
	// long by TCP keepalive and TCP_USER_TIMEOUT, or WebSocket pings.
	HeartbeatTimeout time.Duration
	// AuthTimeout closes a session not authenticated within this long (default 10s).
	AuthTimeout time.Duration
	// MaxAuthAttempts closes a session after this many failed authentications (default 5).
	MaxAuthAttempts int
	// MaxPendingOutboundBytes bounds a session's unsent bytes (default 1 MiB);
	// the answers of a lingering close have a queue of the same bound.
	MaxPendingOutboundBytes int
	// WriteTimeout bounds one socket write (default 5s).
	WriteTimeout time.Duration

	// PreAuthMaxPacketSize bounds a frame body before authentication
	// (default 64 KiB); a larger frame closes FrameTooLarge.
	PreAuthMaxPacketSize int
	// BytesPerSecond is the sustained inbound bytes per second per session,
	// frame bodies, decompressed payloads and WebSocket control frames
	// included (default 1 MiB; negative disables). Over it a packet counts
	// as a rate-limit violation, like one over RatePerSecond.
	BytesPerSecond float64
	// BytesBurst is the byte bucket size (default 4 MiB); a frame larger than
	// the burst is charged the burst.
	BytesBurst int
	// CloseLinger bounds each phase of a lingering close (default 2s): the
	// answering of requests read after the close point with ErrorCode
	// ServerDraining, then the read-and-discard after the half-close.
	CloseLinger time.Duration
	// CloseQuiet ends the answering phase early once no request has arrived
	// for this long (default 250ms): the client has seen the close and stopped.
	CloseQuiet time.Duration
	// InboundBudget bounds the bytes held process-wide by partly received
	// frames and decompressed request payloads (nil: unlimited); a session
	// that would pass it closes InboundBudgetExceeded.
	InboundBudget *protocol.Budget
	// AuthFailuresPerIP is how many failed authentications an address (IPv6
	// per /64, PerIPExempt excepted) may have within AuthFailureWindow before
	// its new connections are refused for AuthCooldown (default 20;
	// negative disables).
	AuthFailuresPerIP int
	// AuthFailureWindow is the window AuthFailuresPerIP counts over (default 1m).
	AuthFailureWindow time.Duration
	// AuthCooldown is how long an address over its failed-auth budget is
	// refused (reason auth_cooldown; default 1m).
	AuthCooldown time.Duration

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
		AuthFailuresPerIP:    c.Limits.AuthFailures.PerIP,
		AuthFailureWindow:    c.Limits.AuthFailures.Window.Duration,
		AuthCooldown:         c.Limits.AuthFailures.Cooldown.Duration,
	}
	if c.Limits.AuthFailures.PerIP == 0 {
		o.AuthFailuresPerIP = -1
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
	if len(o.AuthenticateMsgIDs) == 0 {
		o.AuthenticateMsgIDs = d.Protocol.AuthenticateMsgIDs.Names()
	}
	if o.AuthenticateMsgID != "" && !slices.Contains(o.AuthenticateMsgIDs, o.AuthenticateMsgID) {
		o.AuthenticateMsgIDs = append(o.AuthenticateMsgIDs, o.AuthenticateMsgID)
	}
	setInt(&o.PreAuthMaxPacketSize, d.Limits.PreAuthMaxPacketSize)
	setInt(&o.BytesBurst, config.DefaultBytesBurst)
	setDur(&o.CloseLinger, d.Limits.CloseLinger.Duration)
	setDur(&o.CloseQuiet, d.Limits.CloseQuiet.Duration)
	setDur(&o.AuthFailureWindow, d.Limits.AuthFailures.Window.Duration)
	setDur(&o.AuthCooldown, d.Limits.AuthFailures.Cooldown.Duration)
	if o.BytesPerSecond == 0 {
		o.BytesPerSecond = config.DefaultBytesPerSecond
	}
	if o.AuthFailuresPerIP == 0 {
		o.AuthFailuresPerIP = d.Limits.AuthFailures.PerIP
	}
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
	if len(o.HeartbeatMsgID) > protocol.MaxMsgIDLen {
		return fmt.Errorf("session options: message ids must be at most %d bytes", protocol.MaxMsgIDLen)
	}
	for _, id := range o.AuthenticateMsgIDs {
		if id == "" || len(id) > protocol.MaxMsgIDLen {
			return fmt.Errorf("session options: authentication MsgId %q must be 1..%d bytes", id, protocol.MaxMsgIDLen)
		}
	}
	return nil
}
