// Package config defines the session engine's configuration: the YAML file that
// playhouse-server reads, its embedded defaults, and its validation.
//
// Field names follow the PlayHouseServer custom resource's spec wherever the two
// overlap, so the operator renders a CR into this structure and the server reads
// the resulting ConfigMap unchanged.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Duration is a time.Duration that reads and writes as a Go duration string
// ("90s", "1m30s") in YAML and JSON. A bare number is taken as seconds.
type Duration struct {
	time.Duration
}

// D wraps a time.Duration as a Duration.
func D(d time.Duration) Duration { return Duration{d} }

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.Duration.String())
}

// UnmarshalJSON reads a duration string ("90s") or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q: %w", s, err)
		}
		d.Duration = v
		return nil
	}
	var n float64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("invalid duration %s: want a string such as \"90s\"", string(b))
	}
	d.Duration = time.Duration(n * float64(time.Second))
	return nil
}

// MsgIDList is a list of message names that reads and writes as a YAML/JSON
// list. It is stored as one string so the structs holding it stay
// comparable with ==.
type MsgIDList string

// msgIDSep separates the names inside a MsgIDList.
const msgIDSep = "\n"

// MsgIDs makes a MsgIDList.
func MsgIDs(names ...string) MsgIDList { return MsgIDList(strings.Join(names, msgIDSep)) }

// Names returns the list's names (nil when empty).
func (l MsgIDList) Names() []string {
	if l == "" {
		return nil
	}
	return strings.Split(string(l), msgIDSep)
}

// MarshalJSON writes the list as a JSON array.
func (l MsgIDList) MarshalJSON() ([]byte, error) {
	names := l.Names()
	if names == nil {
		names = []string{}
	}
	return json.Marshal(names)
}

// UnmarshalJSON reads a JSON array of names.
func (l *MsgIDList) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return fmt.Errorf("invalid message id list %s: want a list of names", string(b))
	}
	if len(names) == 1 && names[0] == "" {
		names = append(names, "") // keep an explicit empty name visible to Validate
	}
	*l = MsgIDs(names...)
	return nil
}

// Request header formats accepted on the wire (protocol.md section 2).
const (
	// RequestHeaderCompact is the header the official connectors send (default).
	RequestHeaderCompact = "compact"
	// RequestHeaderFull adds ErrorCode and OriginalSize, for clients that compress.
	RequestHeaderFull = "full"
)

// Authentication modes.
const (
	// AuthModeOpen lets the application decide (the echo app accepts any non-empty credentials).
	AuthModeOpen = "open"
	// AuthModeToken additionally requires signed tokens (see Auth.SigningKeyFile).
	AuthModeToken = "token"
)

// Config is the whole server configuration.
type Config struct {
	// BindAddress is the host every listener binds to ("127.0.0.1" by default;
	// the operator renders "0.0.0.0").
	BindAddress string `json:"bindAddress,omitempty"`
	// Transports selects the client listeners.
	Transports Transports `json:"transports"`
	// Admin is the HTTP endpoint for /metrics, /healthz, /readyz and /status.
	Admin Admin `json:"admin"`
	// Protocol holds wire-format options.
	Protocol Protocol `json:"protocol"`
	// Limits holds every session limit and timeout of protocol.md section 6.
	Limits Limits `json:"limits"`
	// Auth holds authentication options.
	Auth Auth `json:"auth"`
	// DrainTimeout bounds the graceful drain on SIGTERM.
	DrainTimeout Duration `json:"drainTimeout"`
	// App names the application playhouse-server runs: a built-in one
	// ("echo" or "relay"). It is checked by the program that picks the
	// handler; a program that supplies its own handler ignores it, so any
	// name is valid here.
	App string `json:"app,omitempty"`
	// Log selects the log format and level.
	Log Log `json:"log"`
}

