package client

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"time"

	"github.com/playhouse-k8s/playhouse/pkg/protocol"
)

// Defaults applied by Dial and New to zero-valued Options fields.
const (
	// DefaultHeartbeatInterval is how often the official connectors send a heartbeat.
	DefaultHeartbeatInterval = 10 * time.Second
	// DefaultHeartbeatMsgID is the heartbeat message name (protocol.md section 3).
	DefaultHeartbeatMsgID = "@Heart@Beat@"
	// DefaultRequestTimeout bounds a Request whose context has no deadline.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultPushBuffer is the capacity of the Pushes channel.
	DefaultPushBuffer = 256
	// DefaultWriteTimeout bounds one frame write, so a stuck server cannot
	// block a writer forever.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultAuthenticateMsgID is the message that authenticates a resumed
	// session with its reconnect token (protocol.md section 3).
	DefaultAuthenticateMsgID = "AuthenticateRequest"
	// DefaultResumeAttempts is how many connections a resume tries.
	DefaultResumeAttempts = 5
	// DefaultResumeBackoff is the wait after the first failed resume attempt;
	// it doubles after each further failure, up to DefaultResumeMaxBackoff.
	DefaultResumeBackoff = 200 * time.Millisecond
	// DefaultResumeMaxBackoff caps the wait between resume attempts.
	DefaultResumeMaxBackoff = 3 * time.Second
	// DefaultResumeMaxDelay caps the retryAfterMs of an @Drain@ notice.
	DefaultResumeMaxDelay = 5 * time.Minute
	// DefaultDrainedConnTimeout bounds how long, after a resume, the drained
	// connection may stay open with requests on it unanswered.
	DefaultDrainedConnTimeout = 30 * time.Second
	// DefaultEventBuffer is the capacity of the Events channel.
	DefaultEventBuffer = 16
)

// Options configures a Client. The zero value is valid and speaks exactly what
// the official connectors speak.
type Options struct {
	// MaxPacketSize is the largest frame body accepted from the server, and the
	// largest decompressed payload. It also bounds outgoing frame bodies.
	// Default protocol.DefaultMaxPacketSize.
	MaxPacketSize int
	// HeartbeatInterval is how often a heartbeat is sent automatically.
	// Default 10s; a negative value disables automatic heartbeats.
	HeartbeatInterval time.Duration
	// HeartbeatMsgID is the heartbeat message name. Default "@Heart@Beat@".
	HeartbeatMsgID string
	// RequestTimeout bounds Request, Authenticate and Heartbeat when their
	// context has no deadline, Send while it waits for a resumed connection,
	// and each resume attempt (dial and authentication; 30s when this is
	// off). Default 30s; a negative value means no bound.
	RequestTimeout time.Duration
	// PushBuffer is the capacity of the Pushes channel (default 256). When it
	// is full the oldest push is dropped and counted (DroppedPushes); the
	// connection reader never blocks on it.
	PushBuffer int
	// RequestHeader selects the request header layout: protocol.CompactHeader
	// (the default, what the official connectors send) or protocol.FullHeader.
	RequestHeader protocol.HeaderFormat
	// Compress, with FullHeader, LZ4-compresses request payloads of at least
	// this many bytes when that saves at least 10%. 0 turns compression off;
	// it is ignored with CompactHeader, which cannot carry compressed payloads.
	Compress int
	// WriteTimeout bounds each frame write on connections that support write
	// deadlines (net.Conn does). Default 10s; a negative value disables it.
	// A write that times out ends the connection.
	WriteTimeout time.Duration
	// DisableResume turns off following a drain. By default, when the server
	// pushes @Drain@ with a reconnect token, the client reconnects by itself
	// after the notice's retryAfterMs (to the same address, or through
	// Reconnect), authenticates with the token, and carries on: requests
	// still unanswered on the drained connection, or answered ServerDraining
	// (19), are sent again on the new one, so each Request still returns
	// exactly one answer; the application sees an EventResumed on Events
	// and never the @Drain@ push. With DisableResume the @Drain@ push is
	// delivered on Pushes and the connection simply ends when the server
	// closes it.
	DisableResume bool
	// AuthenticateMsgID is the message a resume authenticates with, the
	// reconnect token as its payload. Default "AuthenticateRequest".
	AuthenticateMsgID string
	// ResumeAttempts bounds the connections one resume tries (a dial, a
	// handshake or an authentication that fails, other than a refused
	// token, is tried again after a backoff). Default 5. A refused token
	// (AuthenticationFailed) ends the resume at once.
	ResumeAttempts int
	// ResumeBackoff is the wait after the first failed resume attempt; it
	// doubles after each further failure (with up to 50% random jitter),
	// capped by ResumeMaxBackoff. Defaults 200ms and 3s.
	ResumeBackoff time.Duration
	// ResumeMaxBackoff caps the wait between resume attempts. Default 3s.
	ResumeMaxBackoff time.Duration
	// ResumeMaxDelay caps the retryAfterMs a server may ask for before the
	// client reconnects. Default 5m.
	ResumeMaxDelay time.Duration
	// DrainedConnTimeout bounds how long after a resume the drained
	// connection may stay open: the server normally closes it at its close
	// point, after answering what it read. Past this the client closes it and
	// its requests still unanswered fail with ErrDrainedConnTimeout (they may
	// have been handled, so they are not sent again). Default 30s.
	DrainedConnTimeout time.Duration
	// EventBuffer is the capacity of the Events channel (default 16). When it
	// is full the oldest event is dropped; the client never blocks on it.
	EventBuffer int
	// Reconnect opens a new connection for a resume. Dial and DialWebSocket
	// set it (to the same address, with the same options) when it is nil; a
	// Client made with New cannot resume without it, and then behaves as
	// with DisableResume.
	Reconnect func(ctx context.Context) (io.ReadWriteCloser, error)
	// Dialer is used by Dial; nil means a zero net.Dialer.
	Dialer *net.Dialer
	// TLSConfig, when set, makes Dial use TLS. An empty ServerName is taken
	// from addr.
	TLSConfig *tls.Config
}

func (o Options) withDefaults() Options {
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = protocol.DefaultMaxPacketSize
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.HeartbeatMsgID == "" {
		o.HeartbeatMsgID = DefaultHeartbeatMsgID
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.PushBuffer <= 0 {
		o.PushBuffer = DefaultPushBuffer
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.RequestHeader != protocol.FullHeader {
		o.RequestHeader = protocol.CompactHeader
		o.Compress = 0
	}
	if o.Compress < 0 {
		o.Compress = 0
	}
	if o.AuthenticateMsgID == "" {
		o.AuthenticateMsgID = DefaultAuthenticateMsgID
	}
	if o.ResumeAttempts <= 0 {
		o.ResumeAttempts = DefaultResumeAttempts
	}
	if o.ResumeBackoff <= 0 {
		o.ResumeBackoff = DefaultResumeBackoff
	}
	if o.ResumeMaxBackoff <= 0 {
		o.ResumeMaxBackoff = DefaultResumeMaxBackoff
	}
	if o.ResumeMaxBackoff < o.ResumeBackoff {
		o.ResumeMaxBackoff = o.ResumeBackoff
	}
	if o.ResumeMaxDelay <= 0 {
		o.ResumeMaxDelay = DefaultResumeMaxDelay
	}
	if o.DrainedConnTimeout <= 0 {
		o.DrainedConnTimeout = DefaultDrainedConnTimeout
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	return o
}
