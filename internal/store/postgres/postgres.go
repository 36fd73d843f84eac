// Package postgres is the store.Store that gateway replicas share: one
// PostgreSQL database (or one schema in it), reached with pgx and a
// connection pool.
//
// # Schema and migrations
//
// Open brings the schema up to date before it returns: the migrations in
// migrate.go are numbered, each runs in its own transaction together with
// the row that records it in schema_migrations, and every transaction first
// takes a transaction-scoped advisory lock, so that replicas starting at
// the same moment apply each migration exactly once and never see a half
// made schema. A database whose schema is newer than this binary knows is
// refused (upgrade tagauth first).
//
// Tables live in the schema named by Options.Schema (or the URL's
// "schema" parameter), created if needed; without one, in the first schema
// of the connection's search_path (normally public):
//
//	users           id, kv, created, revoked_at (NULL while active)
//	devices         id, kv, grp ('' for none), created, revoked_at
//	grants          (user_id, grp)
//	enrol_codes     SHA-256 of the code, user_id, expires
//	audit           seq (identity), at, kind, outcome, reason, user_id, device,
//	                source, kv_user, kv_device, latency_us, detail
//	key_versions    version, fingerprint (HMAC of a fixed label under the key,
//	                never the key), created, retired_at
//
// # Change notification
//
// Triggers on users, devices, grants and key_versions send a NOTIFY on the
// channel "tagauth:SCHEMA" inside the writing transaction, so a change is
// announced exactly when it commits, whoever made it (a replica, or an
// operator with psql). A gateway replica LISTENs with Listen and re-reads
// the entities named in the notifications with Current.
//
// # Rules kept across replicas
//
// Uniqueness of identities and the classic namespace rule are checked under
// a transaction-scoped advisory lock on the identity, so two replicas
// creating "x" as a user and as a device at once cannot both succeed.
// Audit appends take an advisory lock for the schema's log, so sequence
// numbers are committed in increasing order and a reader paging with
// AuditFilter.After never skips a record that commits later with a smaller
// number. Taking an enrolment code is one DELETE ... RETURNING: of any
// number of concurrent takes, on any replicas, one gets the row.
//
// Audit text fields are stored as valid UTF-8 without NUL bytes (PostgreSQL
// text cannot hold them): invalid sequences and NULs become U+FFFD, as
// JSON encoding does for the bbolt store.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Options configures Open. The zero value is usable.
type Options struct {
	// Schema is the schema holding the tables, created if absent. Empty:
	// the URL's "schema" parameter, or else the connection's search_path.
	Schema string
	// MaxConns bounds the pool; zero means pgxpool's default (the larger of
	// 4 and the number of CPUs).
	MaxConns int32
	// Logger receives migration and connection messages; default discards.
	Logger *slog.Logger
}

// MaxSchemaLen is the longest schema name accepted: the notification
// channel "tagauth:SCHEMA" must fit PostgreSQL's 63-byte identifiers.
const MaxSchemaLen = 63 - len(channelPrefix)

const channelPrefix = "tagauth:"

// Advisory lock classes (the first key of the two-key form), so that the
// locks of this package never meet an application's own.
const (
	lockMigrate   int32 = 0x74610001
	lockIdentity  int32 = 0x74610002
	lockAudit     int32 = 0x74610003
	lockKeys      int32 = 0x74610004
	openTimeout         = 30 * time.Second
	applicationID       = "tagauth-gateway"
)

// Store is a store.Store in PostgreSQL. It is safe for concurrent use, also
// by several processes sharing the database.
type Store struct {
	pool    *pgxpool.Pool
	cfg     *pgxpool.Config
	schema  string
	channel string
	log     *slog.Logger

	mu     sync.Mutex
	closed bool
	feeds  map[*Feed]struct{}
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://user@host:port/db?...),
// applies the migrations and returns the store. The URL may carry
// "schema=NAME"; any other parameter goes to pgx (sslmode, connect_timeout,
// pool_max_conns...).
func Open(ctx context.Context, rawURL string, opt Options) (*Store, error) {
	u, schema, err := splitSchema(rawURL)
	if err != nil {
		return nil, err
	}
	if opt.Schema != "" {
		schema = opt.Schema
	}
	if len(schema) > MaxSchemaLen || strings.IndexByte(schema, 0) >= 0 || !utf8.ValidString(schema) {
		return nil, fmt.Errorf("postgres: schema name %q: at most %d bytes of UTF-8 without NUL", schema, MaxSchemaLen)
	}
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", redact(u), err)
	}
	if opt.MaxConns > 0 {
		cfg.MaxConns = opt.MaxConns
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = applicationID
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %s: %w", redact(u), err)
	}
	s := &Store{pool: pool, cfg: cfg, log: log, feeds: map[*Feed]struct{}{}}
	if err := s.migrate(ctx, schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %s: %w", redact(u), err)
	}
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&s.schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %s: reading the schema: %w", redact(u), s.mapErr(err))
	}
	s.channel = channelPrefix + s.schema
	return s, nil
}