// Transports lists the client listeners.
type Transports struct {
	// TCP is the plain TCP listener.
	TCP Listener `json:"tcp"`
	// WebSocket is the plain WebSocket listener.
	WebSocket WebSocketListener `json:"websocket"`
	// TLSTCP is the TCP listener wrapped in TLS.
	TLSTCP Listener `json:"tlsTcp"`
	// WSS is the WebSocket listener wrapped in TLS.
	WSS WebSocketListener `json:"wss"`
	// TLS names the certificate and key used by TLSTCP and WSS.
	TLS TLS `json:"tls"`
	// ProxyProtocol enables the PROXY protocol on the TCP listeners.
	ProxyProtocol ProxyProtocol `json:"proxyProtocol"`
	// Mounted says that the program embedding the engine serves WebSocket
	// through its own HTTP server (Server.WebSocketHandler), so a
	// configuration with every listener above disabled is valid. Default
	// false; playhouse-server mounts nothing and refuses it.
	Mounted bool `json:"mounted,omitempty"`
}

// Listener is one TCP-based listener.
type Listener struct {
	// Enabled turns the listener on.
	Enabled bool `json:"enabled"`
	// Port is the TCP port (0 picks a free one, for tests).
	Port int `json:"port"`
	// Address, when set, overrides BindAddress:Port (for example "[::1]:7777").
	Address string `json:"address,omitempty"`
}

// WebSocketListener is a WebSocket listener.
type WebSocketListener struct {
	Listener `json:",inline"`
	// Path is the HTTP path of the upgrade endpoint ("/ws").
	Path string `json:"path,omitempty"`
	// AllowedOrigins lists the Origin header values accepted; empty allows any.
	// Scheme and host are compared without regard to case.
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
	// AllowMissingOrigin accepts an upgrade request without an Origin header
	// even when AllowedOrigins is set (default true: native game clients send
	// none; browsers always do).
	AllowMissingOrigin bool `json:"allowMissingOrigin"`
}

// TLS names certificate files. They are re-read every ReloadInterval: a
// renewed certificate is used for new handshakes without a restart.
type TLS struct {
	// CertFile is the PEM certificate chain.
	CertFile string `json:"certFile,omitempty"`
	// KeyFile is the PEM private key.
	KeyFile string `json:"keyFile,omitempty"`
	// ReloadInterval is how often the files are re-read and, when their
	// content changed, loaded (default 10s).
	ReloadInterval Duration `json:"reloadInterval"`
}

// ProxyProtocol configures PROXY protocol v1/v2 on every client listener.
type ProxyProtocol struct {
	// Enabled accepts a PROXY header from trusted peers; its source address
	// becomes the client address (for the per-IP limit and logs).
	Enabled bool `json:"enabled"`
	// TrustedCIDRs lists the peers (load balancers) allowed to send a PROXY
	// header; required when enabled. A header from any other peer is refused.
	TrustedCIDRs []string `json:"trustedCIDRs,omitempty"`
	// HeaderTimeout bounds the wait for the header (default 5s).
	HeaderTimeout Duration `json:"headerTimeout"`
}

// Admin is the admin HTTP endpoint.
type Admin struct {
	// Enabled binds the admin listener (default true). When false no admin
	// port is bound; a program embedding the engine may mount
	// Server.AdminHandler on its own mux instead.
	Enabled bool `json:"enabled"`
	// Port is the admin HTTP port (0 picks a free one, for tests).
	Port int `json:"port"`
	// Address, when set, overrides BindAddress:Port.
	Address string `json:"address,omitempty"`
}

