package postgres

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// The change feed's types are the store package's; these names keep the
// package's own spelling working.
type (
	// ChangeKind is store.ChangeKind.
	ChangeKind = store.ChangeKind
	// Change is store.Change.
	Change = store.Change
	// State is store.State.
	State = store.State
	// KeyVersion is store.KeyVersion.
	KeyVersion = store.KeyVersion
)

// Kinds of Change (store's).
const (
	ChangeReset  = store.ChangeReset
	ChangeUser   = store.ChangeUser
	ChangeDevice = store.ChangeDevice
	ChangeGrant  = store.ChangeGrant
	ChangeKey    = store.ChangeKey
)

// parseChange reads a trigger's payload; anything unexpected is a reset.
func parseChange(payload string) Change {
	var p struct {
		K  string `json:"k"`
		ID string `json:"id"`
		U  string `json:"u"`
		G  string `json:"g"`
		V  int    `json:"v"`
	}
	if json.Unmarshal([]byte(payload), &p) != nil {
		return Change{Kind: ChangeReset}
	}
	switch p.K {
	case "user":
		return Change{Kind: ChangeUser, ID: p.ID}
	case "device":
		return Change{Kind: ChangeDevice, ID: p.ID}
	case "grant":
		return Change{Kind: ChangeGrant, ID: p.U, Group: p.G}
	case "key":
		if p.V >= 1 && p.V <= 255 {
			return Change{Kind: ChangeKey, Version: uint8(p.V)}
		}
	}
	return Change{Kind: ChangeReset}
}

// Feed is a dedicated connection LISTENing on the store's channel. It is
// used by one goroutine at a time.
type Feed struct {
	s    *Store
	conn *pgx.Conn
}

// ErrFeedTimeout is store.ErrFeedTimeout.
var ErrFeedTimeout = store.ErrFeedTimeout

// Listen opens a connection of its own and LISTENs on the store's channel.
// Changes committed after Listen returns are delivered by Next, in commit
// order; read the state they lead to with Current (or Snapshot).
func (s *Store) Listen(ctx context.Context) (store.Feed, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	conn, err := pgx.ConnectConfig(ctx, s.cfg.ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("postgres: listening for changes: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("postgres: LISTEN %s: %w", s.channel, err)
	}
	f := &Feed{s: s, conn: conn}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		conn.Close(context.Background())
		return nil, errClosed
	}
	s.feeds[f] = struct{}{}
	return f, nil
}

// Next waits for the next change. When ctx ends first and the connection
// is still up it returns ErrFeedTimeout; any other error means the
// connection is gone (close the Feed and Listen again).
func (f *Feed) Next(ctx context.Context) (Change, error) {
	n, err := f.conn.WaitForNotification(ctx)
	if err != nil {
		if ctx.Err() != nil && !f.conn.IsClosed() {
			return Change{}, ErrFeedTimeout
		}
		return Change{}, fmt.Errorf("postgres: change notifications: %w", err)
	}
	return parseChange(n.Payload), nil
}

// Ping checks the connection with a round trip.
func (f *Feed) Ping(ctx context.Context) error {
	if err := f.conn.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: change notifications: %w", err)
	}
	return nil
}

// Close closes the connection.
func (f *Feed) Close() {
	f.s.mu.Lock()
	delete(f.s.feeds, f)
	f.s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	f.conn.Close(ctx)
}

// Current reads, in one consistent transaction, the state of every entity
// the changes name. A ChangeReset is not handled here: call Snapshot.
func (s *Store) Current(ctx context.Context, changes []Change) (State, error) {
	var (
		users, devices []string
		grantU, grantG []string
		keys           bool
		seen           = map[Change]bool{}
	)
	for _, c := range changes {
		if seen[c] {
			continue
		}
		seen[c] = true
		switch c.Kind {
		case ChangeUser:
			users = append(users, c.ID)
		case ChangeDevice:
			devices = append(devices, c.ID)
		case ChangeGrant:
			grantU, grantG = append(grantU, c.ID), append(grantG, c.Group)
		case ChangeKey:
			keys = true
		}
	}
	var st State
	err := s.readTx(ctx, func(tx pgx.Tx) error {
		var err error
		if len(users) > 0 {
			if st.Users, err = queryUsers(ctx, tx, "WHERE id = ANY($1)", users); err != nil {
				return err
			}
			st.GoneUsers = missing(users, st.Users, func(u store.User) string { return u.ID })
		}
		if len(devices) > 0 {
			if st.Devices, err = queryDevices(ctx, tx, "WHERE id = ANY($1)", devices); err != nil {
				return err
			}
			st.GoneDevices = missing(devices, st.Devices, func(d store.Device) string { return d.ID })
		}
		if len(grantU) > 0 {
			if st.Grants, err = queryGrants(ctx, tx, "WHERE (user_id, grp) IN (SELECT * FROM unnest($1::text[], $2::text[]))", grantU, grantG); err != nil {
				return err
			}
			have := map[store.Grant]bool{}
			for _, g := range st.Grants {
				have[g] = true
			}
			for i := range grantU {
				if g := (store.Grant{User: grantU[i], Group: grantG[i]}); !have[g] {
					st.GoneGrants = append(st.GoneGrants, g)
				}
			}
		}
		if keys {
			st.Keys, err = queryKeys(ctx, tx)
		}
		return err
	})
	return st, err
}

