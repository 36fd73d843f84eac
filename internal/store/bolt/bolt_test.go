package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/tagauth/tagauth/internal/testenv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/storetest"
	"github.com/tagauth/tagauth/protocol"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) store.Store { return openTemp(t) },
		storetest.WithReopen(func(t *testing.T, s store.Store) store.Store {
			path := s.(*Store).Path()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(path)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			return s2
		}))
}

var ctx = context.Background()

func TestFileMode(t *testing.T) {
	s := openTemp(t)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("store created with mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestLocked(t *testing.T) {
	s := openTemp(t)
	_, err := open(s.Path(), 50*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open of a held store: %v, want ErrLocked", err)
	}
	for _, want := range []string{s.Path(), "locked by", "another tagauth gateway"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("lock error %q does not say %q", err, want)
		}
	}
	// /proc/locks names the holder: here, this very process.
	if _, statErr := os.Stat("/proc/locks"); statErr == nil && !strings.Contains(err.Error(), "this process") {
		t.Errorf("lock error %q does not name the holder", err)
	}
	s.Close()
	s2, err := open(s.Path(), 50*time.Millisecond)
	if err != nil {
		t.Fatalf("open after the holder closed: %v", err)
	}
	s2.Close()
}

func TestNotAFile(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open of a directory: %v", err)
	}
	_, err = Open(filepath.Join(dir, "missing", FileName))
	if err == nil || errors.Is(err, ErrCorrupt) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open in a missing directory: %v, want a not-exist error, not corruption", err)
	}
}

func checkCorrupt(t *testing.T, path string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "store "+path+" is corrupt (") ||
		!strings.HasSuffix(msg, "): restore it from a backup or move it away") {
		t.Fatalf("corrupt store message %q", msg)
	}
}

// openCorrupt opens a file that must be refused as corrupt, and checks
// that Open neither changed it nor kept it locked.
func openCorrupt(t *testing.T, path string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := open(path, 50*time.Millisecond)
	if err == nil {
		s.Close()
		t.Fatalf("Open of a corrupt file succeeded")
	}
	checkCorrupt(t, path, err)
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("Open changed the corrupt file")
	}
	// Refusing must not hold the lock: a second attempt is refused for the
	// same reason, not as locked.
	_, err = open(path, 50*time.Millisecond)
	checkCorrupt(t, path, err)
}

func TestCorruptRandomBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 100, 1023, 4096, 8192, 16384, 65536 + 17} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			b := make([]byte, size)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			openCorrupt(t, path)
		})
	}
}

// realStore writes a store with enough data to span many pages and
// returns its path, its bytes and its page size and high-water mark.
func realStore(t *testing.T) (path string, data []byte, pageSize int, hwm int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), FileName)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 80 {
		if err := s.CreateUser(ctx, store.User{ID: fmt.Sprintf("user-%03d-%s", i, strings.Repeat("u", 55)), KV: 1, Created: time.Unix(int64(i), 0)}, protocol.Hardened); err != nil {
			t.Fatal(err)
		}
	}
	var recs []store.AuditRecord
	for i := range 200 {
		recs = append(recs, store.AuditRecord{Time: time.Unix(int64(i), 0), Kind: "verify", Outcome: "ok", User: "user-001", Detail: strings.Repeat("x", 100)})
	}
	if err := s.AppendAudit(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		pageSize, hwm = tx.DB().Info().PageSize, tx.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if hwm < int64(8*pageSize) {
		t.Fatalf("test store too small: %d bytes used", hwm)
	}
	return path, data, pageSize, hwm
}

func TestCorruptTruncated(t *testing.T) {
	path, data, pageSize, hwm := realStore(t)
	// (An empty file is how bbolt starts a new store: not corrupt.)
	for _, size := range []int64{100, int64(pageSize), int64(2*pageSize) + 10, hwm / 2, hwm - int64(pageSize), hwm - 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			if err := os.WriteFile(path, data[:size], 0o600); err != nil {
				t.Fatal(err)
			}
			openCorrupt(t, path)
		})
	}
	// The untouched copy still opens, with its data.
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatalf("the intact store: %v", err)
	}
	defer s.Close()
	sn, err := s.Snapshot(ctx)
	if err != nil || len(sn.Users) != 80 {
		t.Fatalf("intact store: %d users, %v", len(sn.Users), err)
	}
}

