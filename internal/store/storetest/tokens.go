package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
)

// RunTokens runs the contract of store.Tokens, for the backends that
// implement it: open must return a new, empty store that does. With
// WithReopen, tokens must also survive a close.
func RunTokens(t *testing.T, open func(t *testing.T) store.Store, opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	h := func(f func(t *testing.T, s store.Store)) func(t *testing.T) {
		return func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			if _, ok := s.(store.Tokens); !ok {
				t.Fatalf("%T does not implement store.Tokens", s)
			}
			f(t, s)
		}
	}
	t.Run("TokenRoundTrip", h(testTokenRoundTrip))
	t.Run("TokenUniqueness", h(testTokenUnique))
	t.Run("TokenInvalid", h(testTokenInvalid))
	t.Run("TokenTouch", h(testTokenTouch))
	t.Run("TokenConcurrentPut", h(testTokenConcurrent))
	if c.reopen != nil {
		t.Run("TokenPersistence", h(func(t *testing.T, s store.Store) {
			mustOK(t, "put", s.(store.Tokens).PutToken(ctx, tok("ops", "operator", "secret-1", 1)))
			s = c.reopen(t, s)
			t.Cleanup(func() { s.Close() })
			got, err := s.(store.Tokens).TokenByHash(ctx, sha256.Sum256([]byte("secret-1")))
			if err != nil || got.Name != "ops" || got.Role != "operator" {
				t.Fatalf("after reopen: %+v, %v", got, err)
			}
		}))
	}
}

var ctx = context.Background()

func tok(name, role, secret string, sec int) store.Token {
	return store.Token{Name: name, Role: role, Hash: sha256.Sum256([]byte(secret)), Created: at(sec)}
}

func tokenEq(a, b store.Token) bool {
	return a.Name == b.Name && a.Role == b.Role && a.Hash == b.Hash && a.Created.Equal(b.Created) && a.LastUsed.Equal(b.LastUsed)
}

func checkTokens(t *testing.T, s store.Tokens, want ...store.Token) {
	t.Helper()
	got, err := s.ListTokens(ctx)
	if err != nil {
		t.Fatalf("ListTokens: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("ListTokens: %d tokens %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range got {
		if !tokenEq(got[i], want[i]) {
			t.Fatalf("ListTokens[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func testTokenRoundTrip(t *testing.T, st store.Store) {
	s := st.(store.Tokens)
	checkTokens(t, s)
	if _, err := s.TokenByHash(ctx, sha256.Sum256([]byte("x"))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TokenByHash on an empty store: %v", err)
	}
	// Put in an order other than the names', and a name that sorts
	// differently bytewise than by most collations.
	b, a, z := tok("b-ops", "operator", "sb", 2), tok("a_admin", "admin", "sa", 1), tok("Z.audit", "auditor", "sz", 3)
	a.Created = a.Created.Add(1500) // nanoseconds: stored to the microsecond
	for _, x := range []store.Token{b, a, z} {
		mustOK(t, "PutToken "+x.Name, s.PutToken(ctx, x))
	}
	a.Created = a.Created.Truncate(1000)
	checkTokens(t, s, z, a, b)
	got, err := s.TokenByHash(ctx, sha256.Sum256([]byte("sb")))
	if err != nil || !tokenEq(got, b) {
		t.Fatalf("TokenByHash(sb) = %+v, %v; want %+v", got, err, b)
	}
	mustOK(t, "DeleteToken", s.DeleteToken(ctx, "b-ops"))
	mustErr(t, "DeleteToken again", s.DeleteToken(ctx, "b-ops"), store.ErrNotFound)
	if _, err := s.TokenByHash(ctx, sha256.Sum256([]byte("sb"))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TokenByHash of a deleted token: %v", err)
	}
	checkTokens(t, s, z, a)
	// A deleted name may be given to a new token.
	b2 := tok("b-ops", "auditor", "sb2", 4)
	mustOK(t, "PutToken after delete", s.PutToken(ctx, b2))
	checkTokens(t, s, z, a, b2)
}

func testTokenUnique(t *testing.T, st store.Store) {
	s := st.(store.Tokens)
	mustOK(t, "put", s.PutToken(ctx, tok("one", "admin", "s1", 1)))
	mustErr(t, "same name", s.PutToken(ctx, tok("one", "auditor", "s2", 2)), store.ErrExists)
	mustErr(t, "same hash", s.PutToken(ctx, tok("two", "auditor", "s1", 2)), store.ErrExists)
	checkTokens(t, s, tok("one", "admin", "s1", 1))
}

func testTokenInvalid(t *testing.T, st store.Store) {
	s := st.(store.Tokens)
	good := tok("ok", "admin", "s", 1)
	for name, mod := range map[string]func(*store.Token){
		"empty name":   func(x *store.Token) { x.Name = "" },
		"long name":    func(x *store.Token) { x.Name = string(make([]byte, store.MaxTokenNameLen+1)) },
		"space":        func(x *store.Token) { x.Name = "a b" },
		"slash":        func(x *store.Token) { x.Name = "a/b" },
		"no role":      func(x *store.Token) { x.Role = "" },
		"no hash":      func(x *store.Token) { x.Hash = [32]byte{} },
		"no time":      func(x *store.Token) { x.Created = time.Time{} },
		"non-ASCII":    func(x *store.Token) { x.Name = "é" },
		"control char": func(x *store.Token) { x.Name = "a\x00" },
	} {
		x := good
		mod(&x)
		mustErr(t, name, s.PutToken(ctx, x), store.ErrInvalid)
	}
	checkTokens(t, s)
}

func testTokenTouch(t *testing.T, st store.Store) {
	s := st.(store.Tokens)
	x := tok("ops", "operator", "s", 1)
	mustOK(t, "put", s.PutToken(ctx, x))
	mustOK(t, "touch", s.TouchToken(ctx, "ops", at(10)))
	x.LastUsed = at(10)
	checkTokens(t, s, x)
	// Never backwards.
	mustOK(t, "touch earlier", s.TouchToken(ctx, "ops", at(5)))
	checkTokens(t, s, x)
	// A token revoked meanwhile is not an error.
	mustOK(t, "touch unknown", s.TouchToken(ctx, "gone", at(20)))
	got, err := s.TokenByHash(ctx, x.Hash)
	if err != nil || !tokenEq(got, x) {
		t.Fatalf("TokenByHash after touch = %+v, %v", got, err)
	}
}

// testTokenConcurrent: of concurrent creations under one name, exactly
// one succeeds (replicas sharing a database create tokens too).
func testTokenConcurrent(t *testing.T, st store.Store) {
	s := st.(store.Tokens)
	const n = 8
	var (
		wg   sync.WaitGroup
		errs [n]error
	)
	for i := range n {
		wg.Go(func() { errs[i] = s.PutToken(ctx, tok("same", "admin", string(rune('a'+i)), 1)) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrExists):
			t.Fatalf("concurrent PutToken: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent PutToken succeeded, want 1", ok, n)
	}
}
