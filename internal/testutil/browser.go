package testutil

import (
	"context"
	"io"
	"os"
	"os/exec"
	"testing"
)

// Chromium finds the browser for the browser tests: $CHROMIUM, then Debian's
// chromium package (installed by `make test-deps`). Without one the test
// fails, except under -short, where it is skipped.
func Chromium(t *testing.T) string {
	t.Helper()
	for _, c := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser"} {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("no chromium (make test installs it)")
	}
	t.Fatal("chromium not found: run `make test-deps` (installs Debian's chromium) or set CHROMIUM")
	return ""
}

// StartHeadless starts a headless Chromium on pageURL with a fresh profile and
// no background networking (this machine has no network beyond loopback),
// plus extra flags, and kills it when the test ends.
func StartHeadless(t *testing.T, ctx context.Context, pageURL string, extra ...string) {
	t.Helper()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--user-data-dir=" + t.TempDir(),
	}
	args = append(append(args, extra...), pageURL)
	cmd := exec.CommandContext(ctx, Chromium(t), args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}
