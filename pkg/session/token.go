package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinSigningKeySize is the shortest accepted HS256 signing key.
const MinSigningKeySize = 16

// MaxRememberedTokens bounds how many used token ids a Tokens remembers (each
// until its token expires). When full, a token with an id is refused until
// some expire: replay protection fails closed.
const MaxRememberedTokens = 1 << 18

// Tokens issues and verifies the signed tokens of protocol.md section 3:
// JWTs (HS256) naming an account and a stage. Any server holding the same key
// accepts a token another issued; each server accepts a token that carries an
// id (every token Issue makes) at most once, remembering its id until it
// expires.
type Tokens struct {
	key      []byte
	lifetime time.Duration
	now      func() time.Time

	mu        sync.Mutex
	used      map[string]time.Time // token id to its expiry
	nextSweep time.Time            // when expired ids are next dropped
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
	return &Tokens{key: append([]byte(nil), key...), lifetime: lifetime, now: time.Now, used: make(map[string]time.Time)}, nil
}

// Lifetime is the lifetime of issued tokens.
func (t *Tokens) Lifetime() time.Duration { return t.lifetime }

// Issue signs a token for account and stage, valid for the lifetime from now.
func (t *Tokens) Issue(account string, stageID int64) (string, error) {
	return t.IssueFrom(account, stageID, t.now())
}

// IssueFrom signs a token for account and stage that expires the lifetime
// after from: a reconnect token's lifetime counts from the moment the client
// is told to reconnect (protocol.md section 3).
func (t *Tokens) IssueFrom(account string, stageID int64, from time.Time) (string, error) {
	if account == "" {
		return "", errors.New("issue token: empty account")
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	now := t.now()
	if from.Before(now) {
		from = now
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims{
		Stage: stageID,
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        base64.RawURLEncoding.EncodeToString(id[:]),
			Subject:   account,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(from.Add(t.lifetime)),
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

// ErrTokenReplayed is wrapped by Verify for a token this server has already accepted.
var ErrTokenReplayed = errors.New("token already used")

// Verify checks a token's signature (HS256 only), expiry and subject, and
// spends it: a token with an id is accepted once per Tokens.
func (t *Tokens) Verify(token string) (TokenClaims, error) {
	c, err := t.check(token)
	if err != nil {
		return TokenClaims{}, err
	}
	if c.ID != "" {
		if err := t.spend(c.ID, c.ExpiresAt.Time); err != nil {
			return TokenClaims{}, err
		}
	}
	return TokenClaims{Account: c.Subject, StageID: c.Stage, ExpiresAt: c.ExpiresAt.Time}, nil
}

// spend records id as used until expiry, refusing one already used.
func (t *Tokens) spend(id string, expiry time.Time) error {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if exp, ok := t.used[id]; ok && now.Before(exp) {
		return fmt.Errorf("%w: %w", ErrInvalidToken, ErrTokenReplayed)
	}
	if len(t.used) >= MaxRememberedTokens || !now.Before(t.nextSweep) {
		// Expired ids are dropped every lifetime, or when the table is full.
		for k, exp := range t.used {
			if !now.Before(exp) {
				delete(t.used, k)
			}
		}
		t.nextSweep = now.Add(t.lifetime)
		if len(t.used) >= MaxRememberedTokens {
			return fmt.Errorf("%w: %d used tokens remembered, the most allowed", ErrInvalidToken, len(t.used))
		}
	}
	t.used[id] = expiry
	return nil
}

// remembered reports how many used token ids are held.
func (t *Tokens) remembered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.used)
}

// check verifies a token without spending it.
func (t *Tokens) check(token string) (jwtClaims, error) {
	if len(token) > maxTokenSize {
		return jwtClaims{}, fmt.Errorf("%w: %d bytes", ErrInvalidToken, len(token))
	}
	var c jwtClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return jwtClaims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return jwtClaims{}, fmt.Errorf("%w: no subject", ErrInvalidToken)
	}
	return c, nil
}
