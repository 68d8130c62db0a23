package testutil

import (
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
	"github.com/playhouse-k8s/playhouse/pkg/config"
)

// LoopbackConfig is the default server configuration with every transport
// (TCP, WebSocket, TLS-TCP, WSS) and the admin endpoint on loopback port 0
// (any free port), and a test certificate valid for an hour.
func LoopbackConfig(t testing.TB) (config.Config, *testcert.Bundle) {
	t.Helper()
	b, err := testcert.Write(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Transports.TCP.Port = 0
	c.Transports.WebSocket.Port = 0
	c.Transports.TLSTCP = config.Listener{Enabled: true}
	c.Transports.WSS.Enabled, c.Transports.WSS.Port = true, 0
	c.Transports.TLS.CertFile, c.Transports.TLS.KeyFile = b.CertFile, b.KeyFile
	c.Admin.Port = 0
	return c, b
}
