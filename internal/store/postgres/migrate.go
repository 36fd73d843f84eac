package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migration is one step of the schema. Steps are append-only: a released
// step is never edited, a change is a new step.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations is the schema's history. Migrations runs them in order.
var migrations = []migration{
	{1, "registry and audit", `
CREATE TABLE users (
	id         text PRIMARY KEY,
	kv         smallint NOT NULL CHECK (kv BETWEEN 1 AND 255),
	created    timestamptz NOT NULL,
	revoked_at timestamptz
);
CREATE TABLE devices (
	id         text PRIMARY KEY,
	kv         smallint NOT NULL CHECK (kv BETWEEN 1 AND 255),
	grp        text NOT NULL DEFAULT '',
	created    timestamptz NOT NULL,
	revoked_at timestamptz
);
CREATE TABLE grants (
	user_id text NOT NULL,
	grp     text NOT NULL,
	PRIMARY KEY (user_id, grp)
);
CREATE TABLE enrol_codes (
	hash    bytea PRIMARY KEY CHECK (length(hash) = 32),
	user_id text NOT NULL,
	expires timestamptz NOT NULL
);
CREATE INDEX enrol_codes_expires ON enrol_codes (expires);
CREATE TABLE audit (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at         timestamptz NOT NULL,
	kind       text NOT NULL,
	outcome    text NOT NULL,
	reason     text NOT NULL,
	user_id    text NOT NULL,
	device     text NOT NULL,
	source     text NOT NULL,
	kv_user    smallint NOT NULL,
	kv_device  smallint NOT NULL,
	latency_us bigint NOT NULL,
	detail     text NOT NULL
);
CREATE INDEX audit_user ON audit (user_id, seq);
CREATE INDEX audit_device ON audit (device, seq);
CREATE INDEX audit_kind ON audit (kind, seq);
CREATE INDEX audit_at ON audit (at);
`},
	{2, "key versions", `
CREATE TABLE key_versions (
	version     smallint PRIMARY KEY CHECK (version BETWEEN 1 AND 255),
	fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
	created     timestamptz NOT NULL,
	retired_at  timestamptz
);
`},
	{3, "change notification", `
CREATE FUNCTION tagauth_notify_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('tagauth:' || TG_TABLE_SCHEMA, json_build_object('k', 'user', 'id', COALESCE(NEW.id, OLD.id))::text);
	RETURN NULL;
END $$;
CREATE FUNCTION tagauth_notify_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('tagauth:' || TG_TABLE_SCHEMA, json_build_object('k', 'device', 'id', COALESCE(NEW.id, OLD.id))::text);
	RETURN NULL;
END $$;
CREATE FUNCTION tagauth_notify_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP IN ('DELETE', 'UPDATE') THEN
		PERFORM pg_notify('tagauth:' || TG_TABLE_SCHEMA, json_build_object('k', 'grant', 'u', OLD.user_id, 'g', OLD.grp)::text);
	END IF;
	IF TG_OP IN ('INSERT', 'UPDATE') THEN
		PERFORM pg_notify('tagauth:' || TG_TABLE_SCHEMA, json_build_object('k', 'grant', 'u', NEW.user_id, 'g', NEW.grp)::text);
	END IF;
	RETURN NULL;
END $$;
CREATE FUNCTION tagauth_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('tagauth:' || TG_TABLE_SCHEMA, json_build_object('k', 'key', 'v', COALESCE(NEW.version, OLD.version))::text);
	RETURN NULL;
END $$;
CREATE FUNCTION tagauth_notify_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('tagauth:' || TG_TABLE_SCHEMA, json_build_object('k', 'reset')::text);
	RETURN NULL;
END $$;
CREATE TRIGGER users_notify AFTER INSERT OR UPDATE OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION tagauth_notify_user();
CREATE TRIGGER devices_notify AFTER INSERT OR UPDATE OR DELETE ON devices FOR EACH ROW EXECUTE FUNCTION tagauth_notify_device();
CREATE TRIGGER grants_notify AFTER INSERT OR UPDATE OR DELETE ON grants FOR EACH ROW EXECUTE FUNCTION tagauth_notify_grant();
CREATE TRIGGER key_versions_notify AFTER INSERT OR UPDATE OR DELETE ON key_versions FOR EACH ROW EXECUTE FUNCTION tagauth_notify_key();
CREATE TRIGGER users_truncate AFTER TRUNCATE ON users FOR EACH STATEMENT EXECUTE FUNCTION tagauth_notify_reset();
CREATE TRIGGER devices_truncate AFTER TRUNCATE ON devices FOR EACH STATEMENT EXECUTE FUNCTION tagauth_notify_reset();
CREATE TRIGGER grants_truncate AFTER TRUNCATE ON grants FOR EACH STATEMENT EXECUTE FUNCTION tagauth_notify_reset();
CREATE TRIGGER key_versions_truncate AFTER TRUNCATE ON key_versions FOR EACH STATEMENT EXECUTE FUNCTION tagauth_notify_reset();
`},
	{4, "audit counts and journal marks", `
ALTER TABLE audit ADD COLUMN count bigint NOT NULL DEFAULT 1 CHECK (count BETWEEN 1 AND 4294967295);
CREATE TABLE audit_journal (
	id  text PRIMARY KEY,
	seq bigint NOT NULL CHECK (seq >= 0)
);
`},
	{5, "admin tokens", `
CREATE TABLE admin_tokens (
	name      text PRIMARY KEY,
	role      text NOT NULL,
	hash      bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
	created   timestamptz NOT NULL,
	last_used timestamptz
);
`},
}

// SchemaVersion is the newest migration this binary knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate creates the schema (when named) and applies every migration not
// yet recorded, each in its own transaction under the migration lock. A
// replica that waited on the lock finds the step recorded and skips it.
func (s *Store) migrate(ctx context.Context, schema string) error {
	step := func(fn func(tx pgx.Tx) error) error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if err := advisoryLock(ctx, tx, lockMigrate, 0); err != nil {
				return err
			}
			if schema != "" {
				id := pgx.Identifier{schema}.Sanitize()
				if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+id); err != nil {
					return err
				}
				// The session's search_path named the schema before it
				// existed; say it again so that this transaction uses it.
				if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+id); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version integer PRIMARY KEY,
	name    text NOT NULL,
	applied timestamptz NOT NULL DEFAULT now()
)`); err != nil {
				return err
			}
			return fn(tx)
		})
	}
	var current int
	err := step(func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM schema_migrations").Scan(&current)
	})
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", s.mapErr(err))
	}
	if current > SchemaVersion() {
		return fmt.Errorf("the database schema is at version %d, newer than this tagauth knows (%d): upgrade tagauth on this host", current, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		applied := false
		err := step(func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", m.version).Scan(&done); err != nil {
				return err
			}
			if done {
				return nil
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			applied = err == nil
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, s.mapErr(err))
		}
		if applied {
			s.log.Info("database schema migrated", "version", m.version, "name", m.name, "schema", schema)
		}
	}
	return nil
}
