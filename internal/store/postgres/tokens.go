package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tagauth/tagauth/internal/store"
)

// Admin tokens live in the admin_tokens table (migration 5), shared by
// every replica of the schema: a token created on one is accepted by all,
// and one revoked is refused by all from their next request.

var _ store.Tokens = (*Store)(nil)

// PutToken implements store.Tokens.
func (s *Store) PutToken(ctx context.Context, t store.Token) error {
	if err := store.CheckToken(&t); err != nil {
		return err
	}
	if s.isClosed() {
		return errClosed
	}
	var lastUsed *time.Time
	if !t.LastUsed.IsZero() {
		lu := norm(t.LastUsed)
		lastUsed = &lu
	}
	_, err := s.pool.Exec(ctx, "INSERT INTO admin_tokens (name, role, hash, created, last_used) VALUES ($1, $2, $3, $4, $5)",
		t.Name, t.Role, t.Hash[:], norm(t.Created), lastUsed)
	if isUnique(err) {
		return fmt.Errorf("%w: token %q (or one with its hash)", store.ErrExists, t.Name)
	}
	return s.mapErr(err)
}

const tokenColumns = "name, role, hash, created, last_used"

func scanToken(row pgx.Row) (store.Token, error) {
	var (
		t        store.Token
		hash     []byte
		lastUsed *time.Time
	)
	if err := row.Scan(&t.Name, &t.Role, &hash, &t.Created, &lastUsed); err != nil {
		return t, err
	}
	if len(hash) != len(t.Hash) {
		return t, fmt.Errorf("postgres: token %q: hash of %d bytes", t.Name, len(hash))
	}
	copy(t.Hash[:], hash)
	if lastUsed != nil {
		t.LastUsed = *lastUsed
	}
	return t, nil
}

// TokenByHash implements store.Tokens.
func (s *Store) TokenByHash(ctx context.Context, h [32]byte) (store.Token, error) {
	if s.isClosed() {
		return store.Token{}, errClosed
	}
	t, err := scanToken(s.pool.QueryRow(ctx, "SELECT "+tokenColumns+" FROM admin_tokens WHERE hash = $1", h[:]))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Token{}, store.ErrNotFound
	}
	return t, s.mapErr(err)
}

// ListTokens implements store.Tokens; names sort bytewise (COLLATE "C").
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	rows, err := s.pool.Query(ctx, "SELECT "+tokenColumns+` FROM admin_tokens ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	var out []store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, t)
	}
	return out, s.mapErr(rows.Err())
}

// DeleteToken implements store.Tokens.
func (s *Store) DeleteToken(ctx context.Context, name string) error {
	if s.isClosed() {
		return errClosed
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM admin_tokens WHERE name = $1", clean(name))
	if err != nil {
		return s.mapErr(err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: token %q", store.ErrNotFound, name)
	}
	return nil
}

// TouchToken implements store.Tokens.
func (s *Store) TouchToken(ctx context.Context, name string, at time.Time) error {
	if s.isClosed() {
		return errClosed
	}
	_, err := s.pool.Exec(ctx, "UPDATE admin_tokens SET last_used = $2 WHERE name = $1 AND (last_used IS NULL OR last_used < $2)", clean(name), norm(at))
	return s.mapErr(err)
}