// splitSchema takes the "schema" parameter out of a URL, which pgx would
// otherwise send to the server as a setting.
func splitSchema(raw string) (string, string, error) {
	if !strings.HasPrefix(raw, "postgres://") && !strings.HasPrefix(raw, "postgresql://") {
		return "", "", fmt.Errorf("postgres: %q is not a postgres:// URL", redact(raw))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("postgres: bad URL %s: %w", redact(raw), err)
	}
	q := u.Query()
	schema := q.Get("schema")
	q.Del("schema")
	u.RawQuery = q.Encode()
	return u.String(), schema, nil
}

// redact removes a password from a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the database URL"
	}
	return u.Redacted()
}

// Schema is the schema holding the tables.
func (s *Store) Schema() string { return s.schema }

// Channel is the LISTEN/NOTIFY channel of the schema's changes.
func (s *Store) Channel() string { return s.channel }

// Close closes the pool and every Feed opened by Listen. Closing twice is
// harmless; other methods fail after Close.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	feeds := s.feeds
	s.feeds = nil
	s.mu.Unlock()
	for f := range feeds {
		f.Close()
	}
	s.pool.Close()
	return nil
}

var errClosed = errors.New("postgres: store is closed")

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// SQLSTATE codes that mean something to callers.
const (
	sqlUniqueViolation = "23505"
	sqlDiskFull        = "53100"
)

// mapErr turns database errors into the store's: a full disk is
// store.ErrFull; the rest keep their text.
func (s *Store) mapErr(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == sqlDiskFull {
		return fmt.Errorf("%w (PostgreSQL: %s): nothing was changed; free space on the database server and retry", store.ErrFull, pe.Message)
	}
	if s.isClosed() {
		return fmt.Errorf("%w: %w", errClosed, err)
	}
	return fmt.Errorf("postgres: %w", err)
}

func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == sqlUniqueViolation
}

// tx runs fn in a read-write transaction and commits it.
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if s.isClosed() {
		return errClosed
	}
	err := pgx.BeginFunc(ctx, s.pool, fn)
	if err != nil && !isStoreErr(err) {
		return s.mapErr(err)
	}
	return err
}

// isStoreErr reports an error that fn returned on purpose (ErrExists...),
// which must reach the caller as it is.
func isStoreErr(err error) bool {
	for _, e := range []error{store.ErrExists, store.ErrNotFound, store.ErrNamespace, store.ErrCodeInvalid, store.ErrInvalid, store.ErrFull} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// lockKey hashes the parts into the second key of an advisory lock.
func lockKey(parts ...string) int32 {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int32(h.Sum32())
}

func advisoryLock(ctx context.Context, tx pgx.Tx, class, key int32) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1::int4, $2::int4)", class, key)
	return err
}

