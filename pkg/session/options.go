package session

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Options configure a Manager. Zero values take the defaults of
// protocol.md section 6 (see DefaultOptions).
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
	// MaxPendingOutboundBytes bounds a session's unsent bytes (default 5 MiB);
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
	// ReplyHold bounds how long the replies to requests that arrived
	// together are held so that they leave in one write (default 1ms): when
	// handling the batch takes longer (a slow handler), what is held goes.
	ReplyHold time.Duration
	// IdlePark is how long a session on a stream transport (TCP, TLS-TCP)
	// may read nothing before its reader goroutine ends and the socket waits
	// in the manager's poller instead (default 5s; negative disables): an
	// idle session then holds no goroutine stack. Input, the peer's close,
	// the session's close and a heartbeating session's idle deadline start a
	// fresh reader. Only sessions started with Manager.Go park (Serve
	// blocks for the session's life), and only on Linux.
	IdlePark time.Duration
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

func (o *Options) setDefaults() error {
	if o.Handler == nil {
		return fmt.Errorf("session options: Handler is required")
	}
	d := DefaultOptions()
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
	setStr(&o.HeartbeatMsgID, d.HeartbeatMsgID)
	if len(o.AuthenticateMsgIDs) == 0 {
		o.AuthenticateMsgIDs = d.AuthenticateMsgIDs
	}
	if o.AuthenticateMsgID != "" && !slices.Contains(o.AuthenticateMsgIDs, o.AuthenticateMsgID) {
		o.AuthenticateMsgIDs = append(o.AuthenticateMsgIDs, o.AuthenticateMsgID)
	}
	setInt(&o.PreAuthMaxPacketSize, d.PreAuthMaxPacketSize)
	setInt(&o.BytesBurst, d.BytesBurst)
	setDur(&o.CloseLinger, d.CloseLinger)
	setDur(&o.CloseQuiet, d.CloseQuiet)
	setDur(&o.ReplyHold, d.ReplyHold)
	if o.IdlePark == 0 {
		o.IdlePark = d.IdlePark
	}
	setDur(&o.AuthFailureWindow, d.AuthFailureWindow)
	setDur(&o.AuthCooldown, d.AuthCooldown)
	if o.BytesPerSecond == 0 {
		o.BytesPerSecond = d.BytesPerSecond
	}
	if o.AuthFailuresPerIP == 0 {
		o.AuthFailuresPerIP = d.AuthFailuresPerIP
	}
	setInt(&o.CompressionThreshold, d.CompressionThreshold)
	setInt(&o.MaxPacketSize, d.MaxPacketSize)
	setInt(&o.MaxConnections, d.MaxConnections)
	setInt(&o.MaxConnectionsPerIP, d.MaxConnectionsPerIP)
	setInt(&o.RateBurst, d.RateBurst)
	setInt(&o.MaxRateViolations, d.MaxRateViolations)
	setInt(&o.MaxAuthAttempts, d.MaxAuthAttempts)
	setInt(&o.MaxPendingOutboundBytes, d.MaxPendingOutboundBytes)
	setDur(&o.HeartbeatTimeout, d.HeartbeatTimeout)
	setDur(&o.AuthTimeout, d.AuthTimeout)
	setDur(&o.WriteTimeout, d.WriteTimeout)
	if o.RatePerSecond == 0 {
		o.RatePerSecond = d.RatePerSecond
	}
	if o.PerIPExempt == nil {
		o.PerIPExempt = d.PerIPExempt
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

// Defaults of Options (protocol.md section 6). pkg/config's embedded
// defaults carry the same values for the configuration file.
const (
	DefaultHeartbeatMsgID          = "@Heart@Beat@"
	DefaultCompressionThreshold    = 512
	DefaultMaxPacketSize           = 2 << 20
	DefaultMaxConnections          = 10000
	DefaultMaxConnectionsPerIP     = 10
	DefaultRatePerSecond           = 100
	DefaultRateBurst               = 200
	DefaultMaxRateViolations       = 100
	DefaultHeartbeatTimeout        = 90 * time.Second
	DefaultAuthTimeout             = 10 * time.Second
	DefaultMaxAuthAttempts         = 5
	DefaultMaxPendingOutboundBytes = 5 << 20
	DefaultWriteTimeout            = 5 * time.Second
	DefaultPreAuthMaxPacketSize    = 64 << 10
	DefaultBytesPerSecond          = 1 << 20
	DefaultBytesBurst              = 4 << 20
	DefaultCloseLinger             = 2 * time.Second
	DefaultCloseQuiet              = 250 * time.Millisecond
	DefaultReplyHold               = time.Millisecond
	DefaultIdlePark                = 5 * time.Second
	DefaultAuthFailuresPerIP       = 20
	DefaultAuthFailureWindow       = time.Minute
	DefaultAuthCooldown            = time.Minute
)

// DefaultAuthenticateMsgIDs returns the default authentication message
// names: AuthenticateRequest, and AuthenticateReq (the JavaScript
// connector's short form).
func DefaultAuthenticateMsgIDs() []string {
	return []string{"AuthenticateRequest", "AuthenticateReq"}
}

// DefaultPerIPExempt returns the default addresses exempt from the per-IP
// limit: loopback.
func DefaultPerIPExempt() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// DefaultOptions returns Options holding every default (Handler, Logger,
// Observer, Tokens and InboundBudget unset), the values a zero field takes.
func DefaultOptions() Options {
	return Options{
		HeartbeatMsgID:          DefaultHeartbeatMsgID,
		AuthenticateMsgIDs:      DefaultAuthenticateMsgIDs(),
		CompressionThreshold:    DefaultCompressionThreshold,
		MaxPacketSize:           DefaultMaxPacketSize,
		MaxConnections:          DefaultMaxConnections,
		MaxConnectionsPerIP:     DefaultMaxConnectionsPerIP,
		PerIPExempt:             DefaultPerIPExempt(),
		RatePerSecond:           DefaultRatePerSecond,
		RateBurst:               DefaultRateBurst,
		MaxRateViolations:       DefaultMaxRateViolations,
		HeartbeatTimeout:        DefaultHeartbeatTimeout,
		AuthTimeout:             DefaultAuthTimeout,
		MaxAuthAttempts:         DefaultMaxAuthAttempts,
		MaxPendingOutboundBytes: DefaultMaxPendingOutboundBytes,
		WriteTimeout:            DefaultWriteTimeout,
		PreAuthMaxPacketSize:    DefaultPreAuthMaxPacketSize,
		BytesPerSecond:          DefaultBytesPerSecond,
		BytesBurst:              DefaultBytesBurst,
		CloseLinger:             DefaultCloseLinger,
		CloseQuiet:              DefaultCloseQuiet,
		ReplyHold:               DefaultReplyHold,
		IdlePark:                DefaultIdlePark,
		AuthFailuresPerIP:       DefaultAuthFailuresPerIP,
		AuthFailureWindow:       DefaultAuthFailureWindow,
		AuthCooldown:            DefaultAuthCooldown,
	}
}