// Protocol holds wire options.
type Protocol struct {
	// RequestHeader is "compact" (default) or "full".
	RequestHeader string `json:"requestHeader,omitempty"`
	// HeartbeatMsgID is the heartbeat message name.
	HeartbeatMsgID string `json:"heartbeatMsgId,omitempty"`
	// AuthenticateMsgID is the message name that must open a session (the
	// older single-name form, kept for existing configurations; it is added
	// to AuthenticateMsgIDs).
	AuthenticateMsgID string `json:"authenticateMsgId,omitempty"`
	// AuthenticateMsgIDs lists the message names that authenticate a session
	// (default AuthenticateRequest and AuthenticateReq).
	AuthenticateMsgIDs MsgIDList `json:"authenticateMsgIds,omitempty"`
	// Compression configures outbound LZ4.
	Compression Compression `json:"compression"`
}

// Compression configures outbound LZ4 compression.
type Compression struct {
	// Enabled turns outbound compression on (off: the JavaScript connector rejects it).
	Enabled bool `json:"enabled"`
	// Threshold is the smallest payload that is compressed.
	Threshold int `json:"threshold,omitempty"`
}

// Limits holds every limit and timeout of protocol.md section 6.
type Limits struct {
	// MaxPacketSize is the largest frame body accepted.
	MaxPacketSize int `json:"maxPacketSize"`
	// MaxConnections caps concurrent connections per server.
	MaxConnections int `json:"maxConnections"`
	// MaxConnectionsPerIP caps concurrent connections per client address (IPv6 per /64).
	MaxConnectionsPerIP int `json:"maxConnectionsPerIP"`
	// PerIPExempt lists CIDRs not subject to MaxConnectionsPerIP.
	PerIPExempt []string `json:"perIPExempt,omitempty"`
	// RateLimit limits packets per session.
	RateLimit RateLimit `json:"rateLimit"`
	// HeartbeatTimeout closes a session that has heartbeated and then sent no
	// frame for this long; silent clients are watched by TCP keepalive or
	// WebSocket pings instead (protocol.md section 3).
	HeartbeatTimeout Duration `json:"heartbeatTimeout"`
	// AuthTimeout closes a session that has not authenticated within this long.
	AuthTimeout Duration `json:"authTimeout"`
	// MaxAuthAttempts closes a session after this many failed authentications.
	MaxAuthAttempts int `json:"maxAuthAttempts"`
	// TLSHandshakeTimeout bounds the TLS handshake.
	TLSHandshakeTimeout Duration `json:"tlsHandshakeTimeout"`
	// MaxPendingOutboundBytes closes a session whose unsent bytes exceed it.
	MaxPendingOutboundBytes int `json:"maxPendingOutboundBytes"`
	// WriteTimeout closes a session whose socket write makes no progress for
	// this long.
	WriteTimeout Duration `json:"writeTimeout"`
	// MaxHeaderBytes bounds the HTTP request head (request line and headers)
	// of a WebSocket upgrade (default 16 KiB); past it the request gets 431.
	MaxHeaderBytes int `json:"maxHeaderBytes"`
	// InboundBudgetBytes bounds, across the whole process, the bytes held by
	// read buffers above their idle size, that is by partly received frames
	// (default 256 MiB; 0 disables). A read that would pass it closes its
	// connection (InboundBudgetExceeded).
	InboundBudgetBytes int64 `json:"inboundBudgetBytes"`

	// PreAuthMaxPacketSize is the largest frame body accepted before
	// authentication (larger: close FrameTooLarge); maxPacketSize applies
	// when it is smaller.
	PreAuthMaxPacketSize int `json:"preAuthMaxPacketSize"`
	// CloseLinger bounds each phase of a lingering close: answering requests
	// read after the close point (ErrorCode 19), then reading and discarding
	// after the half-close until the peer closes.
	CloseLinger Duration `json:"closeLinger"`
	// CloseQuiet ends the answering phase once no request has arrived for this long.
	CloseQuiet Duration `json:"closeQuiet"`
	// ReplyHold bounds how long the replies to requests that arrived
	// together are held to leave in one write (a slow handler in such a
	// batch does not hold back the replies before it for longer).
	ReplyHold Duration `json:"replyHold"`
	// IdlePark is how long a TCP or TLS-TCP session may read nothing before
	// its reader goroutine ends and its socket waits in the engine's poller
	// (no stack held while idle); 0s disables parking.
	IdlePark Duration `json:"idlePark"`
	// AuthFailures is the per-IP failed-authentication budget.
	AuthFailures AuthFailures `json:"authFailures"`
}