// norm is the stored form of a time: UTC, truncated (not rounded) to the
// microsecond, as the store package requires.
func norm(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// revokedAt is a nullable revocation time read back.
func revokedAt(t *time.Time) (bool, time.Time) {
	if t == nil {
		return false, time.Time{}
	}
	return true, *t
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User, p protocol.Profile) error {
	if err := store.CheckProfile(p); err != nil {
		return err
	}
	if err := store.CheckUser(&u); err != nil {
		return err
	}
	return s.create(ctx, "users", "devices", "user", "device", u.ID, p,
		"INSERT INTO users (id, kv, created) VALUES ($1, $2, $3)", u.ID, int16(u.KV), norm(u.Created))
}

// CreateDevice implements store.Store.
func (s *Store) CreateDevice(ctx context.Context, d store.Device, p protocol.Profile) error {
	if err := store.CheckProfile(p); err != nil {
		return err
	}
	if err := store.CheckDevice(&d); err != nil {
		return err
	}
	return s.create(ctx, "devices", "users", "device", "user", d.ID, p,
		"INSERT INTO devices (id, kv, grp, created) VALUES ($1, $2, $3, $4)", d.ID, int16(d.KV), d.Group, norm(d.Created))
}

// create inserts an identity under the uniqueness and classic namespace
// rules. The advisory lock on the id makes the namespace check and the
// insert one step for every session (identityLock, batch.go).
func (s *Store) create(ctx context.Context, own, other, kind, otherKind, id string, p protocol.Profile, insert string, args ...any) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if err := s.identityLock(ctx, tx, id); err != nil {
			return err
		}
		var taken, clash bool
		err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+own+" WHERE id = $1), EXISTS (SELECT 1 FROM "+other+" WHERE id = $1)", id).Scan(&taken, &clash)
		if err != nil {
			return err
		}
		switch {
		case taken:
			return fmt.Errorf("%w: %s %q", store.ErrExists, kind, id)
		case clash && p == protocol.Classic:
			return fmt.Errorf("%w: %s %q is taken by a %s", store.ErrNamespace, kind, id, otherKind)
		}
		if _, err := tx.Exec(ctx, insert, args...); err != nil {
			if isUnique(err) {
				return fmt.Errorf("%w: %s %q", store.ErrExists, kind, id)
			}
			return err
		}
		return nil
	})
}

// RevokeUser implements store.Store.
func (s *Store) RevokeUser(ctx context.Context, id string, at time.Time) error {
	return s.revoke(ctx, "users", "user", id, at)
}

// RevokeDevice implements store.Store.
func (s *Store) RevokeDevice(ctx context.Context, id string, at time.Time) error {
	return s.revoke(ctx, "devices", "device", id, at)
}

// revoke sets revoked_at once: the statement's snapshot sees the row
// whether or not this update changes it, so "exists" tells a revoked
// identity (nothing to do) from an unknown one.
func (s *Store) revoke(ctx context.Context, table, kind, id string, at time.Time) error {
	if s.isClosed() {
		return errClosed
	}
	var exists bool
	err := s.pool.QueryRow(ctx,
		"WITH r AS (UPDATE "+table+" SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING 1) "+
			"SELECT EXISTS (SELECT 1 FROM "+table+" WHERE id = $1)", id, norm(at)).Scan(&exists)
	if err != nil {
		return s.mapErr(err)
	}
	if !exists {
		return fmt.Errorf("%w: %s %q", store.ErrNotFound, kind, id)
	}
	return nil
}

// Grant implements store.Store.
func (s *Store) Grant(ctx context.Context, g store.Grant) error {
	if err := store.CheckGrant(&g); err != nil {
		return err
	}
	if s.isClosed() {
		return errClosed
	}
	_, err := s.pool.Exec(ctx, "INSERT INTO grants (user_id, grp) VALUES ($1, $2) ON CONFLICT DO NOTHING", g.User, g.Group)
	return s.mapErr(err)
}

// Ungrant implements store.Store.
func (s *Store) Ungrant(ctx context.Context, g store.Grant) error {
	if err := store.CheckGrant(&g); err != nil {
		return err
	}
	if s.isClosed() {
		return errClosed
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM grants WHERE user_id = $1 AND grp = $2", g.User, g.Group)
	if err != nil {
		return s.mapErr(err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: grant of group %q to user %q", store.ErrNotFound, g.Group, g.User)
	}
	return nil
}

// PutEnrolCode implements store.Store.
func (s *Store) PutEnrolCode(ctx context.Context, codeHash [32]byte, user string, expires time.Time) error {
	if err := store.CheckID(user); err != nil {
		return err
	}
	if s.isClosed() {
		return errClosed
	}
	_, err := s.pool.Exec(ctx, "INSERT INTO enrol_codes (hash, user_id, expires) VALUES ($1, $2, $3)", codeHash[:], user, norm(expires))
	if isUnique(err) {
		return fmt.Errorf("%w: enrolment code", store.ErrExists)
	}
	return s.mapErr(err)
}

// TakeEnrolCode implements store.Store. The code's row is deleted whether
// it was valid or expired, and codes expired by now are swept: SKIP LOCKED
// leaves rows that concurrent takes hold, so takes never wait on each
// other's sweep.
func (s *Store) TakeEnrolCode(ctx context.Context, codeHash [32]byte, now time.Time) (string, error) {
	var (
		user    string
		expires time.Time
		found   bool
	)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, "DELETE FROM enrol_codes WHERE hash = $1 RETURNING user_id, expires", codeHash[:]).Scan(&user, &expires)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			found = true
		}
		_, err = tx.Exec(ctx, "DELETE FROM enrol_codes WHERE hash IN (SELECT hash FROM enrol_codes WHERE expires <= $1 FOR UPDATE SKIP LOCKED)", norm(now))
		return err
	})
	if err != nil {
		return "", err
	}
	if !found || !now.Before(expires) {
		return "", store.ErrCodeInvalid
	}
	return user, nil
}

