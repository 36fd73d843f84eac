// Package bolt is the embedded store.Store: one bbolt file in the gateway's
// data directory (DATA/store.db), nothing to set up.
//
// # File layout
//
// Buckets, all at the top level:
//
//	meta     "schema" -> decimal schema version (SchemaVersion)
//	users    id -> JSON user record
//	devices  id -> JSON device record
//	grants   user 0x00 group -> empty (ids contain no NUL, so the split is unique)
//	codes    SHA-256(code) -> JSON {user, expires}
//	audit    8-byte big-endian sequence number -> a run of audit records
//	         from that one on, binary, or one JSON record (see audit.go)
//
// # Failures a person can act on
//
// Only one process may hold the file: a second gateway on the same data
// directory waits one second for the lock and then gets ErrLocked with the
// holder's pid where the system tells it. A damaged file (a disk error,
// truncated copy, random bytes) is refused at Open with ErrCorrupt, which
// says to restore it from a backup or move it away: Open checks every page
// (bbolt's tx.Check) before serving, and turns bbolt's panics and memory
// faults on bad pages into that error. A write on a full disk fails with
// store.ErrFull and leaves the store as it was.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// FileName is the store's file name in the gateway's data directory.
const FileName = "store.db"

// SchemaVersion is the layout version this package writes and reads. A
// store with a newer version is refused (the binary is older than the data).
//
// Version 2 stores audit records in runs (audit.go). A version 1 store,
// whose audit values are all JSON, reads as it is and is marked 2 when
// opened: an older tagauth then refuses it with "upgrade tagauth" instead
// of calling the runs it cannot read corruption.
//
// Version 3 writes runs whose records carry an event count (format 0x02,
// audit.go) and may hold journal marks in the meta bucket; it reads every
// older form, and marks an older store 3 when opened, for the same reason.
const SchemaVersion = 3

// Errors of Open, tested with errors.Is. Their messages name the file and
// say what to do.
var (
	// ErrCorrupt: the file is not a readable store.
	ErrCorrupt = errors.New("store is corrupt")
	// ErrLocked: another process holds the store.
	ErrLocked = errors.New("store is locked by another process")
)

// lockTimeout is how long Open waits for another process to let go.
const lockTimeout = time.Second

var (
	bucketMeta    = []byte("meta")
	bucketUsers   = []byte("users")
	bucketDevices = []byte("devices")
	bucketGrants  = []byte("grants")
	bucketCodes   = []byte("codes")
	bucketAudit   = []byte("audit")
	keySchema     = []byte("schema")

	allBuckets = [][]byte{bucketMeta, bucketUsers, bucketDevices, bucketGrants, bucketCodes, bucketAudit}
)

// Store is a store.Store in one bbolt file. It is safe for concurrent use;
// writes are serialized by bbolt, reads run in parallel with them.
type Store struct {
	db   *bbolt.DB
	path string
	hub  hub // the change feeds (changes.go)
}

var _ store.Store = (*Store)(nil)

// Open opens the store at path (normally DATA/store.db), creating it with
// mode 0600 if it does not exist, and checks it fully before returning.
func Open(path string) (*Store, error) { return open(path, lockTimeout) }