// AuthFailures is a per-IP (IPv6 per /64) budget of failed authentications.
type AuthFailures struct {
	// PerIP failures within Window start a cool-down; 0 disables.
	PerIP int `json:"perIP"`
	// Window is the period failures are counted over.
	Window Duration `json:"window"`
	// Cooldown is how long new connections from the address are refused.
	Cooldown Duration `json:"cooldown"`
}

// RateLimit is a token bucket per session.
type RateLimit struct {
	// PacketsPerSecond is the sustained rate; 0 disables rate limiting.
	PacketsPerSecond float64 `json:"packetsPerSecond"`
	// Burst is the bucket size.
	Burst int `json:"burst"`
	// MaxViolations closes the session (RateLimited) after this many consecutive
	// over-limit packets.
	MaxViolations int `json:"maxViolations"`
	// BytesPerSecond is the sustained inbound bytes per second per session
	// (bodies, decompressed payloads and WebSocket control frames); 0 takes
	// the engine default (DefaultBytesPerSecond), a negative value disables.
	BytesPerSecond float64 `json:"bytesPerSecond,omitempty"`
	// BytesBurst is the byte bucket size; 0 takes DefaultBytesBurst.
	BytesBurst int `json:"bytesBurst,omitempty"`
}

// Auth holds authentication options.
type Auth struct {
	// Mode is "open" (default: the application decides credentials) or
	// "token" (every authenticate payload must be a JWT, HS256, signed with
	// the signing key, whose "sub" names the account).
	Mode string `json:"mode,omitempty"`
	// SigningKeyFile holds the HS256 key for reconnect tokens; empty generates
	// a random per-process key (tokens then work only on this instance).
	SigningKeyFile string `json:"signingKeyFile,omitempty"`
	// ReconnectTokenLifetime is the lifetime of issued reconnect tokens.
	ReconnectTokenLifetime Duration `json:"reconnectTokenLifetime"`
}

// Log selects logging.
type Log struct {
	// Format is "text" (default) or "json".
	Format string `json:"format,omitempty"`
	// Level is "debug", "info" (default), "warn" or "error".
	Level string `json:"level,omitempty"`
}

// Defaults of the per-session inbound byte rate (limits.rateLimit.bytesPerSecond
// and bytesBurst, whose zero value means these).
const (
	DefaultBytesPerSecond = 1 << 20
	DefaultBytesBurst     = 4 << 20
)

// Default ports of the embedded configuration.
const (
	DefaultTCPPort    = 7777
	DefaultWSPort     = 7778
	DefaultTLSTCPPort = 7779
	DefaultWSSPort    = 7780
	DefaultAdminPort  = 9090
)

// Default sizes of the embedded configuration.
const (
	// DefaultMaxPendingOutboundBytes is the default bound of a session's
	// unsent bytes: two maximum-size replies back to back fit.
	DefaultMaxPendingOutboundBytes = 5 << 20
	// DefaultMaxHeaderBytes is the default bound of an upgrade request's head.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultInboundBudgetBytes is the default process-wide bound of bytes
	// held by partly received frames.
	DefaultInboundBudgetBytes = 256 << 20
)

