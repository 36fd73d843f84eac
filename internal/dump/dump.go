// Package dump is the backend-neutral export of a gateway's store, as
// Kerberos' kdb5_util dump/load: a versioned JSON-lines file that any
// backend writes (store.Dumper) and any backend loads into an empty store
// (store.Loader), so an operator moves from the embedded store to
// PostgreSQL and back. It also makes and restores online backups
// (backup.go): the store and the key file, encrypted with age.
//
// # Format, version 1
//
// One JSON object per line, each with exactly one member naming its kind,
// in this order:
//
//	{"tagauth_dump":{"version":1,"profile":"hardened","created":T,"source":"bolt","audit":true}}
//	{"user":{"id":"alice","kv":1,"created":T[,"revoked":true,"revoked_at":T]}}      sorted by id
//	{"device":{"id":"d1","kv":1[,"group":"g"],"created":T[,"revoked":true,...]}}    sorted by id
//	{"grant":{"user":"alice","group":"g"}}                                          sorted by user, group
//	{"key":{"version":1,"fingerprint":HEX,"created":T[,"retired":true,"retired_at":T]}}  ascending
//	{"audit":{"seq":1,"time":T,"kind":"verify","outcome":"ok",...}}                 ascending seq
//	{"end":{"users":1,"devices":1,"grants":1,"keys":1,"audit":1,"sha256":HEX}}
//
// T is RFC 3339 with up to microseconds, UTC. Groups are not records of
// their own: a group exists by its devices and grants. A key line holds the
// version's fingerprint (HMAC-SHA256 under the key of a fixed label, as
// the PostgreSQL store records it), never the key: a dump is not
// encrypted. Enrolment codes are not dumped (one-time and short-lived).
// The end line's sha256 is the SHA-256 of every byte before it, so a
// truncated, cut or edited file is refused; loading checks the whole file
// inside the store's load transaction and so changes nothing when it is
// refused. A reader refuses a version it does not know.
package dump

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/protocol"
)

// Version is the format version this package writes and reads.
const Version = 1

// maxLine bounds one line: an audit record with every field at the
// protocol's limits takes a few KiB.
const maxLine = 1 << 20

// ErrFormat is wrapped by every error about a dump file's content; the
// message names the line.
var ErrFormat = errors.New("dump: bad file")

// Header is the first line of a dump.
type Header struct {
	Version int       `json:"version"`
	Profile string    `json:"profile"`
	Created time.Time `json:"created"`
	Source  string    `json:"source,omitempty"` // the backend dumped: bolt or postgres
	Audit   bool      `json:"audit"`
}

// Counts is the end line: how many records of each kind the dump holds.
type Counts struct {
	Users   int    `json:"users"`
	Devices int    `json:"devices"`
	Grants  int    `json:"grants"`
	Keys    int    `json:"keys"`
	Audit   int    `json:"audit"`
	SHA256  string `json:"sha256"`
}

