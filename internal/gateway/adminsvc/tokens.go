package adminsvc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/store"
)

// Admin tokens and roles. The adapters authenticate a request (the
// gateway's own admin token, or a stored token through Authenticate),
// check its role against the gateway's one route table, and put the
// Caller in the request's context; every audit record of an action then
// names the token that acted (ByCaller). The store keeps tokens only as
// SHA-256 hashes: a token is 256 random bits, which no dictionary holds,
// so a fast unsalted hash is as good as a slow one and lets a lookup be
// one indexed read.

// Caller is who an admin request is from: the name and role of the token
// that authorized it.
type Caller struct {
	Token string
	Role  adminapi.Role
}

type callerKey struct{}

// WithCaller returns ctx carrying c, for the service's audit records.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerOf returns the caller ctx carries, if any.
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// ByCaller returns rec naming the token of ctx's caller at the end of its
// Detail ("...; by token NAME", or "by token NAME" alone). AuditRecord
// has no field for it, and adding one would change the schema of both
// backends; token names are restricted to plain characters
// (store.CheckTokenName), so the Detail stays unambiguous. A record
// without a caller (a user enrolling, an in-process call) is unchanged.
func ByCaller(ctx context.Context, rec store.AuditRecord) store.AuditRecord {
	c, ok := CallerOf(ctx)
	if !ok || c.Token == "" {
		return rec
	}
	if rec.Detail != "" {
		rec.Detail += "; "
	}
	rec.Detail += "by token " + c.Token
	return rec
}

// tokenTouchEvery is how stale a token's LastUsed may get: touching it at
// most once a minute keeps authentication from being a store write per
// request.
const tokenTouchEvery = time.Minute

// tokenStore is the store's token capability, or a refusal when the
// backend has none.
func (s *Service) tokenStore() (store.Tokens, error) {
	ts, ok := s.c.Store.(store.Tokens)
	if !ok {
		return nil, fail(Unavailable, "this gateway's store keeps no admin tokens: only the gateway's own admin token works")
	}
	return ts, nil
}

// AuthenticateHash finds the stored token whose SHA-256 is h and records
// its use; ok is false when no stored token matches. err is a store
// failure: the caller answers it as the gateway's, not as a wrong token.
func (s *Service) AuthenticateHash(ctx context.Context, h [32]byte) (c Caller, ok bool, err error) {
	ts, ok := s.c.Store.(store.Tokens)
	if !ok {
		return Caller{}, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	t, err := ts.TokenByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return Caller{}, false, nil
	}
	if err != nil {
		return Caller{}, false, s.storeError("checking an admin token", err)
	}
	role := adminapi.Role(t.Role)
	if !role.Valid() {
		// A role this build does not know (a newer replica's) grants
		// nothing here.
		s.c.Log.Warn("admin token with an unknown role refused", "token", t.Name, "role", t.Role)
		return Caller{}, false, nil
	}
	if now := s.now(); now.Sub(t.LastUsed) >= tokenTouchEvery {
		if err := ts.TouchToken(ctx, t.Name, now); err != nil {
			s.c.Log.Warn("recording an admin token's last use failed", "token", t.Name, "err", err)
		}
	}
	return Caller{Token: t.Name, Role: role}, true, nil
}

// CreateToken makes a token with a role and returns it, once: the store
// keeps only its hash.
func (s *Service) CreateToken(ctx context.Context, source string, req adminapi.TokenRequest) (adminapi.NewToken, error) {
	if err := store.CheckTokenName(req.Name); err != nil {
		return adminapi.NewToken{}, failWith(Invalid, err, "token name: %v", err)
	}
	if req.Name == adminapi.BootstrapTokenName {
		return adminapi.NewToken{}, fail(Invalid, "token name %q is the gateway's own admin token's: choose another", req.Name)
	}
	if !req.Role.Valid() {
		return adminapi.NewToken{}, fail(Invalid, "role %q: use %s, %s or %s", req.Role, adminapi.RoleAdmin, adminapi.RoleOperator, adminapi.RoleAuditor)
	}
	ts, err := s.tokenStore()
	if err != nil {
		return adminapi.NewToken{}, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return adminapi.NewToken{}, failWith(Internal, err, "drawing a token failed")
	}
	tok := hex.EncodeToString(raw[:])
	clear(raw[:])
	now := s.now().UTC().Truncate(time.Microsecond)
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.auditReady(); err != nil {
		return adminapi.NewToken{}, err
	}
	err = ts.PutToken(ctx, store.Token{Name: req.Name, Role: string(req.Role), Hash: sha256.Sum256([]byte(tok)), Created: now})
	if errors.Is(err, store.ErrExists) {
		return adminapi.NewToken{}, failWith(Conflict, err, "a token named %q exists: revoke it first, or choose another name", req.Name)
	}
	if err != nil {
		return adminapi.NewToken{}, s.storeError("creating a token", err)
	}
	if err := s.audited(ctx, store.AuditRecord{Time: now, Kind: adminapi.KindToken, Outcome: adminapi.OutcomeOK, Reason: "token created",
		Source: source, Detail: fmt.Sprintf("token %s, role %s", req.Name, req.Role)}, "the token was created"); err != nil {
		return adminapi.NewToken{}, err
	}
	return adminapi.NewToken{Name: req.Name, Role: req.Role, Token: tok, Created: now}, nil
}

// Tokens lists the stored tokens (never the tokens themselves).
func (s *Service) Tokens(ctx context.Context) (adminapi.TokenList, error) {
	ts, err := s.tokenStore()
	if err != nil {
		return adminapi.TokenList{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	list, err := ts.ListTokens(ctx)
	if err != nil {
		return adminapi.TokenList{}, s.storeError("listing tokens", err)
	}
	out := adminapi.TokenList{Tokens: make([]adminapi.TokenInfo, len(list))}
	for i, t := range list {
		out.Tokens[i] = adminapi.TokenInfo{Name: t.Name, Role: adminapi.Role(t.Role), Created: t.Created.UTC()}
		if !t.LastUsed.IsZero() {
			out.Tokens[i].LastUsed = t.LastUsed.UTC()
		}
	}
	return out, nil
}

// RevokeToken deletes a token: every replica refuses it from its next
// request on.
func (s *Service) RevokeToken(ctx context.Context, source, name string) (adminapi.TokenRevoked, error) {
	if name == adminapi.BootstrapTokenName {
		return adminapi.TokenRevoked{}, fail(Invalid, "the gateway's own admin token is not stored: change it by replacing DATA/%s (or TAGAUTH_ADMIN_TOKEN) and restarting", adminapi.TokenFileName)
	}
	if err := store.CheckTokenName(name); err != nil {
		return adminapi.TokenRevoked{}, failWith(Invalid, err, "token name: %v", err)
	}
	ts, err := s.tokenStore()
	if err != nil {
		return adminapi.TokenRevoked{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.auditReady(); err != nil {
		return adminapi.TokenRevoked{}, err
	}
	at := s.now()
	err = ts.DeleteToken(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return adminapi.TokenRevoked{}, failWith(NotFound, err, "no token named %q", name)
	}
	if err != nil {
		return adminapi.TokenRevoked{}, s.storeError("revoking a token", err)
	}
	if err := s.audited(ctx, store.AuditRecord{Time: at, Kind: adminapi.KindToken, Outcome: adminapi.OutcomeOK, Reason: "token revoked",
		Source: source, Detail: "token " + name}, "the token was revoked"); err != nil {
		return adminapi.TokenRevoked{}, err
	}
	return adminapi.TokenRevoked{Name: name, RevokedAt: at.UTC()}, nil
}
