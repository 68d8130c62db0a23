package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// fakeReview answers access reviews from a table of token to allowed, and
// counts the calls.
type fakeReview struct {
	mu      sync.Mutex
	allowed map[string]bool
	err     error
	calls   int
}

func (f *fakeReview) review(_ context.Context, token, verb, path string) (verdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return verdict{}, f.err
	}
	if verb != "get" || path != "/metrics" {
		return verdict{authenticated: true, reason: "unexpected request"}, nil
	}
	allowed, known := f.allowed[token]
	if !known {
		return verdict{reason: "unauthenticated"}, nil
	}
	return verdict{authenticated: true, allowed: allowed, reason: "denied"}, nil
}

func TestMetricsAuthFilter(t *testing.T) {
	fr := &fakeReview{allowed: map[string]bool{"good": true, "bad": false}}
	now := time.Unix(1000, 0)
	a := &metricsAuthorizer{review: fr.review, decisions: map[decisionKey]decision{}, now: func() time.Time { return now }}
	h, err := a.filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) }))
	if err != nil {
		t.Fatal(err)
	}
	do := func(token string) int {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if c := do(""); c != http.StatusUnauthorized {
		t.Errorf("no token: %d", c)
	}
	if c := do("bad"); c != http.StatusForbidden {
		t.Errorf("denied token: %d, want 403", c)
	}
	// A token the API server does not recognise is a failed authentication:
	// 401, not 403 (which would say "authenticated, but not allowed").
	if c := do("invalid"); c != http.StatusUnauthorized {
		t.Errorf("invalid token: %d, want 401", c)
	}
	if c := do("good"); c != http.StatusOK {
		t.Errorf("allowed token: %d", c)
	}
	calls := fr.calls
	if c := do("good"); c != http.StatusOK || fr.calls != calls {
		t.Errorf("second scrape: %d, %d reviews (want the cached decision)", c, fr.calls-calls)
	}
	now = now.Add(allowTTL + time.Second)
	if do("good"); fr.calls != calls+1 {
		t.Error("an expired decision was not reviewed again")
	}
	fr.err = errors.New("api down")
	if c := do("other-token"); c != http.StatusInternalServerError {
		t.Errorf("review error: %d", c)
	}
}

func TestNewLogger(t *testing.T) {
	for _, ok := range [][2]string{{"info", "json"}, {"debug", "text"}, {"2", "json"}, {"error", "text"}} {
		if _, err := newLogger(ok[0], ok[1]); err != nil {
			t.Errorf("newLogger(%q, %q): %v", ok[0], ok[1], err)
		}
	}
	for _, bad := range [][2]string{{"loud", "json"}, {"-1", "json"}, {"info", "xml"}} {
		if _, err := newLogger(bad[0], bad[1]); err == nil {
			t.Errorf("newLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