// clean makes a string storable in a text column (see the package doc).
func clean(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

var auditColumns = []string{"at", "kind", "outcome", "reason", "user_id", "device", "source", "kv_user", "kv_device", "latency_us", "detail", "count"}

// AppendAudit implements store.Store. The records go in with COPY, inside
// a transaction that holds the schema's audit lock (see the package doc).
func (s *Store) AppendAudit(ctx context.Context, recs ...store.AuditRecord) error {
	return s.appendAudit(ctx, "", 0, recs)
}

// AppendAuditJournaled implements store.AuditJournaled: the mark is a row
// of audit_journal, upserted in the transaction of the records.
func (s *Store) AppendAuditJournaled(ctx context.Context, journal string, upTo uint64, recs ...store.AuditRecord) error {
	if upTo > math.MaxInt64 || journal == "" {
		return fmt.Errorf("%w: journal mark %d of %q", store.ErrInvalid, upTo, journal)
	}
	return s.appendAudit(ctx, journal, upTo, recs)
}

// AuditJournalMark implements store.AuditJournaled.
func (s *Store) AuditJournalMark(ctx context.Context, journal string) (uint64, error) {
	if s.isClosed() {
		return 0, errClosed
	}
	var seq int64
	err := s.pool.QueryRow(ctx, "SELECT seq FROM audit_journal WHERE id = $1", clean(journal)).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.mapErr(err)
	}
	return uint64(seq), nil
}

func (s *Store) appendAudit(ctx context.Context, journal string, upTo uint64, recs []store.AuditRecord) error {
	if len(recs) == 0 && journal == "" {
		if s.isClosed() {
			return errClosed
		}
		return ctx.Err()
	}
	rows := make([][]any, len(recs))
	for i := range recs {
		r := &recs[i]
		rows[i] = []any{norm(r.Time), clean(r.Kind), clean(r.Outcome), clean(r.Reason), clean(r.User), clean(r.Device),
			clean(r.Source), int16(r.KVUser), int16(r.KVDevice), r.LatencyUS, clean(r.Detail), int64(r.Events())}
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		if err := advisoryLock(ctx, tx, lockAudit, lockKey(s.schema)); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit"}, auditColumns, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		if journal == "" {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO audit_journal (id, seq) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET seq = GREATEST(audit_journal.seq, EXCLUDED.seq)`, clean(journal), int64(upTo))
		return err
	})
}

