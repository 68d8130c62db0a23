package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/pkg/config"
)

// renderConfig builds the server configuration of a PlayHouseServer: the
// embedded defaults overlaid with every spec field that is set, listeners on
// all interfaces, TLS and signing-key files where the pod mounts them, and
// JSON logs. The result is validated with the server's own rules, so a spec
// the server would refuse is reported here instead of crash-looping the pods.
func renderConfig(phs *playhousev1alpha1.PlayHouseServer) (config.Config, error) {
	s := &phs.Spec
	c := config.Default()
	c.BindAddress = "0.0.0.0"
	c.Log.Format = "json"
	if s.App != "" {
		c.App = s.App
	}

	t := &s.Transports
	c.Transports.TCP = listener(t.TCP, config.DefaultTCPPort)
	c.Transports.TLSTCP = listener(t.TLSTCP, config.DefaultTLSTCPPort)
	c.Transports.WebSocket = webSocketListener(t.WebSocket, config.DefaultWSPort)
	c.Transports.WSS = webSocketListener(t.WSS, config.DefaultWSSPort)
	// Fields are overlaid one by one, never whole structs, so the server's
	// defaults of the options the CRD does not expose (the TLS reload
	// interval, the PROXY header timeout) are kept.
	if t.TLS.SecretName != "" {
		c.Transports.TLS.CertFile = TLSDir + "/" + corev1.TLSCertKey
		c.Transports.TLS.KeyFile = TLSDir + "/" + corev1.TLSPrivateKeyKey
	}
	c.Transports.ProxyProtocol.Enabled = t.ProxyProtocol.Enabled
	if len(t.ProxyProtocol.TrustedCIDRs) > 0 {
		c.Transports.ProxyProtocol.TrustedCIDRs = t.ProxyProtocol.TrustedCIDRs
	}

	p := &s.Protocol
	setString(&c.Protocol.RequestHeader, p.RequestHeader)
	setString(&c.Protocol.HeartbeatMsgID, p.HeartbeatMsgId)
	setString(&c.Protocol.AuthenticateMsgID, p.AuthenticateMsgId)
	c.Protocol.Compression.Enabled = p.Compression.Enabled
	setInt(&c.Protocol.Compression.Threshold, p.Compression.Threshold)

	l := &s.Limits
	setInt(&c.Limits.MaxPacketSize, l.MaxPacketSize)
	setInt(&c.Limits.MaxConnections, l.MaxConnections)
	setInt(&c.Limits.MaxConnectionsPerIP, l.MaxConnectionsPerIP)
	// An empty list (perIPExempt: []) keeps the default like an absent one:
	// the config file cannot tell the two apart (the field is omitempty), so
	// anything else would render a file the server reads differently.
	if len(l.PerIPExempt) > 0 {
		c.Limits.PerIPExempt = l.PerIPExempt
	}
	if l.RateLimit.PacketsPerSecond != 0 {
		c.Limits.RateLimit.PacketsPerSecond = float64(l.RateLimit.PacketsPerSecond)
	}
	setInt(&c.Limits.RateLimit.Burst, l.RateLimit.Burst)
	setInt(&c.Limits.RateLimit.MaxViolations, l.RateLimit.MaxViolations)
	setDuration(&c.Limits.HeartbeatTimeout, l.HeartbeatTimeout)
	setDuration(&c.Limits.AuthTimeout, l.AuthTimeout)
	setInt(&c.Limits.MaxAuthAttempts, l.MaxAuthAttempts)
	setDuration(&c.Limits.TLSHandshakeTimeout, l.TLSHandshakeTimeout)
	setInt(&c.Limits.MaxPendingOutboundBytes, l.MaxPendingOutboundBytes)
	setDuration(&c.Limits.WriteTimeout, l.WriteTimeout)

	setString(&c.Auth.Mode, s.Auth.Mode)
	setDuration(&c.Auth.ReconnectTokenLifetime, s.Auth.ReconnectTokenLifetime)
	// Every pod mounts the same signing key (generated or the user's), so a
	// reconnect token issued by one pod during its drain is accepted by the
	// pod the client reconnects to, whatever the auth mode.
	c.Auth.SigningKeyFile = SigningKeyPath

	setDuration(&c.DrainTimeout, s.DrainTimeout)

	if err := c.Validate(); err != nil {
		return config.Config{}, err
	}
	return c, nil
}

// renderConfigYAML renders the configuration file of a PlayHouseServer.
func renderConfigYAML(phs *playhousev1alpha1.PlayHouseServer) ([]byte, error) {
	c, err := renderConfig(phs)
	if err != nil {
		return nil, err
	}
	return c.Marshal()
}

// configHash is the value of the pod template's config-hash annotation: it
// changes whenever the file the pods read changes, or the secrets they mount
// are swapped for others, so either rolls the Deployment.
func configHash(configYAML []byte, tlsSecret, signingKeySecret string) string {
	h := sha256.New()
	h.Write(configYAML)
	fmt.Fprintf(h, "\x00tls=%s\x00signing-key=%s", tlsSecret, signingKeySecret)
	return hex.EncodeToString(h.Sum(nil))
}

// listener converts a spec listener, defaulting an unset port.
func listener(l playhousev1alpha1.ListenerSpec, defaultPort int) config.Listener {
	out := config.Listener{Enabled: l.Enabled, Port: defaultPort}
	setInt(&out.Port, l.Port)
	return out
}

// webSocketListener converts a spec WebSocket listener, defaulting an unset
// port and path.
func webSocketListener(w playhousev1alpha1.WebSocketSpec, defaultPort int) config.WebSocketListener {
	out := config.WebSocketListener{
		Listener: config.Listener{Enabled: w.Enabled, Port: defaultPort},
		Path:     "/ws",
	}
	if len(w.AllowedOrigins) > 0 {
		out.AllowedOrigins = w.AllowedOrigins
	}
	setInt(&out.Port, w.Port)
	setString(&out.Path, w.Path)
	return out
}

// setString overwrites dst when v is set.
func setString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// setInt overwrites dst when v is set (non-zero).
func setInt(dst *int, v int32) {
	if v != 0 {
		*dst = int(v)
	}
}

// setDuration overwrites dst when d is set.
func setDuration(dst *config.Duration, d *metav1.Duration) {
	if d != nil {
		*dst = config.D(d.Duration)
	}
}