// Default returns the embedded defaults: loopback listeners (TCP 7777,
// WebSocket 7778 on /ws), admin on 9090, echo app, open auth, and the limits
// of protocol.md section 6.
func Default() Config {
	return Config{
		BindAddress: "127.0.0.1",
		Transports: Transports{
			TCP:           Listener{Enabled: true, Port: DefaultTCPPort},
			WebSocket:     WebSocketListener{Listener: Listener{Enabled: true, Port: DefaultWSPort}, Path: "/ws", AllowMissingOrigin: true},
			TLSTCP:        Listener{Port: DefaultTLSTCPPort},
			WSS:           WebSocketListener{Listener: Listener{Port: DefaultWSSPort}, Path: "/ws", AllowMissingOrigin: true},
			TLS:           TLS{ReloadInterval: D(10 * time.Second)},
			ProxyProtocol: ProxyProtocol{HeaderTimeout: D(5 * time.Second)},
		},
		Admin: Admin{Enabled: true, Port: DefaultAdminPort},
		Protocol: Protocol{
			RequestHeader:      RequestHeaderCompact,
			HeartbeatMsgID:     "@Heart@Beat@",
			AuthenticateMsgID:  "AuthenticateRequest",
			AuthenticateMsgIDs: MsgIDs("AuthenticateRequest", "AuthenticateReq"),
			Compression:        Compression{Threshold: 512},
		},
		Limits: Limits{
			MaxPacketSize:           2 << 20,
			MaxConnections:          10000,
			MaxConnectionsPerIP:     10,
			PerIPExempt:             []string{"127.0.0.0/8", "::1/128"},
			RateLimit:               RateLimit{PacketsPerSecond: 100, Burst: 200, MaxViolations: 100},
			HeartbeatTimeout:        D(90 * time.Second),
			AuthTimeout:             D(10 * time.Second),
			MaxAuthAttempts:         5,
			TLSHandshakeTimeout:     D(5 * time.Second),
			MaxPendingOutboundBytes: DefaultMaxPendingOutboundBytes,
			WriteTimeout:            D(5 * time.Second),
			MaxHeaderBytes:          DefaultMaxHeaderBytes,
			InboundBudgetBytes:      DefaultInboundBudgetBytes,
			PreAuthMaxPacketSize:    64 << 10,
			CloseLinger:             D(2 * time.Second),
			CloseQuiet:              D(250 * time.Millisecond),
			ReplyHold:               D(time.Millisecond),
			IdlePark:                D(5 * time.Second),
			AuthFailures:            AuthFailures{PerIP: 20, Window: D(time.Minute), Cooldown: D(time.Minute)},
		},
		Auth:         Auth{Mode: AuthModeOpen, ReconnectTokenLifetime: D(5 * time.Minute)},
		DrainTimeout: D(30 * time.Second),
		App:          "echo",
		Log:          Log{Format: "text", Level: "info"},
	}
}

