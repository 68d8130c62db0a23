package testutil

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
)

// ServerTLS writes a throwaway CA and server certificate (valid for an hour)
// under the test's temporary directory and returns the bundle and its
// server TLS configuration; it fails the test on error.
func ServerTLS(t testing.TB) (*testcert.Bundle, *tls.Config) {
	t.Helper()
	certs, err := testcert.Write(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := certs.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	return certs, cfg
}