func open(path string, timeout time.Duration) (*Store, error) {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store %s is not a regular file (%v): move it away", path, fi.Mode().Type())
	}
	var file *os.File
	opts := &bbolt.Options{
		Timeout: timeout,
		// Keep the file so that a panic inside bbolt.Open, which loses the
		// *DB, can still close it and so release the lock.
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	}
	db, err := openDB(path, opts, &file)
	if err != nil {
		return nil, openError(path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.check(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// openDB is bbolt.Open with its panics (bbolt panics on some bad pages)
// and memory faults (a page past the end of a truncated file) turned into
// an error.
func openDB(path string, opts *bbolt.Options, file **os.File) (db *bbolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if *file != nil {
				// Release the lock so that the refusal can be repeated and
				// the file moved away. The mapping bbolt made is lost with
				// the *DB: a leak on a path that ends the program.
				unlock(*file)
				(*file).Close()
			}
			db, err = nil, corrupt(path, fmt.Errorf("bbolt: %v", r))
		}
	}()
	return bbolt.Open(path, 0o600, opts)
}

func openError(path string, err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		who := "another process"
		if pid := lockHolder(path); pid > 0 {
			who = fmt.Sprintf("another process (pid %d)", pid)
			if pid == os.Getpid() {
				who = "this process (opened twice)"
			}
		}
		return fmt.Errorf("%w: store %s is locked by %s: is another tagauth gateway running with this data directory? Stop it first",
			ErrLocked, path, who)
	case errors.Is(err, ErrCorrupt):
		return err
	case isNoSpace(err):
		return fmt.Errorf("%w (creating %s: %v): free some space and retry", store.ErrFull, path, err)
	case errors.As(err, &errno), errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist):
		// The system refused (permissions, a missing directory, memory):
		// the file itself may be fine.
		return fmt.Errorf("opening store %s: %w", path, err)
	}
	// Everything else bbolt reports is about the content: bad magic,
	// version, checksum, a file too small to be a store.
	return corrupt(path, err)
}

type corruptError struct {
	path  string
	cause error
}

func corrupt(path string, cause error) error { return &corruptError{path, cause} }

func (e *corruptError) Error() string {
	return fmt.Sprintf("store %s is corrupt (%v): restore it from a backup or move it away", e.path, e.cause)
}

func (e *corruptError) Unwrap() error { return e.cause }

func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

// check verifies the whole file before anything is served from it. A walk
// of every key on this goroutine comes first, with faults turned into
// panics and recovered, because tx.Check runs on a goroutine of its own
// where a bad page pointer would crash the program; once the walk has
// touched every reachable page safely, tx.Check can look at them too.
func (s *Store) check() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corrupt(s.path, fmt.Errorf("bbolt: %v", r))
		}
	}()
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("opening store %s: %w", s.path, err)
	}
	return s.db.View(func(tx *bbolt.Tx) error {
		if tx.Size() > fi.Size() {
			return corrupt(s.path, fmt.Errorf("file is truncated: %d bytes, its pages need %d", fi.Size(), tx.Size()))
		}
		if err := tx.ForEach(func(name []byte, b *bbolt.Bucket) error { return walk(b) }); err != nil {
			return corrupt(s.path, err)
		}
		var errs []string
		for err := range tx.Check() {
			if len(errs) < 3 {
				errs = append(errs, err.Error())
			}
		}
		if len(errs) > 0 {
			return corrupt(s.path, errors.New(strings.Join(errs, "; ")))
		}
		return nil
	})
}

func walk(b *bbolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v != nil {
			return nil
		}
		child := b.Bucket(k)
		if child == nil {
			return fmt.Errorf("key %x has no value and is not a bucket", k)
		}
		return walk(child)
	})
}

// init creates the buckets of a new store, and refuses a bbolt file that
// is not a tagauth store or is newer than this binary.
func (s *Store) init() error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			empty := true
			_ = tx.ForEach(func([]byte, *bbolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("store %s is a bbolt file but not a tagauth store (no meta bucket): move it away", s.path)
			}
			for _, name := range allBuckets {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		raw := meta.Get(keySchema)
		v, err := strconv.Atoi(string(raw))
		switch {
		case err != nil || v < 1:
			return corrupt(s.path, fmt.Errorf("bad schema version %q", raw))
		case v > SchemaVersion:
			return fmt.Errorf("store %s has schema version %d, newer than this tagauth reads (%d): upgrade tagauth", s.path, v, SchemaVersion)
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return corrupt(s.path, fmt.Errorf("bucket %q is missing", name))
			}
		}
		if v < SchemaVersion {
			return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		return nil
	})
	return s.mapErr(err)
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close closes the file and releases the lock. Closing twice is not an
// error.
func (s *Store) Close() error {
	s.hub.close()
	return s.db.Close()
}

