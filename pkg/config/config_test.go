package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	if got := c.ListenAddr(c.Transports.TCP); got != "127.0.0.1:7777" {
		t.Errorf("tcp addr = %q", got)
	}
	if got := c.AdminAddr(); got != "127.0.0.1:9090" {
		t.Errorf("admin addr = %q", got)
	}
}

func TestParseOverridesDefaultsAndRoundTrips(t *testing.T) {
	c, err := Parse([]byte(`
bindAddress: 0.0.0.0
transports:
  tcp: {enabled: true, port: 9000}
  websocket: {enabled: false}
limits:
  heartbeatTimeout: 2m
  maxPacketSize: 4096
log: {format: json}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Transports.TCP.Port != 9000 || c.Transports.WebSocket.Enabled {
		t.Errorf("transports not applied: %+v", c.Transports)
	}
	if c.Limits.HeartbeatTimeout.Duration != 2*time.Minute || c.Limits.MaxPacketSize != 4096 {
		t.Errorf("limits not applied: %+v", c.Limits)
	}
	if c.Limits.AuthTimeout.Duration != 10*time.Second {
		t.Errorf("absent field lost its default: %v", c.Limits.AuthTimeout)
	}
	if c.Transports.WebSocket.Path != "/ws" {
		t.Errorf("ws path default lost: %q", c.Transports.WebSocket.Path)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse rendered config: %v\n%s", err, out)
	}
	if back.Limits.HeartbeatTimeout != c.Limits.HeartbeatTimeout || back.Transports.TCP != c.Transports.TCP || back.Log != c.Log {
		t.Errorf("round trip changed config:\n%s", out)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"limits: {maxPacketSize: 1}", "limits.maxPacketSize: must be 64..67108864"},
		{"limits: {heartbeatTimeout: soon}", "invalid duration"},
		{"limits: {heartbeatTimeout: 0s}", "limits.heartbeatTimeout: must be positive"},
		{"transports: {tcp: {port: 70000}}", "transports.tcp.port: must be 0..65535"},
		{"transports: {websocket: {path: ws}}", "transports.websocket.path: must start with /"},
		{"transports: {wss: {enabled: true}}", "transports.tls: certFile and keyFile are required"},
		{"transports: {tcp: {enabled: false}, websocket: {enabled: false}}", "no transport is enabled"},
		{"admin: {enabled: true, port: -1}", "admin.port: must be 0..65535"},
		{"protocol: {requestHeader: big}", "protocol.requestHeader"},
		{"auth: {mode: magic}", "auth.mode"},
		{"limits: {perIPExempt: [nonsense]}", "limits.perIPExempt[0]"},
		{"limtis: {}", "unknown field"},
		{"log: {level: loud}", "log.level"},
		{"transports: {tls: {reloadInterval: 0s}}", "transports.tls.reloadInterval: must be positive"},
		{"transports: {proxyProtocol: {headerTimeout: -1s}}", "transports.proxyProtocol.headerTimeout: must be positive"},
		{"transports: {proxyProtocol: {enabled: true}}", "transports.proxyProtocol.trustedCIDRs: at least one CIDR"},
		{"auth: {mode: token}", "auth.signingKeyFile: is required in token mode"},
		{"limits: {maxPendingOutboundBytes: 1048576}", "limits.maxPendingOutboundBytes: must be at least limits.maxPacketSize + 4 (2097156)"},
		{"limits: {maxPacketSize: 65536, maxPendingOutboundBytes: 65539}", "limits.maxPendingOutboundBytes: must be at least limits.maxPacketSize + 4 (65540)"},
		{"limits: {maxHeaderBytes: 100}", "limits.maxHeaderBytes: must be 1024..1048576"},
		{"limits: {inboundBudgetBytes: -1}", "limits.inboundBudgetBytes: must not be negative"},
		{"limits: {inboundBudgetBytes: 1000}", "limits.inboundBudgetBytes: must be 0 (no budget) or at least limits.maxPacketSize"},
		{"limits: {preAuthMaxPacketSize: 10}", "limits.preAuthMaxPacketSize: must be 64..67108864"},
		{"limits: {closeLinger: 0s}", "limits.closeLinger: must be positive"},
		{"limits: {closeQuiet: -1s}", "limits.closeQuiet: must be positive"},
		{"limits: {replyHold: 0s}", "limits.replyHold: must be positive"},
		{"limits: {idlePark: -1s}", "limits.idlePark: must not be negative"},
		{"limits: {rateLimit: {bytesBurst: -1}}", "limits.rateLimit: values must not be negative"},
		{"limits: {authFailures: {perIP: -1}}", "limits.authFailures.perIP: must not be negative"},
		{"limits: {authFailures: {cooldown: 0s}}", "limits.authFailures.cooldown: must be positive"},
		{"protocol: {authenticateMsgIds: [\"\"]}", "protocol.authenticateMsgIds[0]: must be 1..255 bytes"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

// The edge limits have their documented defaults and can be set.
func TestEdgeLimitDefaults(t *testing.T) {
	d := Default()
	if d.Limits.MaxPendingOutboundBytes != 5<<20 || d.Limits.MaxHeaderBytes != 16<<10 || d.Limits.InboundBudgetBytes != 256<<20 {
		t.Fatalf("defaults: %+v", d.Limits)
	}
	if !d.Transports.WebSocket.AllowMissingOrigin || !d.Transports.WSS.AllowMissingOrigin {
		t.Fatal("allowMissingOrigin is not on by default")
	}
	c, err := Parse([]byte("limits: {maxPacketSize: 65536, maxPendingOutboundBytes: 65540, maxHeaderBytes: 8192, inboundBudgetBytes: 0}\ntransports: {websocket: {allowMissingOrigin: false}}"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.MaxPendingOutboundBytes != 65540 || c.Limits.MaxHeaderBytes != 8192 || c.Limits.InboundBudgetBytes != 0 || c.Transports.WebSocket.AllowMissingOrigin || !c.Transports.WSS.AllowMissingOrigin {
		t.Fatalf("parsed: %+v %+v", c.Limits, c.Transports.WebSocket)
	}
}

// The edge options have documented defaults, parse from YAML, and reach the
// session options; the older single authenticateMsgId stays valid.
func TestEdgeOptions(t *testing.T) {
	d := Default()
	if d.Limits.PreAuthMaxPacketSize != 64<<10 || d.Limits.CloseLinger.Duration != 2*time.Second || d.Limits.CloseQuiet.Duration != 250*time.Millisecond ||
		d.Limits.ReplyHold.Duration != time.Millisecond || d.Limits.IdlePark.Duration != 5*time.Second || d.Limits.RateLimit.BytesPerSecond != 0 || d.Limits.RateLimit.BytesBurst != 0 ||
		d.Limits.AuthFailures != (AuthFailures{PerIP: 20, Window: D(time.Minute), Cooldown: D(time.Minute)}) ||
		len(d.Protocol.AuthenticateMsgIDs.Names()) != 2 {
		t.Fatalf("defaults: %+v %+v", d.Limits, d.Protocol)
	}
	c, err := Parse([]byte(`
protocol:
  authenticateMsgId: Login
  authenticateMsgIds: [Hello]
limits:
  preAuthMaxPacketSize: 1024
  closeLinger: 3s
  closeQuiet: 100ms
  replyHold: 3ms
  idlePark: 0s
  rateLimit: {bytesPerSecond: 5000, bytesBurst: 9000}
  authFailures: {perIP: 3, window: 10s, cooldown: 20s}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Protocol.AuthenticateMsgID != "Login" || len(c.Protocol.AuthenticateMsgIDs.Names()) != 1 || c.Limits.PreAuthMaxPacketSize != 1024 ||
		c.Limits.CloseLinger.Duration != 3*time.Second || c.Limits.CloseQuiet.Duration != 100*time.Millisecond ||
		c.Limits.ReplyHold.Duration != 3*time.Millisecond || c.Limits.IdlePark.Duration != 0 ||
		c.Limits.RateLimit.BytesPerSecond != 5000 || c.Limits.RateLimit.BytesBurst != 9000 ||
		c.Limits.AuthFailures != (AuthFailures{PerIP: 3, Window: D(10 * time.Second), Cooldown: D(20 * time.Second)}) {
		t.Fatalf("parsed: %+v %+v", c.Limits, c.Protocol)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil || back.Protocol != c.Protocol || !strings.Contains(string(out), "authenticateMsgIds:\n  - Hello") {
		t.Fatalf("round trip: %v\n%s", err, out)
	}
}

func TestDurationSeconds(t *testing.T) {
	c, err := Parse([]byte("drainTimeout: 45"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DrainTimeout.Duration != 45*time.Second {
		t.Errorf("drainTimeout = %v", c.DrainTimeout)
	}
}

// A program that supplies its own handler may name its app anything, and a
// program that mounts the WebSocket handler itself needs no engine listener
// (issue 10, points 1 and 2); the admin listener can be turned off.
func TestEmbeddingConfig(t *testing.T) {
	c, err := Parse([]byte("app: chess\ntransports: {tcp: {enabled: false}, websocket: {enabled: false}, mounted: true}\nadmin: {enabled: false}"))
	if err != nil {
		t.Fatalf("embedding config refused: %v", err)
	}
	if c.App != "chess" || c.Admin.Enabled || !c.Transports.Mounted {
		t.Fatalf("parsed %+v", c)
	}
	if !Default().Admin.Enabled {
		t.Fatal("admin listener is not on by default")
	}
}
