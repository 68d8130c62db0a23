package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certFiles serves a certificate read from PEM files and re-reads them every
// reload interval: when their content has changed (a renewed Kubernetes
// Secret, cert-manager), new handshakes use the new certificate without a
// restart. Reading two small files per interval is cheaper than it is
// subtle to trust modification times, which a Secret's symlink swap or a
// coarse file-system clock can leave unchanged. A pair that does not load
// (a half-written update: new certificate, old key) keeps the previous
// certificate and is retried at the next interval.
type certFiles struct {
	certFile, keyFile string
	log               *slog.Logger
	onLoad            func(notAfter time.Time)

	cert          atomic.Pointer[tls.Certificate]
	mu            sync.Mutex // guards certPEM, keyPEM
	certPEM       []byte
	keyPEM        []byte
	lastFailedErr string // the last reload error logged, to log each once
}

// newCertFiles loads the pair once; an error here is a configuration error.
func newCertFiles(certFile, keyFile string, log *slog.Logger, onLoad func(time.Time)) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile, log: log, onLoad: onLoad}
	if _, err := c.reload(); err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	return c, nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (c *certFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// reload reads both files and, when either changed, parses and swaps in the
// pair. It reports whether a new certificate was loaded.
func (c *certFiles) reload() (bool, error) {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("read key: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.Equal(certPEM, c.certPEM) && bytes.Equal(keyPEM, c.keyPEM) {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("parse certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return false, fmt.Errorf("parse certificate %s: %w", c.certFile, err)
		}
	}
	c.certPEM, c.keyPEM = certPEM, keyPEM
	c.cert.Store(&cert)
	c.onLoad(cert.Leaf.NotAfter)
	c.log.Info("TLS certificate loaded", "subject", cert.Leaf.Subject.String(), "notAfter", cert.Leaf.NotAfter)
	return true, nil
}

// watch re-reads the files every interval until ctx ends.
func (c *certFiles) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := c.reload(); err != nil {
			if msg := err.Error(); msg != c.lastFailedErr {
				c.lastFailedErr = msg
				c.log.Warn("TLS certificate reload failed; serving the previous one", "err", err)
			}
			continue
		}
		c.lastFailedErr = ""
	}
}

// observeCertificates returns a copy of a caller's tls.Config whose served
// certificates feed the expiry metric: the first static certificate at
// once, and each certificate GetCertificate returns as it is served.
func (s *Server) observeCertificates(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	var last atomic.Pointer[tls.Certificate]
	observe := func(cert *tls.Certificate) {
		if cert == nil || len(cert.Certificate) == 0 || last.Swap(cert) == cert {
			return
		}
		leaf := cert.Leaf
		if leaf == nil {
			var err error
			if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return
			}
		}
		s.setCertExpiry(leaf.NotAfter)
	}
	if len(cfg.Certificates) > 0 {
		observe(&cfg.Certificates[0])
	}
	if get := cfg.GetCertificate; get != nil {
		cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := get(hello)
			if err == nil {
				observe(cert)
			}
			return cert, err
		}
	}
	return cfg
}
