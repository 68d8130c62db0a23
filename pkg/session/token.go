package session

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinSigningKeySize is the shortest accepted HS256 signing key.
const MinSigningKeySize = 16

// Tokens issues and verifies the signed tokens of protocol.md section 3:
// JWTs (HS256) naming an account and a stage. Any server holding the same key
// accepts a token another issued.
type Tokens struct {
	key      []byte
	lifetime time.Duration
	now      func() time.Time
}

// TokenClaims is what a token says.
type TokenClaims struct {
	// Account is the account id (the JWT "sub").
	Account string
	// StageID is the stage the session was in (claim "stage").
	StageID int64
	// ExpiresAt is when the token stops being accepted.
	ExpiresAt time.Time
}

// jwtClaims is the token's JSON body.
type jwtClaims struct {
	Stage int64 `json:"stage,omitempty"`
	jwt.RegisteredClaims
}

// NewTokens returns a token issuer/verifier for key with the given lifetime
// of issued tokens.
func NewTokens(key []byte, lifetime time.Duration) (*Tokens, error) {
	if len(key) < MinSigningKeySize {
		return nil, fmt.Errorf("signing key is %d bytes, need at least %d", len(key), MinSigningKeySize)
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("token lifetime must be positive, got %s", lifetime)
	}
	return &Tokens{key: append([]byte(nil), key...), lifetime: lifetime, now: time.Now}, nil
}

// Lifetime is the lifetime of issued tokens.
func (t *Tokens) Lifetime() time.Duration { return t.lifetime }

// Issue signs a token for account and stage, valid for the lifetime.
func (t *Tokens) Issue(account string, stageID int64) (string, error) {
	if account == "" {
		return "", errors.New("issue token: empty account")
	}
	now := t.now()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims{
		Stage: stageID,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   account,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(t.lifetime)),
		},
	})
	s, err := tok.SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// ErrInvalidToken wraps every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// maxTokenSize bounds what Verify will parse.
const maxTokenSize = 4096

// Verify checks a token's signature (HS256 only), expiry and subject.
func (t *Tokens) Verify(token string) (TokenClaims, error) {
	if len(token) > maxTokenSize {
		return TokenClaims{}, fmt.Errorf("%w: %d bytes", ErrInvalidToken, len(token))
	}
	var c jwtClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return TokenClaims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return TokenClaims{}, fmt.Errorf("%w: no subject", ErrInvalidToken)
	}
	return TokenClaims{Account: c.Subject, StageID: c.Stage, ExpiresAt: c.ExpiresAt.Time}, nil
}
