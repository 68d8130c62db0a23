package session

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokensIssueVerify(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tk, err := NewTokens(key, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tk.Issue("acct", 99)
	if err != nil {
		t.Fatal(err)
	}
	if !looksLikeToken([]byte(s)) {
		t.Fatal("issued token not recognised as a token")
	}
	c, err := tk.Verify(s)
	if err != nil || c.Account != "acct" || c.StageID != 99 || time.Until(c.ExpiresAt) > 5*time.Minute || time.Until(c.ExpiresAt) < 4*time.Minute {
		t.Fatalf("claims %+v, %v", c, err)
	}
	sign := func(m jwt.SigningMethod, claims jwt.MapClaims, k any) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Minute).Unix()
	for name, bad := range map[string]string{
		"alg none":       sign(jwt.SigningMethodNone, jwt.MapClaims{"sub": "a", "exp": exp}, jwt.UnsafeAllowNoneSignatureType),
		"HS512 same key": sign(jwt.SigningMethodHS512, jwt.MapClaims{"sub": "a", "exp": exp}, key),
		"no exp":         sign(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a"}, key),
		"no sub":         sign(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp}, key),
		"expired":        sign(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(-time.Minute).Unix()}, key),
		"garbage":        "eyJhbGciOiJIUzI1NiJ9.garbage.garbage",
		"oversized":      "eyJ" + strings.Repeat("a", maxTokenSize),
	} {
		if _, err := tk.Verify(bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: Verify = %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := NewTokens([]byte("short"), time.Minute); err == nil {
		t.Error("short key accepted")
	}
	if looksLikeToken([]byte("player-1")) || looksLikeToken([]byte("eyJ.a.b c")) {
		t.Error("plain credentials taken for a token")
	}
}

// Reconnect tokens: the lifetime counts from the reconnect moment, a token
// is accepted once per server, forged and expired ones are refused, and the
// ids remembered against replay expire with their tokens.
func TestReconnectTokenLifetimeAndReplay(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	clock := func() time.Time { return now }
	issuer, _ := NewTokens(key, 5*time.Second)
	issuer.now = clock
	verifier, _ := NewTokens(key, 5*time.Second) // another pod with the same key
	verifier.now = clock

	// Told to come back in 20s: valid until 25s from now, not 5s.
	tok, err := issuer.IssueFrom("acct", 3, now.Add(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(22 * time.Second)
	c, err := verifier.Verify(tok)
	if err != nil || c.Account != "acct" || c.StageID != 3 {
		t.Fatalf("token at the reconnect moment: %+v %v", c, err)
	}
	if _, err := verifier.Verify(tok); !errors.Is(err, ErrTokenReplayed) || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("replayed token: %v", err)
	}
	// The issuing pod has not seen it: a token is single-use per pod.
	if _, err := issuer.Verify(tok); err != nil {
		t.Fatalf("first use on another pod: %v", err)
	}
	forged, _ := NewTokens([]byte("another-key-another-key-another!"), time.Minute)
	bad, _ := forged.Issue("acct", 3)
	if _, err := verifier.Verify(bad); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("forged token: %v", err)
	}
	now = now.Add(4 * time.Second) // past 25s
	late, _ := issuer.IssueFrom("acct", 3, now.Add(-time.Hour))
	if _, err := verifier.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired token: %v", err)
	}
	if verifier.remembered() != 1 {
		t.Fatalf("remembered %d ids", verifier.remembered())
	}
	// A moment in the past never shortens the lifetime below "from now".
	now = now.Add(6 * time.Second)
	if _, err := verifier.Verify(late); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("late token past its lifetime: %v", err)
	}
	fresh, _ := issuer.Issue("acct", 3)
	if _, err := verifier.Verify(fresh); err != nil {
		t.Fatal(err)
	}
	if n := verifier.remembered(); n != 1 {
		t.Fatalf("expired ids kept: %d remembered", n)
	}
}
