package server

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/playhouse-k8s/playhouse/internal/testcert"
)

// A half-written renewal (the new certificate beside the old key) keeps the
// previous certificate in service; once the key follows, the new pair is
// loaded and the expiry callback sees it. Reload compares content, so a
// rewrite with identical bytes loads nothing.
func TestCertFilesHalfWrittenRenewal(t *testing.T) {
	dir := t.TempDir()
	first, err := testcert.Write(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var expiry time.Time
	cf, err := newCertFiles(first.CertFile, first.KeyFile, slog.New(slog.NewTextHandler(io.Discard, nil)), func(t time.Time) { expiry = t })
	if err != nil {
		t.Fatal(err)
	}
	served := func() time.Time {
		c, _ := cf.GetCertificate(nil)
		return c.Leaf.NotAfter
	}
	if served().Unix() != first.NotAfter.Unix() || expiry.Unix() != first.NotAfter.Unix() {
		t.Fatalf("first: served %v expiry %v", served(), expiry)
	}
	if changed, err := cf.reload(); changed || err != nil {
		t.Fatalf("unchanged files reloaded: %v %v", changed, err)
	}

	other := t.TempDir()
	second, err := testcert.Write(other, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(second.CertFile, filepath.Join(dir, filepath.Base(first.CertFile)))
	if changed, err := cf.reload(); changed || err == nil {
		t.Fatalf("mismatched pair: changed %v err %v", changed, err)
	}
	if served().Unix() != first.NotAfter.Unix() {
		t.Fatal("a half-written renewal replaced the served certificate")
	}
	copyFile(second.KeyFile, filepath.Join(dir, filepath.Base(first.KeyFile)))
	if changed, err := cf.reload(); !changed || err != nil {
		t.Fatalf("completed renewal: changed %v err %v", changed, err)
	}
	if served().Unix() != second.NotAfter.Unix() || expiry.Unix() != second.NotAfter.Unix() {
		t.Fatalf("renewed: served %v expiry %v, want %v", served(), expiry, second.NotAfter)
	}
}
