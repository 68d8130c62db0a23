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
