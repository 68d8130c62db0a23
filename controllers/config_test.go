package controllers

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	playhousev1alpha1 "github.com/playhouse-k8s/playhouse/api/v1alpha1"
	"github.com/playhouse-k8s/playhouse/pkg/config"
)

// TestRenderedConfigRoundTrips renders the ConfigMap of many specs, edge cases
// included, and parses it back the way playhouse-server does (config.Parse):
// the server must accept the file and end up with exactly the configuration
// the operator computed, including the defaults of the options the CRD does
// not expose.
func TestRenderedConfigRoundTrips(t *testing.T) {
	dur := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	cases := []struct {
		name   string
		change func(p *playhousev1alpha1.PlayHouseServer)
		check  func(t *testing.T, c config.Config)
	}{
		{name: "defaults", change: func(*playhousev1alpha1.PlayHouseServer) {}},
		{
			name:   "relay app",
			change: func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.App = "relay" },
			check: func(t *testing.T, c config.Config) {
				if c.App != "relay" {
					t.Errorf("app %q, want relay", c.App)
				}
			},
		},
		{name: "tls transports", change: func(p *playhousev1alpha1.PlayHouseServer) { withTLS(p) }},
		{name: "only wss", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Transports.TCP.Enabled = false
			p.Spec.Transports.WebSocket.Enabled = false
			p.Spec.Transports.WSS = playhousev1alpha1.WebSocketSpec{Enabled: true, Port: 443, Path: "/game/ws"}
			p.Spec.Transports.TLS.SecretName = "cert"
		}},
		{
			name: "proxy protocol enabled",
			change: func(p *playhousev1alpha1.PlayHouseServer) {
				p.Spec.Transports.ProxyProtocol = playhousev1alpha1.ProxyProtocolSpec{
					Enabled: true, TrustedCIDRs: []string{"10.0.0.0/8", "fd00::/8"},
				}
			},
			check: func(t *testing.T, c config.Config) {
				pp := c.Transports.ProxyProtocol
				if !pp.Enabled || len(pp.TrustedCIDRs) != 2 || pp.HeaderTimeout != config.Default().Transports.ProxyProtocol.HeaderTimeout {
					t.Errorf("proxy protocol %+v", pp)
				}
			},
		},
		{name: "proxy protocol off with CIDRs kept", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Transports.ProxyProtocol = playhousev1alpha1.ProxyProtocolSpec{TrustedCIDRs: []string{"10.0.0.0/8"}}
		}},
		{name: "proxy protocol off with an empty CIDR list", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Transports.ProxyProtocol = playhousev1alpha1.ProxyProtocolSpec{TrustedCIDRs: []string{}}
		}},
		{
			name:   "token mode with the generated key",
			change: func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Auth.Mode = "token" },
			check: func(t *testing.T, c config.Config) {
				if c.Auth.Mode != config.AuthModeToken || c.Auth.SigningKeyFile != SigningKeyPath {
					t.Errorf("auth %+v", c.Auth)
				}
			},
		},
		{name: "token mode with a user key", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Auth = playhousev1alpha1.AuthSpec{Mode: "token", SigningKeySecretName: "mine", ReconnectTokenLifetime: dur(90 * time.Second)}
		}},
		{
			// An explicit empty list is what `perIPExempt: []` decodes to;
			// the file cannot say "no exemption", so it keeps the default.
			name:   "empty perIPExempt",
			change: func(p *playhousev1alpha1.PlayHouseServer) { p.Spec.Limits.PerIPExempt = []string{} },
		},
		{name: "every limit", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Limits = playhousev1alpha1.LimitsSpec{
				MaxPacketSize: 64, MaxConnections: 1, MaxConnectionsPerIP: 1, PerIPExempt: []string{"192.0.2.0/24", "2001:db8::/32"},
				RateLimit:               playhousev1alpha1.RateLimitSpec{PacketsPerSecond: 1, Burst: 1, MaxViolations: 1},
				HeartbeatTimeout:        dur(1500 * time.Millisecond),
				AuthTimeout:             dur(time.Hour + 30*time.Minute),
				MaxAuthAttempts:         1,
				TLSHandshakeTimeout:     dur(time.Millisecond),
				MaxPendingOutboundBytes: 2147483647,
				WriteTimeout:            dur(time.Nanosecond),
			}
			p.Spec.DrainTimeout = dur(2 * time.Hour)
		}},
		{name: "message ids that need YAML quoting", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Protocol = playhousev1alpha1.ProtocolSpec{
				RequestHeader: "full", HeartbeatMsgId: "@Heart@Beat@", AuthenticateMsgId: "a: b #c 'd' \"e\" ü",
				Compression: playhousev1alpha1.CompressionSpec{Enabled: true, Threshold: 1},
			}
		}},
		{name: "message ids that look like other YAML types", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Protocol.HeartbeatMsgId = "true"
			p.Spec.Protocol.AuthenticateMsgId = "0x10"
		}},
		{name: "empty allowed origins", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Transports.WebSocket.AllowedOrigins = []string{}
		}},
		{name: "allowed origins", change: func(p *playhousev1alpha1.PlayHouseServer) {
			p.Spec.Transports.WebSocket.AllowedOrigins = []string{"https://a.example", "http://localhost:3000"}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPHS()
			tc.change(p)
			want, err := renderConfig(p)
			if err != nil {
				t.Fatalf("renderConfig: %v", err)
			}
			cm, err := desiredConfigMap(p)
			if err != nil {
				t.Fatalf("desiredConfigMap: %v", err)
			}
			got, err := config.Parse([]byte(cm.Data[ConfigKey]))
			if err != nil {
				t.Fatalf("the server refuses the rendered config: %v\n%s", err, cm.Data[ConfigKey])
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("the server reads another config than the operator rendered:\n got %+v\nwant %+v\nfile:\n%s", got, want, cm.Data[ConfigKey])
			}
			// The options the CRD does not expose keep the server's defaults.
			def := config.Default()
			if got.Transports.TLS.ReloadInterval != def.Transports.TLS.ReloadInterval ||
				got.Transports.ProxyProtocol.HeaderTimeout != def.Transports.ProxyProtocol.HeaderTimeout {
				t.Errorf("server defaults lost: tls %+v proxy %+v", got.Transports.TLS, got.Transports.ProxyProtocol)
			}
			// Every mode reads the signing key the pods mount.
			if got.Auth.SigningKeyFile != SigningKeyPath {
				t.Errorf("signingKeyFile %q, want %q", got.Auth.SigningKeyFile, SigningKeyPath)
			}
			if !projectedPaths(t, mustDeployment(t, p))[usedSigningKeySecret(p)+":"+SigningKeyKey+"->auth/"+SigningKeyKey] {
				t.Errorf("the pods do not mount the signing key of Secret %s", usedSigningKeySecret(p))
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}
