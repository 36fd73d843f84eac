package dump_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/dump"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
)

func archiveOf(t testing.TB, st store.Store, f *fleet) []byte {
	t.Helper()
	kj, err := f.kf.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := dump.WriteArchive(context.Background(), &buf, st, kj, f.kf.Profile, t0); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// members lists an archive's member names.
func members(t *testing.T, a []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// TestRestoreAcrossBackends restores each backend's backup into the
// other: a bolt snapshot into PostgreSQL, a PostgreSQL dump into a new
// data directory's embedded store, and logs in with the cards of before.
func TestRestoreAcrossBackends(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t)

	src := openBolt(t)
	f.fill(t, src)
	a := archiveOf(t, src, f)
	if got := strings.Join(members(t, a), ","); got != "MANIFEST.json,keys.json,store.db" {
		t.Fatalf("bolt archive members %s", got)
	}
	pg := openPG(t)
	dir := filepath.Join(t.TempDir(), "data")
	m, err := dump.Restore(ctx, bytes.NewReader(a), dump.RestoreOptions{Dir: dir, Target: pg})
	if err != nil {
		t.Fatal(err)
	}
	if m.Backend != "bolt" {
		t.Errorf("manifest %+v", m)
	}
	kf, err := keyfile.Load(filepath.Join(dir, keyfile.FileName))
	if err != nil || len(kf.Keys) != 2 || kf.Keys[1].Key != f.kf.Keys[1].Key {
		t.Fatalf("restored key file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, bolt.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a restore into PostgreSQL made %s: %v", bolt.FileName, err)
	}
	f.checkLogins(t, pg, "postgres restored from a bolt backup")
	sameContent(t, src, pg, "bolt backup -> postgres")

	b := archiveOf(t, pg, f)
	if got := strings.Join(members(t, b), ","); got != "MANIFEST.json,keys.json,dump.jsonl" {
		t.Fatalf("postgres archive members %s", got)
	}
	dir2 := filepath.Join(t.TempDir(), "data")
	if _, err := dump.Restore(ctx, bytes.NewReader(b), dump.RestoreOptions{Dir: dir2}); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(dir2, bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f.checkLogins(t, st, "bolt restored from a postgres backup")
	sameContent(t, src, st, "postgres backup -> bolt")
}

// TestRestoreRefuses: a damaged archive or a used directory restores
// nothing, and a directory the restore made is removed again.
func TestRestoreRefuses(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t)
	src := openBolt(t)
	f.fill(t, src)
	a := archiveOf(t, src, f)
	pgArchive := archiveOf(t, func() store.Store { pg := openPG(t); f.fill(t, pg); return pg }(), f)
	// Damage inside the dump member: flip a byte of a user id.
	i := bytes.Index(pgArchive, []byte(`"id":"alice"`))
	bad := bytes.Clone(pgArchive)
	bad[i+6] = 'A'
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "MANIFEST.json"},
		{"cut in the store", a[:len(a)/2], "restore"},
		{"not an archive", bytes.Repeat([]byte("x"), 4096), "restore"},
		{"damaged dump", bad, "checksum mismatch"},
	}
	for _, c := range cases {
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := dump.Restore(ctx, bytes.NewReader(c.data), dump.RestoreOptions{Dir: dir}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.name, err, c.want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the refused restore left %s", c.name, dir)
		}
	}
	// An empty directory that exists is kept, and left empty.
	dir := t.TempDir()
	if _, err := dump.Restore(ctx, bytes.NewReader(bad), dump.RestoreOptions{Dir: dir}); err == nil {
		t.Fatal("a damaged dump was restored")
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("the refused restore left %v in %s (%v)", ents, dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dump.Restore(ctx, bytes.NewReader(a), dump.RestoreOptions{Dir: dir}); !errors.Is(err, dump.ErrDirNotEmpty) {
		t.Fatalf("restore into a used directory: %v", err)
	}
}