// isNoSpace reports a full disk or quota. bbolt formats some I/O errors
// with %s (growing the file), which loses the errno, hence the text match.
func isNoSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}

func (s *Store) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case isNoSpace(err):
		return fmt.Errorf("%w (%s: %v): nothing was changed; free some space and retry", store.ErrFull, s.path, err)
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("store %s is closed: %w", s.path, err)
	}
	return err
}

func (s *Store) update(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.mapErr(s.db.Update(fn))
}

func (s *Store) view(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.mapErr(s.db.View(fn))
}

// Records as stored. Times are UTC, truncated to the microsecond, which is
// what every backend keeps.

type userRec struct {
	KV        uint8     `json:"kv"`
	Created   time.Time `json:"created"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

type deviceRec struct {
	KV        uint8     `json:"kv"`
	Group     string    `json:"group,omitempty"`
	Created   time.Time `json:"created"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

type codeRec struct {
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

type auditRec struct {
	Time      time.Time `json:"t"`
	Kind      string    `json:"kind,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	User      string    `json:"user,omitempty"`
	Device    string    `json:"device,omitempty"`
	Source    string    `json:"source,omitempty"`
	KVUser    uint8     `json:"kv_user,omitempty"`
	KVDevice  uint8     `json:"kv_device,omitempty"`
	LatencyUS int64     `json:"latency_us,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

func norm(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// decode reads a stored record. bbolt pages carry no checksum, so damage
// inside a value can pass tx.Check: a value that does not decode is
// reported as corruption too.
func (s *Store) decode(what string, key, v []byte, dst any) error {
	if err := json.Unmarshal(v, dst); err != nil {
		return corrupt(s.path, fmt.Errorf("%s %q: %v", what, key, err))
	}
	return nil
}

func put(b *bbolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User, p protocol.Profile) error {
	if err := store.CheckProfile(p); err != nil {
		return err
	}
	if err := store.CheckUser(&u); err != nil {
		return err
	}
	return s.updateAnnounce(ctx, store.Change{Kind: store.ChangeUser, ID: u.ID}, func(tx *bbolt.Tx) error {
		return create(tx, bucketUsers, bucketDevices, "user", "device", u.ID, p,
			userRec{KV: u.KV, Created: norm(u.Created)})
	})
}

// CreateDevice implements store.Store.
func (s *Store) CreateDevice(ctx context.Context, d store.Device, p protocol.Profile) error {
	if err := store.CheckProfile(p); err != nil {
		return err
	}
	if err := store.CheckDevice(&d); err != nil {
		return err
	}
	return s.updateAnnounce(ctx, store.Change{Kind: store.ChangeDevice, ID: d.ID}, func(tx *bbolt.Tx) error {
		return create(tx, bucketDevices, bucketUsers, "device", "user", d.ID, p,
			deviceRec{KV: d.KV, Group: d.Group, Created: norm(d.Created)})
	})
}

// create puts rec under id in bucket own, under the uniqueness and
// classic namespace rules; other is the bucket of the other kind.
func create(tx *bbolt.Tx, own, other []byte, kind, otherKind, id string, p protocol.Profile, rec any) error {
	b := tx.Bucket(own)
	key := []byte(id)
	if b.Get(key) != nil {
		return fmt.Errorf("%w: %s %q", store.ErrExists, kind, id)
	}
	if p == protocol.Classic && tx.Bucket(other).Get(key) != nil {
		return fmt.Errorf("%w: %s %q is taken by a %s", store.ErrNamespace, kind, id, otherKind)
	}
	return put(b, key, rec)
}

// RevokeUser implements store.Store.
func (s *Store) RevokeUser(ctx context.Context, id string, at time.Time) error {
	return s.updateAnnounce(ctx, store.Change{Kind: store.ChangeUser, ID: id}, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: user %q", store.ErrNotFound, id)
		}
		var r userRec
		if err := s.decode("user", []byte(id), v, &r); err != nil {
			return err
		}
		if r.Revoked {
			return nil
		}
		r.Revoked, r.RevokedAt = true, norm(at)
		return put(b, []byte(id), r)
	})
}

// RevokeDevice implements store.Store.
func (s *Store) RevokeDevice(ctx context.Context, id string, at time.Time) error {
	return s.updateAnnounce(ctx, store.Change{Kind: store.ChangeDevice, ID: id}, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: device %q", store.ErrNotFound, id)
		}
		var r deviceRec
		if err := s.decode("device", []byte(id), v, &r); err != nil {
			return err
		}
		if r.Revoked {
			return nil
		}
		r.Revoked, r.RevokedAt = true, norm(at)
		return put(b, []byte(id), r)
	})
}