func TestCorruptPages(t *testing.T) {
	path, data, pageSize, hwm := realStore(t)
	// The page holding the root of the users bucket must be caught.
	var usersRoot int
	{
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		db.View(func(tx *bbolt.Tx) error {
			usersRoot = int(tx.Bucket(bucketUsers).Root())
			return nil
		})
		db.Close()
	}
	if usersRoot == 0 {
		t.Fatal("users bucket is inline; make the test store bigger")
	}
	r := rand.New(rand.NewPCG(3, 4))
	refused := 0
	for page := 2; int64(page*pageSize) < hwm; page++ {
		bad := bytes.Clone(data)
		for i := page * pageSize; i < (page+1)*pageSize; i++ {
			bad[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := open(path, 50*time.Millisecond)
		if err != nil {
			checkCorrupt(t, path, err)
			refused++
			continue
		}
		// A free page may be overwritten harmlessly; then the store works.
		if page == usersRoot {
			s.Close()
			t.Fatalf("random bytes over the users bucket's root page %d were not noticed", page)
		}
		if _, err := s.Snapshot(ctx); err != nil {
			t.Errorf("page %d: store opened but Snapshot failed: %v", page, err)
		}
		s.Close()
	}
	if refused == 0 {
		t.Fatal("no corrupted page was noticed")
	}
	t.Logf("%d of %d pages corrupted were refused", refused, hwm/int64(pageSize)-2)
	// The meta pages: both bad is unrecoverable.
	bad := bytes.Clone(data)
	for i := range 2 * pageSize {
		bad[i] = byte(r.Uint32())
	}
	os.WriteFile(path, bad, 0o600)
	openCorrupt(t, path)
}

func TestCorruptMessages(t *testing.T) {
	// What an operator sees, for the record (go test -v).
	path := filepath.Join(t.TempDir(), FileName)
	os.WriteFile(path, []byte("not a database, just some text that is long enough to be read as one"), 0o600)
	_, err := Open(path)
	checkCorrupt(t, path, err)
	t.Log(err)
}

func TestCorruptRecord(t *testing.T) {
	s := openTemp(t)
	if err := s.CreateUser(ctx, store.User{ID: "alice", KV: 1}, protocol.Hardened); err != nil {
		t.Fatal(err)
	}
	// Page structure intact, but a record that does not decode.
	err := s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketUsers).Put([]byte("bob"), []byte("{nope")) })
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Snapshot(ctx)
	checkCorrupt(t, s.Path(), err)
	err = s.RevokeUser(ctx, "bob", time.Now())
	checkCorrupt(t, s.Path(), err)
}

func TestForeignAndNewerFiles(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err })
	db.Close()
	if _, err := Open(foreign); err == nil || !strings.Contains(err.Error(), "not a tagauth store") {
		t.Fatalf("Open of a foreign bbolt file: %v", err)
	}

	s := openTemp(t)
	path := s.Path()
	s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion+1)))
	})
	s.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "upgrade tagauth") {
		t.Fatalf("Open of a newer store: %v", err)
	}

	s = openTemp(t)
	path = s.Path()
	s.db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket(bucketGrants) })
	s.Close()
	_, err = Open(path)
	checkCorrupt(t, path, err)
}

// skipOrFail skips a test that cannot run here, except in CI, where every
// test must run.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	testenv.SkipOrFail(t, why)
}

func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "the disk-full test mounts a tiny tmpfs and needs root (run: sudo go test -run TestDiskFull ./internal/store/bolt)")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot mount a tmpfs (%v): the disk-full test needs CAP_SYS_ADMIN", err))
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	path := filepath.Join(mnt, FileName)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // before the unmount
	if err := s.CreateUser(ctx, store.User{ID: "alice", KV: 1}, protocol.Hardened); err != nil {
		t.Fatal(err)
	}

	// Fill the file system.
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err = filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v, want ENOSPC", err)
	}

	// Writes now fail with ErrFull (the first few may fit in pages the
	// file already has).
	rec := store.AuditRecord{Time: time.Unix(1, 0), Kind: "verify", Outcome: "ok", User: "alice", Detail: strings.Repeat("d", 1000)}
	batch := []store.AuditRecord{rec, rec, rec, rec, rec, rec, rec, rec}
	written := 0
	for range 200 {
		if err = s.AppendAudit(ctx, batch...); err != nil {
			break
		}
		written += len(batch)
	}
	if !errors.Is(err, store.ErrFull) {
		t.Fatalf("append on a full disk: %v, want ErrFull", err)
	}
	t.Logf("after %d records: %v", written, err)
	for _, want := range []string{path, "nothing was changed", "free some space"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("disk-full error %q does not say %q", err, want)
		}
	}
	if err := s.CreateUser(ctx, store.User{ID: strings.Repeat("b", 64), KV: 1}, protocol.Hardened); err != nil && !errors.Is(err, store.ErrFull) {
		t.Fatalf("CreateUser on a full disk: %v, want nil or ErrFull", err)
	}

	// The store still reads what it had, and nothing of the failed batch.
	check := func(s *Store) {
		t.Helper()
		sn, err := s.Snapshot(ctx)
		if err != nil || len(sn.Users) == 0 || sn.Users[0].ID != "alice" {
			t.Fatalf("snapshot after disk full: %+v, %v", sn, err)
		}
		recs, _, err := s.QueryAudit(ctx, store.AuditFilter{Limit: store.MaxAuditLimit})
		if err != nil || len(recs) != written {
			t.Fatalf("audit after disk full: %d records (%v), want the %d written before", len(recs), err, written)
		}
	}
	check(s)

	// It survives a restart, and works again once space is freed.
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen on a full disk: %v", err)
	}
	check(s)
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendAudit(ctx, batch...); err != nil {
		t.Fatalf("append after freeing space: %v", err)
	}
	written += len(batch)
	check(s)
}