// Parse reads YAML (or JSON) over the defaults: fields absent from data keep
// their default value. Unknown fields are an error, so a typo is not silently
// ignored.
func Parse(data []byte) (Config, error) {
	c := Default()
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("parse config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Load reads and validates a config file.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Marshal renders the config as YAML (used by the operator for its ConfigMap).
func (c Config) Marshal() ([]byte, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	return b, nil
}

// ListenAddr returns the address a listener binds to.
func (c Config) ListenAddr(l Listener) string {
	if l.Address != "" {
		return l.Address
	}
	return net.JoinHostPort(c.BindAddress, strconv.Itoa(l.Port))
}

// AdminAddr returns the admin HTTP address.
func (c Config) AdminAddr() string {
	if c.Admin.Address != "" {
		return c.Admin.Address
	}
	return net.JoinHostPort(c.BindAddress, strconv.Itoa(c.Admin.Port))
}

// Validate reports every problem in the configuration at once. A
// configuration with every client listener disabled is valid only with
// transports.mounted set (a program embedding the engine serves WebSocket
// through its own HTTP server).
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	port := func(field string, l Listener) {
		if l.Address != "" {
			if _, _, err := net.SplitHostPort(l.Address); err != nil {
				bad(field+".address", "%v", err)
			}
			return
		}
		if l.Port < 0 || l.Port > 65535 {
			bad(field+".port", "must be 0..65535, got %d", l.Port)
		}
	}
	t := c.Transports
	port("transports.tcp", t.TCP)
	port("transports.websocket", t.WebSocket.Listener)
	port("transports.tlsTcp", t.TLSTCP)
	port("transports.wss", t.WSS.Listener)
	if !t.TCP.Enabled && !t.WebSocket.Enabled && !t.TLSTCP.Enabled && !t.WSS.Enabled && !t.Mounted {
		bad("transports", "no transport is enabled (set transports.mounted when the program serves WebSocket through its own HTTP server)")
	}
	if c.Admin.Address == "" && (c.Admin.Port < 0 || c.Admin.Port > 65535) {
		bad("admin.port", "must be 0..65535, got %d", c.Admin.Port)
	}
	for name, w := range map[string]WebSocketListener{"websocket": t.WebSocket, "wss": t.WSS} {
		if w.Enabled && !strings.HasPrefix(w.Path, "/") {
			bad("transports."+name+".path", "must start with /, got %q", w.Path)
		}
	}
	if (t.TLSTCP.Enabled || t.WSS.Enabled) && (t.TLS.CertFile == "" || t.TLS.KeyFile == "") {
		bad("transports.tls", "certFile and keyFile are required when tlsTcp or wss is enabled")
	}
	if t.ProxyProtocol.Enabled && len(t.ProxyProtocol.TrustedCIDRs) == 0 {
		bad("transports.proxyProtocol.trustedCIDRs", "at least one CIDR is required when enabled")
	}
	for i, s := range t.ProxyProtocol.TrustedCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			bad(fmt.Sprintf("transports.proxyProtocol.trustedCIDRs[%d]", i), "%v", err)
		}
	}
	switch c.Protocol.RequestHeader {
	case RequestHeaderCompact, RequestHeaderFull:
	default:
		bad("protocol.requestHeader", "must be %q or %q, got %q", RequestHeaderCompact, RequestHeaderFull, c.Protocol.RequestHeader)
	}
	for field, id := range map[string]string{"protocol.heartbeatMsgId": c.Protocol.HeartbeatMsgID, "protocol.authenticateMsgId": c.Protocol.AuthenticateMsgID} {
		if len(id) == 0 || len(id) > 255 {
			bad(field, "must be 1..255 bytes, got %d", len(id))
		}
	}
	for i, id := range c.Protocol.AuthenticateMsgIDs.Names() {
		if len(id) == 0 || len(id) > 255 || strings.Contains(id, msgIDSep) {
			bad(fmt.Sprintf("protocol.authenticateMsgIds[%d]", i), "must be 1..255 bytes without a newline, got %q", id)
		}
	}
	if c.Protocol.Compression.Threshold < 0 {
		bad("protocol.compression.threshold", "must not be negative")
	}
	l := c.Limits
	if l.MaxPacketSize < 64 || l.MaxPacketSize > 64<<20 {
		bad("limits.maxPacketSize", "must be 64..67108864, got %d", l.MaxPacketSize)
	}
	for field, v := range map[string]int{
		"limits.maxConnections":          l.MaxConnections,
		"limits.maxConnectionsPerIP":     l.MaxConnectionsPerIP,
		"limits.maxAuthAttempts":         l.MaxAuthAttempts,
		"limits.maxPendingOutboundBytes": l.MaxPendingOutboundBytes,
	} {
		if v < 1 {
			bad(field, "must be at least 1, got %d", v)
		}
	}
	if l.MaxPacketSize > 0 && l.MaxPendingOutboundBytes >= 1 && l.MaxPendingOutboundBytes < l.MaxPacketSize+4 {
		bad("limits.maxPendingOutboundBytes", "must be at least limits.maxPacketSize + 4 (%d), so a maximum-size reply fits; got %d", l.MaxPacketSize+4, l.MaxPendingOutboundBytes)
	}
	if l.MaxHeaderBytes < 1<<10 || l.MaxHeaderBytes > 1<<20 {
		bad("limits.maxHeaderBytes", "must be 1024..1048576, got %d", l.MaxHeaderBytes)
	}
	if l.InboundBudgetBytes < 0 {
		bad("limits.inboundBudgetBytes", "must not be negative (0 disables the budget), got %d", l.InboundBudgetBytes)
	} else if l.InboundBudgetBytes > 0 && l.InboundBudgetBytes < int64(l.MaxPacketSize) {
		bad("limits.inboundBudgetBytes", "must be 0 (no budget) or at least limits.maxPacketSize (%d), got %d", l.MaxPacketSize, l.InboundBudgetBytes)
	}
	for i, s := range l.PerIPExempt {
		if _, err := netip.ParsePrefix(s); err != nil {
			bad(fmt.Sprintf("limits.perIPExempt[%d]", i), "%v", err)
		}
	}
	if l.RateLimit.PacketsPerSecond < 0 || l.RateLimit.Burst < 0 || l.RateLimit.MaxViolations < 0 || l.RateLimit.BytesBurst < 0 {
		bad("limits.rateLimit", "values must not be negative (bytesPerSecond excepted: negative disables it)")
	}
	if l.PreAuthMaxPacketSize < 64 || l.PreAuthMaxPacketSize > 64<<20 {
		// Above maxPacketSize it has no effect: the smaller limit applies.
		bad("limits.preAuthMaxPacketSize", "must be 64..67108864, got %d", l.PreAuthMaxPacketSize)
	}
	if l.IdlePark.Duration < 0 {
		bad("limits.idlePark", "must not be negative (0s disables parking), got %s", l.IdlePark.Duration)
	}
	if l.AuthFailures.PerIP < 0 {
		bad("limits.authFailures.perIP", "must not be negative, got %d", l.AuthFailures.PerIP)
	}
	if l.RateLimit.PacketsPerSecond > 0 && l.RateLimit.Burst < 1 {
		bad("limits.rateLimit.burst", "must be at least 1 when packetsPerSecond is set")
	}
	for field, d := range map[string]Duration{
		"limits.heartbeatTimeout":                l.HeartbeatTimeout,
		"limits.authTimeout":                     l.AuthTimeout,
		"limits.tlsHandshakeTimeout":             l.TLSHandshakeTimeout,
		"limits.writeTimeout":                    l.WriteTimeout,
		"limits.closeLinger":                     l.CloseLinger,
		"limits.closeQuiet":                      l.CloseQuiet,
		"limits.replyHold":                       l.ReplyHold,
		"limits.authFailures.window":             l.AuthFailures.Window,
		"limits.authFailures.cooldown":           l.AuthFailures.Cooldown,
		"drainTimeout":                           c.DrainTimeout,
		"auth.reconnectTokenLifetime":            c.Auth.ReconnectTokenLifetime,
		"transports.proxyProtocol.headerTimeout": t.ProxyProtocol.HeaderTimeout,
		"transports.tls.reloadInterval":          t.TLS.ReloadInterval,
	} {
		if d.Duration <= 0 {
			bad(field, "must be positive, got %s", d.Duration)
		}
	}
	switch c.Auth.Mode {
	case AuthModeOpen:
	case AuthModeToken:
		if c.Auth.SigningKeyFile == "" {
			bad("auth.signingKeyFile", "is required in token mode")
		}
	default:
		bad("auth.mode", "must be %q or %q, got %q", AuthModeOpen, AuthModeToken, c.Auth.Mode)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be \"text\" or \"json\", got %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %w", errors.Join(sortErrs(errs)...))
	}
	return nil
}

// sortErrs orders errors by message so the output is stable despite map iteration.
func sortErrs(errs []error) []error {
	for i := 1; i < len(errs); i++ {
		for j := i; j > 0 && errs[j].Error() < errs[j-1].Error(); j-- {
			errs[j], errs[j-1] = errs[j-1], errs[j]
		}
	}
	return errs
}
