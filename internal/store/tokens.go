package store

import (
	"context"
	"fmt"
	"time"
)

// Admin tokens (roles, as Kerberos' kadm5.acl): an admin creates named
// tokens, each with a role, for the admin API and the console. A store
// keeps only the SHA-256 of each token, never the token: the token is a
// 256-bit random string, so its hash needs no salt or slow KDF, and a copy
// of the store lets nobody act as an admin. Keeping tokens in the store
// (not in a gateway's data directory) gives every replica sharing a
// PostgreSQL database the same tokens, and a revocation reaches them all
// at their next request.

// Token is one admin token as stored.
type Token struct {
	Name     string // unique; see CheckTokenName
	Role     string // "admin", "operator" or "auditor" (adminapi.Role)
	Hash     [32]byte
	Created  time.Time
	LastUsed time.Time // zero: never used (kept to about a minute)
}

// MaxTokenNameLen is the longest token name.
const MaxTokenNameLen = 64

// Tokens is implemented by stores that keep admin tokens (both backends
// do).
type Tokens interface {
	// PutToken stores a new token. ErrExists if its name or its hash is
	// already stored; ErrInvalid if it fails CheckToken.
	PutToken(ctx context.Context, t Token) error
	// TokenByHash returns the token whose hash is h; ErrNotFound if none.
	TokenByHash(ctx context.Context, h [32]byte) (Token, error)
	// ListTokens returns every token, sorted by name.
	ListTokens(ctx context.Context) ([]Token, error)
	// DeleteToken removes the token named name: it is refused from then
	// on. ErrNotFound if there is none.
	DeleteToken(ctx context.Context, name string) error
	// TouchToken sets the token's LastUsed to at when at is later; a
	// token that is gone is not an error (it was revoked meanwhile).
	TouchToken(ctx context.Context, name string, at time.Time) error
}

// CheckTokenName validates a token's name: 1 to MaxTokenNameLen of
// A-Z a-z 0-9 . _ - (names appear in audit records, logs and URLs, so
// they are kept plain). The error wraps ErrInvalid.
func CheckTokenName(name string) error {
	if name == "" || len(name) > MaxTokenNameLen {
		return fmt.Errorf("%w: a token name has 1 to %d characters", ErrInvalid, MaxTokenNameLen)
	}
	for _, r := range name {
		if !(r == '.' || r == '_' || r == '-' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')) {
			return fmt.Errorf("%w: token name %q: use only A-Z a-z 0-9 . _ -", ErrInvalid, name)
		}
	}
	return nil
}

// CheckToken validates a token for PutToken: its name, a role, a creation
// time and a hash that is not all zero.
func CheckToken(t *Token) error {
	if err := CheckTokenName(t.Name); err != nil {
		return err
	}
	switch {
	case t.Role == "":
		return fmt.Errorf("%w: token %q has no role", ErrInvalid, t.Name)
	case t.Created.IsZero():
		return fmt.Errorf("%w: token %q has no creation time", ErrInvalid, t.Name)
	case t.Hash == [32]byte{}:
		return fmt.Errorf("%w: token %q has no hash", ErrInvalid, t.Name)
	}
	return nil
}
