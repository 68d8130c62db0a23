package server_test

import (
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
	"github.com/playhouse-k8s/playhouse/pkg/config"
	. "github.com/playhouse-k8s/playhouse/pkg/server"
	"github.com/playhouse-k8s/playhouse/pkg/transport"
)

// TestCertificateReload replaces the certificate files under a running server
// (as a renewed Kubernetes Secret does): new handshakes get the new
// certificate without a restart, and the expiry metric follows.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	first, err := testcert.Write(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := testConfig(t)
	c.Transports.TLS = config.TLS{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), ReloadInterval: config.D(50 * time.Millisecond)}
	srv := startServer(t, c)
	addr := srv.Addr(transport.KindTLSTCP).String()

	notAfter := func(cfg *tls.Config) (time.Time, error) {
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return time.Time{}, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].NotAfter, nil
	}
	got, err := notAfter(first.ClientConfig())
	if err != nil || !got.Equal(first.NotAfter.Truncate(time.Second)) && !got.Equal(first.NotAfter) {
		t.Fatalf("first certificate: %v %v (want %v)", got, err, first.NotAfter)
	}
	if exp := CertExpiry(srv); exp.Unix() != first.NotAfter.Unix() {
		t.Fatalf("expiry metric source = %v", exp)
	}

	second, err := testcert.Write(dir, 2*time.Hour) // new CA and key, same files
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the renewed certificate to be served", func() bool {
		got, err := notAfter(second.ClientConfig())
		return err == nil && got.Unix() == second.NotAfter.Unix()
	})
	waitFor(t, "the expiry to follow", func() bool { return CertExpiry(srv).Unix() == second.NotAfter.Unix() })
	// Clients that only trust the old CA now fail the handshake.
	if _, err := notAfter(first.ClientConfig()); err == nil {
		t.Fatal("old CA still accepted after the renewal")
	}
}
