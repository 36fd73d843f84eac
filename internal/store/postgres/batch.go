package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

var _ store.DeviceBatcher = (*Store)(nil)

// lockBatch is the advisory lock class of the batch gate: every create
// holds it shared, a batch exclusively.
const lockBatch int32 = 0x74610005

// identityLock is what a single create holds while it checks and
// inserts an id: the id's advisory lock, and the batch gate shared, in
// one round trip.
func (s *Store) identityLock(ctx context.Context, tx pgx.Tx, id string) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1::int4, $2::int4), pg_advisory_xact_lock($3::int4, $4::int4)",
		lockBatch, lockKey(s.schema), lockIdentity, lockKey(s.schema, id))
	return err
}

// CreateDevices implements store.DeviceBatcher in one transaction. It
// takes the batch gate exclusively instead of CreateDevice's advisory
// lock per id (ten thousand of them would overflow the server's lock
// table): a create on any replica waits for the batch, a batch waits for
// the creates in flight, so a check of the batch and its insert are one
// step against every writer of identities, and readers (logins, feeds)
// do not wait. The triggers notify every replica of every device, as
// for CreateDevice.
func (s *Store) CreateDevices(ctx context.Context, ds []store.Device, p protocol.Profile) error {
	if err := store.CheckProfile(p); err != nil {
		return err
	}
	if err := store.CheckDevices(ds); err != nil {
		return err
	}
	if len(ds) == 0 {
		return nil
	}
	ids := make([]string, len(ds))
	for i := range ds {
		ids[i] = ds[i].ID
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := advisoryLock(ctx, tx, lockBatch, lockKey(s.schema)); err != nil {
			return err
		}
		devices, err := present(ctx, tx, "devices", ids)
		if err != nil {
			return err
		}
		users := map[string]bool{}
		if p == protocol.Classic {
			if users, err = present(ctx, tx, "users", ids); err != nil {
				return err
			}
		}
		// The first device refused in the batch's order, so that the
		// caller names the same row whichever backend it runs on.
		for i, id := range ids {
			switch {
			case devices[id]:
				return &store.RowError{Index: i, ID: id, Err: fmt.Errorf("%w: device %q", store.ErrExists, id)}
			case users[id]:
				return &store.RowError{Index: i, ID: id, Err: fmt.Errorf("%w: device %q is taken by a user", store.ErrNamespace, id)}
			}
		}
		return copyRows(ctx, tx, "devices", []string{"id", "kv", "grp", "created"}, len(ds), func(i int) []any {
			d := &ds[i]
			return []any{d.ID, int16(d.KV), d.Group, norm(d.Created)}
		})
	})
	if isUnique(err) {
		// The gate makes this unreachable for writers that take it; the
		// constraint is the last word all the same.
		return fmt.Errorf("%w: a device of the batch (%v)", store.ErrExists, err)
	}
	return err
}

// present is the set of ids found in table.
func present(ctx context.Context, tx pgx.Tx, table string, ids []string) (map[string]bool, error) {
	rows, err := tx.Query(ctx, "SELECT id FROM "+table+" WHERE id = ANY($1)", ids)
	if err != nil {
		return nil, err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(found))
	for _, id := range found {
		m[id] = true
	}
	return m, nil
}
