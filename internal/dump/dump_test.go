package dump_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/dump"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// testKDF keeps Argon2id cheap: these tests are about the store.
var testKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 891011000, time.UTC)

// fleet is a deployment's secrets: a key file with two versions, a card
// issued under the first, a revoked user's card, and a device credential
// under the second.
type fleet struct {
	kf       *keyfile.File
	alice    protocol.Card
	mallory  protocol.Card
	sensor   protocol.DeviceCredential
	unlisted protocol.DeviceCredential // a device the store never held
}

func masterKey(k keyfile.Key) protocol.MasterKey {
	return protocol.MasterKey{Version: k.Version, Key: k.Key}
}

func newFleet(t testing.TB) *fleet {
	t.Helper()
	kf, err := keyfile.Create(filepath.Join(t.TempDir(), keyfile.FileName), protocol.Hardened, rand.Reader, t0)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := kf.Rotate(rand.Reader, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	card := func(id string) protocol.Card {
		req, err := protocol.NewRegistrationRequest(protocol.Hardened, id, "pw-"+id, testKDF, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := protocol.IssueCard(&req, masterKey(kf.Keys[0]), cfg)
		req.Wipe()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	f := &fleet{kf: kf, alice: card("alice"), mallory: card("mallory")}
	if f.sensor, err = protocol.ProvisionDevice(protocol.Hardened, "sensor-7", masterKey(k2)); err != nil {
		t.Fatal(err)
	}
	if f.unlisted, err = protocol.ProvisionDevice(protocol.Hardened, "ghost", masterKey(k2)); err != nil {
		t.Fatal(err)
	}
	return f
}

// fill registers the fleet in st as a gateway would have, with some
// audit records.
func (f *fleet) fill(t testing.TB, st store.Store) {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateUser(ctx, store.User{ID: "alice", KV: 1, Created: t0}, protocol.Hardened))
	must(st.CreateUser(ctx, store.User{ID: "mallory", KV: 1, Created: t0}, protocol.Hardened))
	must(st.RevokeUser(ctx, "mallory", t0.Add(time.Minute)))
	must(st.CreateDevice(ctx, store.Device{ID: "sensor-7", KV: 2, Group: "lab", Created: t0.Add(time.Second)}, protocol.Hardened))
	must(st.CreateDevice(ctx, store.Device{ID: "old", KV: 2, Created: t0}, protocol.Hardened))
	must(st.RevokeDevice(ctx, "old", t0.Add(2*time.Minute)))
	must(st.Grant(ctx, store.Grant{User: "alice", Group: "lab"}))
	must(st.Grant(ctx, store.Grant{User: "mallory", Group: "lab"}))
	must(st.Grant(ctx, store.Grant{User: "zed", Group: store.AllGroups}))
	recs := make([]store.AuditRecord, 700) // more than one bolt load batch
	for i := range recs {
		recs[i] = store.AuditRecord{Time: t0.Add(time.Duration(i) * time.Millisecond), Kind: "verify", Outcome: "ok", User: "alice",
			Device: "sensor-7", Source: "10.0.0.1:5683", KVUser: 1, KVDevice: 2, LatencyUS: int64(i)}
	}
	recs[3].Outcome, recs[3].Reason, recs[3].Count = "refused", "replay", 17
	recs[4].Detail = "odd \"detail\"\n\u2028"
	must(st.AppendAudit(ctx, recs...))
}

// login runs a full login of card on device against a gateway whose
// registry is read from st, as a gateway fills it at start.
func (f *fleet) login(t *testing.T, st store.Store, card protocol.Card, pw string, cred protocol.DeviceCredential) error {
	t.Helper()
	ctx := context.Background()
	snap, err := st.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.NewMemory(protocol.Hardened, false)
	for _, k := range f.kf.Keys {
		reg.AddKey(masterKey(k))
	}
	var us, ds []registry.Entry
	var gs []registry.GrantEntry
	for _, u := range snap.Users {
		us = append(us, registry.Entry{ID: u.ID, Revoked: u.Revoked})
	}
	for _, d := range snap.Devices {
		ds = append(ds, registry.Entry{ID: d.ID, Revoked: d.Revoked, Group: d.Group})
	}
	for _, g := range snap.Grants {
		gs = append(gs, registry.GrantEntry{User: g.User, Group: g.Group})
	}
	if err := reg.Load(us, ds, gs); err != nil {
		t.Fatal(err)
	}
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	gw, err := protocol.NewGateway(protocol.Hardened, reg, &prototest.ReplayCache{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := protocol.NewDevice(cred, &prototest.ReplayCache{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	user, err := protocol.Unlock(card, pw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	login, m1, err := user.Login(nil, cred.ID)
	if err != nil {
		return err
	}
	dl, m2, err := dev.Start(ctx, nil, m1)
	if err != nil {
		return err
	}
	m3, _, err := gw.Verify(ctx, nil, m2)
	if err != nil {
		return err
	}
	m4, _, err := dl.Respond(nil, m3)
	if err != nil {
		return err
	}
	us5, m5, err := login.Finish(nil, m4)
	if err != nil {
		return err
	}
	ds5, err := dl.Confirm(m5)
	if err != nil {
		return err
	}
	if us5.Fingerprint() != ds5.Fingerprint() {
		return errors.New("session keys differ")
	}
	return nil
}

// checkLogins says that alice logs in to sensor-7 and that the revoked
// user and the unknown device are refused: the store's content, not luck,
// decides.
func (f *fleet) checkLogins(t *testing.T, st store.Store, where string) {
	t.Helper()
	if err := f.login(t, st, f.alice, "pw-alice", f.sensor); err != nil {
		t.Errorf("%s: alice's login: %v", where, err)
	}
	if err := f.login(t, st, f.mallory, "pw-mallory", f.sensor); err == nil {
		t.Errorf("%s: the revoked user logged in", where)
	}
	if err := f.login(t, st, f.alice, "pw-alice", f.unlisted); err == nil {
		t.Errorf("%s: a device the store never held was served", where)
	}
}

func openBolt(t testing.TB) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openPG(t *testing.T) *postgres.Store {
	t.Helper()
	u, _ := pgtest.Schema(t)
	st, err := postgres.Open(context.Background(), u, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type dumpStore interface {
	store.Store
	store.Dumper
	store.Loader
}

func dumpOf(t testing.TB, st store.Dumper, f *fleet, source string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := dump.Dump(context.Background(), st, &buf, dump.Options{Profile: protocol.Hardened, Audit: true, Source: source, Keys: dump.KeysOf(f.kf), Now: t0}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func allAudit(t *testing.T, st store.Store) []store.AuditRecord {
	t.Helper()
	var out []store.AuditRecord
	f := store.AuditFilter{Limit: store.MaxAuditLimit}
	for {
		recs, seqs, err := st.QueryAudit(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		f.After = seqs[len(seqs)-1]
	}
}

// sameContent compares two stores' registries and audit logs.
func sameContent(t *testing.T, a, b store.Store, what string) {
	t.Helper()
	ctx := context.Background()
	sa, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s store.Snapshot) string {
		var b strings.Builder
		for _, u := range s.Users {
			fmt.Fprintf(&b, "u %s %d %s %v %s\n", u.ID, u.KV, u.Created.UTC(), u.Revoked, u.RevokedAt.UTC())
		}
		for _, d := range s.Devices {
			fmt.Fprintf(&b, "d %s %d %q %s %v %s\n", d.ID, d.KV, d.Group, d.Created.UTC(), d.Revoked, d.RevokedAt.UTC())
		}
		for _, g := range s.Grants {
			fmt.Fprintf(&b, "g %s %s\n", g.User, g.Group)
		}
		return b.String()
	}
	if na, nb := norm(sa), norm(sb); na != nb {
		t.Errorf("%s: registries differ:\n%s\nvs\n%s", what, na, nb)
	}
	aa, ab := allAudit(t, a), allAudit(t, b)
	if len(aa) != len(ab) {
		t.Fatalf("%s: %d audit records vs %d", what, len(aa), len(ab))
	}
	for i := range aa {
		ra, rb := aa[i], ab[i]
		if !ra.Time.Equal(rb.Time) {
			t.Fatalf("%s: audit %d: time %v vs %v", what, i, ra.Time, rb.Time)
		}
		ra.Time, rb.Time = time.Time{}, time.Time{}
		if ra != rb {
			t.Fatalf("%s: audit %d: %+v vs %+v", what, i, ra, rb)
		}
	}
}

// TestBoltPostgresBolt moves a deployment from the embedded store to
// PostgreSQL and back, logging in before the first dump and after each
// load with a card issued before it.
func TestBoltPostgresBolt(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t)
	a := openBolt(t)
	f.fill(t, a)
	f.checkLogins(t, a, "bolt before the dump")

	d1 := dumpOf(t, a, f, "bolt")
	pg := openPG(t)
	if _, _, err := dump.Load(ctx, pg, bytes.NewReader(d1), f.kf); err != nil {
		t.Fatal(err)
	}
	f.checkLogins(t, pg, "postgres after the load")
	sameContent(t, a, pg, "bolt -> postgres")
	ks, err := pg.KeyVersions(ctx)
	if err != nil || len(ks) != 2 || ks[1].Fingerprint != postgres.KeyFingerprint(masterKey(f.kf.Keys[1])) {
		t.Errorf("postgres key versions after the load: %+v, %v", ks, err)
	}

	d2 := dumpOf(t, pg, f, "postgres")
	b := openBolt(t)
	h, c, err := dump.Load(ctx, b, bytes.NewReader(d2), f.kf)
	if err != nil {
		t.Fatal(err)
	}
	if h.Source != "postgres" || c.Users != 2 || c.Devices != 2 || c.Grants != 3 || c.Keys != 2 || c.Audit != 700 {
		t.Errorf("load of the postgres dump: header %+v, counts %+v", h, c)
	}
	f.checkLogins(t, b, "bolt after the round trip")
	sameContent(t, a, b, "bolt -> postgres -> bolt")

	// Sequence numbers are given anew, and the content round-trips: the
	// dumps differ only by their source and checksum.
	d3 := dumpOf(t, b, f, "postgres")
	if !bytes.Equal(d2, d3) {
		t.Errorf("dumping the reloaded store gave another file:\n%s\nvs\n%s", d2, d3)
	}
}

// TestLoadRefuses: a store with anything in it, a damaged file and a key
// file that is not the dump's are refused, and the store is left as it
// was, on both backends.
func TestLoadRefuses(t *testing.T) {
	f := newFleet(t)
	src := openBolt(t)
	f.fill(t, src)
	good := dumpOf(t, src, f, "bolt")
	lines := strings.SplitAfter(string(good), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	n := len(lines)
	replace := func(i int, s string) string {
		l := append([]string(nil), lines...)
		l[i] = s
		return strings.Join(l, "")
	}
	other, err := keyfile.Create(filepath.Join(t.TempDir(), keyfile.FileName), protocol.Hardened, rand.Reader, t0)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file string
		keys       *keyfile.File
		want       string // in the error
		wantErr    error
	}{
		{"truncated at a line", strings.Join(lines[:n-1], ""), f.kf, fmt.Sprintf("ends after line %d", n-1), dump.ErrFormat},
		{"truncated in a line", string(good[:len(good)-10]), f.kf, fmt.Sprintf("line %d: the file is truncated", n), dump.ErrFormat},
		{"truncated in the audit", strings.Join(lines[:n-300], ""), f.kf, "truncated", dump.ErrFormat},
		{"not JSON", replace(2, "{\"user\":\n"), f.kf, "line 3:", dump.ErrFormat},
		{"edited", strings.Replace(string(good), `"id":"alice"`, `"id":"alicf"`, 1), f.kf, fmt.Sprintf("line %d: checksum mismatch", n), dump.ErrFormat},
		{"edited audit", strings.Replace(string(good), `"latency_us":600`, `"latency_us":601`, 1), f.kf, "checksum mismatch", dump.ErrFormat},
		{"out of order", replace(1, lines[2]), f.kf, "line 3: user \"mallory\" is out of order", dump.ErrFormat},
		{"unknown field", replace(1, `{"user":{"id":"alice","kv":1,"created":"2026-01-01T00:00:00Z","password":"x"}}`+"\n"), f.kf, "line 2:", dump.ErrFormat},
		{"two kinds", replace(1, `{"user":{"id":"a","kv":1,"created":"2026-01-01T00:00:00Z"},"grant":{"user":"a","group":"b"}}`+"\n"), f.kf, "line 2: want exactly one", dump.ErrFormat},
		{"newer version", strings.Replace(string(good), `"version":1,"profile"`, `"version":2,"profile"`, 1), f.kf, "line 1: dump format version 2 is newer", dump.ErrFormat},
		{"not a dump", "hello\n", f.kf, "line 1:", dump.ErrFormat},
		{"empty file", "", f.kf, "ends after line 0", dump.ErrFormat},
		{"data after the end", string(good) + "\n", f.kf, fmt.Sprintf("line %d: data after the end line", n), dump.ErrFormat},
		{"another key file", string(good), other, "key version 1 is another key", dump.ErrKeyMismatch},
	}
	backends := []struct {
		name string
		open func(*testing.T) dumpStore
	}{
		{"bolt", func(t *testing.T) dumpStore { return openBolt(t) }},
		{"postgres", func(t *testing.T) dumpStore { return openPG(t) }},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			st := be.open(t)
			for _, c := range cases {
				_, _, err := dump.Load(ctx, st, strings.NewReader(c.file), c.keys)
				if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.want) {
					t.Errorf("%s: err %v, want %v containing %q", c.name, err, c.wantErr, c.want)
				}
				assertEmpty(t, st, c.name)
			}
			// A store with one user in it takes nothing.
			if err := st.CreateUser(ctx, store.User{ID: "u", KV: 1, Created: t0}, protocol.Hardened); err != nil {
				t.Fatal(err)
			}
			if _, _, err := dump.Load(ctx, st, bytes.NewReader(good), f.kf); !errors.Is(err, store.ErrNotEmpty) {
				t.Errorf("load into a store with a user: %v, want ErrNotEmpty", err)
			}
			snap, err := st.Snapshot(ctx)
			if err != nil || len(snap.Users) != 1 || len(snap.Devices) != 0 || len(allAudit(t, st)) != 0 {
				t.Errorf("the refused load changed the store: %+v, %v", snap, err)
			}
		})
	}
}

func assertEmpty(t *testing.T, st store.Store, what string) {
	t.Helper()
	snap, err := st.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Users)+len(snap.Devices)+len(snap.Grants) != 0 || len(allAudit(t, st)) != 0 {
		t.Fatalf("%s: the refused load left %d users, %d devices, %d grants, %d audit records", what,
			len(snap.Users), len(snap.Devices), len(snap.Grants), len(allAudit(t, st)))
	}
}

// TestDumpWithoutAudit: the audit is left out unless asked for, and such
// a dump loads.
func TestDumpWithoutAudit(t *testing.T) {
	f := newFleet(t)
	src := openBolt(t)
	f.fill(t, src)
	var buf bytes.Buffer
	c, err := dump.Dump(context.Background(), src, &buf, dump.Options{Profile: protocol.Hardened, Keys: dump.KeysOf(f.kf)})
	if err != nil {
		t.Fatal(err)
	}
	if c.Audit != 0 || strings.Contains(buf.String(), `"audit":{`) {
		t.Fatalf("a dump without --audit holds audit records: %+v", c)
	}
	if strings.Contains(buf.String(), fmt.Sprintf("%x", f.kf.Keys[0].Key)) {
		t.Fatal("the dump holds a master key")
	}
	dst := openBolt(t)
	if _, _, err := dump.Load(context.Background(), dst, &buf, f.kf); err != nil {
		t.Fatal(err)
	}
	f.checkLogins(t, dst, "bolt loaded without audit")
}
