package bolt

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tagauth/tagauth/internal/store"
)

// Admin tokens live in the "tokens" bucket, keyed by name. The bucket is
// made by the first token created, so a store written before tokens
// existed opens unchanged (and stays readable by older binaries). A
// lookup by hash reads every token: a gateway has a handful, and the
// admin API is not a hot path.

var bucketTokens = []byte("tokens")

var _ store.Tokens = (*Store)(nil)

type tokenRec struct {
	Role     string    `json:"role"`
	Hash     string    `json:"hash"` // hex SHA-256 of the token
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

func (s *Store) tokenOf(name, v []byte) (store.Token, error) {
	var r tokenRec
	if err := s.decode("token", name, v, &r); err != nil {
		return store.Token{}, err
	}
	t := store.Token{Name: string(name), Role: r.Role, Created: r.Created, LastUsed: r.LastUsed}
	if n, err := hex.Decode(t.Hash[:], []byte(r.Hash)); err != nil || n != len(t.Hash) {
		return store.Token{}, corrupt(s.path, fmt.Errorf("token %q: bad hash", name))
	}
	return t, nil
}

// PutToken implements store.Tokens.
func (s *Store) PutToken(ctx context.Context, t store.Token) error {
	if err := store.CheckToken(&t); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketTokens)
		if err != nil {
			return err
		}
		if b.Get([]byte(t.Name)) != nil {
			return fmt.Errorf("%w: token %q", store.ErrExists, t.Name)
		}
		err = b.ForEach(func(k, v []byte) error {
			o, err := s.tokenOf(k, v)
			if err == nil && subtle.ConstantTimeCompare(o.Hash[:], t.Hash[:]) == 1 {
				err = fmt.Errorf("%w: a token with that hash", store.ErrExists)
			}
			return err
		})
		if err != nil {
			return err
		}
		return put(b, []byte(t.Name), tokenRec{Role: t.Role, Hash: hex.EncodeToString(t.Hash[:]),
			Created: norm(t.Created), LastUsed: norm(t.LastUsed)})
	})
}

// TokenByHash implements store.Tokens.
func (s *Store) TokenByHash(ctx context.Context, h [32]byte) (store.Token, error) {
	var found store.Token
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b == nil {
			return store.ErrNotFound
		}
		err := b.ForEach(func(k, v []byte) error {
			t, err := s.tokenOf(k, v)
			if err == nil && subtle.ConstantTimeCompare(t.Hash[:], h[:]) == 1 {
				found = t
			}
			return err
		})
		if err == nil && found.Name == "" {
			err = store.ErrNotFound
		}
		return err
	})
	return found, err
}

// ListTokens implements store.Tokens. bbolt keeps keys sorted bytewise.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	var out []store.Token
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			t, err := s.tokenOf(k, v)
			out = append(out, t)
			return err
		})
	})
	return out, err
}

// DeleteToken implements store.Tokens.
func (s *Store) DeleteToken(ctx context.Context, name string) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b == nil || b.Get([]byte(name)) == nil {
			return fmt.Errorf("%w: token %q", store.ErrNotFound, name)
		}
		return b.Delete([]byte(name))
	})
}

// TouchToken implements store.Tokens.
func (s *Store) TouchToken(ctx context.Context, name string, at time.Time) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(name))
		if v == nil {
			return nil
		}
		var r tokenRec
		if err := s.decode("token", []byte(name), v, &r); err != nil {
			return err
		}
		if !norm(at).After(r.LastUsed) {
			return nil
		}
		r.LastUsed = norm(at)
		return put(b, []byte(name), r)
	})
}
