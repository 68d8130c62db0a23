package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// BrowserPage serves the HTML file at pagePath as /test.html on its own
// loopback origin, opens /test.html?query in headless Chromium (with extra
// flags), and returns the JSON document the page POSTs to /result, decoded
// into T. It fails the test when the page does not report before ctx ends or
// its report is not valid JSON.
func BrowserPage[T any](t *testing.T, ctx context.Context, pagePath, query string, flags ...string) T {
	t.Helper()
	Chromium(t) // fail (or skip under -short) before starting anything
	page, err := os.ReadFile(pagePath)
	if err != nil {
		t.Fatal(err)
	}
	type report struct {
		res T
		err error
	}
	results := make(chan report, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /test.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("POST /result", func(_ http.ResponseWriter, r *http.Request) {
		var rep report
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rep.res); err != nil {
			rep.err = fmt.Errorf("bad result body: %w", err)
		}
		select {
		case results <- rep:
		default:
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: Timeout}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	StartHeadless(t, ctx, "http://"+ln.Addr().String()+"/test.html?"+query, flags...)
	select {
	case rep := <-results:
		if rep.err != nil {
			t.Fatalf("browser: %v", rep.err)
		}
		return rep.res
	case <-ctx.Done():
		t.Fatal("the browser did not report back")
	}
	var zero T
	return zero
}