// PruneAudit implements store.AuditPruner: one DELETE of the oldest
// records before the bound (by the audit_at index), at most limit of them,
// so that a long prune is many short transactions instead of one that
// holds locks and bloats the WAL. Autovacuum makes the space reusable for
// new rows; the table file itself shrinks only with VACUUM FULL.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, limit int) (int, error) {
	if s.isClosed() {
		return 0, errClosed
	}
	if before.IsZero() || limit <= 0 {
		return 0, ctx.Err()
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM audit WHERE seq IN (
	SELECT seq FROM audit WHERE at < $1 ORDER BY at, seq LIMIT $2)`, norm(before), limit)
	if err != nil {
		return 0, s.mapErr(err)
	}
	return int(tag.RowsAffected()), nil
}

// QueryAudit implements store.Store. The filter becomes one indexed query.
func (s *Store) QueryAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, []uint64, error) {
	if s.isClosed() {
		return nil, nil, errClosed
	}
	if f.After >= math.MaxInt64 {
		return nil, nil, ctx.Err()
	}
	var (
		where = []string{"seq > $1"}
		args  = []any{int64(f.After)}
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Kind != "" {
		add("kind = $%d", f.Kind)
	}
	if f.User != "" {
		add("user_id = $%d", f.User)
	}
	if f.Device != "" {
		add("device = $%d", f.Device)
	}
	if f.Outcome != "" {
		add("outcome = $%d", f.Outcome)
	}
	if !f.Since.IsZero() {
		add("at >= $%d", norm(f.Since))
	}
	if !f.Until.IsZero() {
		add("at < $%d", norm(f.Until))
	}
	args = append(args, f.PageSize())
	q := "SELECT seq, at, kind, outcome, reason, user_id, device, source, kv_user, kv_device, latency_us, detail, count FROM audit WHERE " +
		strings.Join(where, " AND ") + fmt.Sprintf(" ORDER BY seq LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, s.mapErr(err)
	}
	defer rows.Close()
	var (
		recs []store.AuditRecord
		seqs []uint64
	)
	for rows.Next() {
		var (
			r      store.AuditRecord
			seq    int64
			kv, kd int16
			count  int64
		)
		if err := rows.Scan(&seq, &r.Time, &r.Kind, &r.Outcome, &r.Reason, &r.User, &r.Device, &r.Source, &kv, &kd, &r.LatencyUS, &r.Detail, &count); err != nil {
			return nil, nil, s.mapErr(err)
		}
		r.KVUser, r.KVDevice = uint8(kv), uint8(kd)
		if count > 1 {
			r.Count = uint32(count)
		}
		recs = append(recs, r)
		seqs = append(seqs, uint64(seq))
	}
	if err := rows.Err(); err != nil {
		return nil, nil, s.mapErr(err)
	}
	return recs, seqs, nil
}

// readTx runs fn in a read-only REPEATABLE READ transaction: one
// consistent view of several tables.
func (s *Store) readTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if s.isClosed() {
		return errClosed
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
	return s.mapErr(err)
}

// Snapshot implements store.Store, in one consistent transaction. Ids sort
// with COLLATE "C": bytewise, as the store package requires, whatever the
// database's collation.
func (s *Store) Snapshot(ctx context.Context) (store.Snapshot, error) {
	var sn store.Snapshot
	err := s.readTx(ctx, func(tx pgx.Tx) error {
		var err error
		if sn.Users, err = queryUsers(ctx, tx, ""); err != nil {
			return err
		}
		if sn.Devices, err = queryDevices(ctx, tx, ""); err != nil {
			return err
		}
		sn.Grants, err = queryGrants(ctx, tx, "")
		return err
	})
	if err != nil {
		return store.Snapshot{}, err
	}
	return sn, nil
}

func queryUsers(ctx context.Context, q pgx.Tx, where string, args ...any) ([]store.User, error) {
	rows, err := q.Query(ctx, `SELECT id, kv, created, revoked_at FROM users `+where+` ORDER BY id COLLATE "C"`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.User, error) {
		var (
			u  store.User
			kv int16
			ra *time.Time
		)
		err := row.Scan(&u.ID, &kv, &u.Created, &ra)
		u.KV = uint8(kv)
		u.Revoked, u.RevokedAt = revokedAt(ra)
		return u, err
	})
}

func queryDevices(ctx context.Context, q pgx.Tx, where string, args ...any) ([]store.Device, error) {
	rows, err := q.Query(ctx, `SELECT id, kv, grp, created, revoked_at FROM devices `+where+` ORDER BY id COLLATE "C"`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Device, error) {
		var (
			d  store.Device
			kv int16
			ra *time.Time
		)
		err := row.Scan(&d.ID, &kv, &d.Group, &d.Created, &ra)
		d.KV = uint8(kv)
		d.Revoked, d.RevokedAt = revokedAt(ra)
		return d, err
	})
}

func queryGrants(ctx context.Context, q pgx.Tx, where string, args ...any) ([]store.Grant, error) {
	rows, err := q.Query(ctx, `SELECT user_id, grp FROM grants `+where+` ORDER BY user_id COLLATE "C", grp COLLATE "C"`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Grant, error) {
		var g store.Grant
		err := row.Scan(&g.User, &g.Group)
		return g, err
	})
}