func grantKey(g store.Grant) []byte {
	k := make([]byte, 0, len(g.User)+1+len(g.Group))
	k = append(k, g.User...)
	k = append(k, 0)
	return append(k, g.Group...)
}

// Grant implements store.Store.
func (s *Store) Grant(ctx context.Context, g store.Grant) error {
	if err := store.CheckGrant(&g); err != nil {
		return err
	}
	return s.updateAnnounce(ctx, store.Change{Kind: store.ChangeGrant, ID: g.User, Group: g.Group}, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketGrants).Put(grantKey(g), []byte{})
	})
}

// Ungrant implements store.Store.
func (s *Store) Ungrant(ctx context.Context, g store.Grant) error {
	if err := store.CheckGrant(&g); err != nil {
		return err
	}
	return s.updateAnnounce(ctx, store.Change{Kind: store.ChangeGrant, ID: g.User, Group: g.Group}, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketGrants)
		k := grantKey(g)
		if b.Get(k) == nil {
			return fmt.Errorf("%w: grant of group %q to user %q", store.ErrNotFound, g.Group, g.User)
		}
		return b.Delete(k)
	})
}

// PutEnrolCode implements store.Store.
func (s *Store) PutEnrolCode(ctx context.Context, codeHash [32]byte, user string, expires time.Time) error {
	if err := store.CheckID(user); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketCodes)
		if b.Get(codeHash[:]) != nil {
			return fmt.Errorf("%w: enrolment code", store.ErrExists)
		}
		return put(b, codeHash[:], codeRec{User: user, Expires: norm(expires)})
	})
}

