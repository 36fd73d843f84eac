package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Dump and load (store/dump.go): the registry, key versions and audit of
// one schema, read in one REPEATABLE READ transaction, written in one
// transaction with COPY.

var (
	_ store.Dumper = (*Store)(nil)
	_ store.Loader = (*Store)(nil)
)

// Dump implements store.Dumper. Every table is read in one read-only
// REPEATABLE READ transaction, so replicas may go on writing while it
// runs and the dump is the state at its start.
func (s *Store) Dump(ctx context.Context, audit bool, sink store.DumpSink) error {
	return s.readTx(ctx, func(tx pgx.Tx) error {
		users, err := queryUsers(ctx, tx, "")
		if err != nil {
			return err
		}
		for _, u := range users {
			if err := sink.User(u); err != nil {
				return err
			}
		}
		devices, err := queryDevices(ctx, tx, "")
		if err != nil {
			return err
		}
		for _, d := range devices {
			if err := sink.Device(d); err != nil {
				return err
			}
		}
		grants, err := queryGrants(ctx, tx, "")
		if err != nil {
			return err
		}
		for _, g := range grants {
			if err := sink.Grant(g); err != nil {
				return err
			}
		}
		keys, err := queryKeys(ctx, tx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := sink.Key(store.KeyRecord(k)); err != nil {
				return err
			}
		}
		if !audit {
			return nil
		}
		return dumpAudit(ctx, tx, sink)
	})
}

// dumpAudit streams the audit table: rows are handed on as they arrive,
// never collected.
func dumpAudit(ctx context.Context, tx pgx.Tx, sink store.DumpSink) error {
	rows, err := tx.Query(ctx, "SELECT seq, at, kind, outcome, reason, user_id, device, source, kv_user, kv_device, latency_us, detail, count FROM audit ORDER BY seq")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r      store.AuditRecord
			seq    int64
			kv, kd int16
			count  int64
		)
		if err := rows.Scan(&seq, &r.Time, &r.Kind, &r.Outcome, &r.Reason, &r.User, &r.Device, &r.Source, &kv, &kd, &r.LatencyUS, &r.Detail, &count); err != nil {
			return err
		}
		r.KVUser, r.KVDevice = uint8(kv), uint8(kd)
		if count > 1 {
			r.Count = uint32(count)
		}
		if err := sink.Audit(uint64(seq), r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// loadTables are the tables a load requires empty, locked against every
// other writer until it commits.
const loadTables = "users, devices, grants, key_versions, enrol_codes, audit"

// Load implements store.Loader in one transaction. The tables are locked
// in SHARE ROW EXCLUSIVE mode first, so a replica writing at the same
// time waits, and then sees the loaded rows or none.
func (s *Store) Load(ctx context.Context, set *store.LoadSet) error {
	if err := store.CheckProfile(set.Profile); err != nil {
		return err
	}
	for i := range set.Users {
		if err := store.CheckLoadedUser(&set.Users[i]); err != nil {
			return err
		}
	}
	for i := range set.Devices {
		if err := store.CheckLoadedDevice(&set.Devices[i]); err != nil {
			return err
		}
	}
	for i := range set.Grants {
		if err := store.CheckGrant(&set.Grants[i]); err != nil {
			return err
		}
	}
	for i := range set.Keys {
		if err := store.CheckKeyRecord(&set.Keys[i]); err != nil {
			return err
		}
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE "+loadTables+" IN SHARE ROW EXCLUSIVE MODE"); err != nil {
			return err
		}
		var used bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM devices) OR EXISTS (SELECT 1 FROM grants)
	OR EXISTS (SELECT 1 FROM key_versions) OR EXISTS (SELECT 1 FROM enrol_codes) OR EXISTS (SELECT 1 FROM audit)`).Scan(&used)
		if err != nil {
			return err
		}
		if used {
			return fmt.Errorf("%w: schema %q holds identities, grants, key versions, codes or audit records: load only into a new schema", store.ErrNotEmpty, s.schema)
		}
		if err := copyRows(ctx, tx, "users", []string{"id", "kv", "created", "revoked_at"}, len(set.Users), func(i int) []any {
			u := &set.Users[i]
			return []any{u.ID, int16(u.KV), norm(u.Created), revokedCol(u.Revoked, u.RevokedAt)}
		}); err != nil {
			return err
		}
		if err := copyRows(ctx, tx, "devices", []string{"id", "kv", "grp", "created", "revoked_at"}, len(set.Devices), func(i int) []any {
			d := &set.Devices[i]
			return []any{d.ID, int16(d.KV), d.Group, norm(d.Created), revokedCol(d.Revoked, d.RevokedAt)}
		}); err != nil {
			return err
		}
		if err := copyRows(ctx, tx, "grants", []string{"user_id", "grp"}, len(set.Grants), func(i int) []any {
			return []any{set.Grants[i].User, set.Grants[i].Group}
		}); err != nil {
			return err
		}
		if err := copyRows(ctx, tx, "key_versions", []string{"version", "fingerprint", "created", "retired_at"}, len(set.Keys), func(i int) []any {
			k := &set.Keys[i]
			return []any{int16(k.Version), k.Fingerprint[:], norm(k.Created), revokedCol(k.Retired, k.RetiredAt)}
		}); err != nil {
			return err
		}
		if set.Profile == protocol.Classic {
			var clash string
			err := tx.QueryRow(ctx, "SELECT id FROM users JOIN devices USING (id) LIMIT 1").Scan(&clash)
			switch {
			case err == nil:
				return fmt.Errorf("%w: %q is both a user and a device", store.ErrNamespace, clash)
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
		}
		if set.NextAudit == nil {
			return nil
		}
		// COPY reports a source's error as its own text: keep the
		// error itself, which callers test (a damaged dump's line).
		var srcErr error
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"audit"}, auditColumns, pgx.CopyFromFunc(func() ([]any, error) {
			r, err := set.NextAudit()
			if errors.Is(err, io.EOF) {
				return nil, nil
			}
			if err != nil {
				srcErr = err
				return nil, err
			}
			return []any{norm(r.Time), clean(r.Kind), clean(r.Outcome), clean(r.Reason), clean(r.User), clean(r.Device),
				clean(r.Source), int16(r.KVUser), int16(r.KVDevice), r.LatencyUS, clean(r.Detail), int64(r.Events())}, nil
		}))
		if srcErr != nil {
			return srcErr
		}
		return err
	})
	if isUnique(err) {
		return fmt.Errorf("%w: the dump names an identity, grant or key version twice (%v)", store.ErrExists, err)
	}
	return err
}

// copyRows COPYs n rows, made by row, into table.
func copyRows(ctx context.Context, tx pgx.Tx, table string, cols []string, n int, row func(int) []any) error {
	if n == 0 {
		return nil
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromSlice(n, func(i int) ([]any, error) { return row(i), nil }))
	return err
}

// revokedCol is the nullable revocation (or retirement) time stored.
func revokedCol(revoked bool, at time.Time) *time.Time {
	if !revoked {
		return nil
	}
	t := norm(at)
	return &t
}