func missing[T any](ids []string, found []T, id func(T) string) []string {
	have := make(map[string]bool, len(found))
	for _, f := range found {
		have[id(f)] = true
	}
	var out []string
	for _, i := range ids {
		if !have[i] {
			out = append(out, i)
		}
	}
	return out
}

// KeyFingerprint is store.KeyFingerprint.
func KeyFingerprint(mk protocol.MasterKey) [32]byte { return store.KeyFingerprint(mk) }

// KeyVersions lists every key version recorded, oldest first.
func (s *Store) KeyVersions(ctx context.Context) ([]KeyVersion, error) {
	var ks []KeyVersion
	err := s.readTx(ctx, func(tx pgx.Tx) error {
		var err error
		ks, err = queryKeys(ctx, tx)
		return err
	})
	return ks, err
}

func queryKeys(ctx context.Context, tx pgx.Tx) ([]KeyVersion, error) {
	rows, err := tx.Query(ctx, "SELECT version, fingerprint, created, retired_at FROM key_versions ORDER BY version")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (KeyVersion, error) {
		var (
			k  KeyVersion
			v  int16
			fp []byte
			ra *time.Time
		)
		if err := row.Scan(&v, &fp, &k.Created, &ra); err != nil {
			return k, err
		}
		if len(fp) != len(k.Fingerprint) || v < 1 || v > 255 {
			return k, fmt.Errorf("key_versions row %d is damaged", v)
		}
		k.Version = uint8(v)
		copy(k.Fingerprint[:], fp)
		k.Retired, k.RetiredAt = revokedAt(ra)
		return k, nil
	})
}

// ErrKeyConflict is store.ErrKeyConflict.
var ErrKeyConflict = store.ErrKeyConflict

// PublishKeys records the versions of a replica's key file: live versions
// not yet recorded are added, and versions in retire are marked retired
// (the first retirement time is kept), in one transaction. If a live
// version is recorded with another fingerprint, nothing is changed: the
// key file is not the others', and none of it is trusted. The error is
// then ErrKeyConflict, naming the versions. The result is every version
// recorded after the call.
func (s *Store) PublishKeys(ctx context.Context, live []KeyVersion, retire []uint8, at time.Time) ([]KeyVersion, error) {
	var (
		all       []KeyVersion
		conflicts []uint8
		errAbort  = errors.New("abort")
	)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := advisoryLock(ctx, tx, lockKeys, lockKey(s.schema)); err != nil {
			return err
		}
		var err error
		if all, err = queryKeys(ctx, tx); err != nil {
			return err
		}
		rec := map[uint8][32]byte{}
		for _, k := range all {
			rec[k.Version] = k.Fingerprint
		}
		conflicts = conflicts[:0]
		for _, k := range live {
			if fp, ok := rec[k.Version]; ok && !hmac.Equal(fp[:], k.Fingerprint[:]) {
				conflicts = append(conflicts, k.Version)
			}
		}
		if len(conflicts) > 0 {
			return errAbort
		}
		for _, k := range live {
			_, err := tx.Exec(ctx, "INSERT INTO key_versions (version, fingerprint, created) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
				int16(k.Version), k.Fingerprint[:], norm(k.Created))
			if err != nil {
				return err
			}
		}
		for _, v := range retire {
			_, err := tx.Exec(ctx, "UPDATE key_versions SET retired_at = $2 WHERE version = $1 AND retired_at IS NULL", int16(v), norm(at))
			if err != nil {
				return err
			}
		}
		all, err = queryKeys(ctx, tx)
		return err
	})
	if errors.Is(err, errAbort) {
		return all, fmt.Errorf("%w: versions %v", ErrKeyConflict, conflicts)
	}
	if err != nil {
		return nil, err
	}
	return all, nil
}

// Shared implements store.Store: replicas share the database.
func (s *Store) Shared() bool { return true }