type userLine struct {
	ID        string    `json:"id"`
	KV        uint8     `json:"kv"`
	Created   time.Time `json:"created"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

type deviceLine struct {
	ID        string    `json:"id"`
	KV        uint8     `json:"kv"`
	Group     string    `json:"group,omitempty"`
	Created   time.Time `json:"created"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

type grantLine struct {
	User  string `json:"user"`
	Group string `json:"group"`
}

type keyLine struct {
	Version     uint8     `json:"version"`
	Fingerprint string    `json:"fingerprint"`
	Created     time.Time `json:"created"`
	Retired     bool      `json:"retired,omitempty"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
}

type auditLine struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason,omitempty"`
	User      string    `json:"user,omitempty"`
	Device    string    `json:"device,omitempty"`
	Source    string    `json:"source,omitempty"`
	KVUser    uint8     `json:"kv_user,omitempty"`
	KVDevice  uint8     `json:"kv_device,omitempty"`
	LatencyUS int64     `json:"latency_us,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	Count     uint32    `json:"count,omitempty"`
}

// line is any line; exactly one member is set.
type line struct {
	Header *Header     `json:"tagauth_dump,omitempty"`
	User   *userLine   `json:"user,omitempty"`
	Device *deviceLine `json:"device,omitempty"`
	Grant  *grantLine  `json:"grant,omitempty"`
	Key    *keyLine    `json:"key,omitempty"`
	Audit  *auditLine  `json:"audit,omitempty"`
	End    *Counts     `json:"end,omitempty"`
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// KeysOf lists the versions of a key file as a store records them: their
// fingerprints, never the keys.
func KeysOf(f *keyfile.File) []store.KeyRecord {
	ks := make([]store.KeyRecord, len(f.Keys))
	for i, k := range f.Keys {
		ks[i] = store.KeyRecord{Version: k.Version, Created: k.Created,
			Fingerprint: postgres.KeyFingerprint(protocol.MasterKey{Version: k.Version, Key: k.Key})}
	}
	return ks
}

// Options configures Dump.
type Options struct {
	Profile protocol.Profile
	// Audit includes the audit log.
	Audit bool
	// Source names the backend in the header (bolt, postgres).
	Source string
	// Keys are the key versions written when the store records none (the
	// embedded store): normally KeysOf the gateway's key file.
	Keys []store.KeyRecord
	// Now is the header's time; zero: time.Now.
	Now time.Time
}

// Dump writes st's content to w in the dump format and returns what it
// wrote. On an error w holds a file that every reader refuses (no end
// line).
func Dump(ctx context.Context, st store.Dumper, w io.Writer, opt Options) (Counts, error) {
	if err := store.CheckProfile(opt.Profile); err != nil {
		return Counts{}, err
	}
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	dw := &writer{bw: bufio.NewWriterSize(w, 64<<10), h: sha256.New(), fallback: opt.Keys}
	dw.put(line{Header: &Header{Version: Version, Profile: opt.Profile.String(), Created: utc(now), Source: opt.Source, Audit: opt.Audit}})
	if err := st.Dump(ctx, opt.Audit, dw); err != nil {
		return Counts{}, fmt.Errorf("dump: %w", err)
	}
	dw.keysDone()
	if dw.err != nil {
		return Counts{}, fmt.Errorf("dump: writing: %w", dw.err)
	}
	c := dw.n
	c.SHA256 = hex.EncodeToString(dw.h.Sum(nil))
	dw.put(line{End: &c})
	if dw.err == nil {
		dw.err = dw.bw.Flush()
	}
	if dw.err != nil {
		return Counts{}, fmt.Errorf("dump: writing: %w", dw.err)
	}
	return c, nil
}

// writer is the store.DumpSink of Dump.
type writer struct {
	bw       *bufio.Writer
	h        hash.Hash
	buf      []byte
	n        Counts
	err      error
	fallback []store.KeyRecord
	keysOut  bool // the key section is over
}

func (w *writer) put(l line) {
	if w.err != nil {
		return
	}
	b, err := json.Marshal(l)
	if err != nil {
		w.err = err
		return
	}
	w.buf = append(append(w.buf[:0], b...), '\n')
	w.h.Write(w.buf)
	_, w.err = w.bw.Write(w.buf)
}

// keysDone closes the key section, writing the fallback keys when the
// store gave none.
func (w *writer) keysDone() {
	if w.keysOut {
		return
	}
	w.keysOut = true
	if w.n.Keys == 0 {
		for _, k := range w.fallback {
			w.key(k)
		}
	}
}

// User, Device, Grant, Key and Audit implement store.DumpSink: each
// writes one line.
func (w *writer) User(u store.User) error {
	w.n.Users++
	w.put(line{User: &userLine{ID: u.ID, KV: u.KV, Created: utc(u.Created), Revoked: u.Revoked, RevokedAt: utc(u.RevokedAt)}})
	return w.err
}

func (w *writer) Device(d store.Device) error {
	w.n.Devices++
	w.put(line{Device: &deviceLine{ID: d.ID, KV: d.KV, Group: d.Group, Created: utc(d.Created), Revoked: d.Revoked, RevokedAt: utc(d.RevokedAt)}})
	return w.err
}

func (w *writer) Grant(g store.Grant) error {
	w.n.Grants++
	w.put(line{Grant: &grantLine{User: g.User, Group: g.Group}})
	return w.err
}

func (w *writer) Key(k store.KeyRecord) error {
	w.key(k)
	return w.err
}

func (w *writer) key(k store.KeyRecord) {
	w.n.Keys++
	w.put(line{Key: &keyLine{Version: k.Version, Fingerprint: hex.EncodeToString(k.Fingerprint[:]), Created: utc(k.Created), Retired: k.Retired, RetiredAt: utc(k.RetiredAt)}})
}

func (w *writer) Audit(seq uint64, r store.AuditRecord) error {
	w.keysDone()
	w.n.Audit++
	w.put(line{Audit: &auditLine{Seq: seq, Time: utc(r.Time), Kind: r.Kind, Outcome: r.Outcome, Reason: r.Reason, User: r.User, Device: r.Device,
		Source: r.Source, KVUser: r.KVUser, KVDevice: r.KVDevice, LatencyUS: r.LatencyUS, Detail: r.Detail, Count: r.Count}})
	return w.err
}

// Reader reads a dump: Open reads the header and the registry, and the
// LoadSet it fills streams the audit records and checks the end line.
type Reader struct {
	br      *bufio.Reader
	h       hash.Hash
	lineNo  int
	Header  Header
	set     *store.LoadSet
	audit   int    // audit lines read
	lastSeq uint64 // the last audit line's seq
	pending *line  // the first line after the registry
	done    bool
}

// section orders the kinds of lines.
const (
	secHeader = iota
	secUser
	secDevice
	secGrant
	secKey
	secAudit
	secEnd
)

func (l *line) section() (int, int) {
	n, sec := 0, -1
	for i, set := range []bool{l.Header != nil, l.User != nil, l.Device != nil, l.Grant != nil, l.Key != nil, l.Audit != nil, l.End != nil} {
		if set {
			n++
			sec = i
		}
	}
	return sec, n
}

var sectionNames = []string{"header", "user", "device", "grant", "key", "audit", "end"}

func (r *Reader) errorf(format string, a ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrFormat, r.lineNo, fmt.Sprintf(format, a...))
}

// next reads one line; io.ErrUnexpectedEOF when the file ends before its
// end line.
func (r *Reader) next() (*line, []byte, error) {
	raw, err := r.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		r.lineNo++
		return nil, nil, r.errorf("over %d bytes", maxLine)
	case errors.Is(err, io.EOF) && len(raw) == 0:
		return nil, nil, fmt.Errorf("%w: the file ends after line %d without its end line: it is truncated", ErrFormat, r.lineNo)
	case errors.Is(err, io.EOF):
		r.lineNo++
		return nil, nil, r.errorf("the file is truncated inside this line")
	case err != nil:
		return nil, nil, fmt.Errorf("dump: reading line %d: %w", r.lineNo+1, err)
	}
	r.lineNo++
	var l line
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return nil, nil, r.errorf("%v", err)
	}
	if dec.More() {
		return nil, nil, r.errorf("more than one JSON value")
	}
	if _, n := l.section(); n != 1 {
		return nil, nil, r.errorf("want exactly one of tagauth_dump, user, device, grant, key, audit, end; found %d", n)
	}
	return &l, raw, nil
}

// Open reads the header and every user, device, grant and key line of the
// dump in rd, checking each.
func Open(rd io.Reader) (*Reader, *store.LoadSet, error) {
	r := &Reader{br: bufio.NewReaderSize(rd, maxLine), h: sha256.New()}
	l, raw, err := r.next()
	if err != nil {
		return nil, nil, err
	}
	if l.Header == nil {
		return nil, nil, r.errorf("not a tagauth dump: the first line must be its tagauth_dump header")
	}
	r.h.Write(raw)
	r.Header = *l.Header
	if r.Header.Version != Version {
		if r.Header.Version > Version {
			return nil, nil, r.errorf("dump format version %d is newer than this tagauth reads (%d): upgrade tagauth", r.Header.Version, Version)
		}
		return nil, nil, r.errorf("unknown dump format version %d", r.Header.Version)
	}
	p, err := protocol.ParseProfile(r.Header.Profile)
	if err != nil {
		return nil, nil, r.errorf("profile: %v", err)
	}
	set := &store.LoadSet{Profile: p}
	r.set = set
	sec := secHeader
	users := map[string]bool{}
	for {
		l, raw, err := r.next()
		if err != nil {
			return nil, nil, err
		}
		s, _ := l.section()
		if s < sec || s == secHeader {
			return nil, nil, r.errorf("a %s line after the %s lines (the order is header, users, devices, grants, keys, audit, end)", sectionNames[s], sectionNames[sec])
		}
		sec = s
		if s >= secAudit {
			r.pending = l
			if s == secEnd {
				if err := r.end(l.End); err != nil {
					return nil, nil, err
				}
				return r, set, nil
			}
			r.h.Write(raw)
			set.NextAudit = r.nextAudit
			return r, set, nil
		}
		r.h.Write(raw)
		switch s {
		case secUser:
			u := store.User{ID: l.User.ID, KV: l.User.KV, Created: l.User.Created, Revoked: l.User.Revoked, RevokedAt: l.User.RevokedAt}
			if err := store.CheckLoadedUser(&u); err != nil {
				return nil, nil, r.errorf("%v", err)
			}
			if n := len(set.Users); n > 0 && set.Users[n-1].ID >= u.ID {
				return nil, nil, r.errorf("user %q is out of order or repeated (users are sorted by id)", u.ID)
			}
			users[u.ID] = true
			set.Users = append(set.Users, u)
		case secDevice:
			d := store.Device{ID: l.Device.ID, KV: l.Device.KV, Group: l.Device.Group, Created: l.Device.Created, Revoked: l.Device.Revoked, RevokedAt: l.Device.RevokedAt}
			if err := store.CheckLoadedDevice(&d); err != nil {
				return nil, nil, r.errorf("%v", err)
			}
			if n := len(set.Devices); n > 0 && set.Devices[n-1].ID >= d.ID {
				return nil, nil, r.errorf("device %q is out of order or repeated (devices are sorted by id)", d.ID)
			}
			if p == protocol.Classic && users[d.ID] {
				return nil, nil, r.errorf("device %q is also a user, which the classic profile forbids", d.ID)
			}
			set.Devices = append(set.Devices, d)
		case secGrant:
			g := store.Grant{User: l.Grant.User, Group: l.Grant.Group}
			if err := store.CheckGrant(&g); err != nil {
				return nil, nil, r.errorf("grant: %v", err)
			}
			if n := len(set.Grants); n > 0 {
				prev := set.Grants[n-1]
				if prev.User > g.User || prev.User == g.User && prev.Group >= g.Group {
					return nil, nil, r.errorf("grant of %q to %q is out of order or repeated", g.Group, g.User)
				}
			}
			set.Grants = append(set.Grants, g)
		case secKey:
			k := store.KeyRecord{Version: l.Key.Version, Created: l.Key.Created, Retired: l.Key.Retired, RetiredAt: l.Key.RetiredAt}
			fp, err := hex.DecodeString(l.Key.Fingerprint)
			if err != nil || len(fp) != len(k.Fingerprint) {
				return nil, nil, r.errorf("key version %d: fingerprint is not 64 hex digits", k.Version)
			}
			copy(k.Fingerprint[:], fp)
			if err := store.CheckKeyRecord(&k); err != nil {
				return nil, nil, r.errorf("%v", err)
			}
			if n := len(set.Keys); n > 0 && set.Keys[n-1].Version >= k.Version {
				return nil, nil, r.errorf("key version %d is out of order or repeated", k.Version)
			}
			set.Keys = append(set.Keys, k)
		}
	}
}

// nextAudit is the LoadSet's NextAudit: it hands out the audit lines and,
// at the end line, checks the counts and the checksum.
func (r *Reader) nextAudit() (store.AuditRecord, error) {
	if r.done {
		return store.AuditRecord{}, io.EOF
	}
	l := r.pending
	if l == nil {
		var (
			raw []byte
			err error
		)
		if l, raw, err = r.next(); err != nil {
			return store.AuditRecord{}, err
		}
		if s, _ := l.section(); s == secAudit {
			r.h.Write(raw)
		}
	}
	r.pending = nil
	if l.End != nil {
		if err := r.end(l.End); err != nil {
			return store.AuditRecord{}, err
		}
		return store.AuditRecord{}, io.EOF
	}
	a := l.Audit
	if a == nil {
		s, _ := l.section()
		return store.AuditRecord{}, r.errorf("a %s line among the audit lines", sectionNames[s])
	}
	if r.audit > 0 && a.Seq <= r.lastSeq {
		return store.AuditRecord{}, r.errorf("audit record %d is out of order or repeated", a.Seq)
	}
	r.audit++
	r.lastSeq = a.Seq
	return store.AuditRecord{Time: a.Time, Kind: a.Kind, Outcome: a.Outcome, Reason: a.Reason, User: a.User, Device: a.Device,
		Source: a.Source, KVUser: a.KVUser, KVDevice: a.KVDevice, LatencyUS: a.LatencyUS, Detail: a.Detail, Count: a.Count}, nil
}

// end checks the end line against what was read.
func (r *Reader) end(c *Counts) error {
	r.done = true
	sum := hex.EncodeToString(r.h.Sum(nil))
	if c.SHA256 != sum {
		return r.errorf("checksum mismatch: the file was changed or damaged before this line")
	}
	got := Counts{Users: len(r.set.Users), Devices: len(r.set.Devices), Grants: len(r.set.Grants), Keys: len(r.set.Keys), Audit: r.audit, SHA256: sum}
	if *c != got {
		return r.errorf("the end line counts %+v, the file holds %+v", *c, got)
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		return r.errorf("data after the end line")
	}
	return nil
}

// Counts is what the reader has read so far; after a load that succeeded,
// the whole file.
func (r *Reader) Counts() Counts {
	return Counts{Users: len(r.set.Users), Devices: len(r.set.Devices), Grants: len(r.set.Grants), Keys: len(r.set.Keys), Audit: r.audit}
}

// Load reads the dump in rd into st, which must be empty, in one
// transaction: a file refused anywhere, up to its end line, changes
// nothing. When keys is not nil (the gateway's key file), the dump must be
// of its profile and every live key version of the dump must be in it
// with the same key, so that the cards and credentials issued before the
// dump log in after the load.
func Load(ctx context.Context, st store.Loader, rd io.Reader, keys *keyfile.File) (Header, Counts, error) {
	r, set, err := Open(rd)
	if err != nil {
		return Header{}, Counts{}, err
	}
	if keys != nil {
		if err := checkKeys(set, keys); err != nil {
			return r.Header, Counts{}, err
		}
	}
	if err := st.Load(ctx, set); err != nil {
		return r.Header, Counts{}, fmt.Errorf("load: %w", err)
	}
	return r.Header, r.Counts(), nil
}

// ErrKeyMismatch: the key file is not the one the dump's identities were
// issued under.
var ErrKeyMismatch = errors.New("dump: the key file does not match the dump")

func checkKeys(set *store.LoadSet, f *keyfile.File) error {
	if f.Profile != set.Profile {
		return fmt.Errorf("%w: the dump is of the %v profile, the key file of %v", ErrKeyMismatch, set.Profile, f.Profile)
	}
	have := map[uint8][32]byte{}
	for _, k := range KeysOf(f) {
		have[k.Version] = k.Fingerprint
	}
	for _, k := range set.Keys {
		if k.Retired {
			continue
		}
		fp, ok := have[k.Version]
		switch {
		case !ok:
			return fmt.Errorf("%w: it lacks key version %d, live in the dump (restore the key file from the gateway the dump came from)", ErrKeyMismatch, k.Version)
		case fp != k.Fingerprint:
			return fmt.Errorf("%w: its key version %d is another key than the dump's (cards issued under it would be refused)", ErrKeyMismatch, k.Version)
		}
	}
	return nil
}
