package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
	"github.com/tagauth/tagauth/internal/store/storetest"
	"github.com/tagauth/tagauth/protocol"
)

var ctx = context.Background()

func openURL(t *testing.T, u string) *Store {
	t.Helper()
	s, err := Open(ctx, u, Options{MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openFresh opens a store on a new schema and returns its URL too.
func openFresh(t *testing.T) (*Store, string) {
	t.Helper()
	u, _ := pgtest.Schema(t)
	return openURL(t, u), u
}

func TestContract(t *testing.T) {
	urls := map[store.Store]string{}
	var mu sync.Mutex
	storetest.Run(t,
		func(t *testing.T) store.Store {
			s, u := openFresh(t)
			mu.Lock()
			urls[s] = u
			mu.Unlock()
			return s
		},
		storetest.WithReopen(func(t *testing.T, s store.Store) store.Store {
			mu.Lock()
			u := urls[s]
			mu.Unlock()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openURL(t, u)
		}))
}

// TestConcurrentMigrations starts several stores on one new schema at the
// same moment, as replicas starting together do: each migration runs once
// and every store works.
func TestConcurrentMigrations(t *testing.T) {
	u, schema := pgtest.Schema(t)
	const n = 6
	var (
		wg     sync.WaitGroup
		stores [n]*Store
		errs   [n]error
		start  = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(ctx, u, Options{MaxConns: 2})
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("store %d: Open: %v", i, errs[i])
		}
		defer stores[i].Close()
		if stores[i].Schema() != schema {
			t.Fatalf("store %d uses schema %q, want %q", i, stores[i].Schema(), schema)
		}
	}
	var versions []int
	rows, err := stores[0].pool.Query(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		rows.Scan(&v)
		versions = append(versions, v)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(versions) != len(migrations) || versions[len(versions)-1] != SchemaVersion() {
		t.Fatalf("schema_migrations holds %v, want 1..%d once each", versions, SchemaVersion())
	}
	for i := range n {
		id := fmt.Sprint("u", i)
		if err := stores[i].CreateUser(ctx, store.User{ID: id, KV: 1}, protocol.Hardened); err != nil {
			t.Fatalf("store %d: CreateUser: %v", i, err)
		}
	}
	sn, err := stores[n-1].Snapshot(ctx)
	if err != nil || len(sn.Users) != n {
		t.Fatalf("snapshot after concurrent starts: %d users, %v; want %d", len(sn.Users), err, n)
	}
	// Opening again is a no-op: nothing to migrate.
	openURL(t, u).Close()
}

// TestNewerSchemaRefused: a binary older than the database refuses to
// start instead of writing a layout it does not know.
func TestNewerSchemaRefused(t *testing.T) {
	s, u := openFresh(t)
	pgtest.Exec(t, s.Schema(), "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')", SchemaVersion()+1)
	_, err := Open(ctx, u, Options{})
	if err == nil || !strings.Contains(err.Error(), "upgrade tagauth") {
		t.Fatalf("Open of a newer schema: %v, want a refusal saying to upgrade", err)
	}
}

// TestDiskFull: SQLSTATE 53100 (disk_full) from the server is store.ErrFull
// and the write changed nothing. A trigger raises it, as a full disk
// would on the insert.
func TestDiskFull(t *testing.T) {
	s, _ := openFresh(t)
	pgtest.Exec(t, s.Schema(), `CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$;
CREATE TRIGGER full_disk BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION full_disk();
CREATE TRIGGER full_disk BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION full_disk();`)
	err := s.CreateUser(ctx, store.User{ID: "alice", KV: 1}, protocol.Hardened)
	if !errors.Is(err, store.ErrFull) || !strings.Contains(err.Error(), "free space") {
		t.Fatalf("CreateUser on a full disk: %v, want store.ErrFull saying to free space", err)
	}
	err = s.AppendAudit(ctx, store.AuditRecord{Kind: "verify", Outcome: "ok"})
	if !errors.Is(err, store.ErrFull) {
		t.Fatalf("AppendAudit on a full disk: %v, want store.ErrFull", err)
	}
	if sn, err := s.Snapshot(ctx); err != nil || len(sn.Users) != 0 {
		t.Fatalf("after the failed write: %+v, %v", sn, err)
	}
}

// TestAuditTextCleaned: text PostgreSQL cannot hold (NUL, invalid UTF-8)
// is stored with U+FFFD instead of failing the whole batch.
func TestAuditTextCleaned(t *testing.T) {
	s, _ := openFresh(t)
	err := s.AppendAudit(ctx, store.AuditRecord{Kind: "verify", Outcome: "refused", User: "a\x00b", Detail: "\xff\xfex", Reason: "ok"})
	if err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	recs, _, err := s.QueryAudit(ctx, store.AuditFilter{})
	if err != nil || len(recs) != 1 {
		t.Fatalf("QueryAudit: %v, %v", recs, err)
	}
	if recs[0].User != "a\uFFFDb" || recs[0].Detail != "\uFFFDx" || recs[0].Reason != "ok" {
		t.Fatalf("cleaned record: %+v", recs[0])
	}
}

// TestSchemaName: schema names that cannot make a notification channel are
// refused at Open, and URLs that are not postgres:// are refused.
func TestSchemaName(t *testing.T) {
	base := pgtest.URL(t)
	if _, err := Open(ctx, base, Options{Schema: strings.Repeat("s", MaxSchemaLen+1)}); err == nil {
		t.Fatal("Open with a schema name too long for the channel succeeded")
	}
	if _, err := Open(ctx, "redis://127.0.0.1:6379", Options{}); err == nil || !strings.Contains(err.Error(), "postgres://") {
		t.Fatalf("Open of a redis URL: %v", err)
	}
	// The password never shows in messages.
	_, err := Open(ctx, "postgres://u:hunter2@127.0.0.1:1/test?connect_timeout=1", Options{})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Open with a bad address: %v (must fail without the password in the message)", err)
	}
}

func nextChange(t *testing.T, f store.Feed) Change {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ch, err := f.Next(c)
	if err != nil {
		t.Fatalf("Feed.Next: %v", err)
	}
	return ch
}

// TestFeed: writes made through another store on the same schema are
// announced, in commit order, and Current reads the state they lead to.
func TestFeed(t *testing.T) {
	s, u := openFresh(t)
	other := openURL(t, u)
	f, err := s.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// A timeout is not a lost connection.
	c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = f.Next(c)
	cancel()
	if !errors.Is(err, ErrFeedTimeout) {
		t.Fatalf("Next with nothing to say: %v, want ErrFeedTimeout", err)
	}
	if err := f.Ping(ctx); err != nil {
		t.Fatalf("Ping after a timeout: %v", err)
	}

	steps := []struct {
		do   func() error
		want Change
	}{
		{func() error { return other.CreateUser(ctx, store.User{ID: "alice", KV: 1}, protocol.Hardened) }, Change{Kind: ChangeUser, ID: "alice"}},
		{func() error {
			return other.CreateDevice(ctx, store.Device{ID: "sensor-7", KV: 1, Group: "plant-a"}, protocol.Hardened)
		}, Change{Kind: ChangeDevice, ID: "sensor-7"}},
		{func() error { return other.Grant(ctx, store.Grant{User: "alice", Group: "plant-a"}) }, Change{Kind: ChangeGrant, ID: "alice", Group: "plant-a"}},
		{func() error { return other.RevokeUser(ctx, "alice", time.Now()) }, Change{Kind: ChangeUser, ID: "alice"}},
		{func() error { return other.Ungrant(ctx, store.Grant{User: "alice", Group: "plant-a"}) }, Change{Kind: ChangeGrant, ID: "alice", Group: "plant-a"}},
		{func() error { return other.RevokeDevice(ctx, "sensor-7", time.Now()) }, Change{Kind: ChangeDevice, ID: "sensor-7"}},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := nextChange(t, f); got != st.want {
			t.Fatalf("step %d: change %+v, want %+v", i, got, st.want)
		}
	}
	// Revoking a revoked user changes no row and says nothing; the next
	// change is the key.
	if err := other.RevokeUser(ctx, "alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	mk := protocol.MasterKey{Version: 1, Key: [32]byte{1}}
	if _, err := other.PublishKeys(ctx, []KeyVersion{{Version: 1, Fingerprint: KeyFingerprint(mk)}}, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := nextChange(t, f); got != (Change{Kind: ChangeKey, Version: 1}) {
		t.Fatalf("after a no-op revoke and a key: %+v", got)
	}

	state, err := s.Current(ctx, []Change{
		{Kind: ChangeUser, ID: "alice"}, {Kind: ChangeUser, ID: "nobody"}, {Kind: ChangeUser, ID: "alice"},
		{Kind: ChangeDevice, ID: "sensor-7"},
		{Kind: ChangeGrant, ID: "alice", Group: "plant-a"},
		{Kind: ChangeKey, Version: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Users) != 1 || !state.Users[0].Revoked || len(state.GoneUsers) != 1 || state.GoneUsers[0] != "nobody" ||
		len(state.Devices) != 1 || !state.Devices[0].Revoked || state.Devices[0].Group != "plant-a" ||
		len(state.Grants) != 0 || len(state.GoneGrants) != 1 || len(state.Keys) != 1 {
		t.Fatalf("Current: %+v", state)
	}

	// A truncate (an operator's hand) asks for a full reload.
	pgtest.Exec(t, s.Schema(), "TRUNCATE grants")
	if got := nextChange(t, f); got.Kind != ChangeReset {
		t.Fatalf("after TRUNCATE: %+v, want a reset", got)
	}

	// Closing the store ends the feed.
	s.Close()
	c, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := f.Next(c); err == nil || errors.Is(err, ErrFeedTimeout) {
		t.Fatalf("Next after the store closed: %v, want a connection error", err)
	}
}

// TestFeedSchemasApart: a store hears only its own schema's changes.
func TestFeedSchemasApart(t *testing.T) {
	a, _ := openFresh(t)
	b, _ := openFresh(t)
	f, err := a.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := b.CreateUser(ctx, store.User{ID: "bob", KV: 1}, protocol.Hardened); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateUser(ctx, store.User{ID: "alice", KV: 1}, protocol.Hardened); err != nil {
		t.Fatal(err)
	}
	if got := nextChange(t, f); got != (Change{Kind: ChangeUser, ID: "alice"}) {
		t.Fatalf("first change heard: %+v, want alice from the own schema", got)
	}
}

func TestParseChange(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Change
	}{
		{`{"k":"user","id":"a\"b"}`, Change{Kind: ChangeUser, ID: `a"b`}},
		{`{"k":"device","id":"d"}`, Change{Kind: ChangeDevice, ID: "d"}},
		{`{"k":"grant","u":"u","g":"*"}`, Change{Kind: ChangeGrant, ID: "u", Group: "*"}},
		{`{"k":"key","v":7}`, Change{Kind: ChangeKey, Version: 7}},
		{`{"k":"key","v":0}`, Change{Kind: ChangeReset}},
		{`{"k":"key","v":256}`, Change{Kind: ChangeReset}},
		{`{"k":"reset"}`, Change{Kind: ChangeReset}},
		{`{"k":"other"}`, Change{Kind: ChangeReset}},
		{`not json`, Change{Kind: ChangeReset}},
	} {
		if got := parseChange(c.in); got != c.want {
			t.Errorf("parseChange(%s) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

// TestPublishKeys: versions are recorded once, retirement is kept, and a
// replica holding another key under a recorded version is told.
func TestPublishKeys(t *testing.T) {
	s, _ := openFresh(t)
	k1 := protocol.MasterKey{Version: 1, Key: [32]byte{1}}
	k2 := protocol.MasterKey{Version: 2, Key: [32]byte{2}}
	if KeyFingerprint(k1) == KeyFingerprint(protocol.MasterKey{Version: 1, Key: [32]byte{9}}) {
		t.Fatal("fingerprints of different keys are equal")
	}
	kv := func(mk protocol.MasterKey) KeyVersion {
		return KeyVersion{Version: mk.Version, Fingerprint: KeyFingerprint(mk), Created: time.Now()}
	}
	all, err := s.PublishKeys(ctx, []KeyVersion{kv(k1)}, nil, time.Now())
	if err != nil || len(all) != 1 || all[0].Retired {
		t.Fatalf("first publish: %+v, %v", all, err)
	}
	retiredAt := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	all, err = s.PublishKeys(ctx, []KeyVersion{kv(k2)}, []uint8{1}, retiredAt)
	if err != nil || len(all) != 2 || !all[0].Retired || !all[0].RetiredAt.Equal(retiredAt) || all[1].Retired {
		t.Fatalf("rotate and retire: %+v, %v", all, err)
	}
	// Retiring again keeps the first time; a conflicting key is reported
	// and not recorded.
	other := protocol.MasterKey{Version: 2, Key: [32]byte{0xee}}
	all, err = s.PublishKeys(ctx, []KeyVersion{kv(k1), kv(other)}, nil, time.Now())
	if !errors.Is(err, ErrKeyConflict) || !strings.Contains(err.Error(), "[2]") {
		t.Fatalf("publish of another key under version 2: %v, want ErrKeyConflict naming it", err)
	}
	if len(all) != 2 || all[1].Fingerprint != KeyFingerprint(k2) || !all[0].RetiredAt.Equal(retiredAt) {
		t.Fatalf("after the conflict: %+v", all)
	}
	// A key file that conflicts anywhere adds nothing, not even its
	// versions nobody recorded yet: none of it is trusted.
	k3 := protocol.MasterKey{Version: 3, Key: [32]byte{3}}
	all, err = s.PublishKeys(ctx, []KeyVersion{kv(other), kv(k3)}, nil, time.Now())
	if !errors.Is(err, ErrKeyConflict) || len(all) != 2 {
		t.Fatalf("conflicting file with a new version: %+v, %v; want the conflict and nothing added", all, err)
	}
}