// TakeEnrolCode implements store.Store. It also deletes every code that
// has expired by now, so that unused codes do not pile up.
func (s *Store) TakeEnrolCode(ctx context.Context, codeHash [32]byte, now time.Time) (string, error) {
	var user string
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketCodes)
		var dead [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var r codeRec
			if err := s.decode("enrolment code", nil, v, &r); err != nil {
				return err
			}
			switch {
			case !now.Before(r.Expires):
				dead = append(dead, bytes.Clone(k))
			case bytes.Equal(k, codeHash[:]):
				user = r.User
				dead = append(dead, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(dead) == 0 {
			return store.ErrCodeInvalid // nothing to write
		}
		for _, k := range dead {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if user == "" {
		// The code was expired (and is now deleted) or unknown while
		// others expired.
		return "", store.ErrCodeInvalid
	}
	return user, nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// AppendAudit implements store.Store. Records are encoded before the
// write transaction starts, and stored in runs (see audit.go).
func (s *Store) AppendAudit(ctx context.Context, recs ...store.AuditRecord) error {
	return s.appendAudit(ctx, nil, 0, recs)
}

// AppendAuditJournaled implements store.AuditJournaled: the mark is a key
// of the meta bucket ("journal:" and the id), written in the transaction
// that appends the records.
func (s *Store) AppendAuditJournaled(ctx context.Context, journal string, upTo uint64, recs ...store.AuditRecord) error {
	return s.appendAudit(ctx, journalKey(journal), upTo, recs)
}

// AuditJournalMark implements store.AuditJournaled.
func (s *Store) AuditJournalMark(ctx context.Context, journal string) (uint64, error) {
	var mark uint64
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(journalKey(journal))
		switch len(v) {
		case 0:
		case 8:
			mark = binary.BigEndian.Uint64(v)
		default:
			return corrupt(s.path, fmt.Errorf("journal mark of %d bytes", len(v)))
		}
		return nil
	})
	return mark, err
}

func journalKey(id string) []byte { return append([]byte("journal:"), id...) }

func (s *Store) appendAudit(ctx context.Context, markKey []byte, upTo uint64, recs []store.AuditRecord) error {
	if len(recs) == 0 && markKey == nil {
		return ctx.Err()
	}
	e := auditEncoders.Get().(*auditEncoder)
	if err := e.encode(recs); err != nil {
		putAuditEncoder(e)
		return err
	}
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		// Sequential keys: let pages fill up instead of splitting in half.
		b.FillPercent = 1
		last := b.Sequence()
		if uint64(len(recs)) > math.MaxUint64-last {
			return fmt.Errorf("audit sequence numbers exhausted at %d", last)
		}
		if err := b.SetSequence(last + uint64(len(recs))); err != nil {
			return err
		}
		var key [8]byte // bbolt copies keys, not values
		for _, r := range e.runs {
			binary.BigEndian.PutUint64(key[:], last+1)
			if err := b.Put(key[:], e.buf[r.start:r.end:r.end]); err != nil {
				return err
			}
			last += uint64(r.count)
		}
		if markKey == nil {
			return nil
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(markKey); len(v) == 8 && binary.BigEndian.Uint64(v) >= upTo {
			return nil // a mark never goes back
		}
		return meta.Put(markKey, binary.BigEndian.AppendUint64(nil, upTo))
	})
	// The transaction is over, committed or not: bbolt no longer refers
	// to e.buf.
	putAuditEncoder(e)
	return err
}

// QueryAudit implements store.Store. Filters are applied while scanning
// forward from the cursor, so a selective filter over a long log reads
// much of it: fine for an embedded single-gateway store.
func (s *Store) QueryAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, []uint64, error) {
	var (
		recs  []store.AuditRecord
		seqs  []uint64
		limit = f.PageSize()
	)
	f.Since, f.Until = norm(f.Since), norm(f.Until)
	if f.After == math.MaxUint64 {
		return nil, nil, ctx.Err()
	}
	from := f.After + 1
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		// The record after f.After is in the run of the greatest key
		// <= from: the one Seek finds, or the one before it.
		k, v := c.Seek(seqKey(from))
		switch {
		case k == nil:
			k, v = c.Last()
		case len(k) == 8 && binary.BigEndian.Uint64(k) > from:
			if k, v = c.Prev(); k == nil {
				k, v = c.First()
			}
		}
		n := 0
		prevLast, started := uint64(0), false
		for ; k != nil && len(recs) < limit; k, v = c.Next() {
			if len(k) != 8 {
				return corrupt(s.path, fmt.Errorf("audit key %x", k))
			}
			first := binary.BigEndian.Uint64(k)
			rr, err := readRun(v)
			if err != nil {
				return corrupt(s.path, fmt.Errorf("audit record %d: %v", first, err))
			}
			last, err := rr.lastSeq(first)
			if err != nil {
				return corrupt(s.path, fmt.Errorf("audit record %d: %v", first, err))
			}
			// A run whose count reaches into the next key's would
			// return some sequence numbers twice.
			if started && first <= prevLast {
				return corrupt(s.path, fmt.Errorf("audit record %d: the previous run, to %d, overlaps it", first, prevLast))
			}
			prevLast, started = last, true
			if last < from {
				continue
			}
			for seq := first; rr.count > 0 && len(recs) < limit; seq++ {
				if n++; n%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				// Records before from are decoded too: the next may
				// refer to their strings.
				rec, err := rr.next()
				if err != nil {
					return corrupt(s.path, fmt.Errorf("audit record %d: %v", seq, err))
				}
				if seq >= from && f.Match(&rec) {
					recs = append(recs, rec)
					seqs = append(seqs, seq)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return recs, seqs, nil
}

// PruneAudit implements store.AuditPruner. It deletes whole runs, oldest
// first, whose records are all older than before: a run that straddles
// before is kept whole (a run holds at most maxRunBytes, a few dozen
// records). bbolt puts the freed pages on its free list, which later
// writes reuse, so pruning bounds the file's growth but does not shrink
// it: Compact does.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, limit int) (int, error) {
	before = norm(before)
	if before.IsZero() || limit <= 0 {
		return 0, ctx.Err()
	}
	deleted := 0
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		var dead [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil && deleted < limit; k, v = c.Next() {
			rr, err := readRun(v)
			if err != nil {
				return corrupt(s.path, fmt.Errorf("audit key %x: %v", k, err))
			}
			n := int(min(rr.count, uint64(math.MaxInt32)))
			old := true
			for rr.count > 0 {
				rec, err := rr.next()
				if err != nil {
					return corrupt(s.path, fmt.Errorf("audit key %x: %v", k, err))
				}
				if !rec.Time.Before(before) {
					old = false
					break
				}
			}
			if !old {
				// Records are appended in time order, give or take a
				// batch: the first run with a newer record ends the prune.
				break
			}
			dead = append(dead, bytes.Clone(k))
			deleted += n
		}
		for _, k := range dead {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// Compact copies the store at src into a new file dst (which must not
// exist) with bbolt's compaction, leaving out the free pages that pruning
// left: the way to give the space back to the file system. The source must
// not be open elsewhere (stop the gateway first); it is opened read-only
// and not changed. Replace src with dst once Compact has returned nil.
func Compact(dst, src string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("compacting %s: %s exists: remove it or choose another name", src, dst)
	}
	from, err := bbolt.Open(src, 0o600, &bbolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return openError(src, err)
	}
	defer from.Close()
	to, err := bbolt.Open(dst, 0o600, &bbolt.Options{Timeout: lockTimeout})
	if err != nil {
		return fmt.Errorf("compacting %s into %s: %w", src, dst, err)
	}
	if err := bbolt.Compact(to, from, 1<<20); err != nil {
		to.Close()
		os.Remove(dst)
		if isNoSpace(err) {
			return fmt.Errorf("%w (compacting %s into %s: %v): free some space or compact onto another file system", store.ErrFull, src, dst, err)
		}
		return fmt.Errorf("compacting %s into %s: %w", src, dst, err)
	}
	if err := to.Sync(); err != nil {
		to.Close()
		os.Remove(dst)
		return fmt.Errorf("compacting %s into %s: %w", src, dst, err)
	}
	return to.Close()
}

// Snapshot implements store.Store.
func (s *Store) Snapshot(ctx context.Context) (store.Snapshot, error) {
	var sn store.Snapshot
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var r userRec
			if err := s.decode("user", k, v, &r); err != nil {
				return err
			}
			sn.Users = append(sn.Users, store.User{ID: string(k), KV: r.KV, Created: r.Created, Revoked: r.Revoked, RevokedAt: r.RevokedAt})
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			var r deviceRec
			if err := s.decode("device", k, v, &r); err != nil {
				return err
			}
			sn.Devices = append(sn.Devices, store.Device{ID: string(k), KV: r.KV, Group: r.Group, Created: r.Created, Revoked: r.Revoked, RevokedAt: r.RevokedAt})
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketGrants).ForEach(func(k, _ []byte) error {
			user, group, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return corrupt(s.path, fmt.Errorf("grant key %q", k))
			}
			sn.Grants = append(sn.Grants, store.Grant{User: string(user), Group: string(group)})
			return nil
		})
	})
	if err != nil {
		return store.Snapshot{}, err
	}
	return sn, nil
}
