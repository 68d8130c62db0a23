package client

import (
	"crypto/tls"
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
	// context has no deadline. Default 30s; a negative value means no bound.
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
	return o
}
