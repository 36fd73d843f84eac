// Package store defines how the gateway persists its registry: users,
// devices, revocations, policy grants, one-time enrolment codes and the
// audit log.
//
// The gateway serves verifies from an in-memory registry
// (internal/registry); a Store is the durable copy behind it, written by
// the admin API and read back in full at start (Snapshot). Backends live in
// sub-packages (bolt, the embedded default; postgres for replicas) and all
// of them pass one contract suite, internal/store/storetest, so that the
// gateway cannot tell them apart.
//
// # What a Store holds, and what it never holds
//
// A Store holds identities and their standing, never a secret: master keys
// live in the key file (internal/keyfile), tags are recomputed from them,
// and enrolment codes are stored as SHA-256 hashes only, so a copy of the
// store lets nobody log in or enrol. Audit records hold outcomes and
// reasons, never passwords, keys, tags or raw protocol messages.
//
// # Semantics every backend keeps
//
//   - Identities are created once. A revoked identity stays in the store,
//     revoked, and its id cannot be created again, so that an old card or
//     credential never comes back to life under a new registration.
//   - Under the classic profile user and device identities share one
//     namespace (spec section 4): a user id equal to any device id, revoked
//     or not, is refused with ErrNamespace, and vice versa. Under hardened
//     equal ids are allowed.
//   - Times are kept to the microsecond: backends truncate finer parts
//     before storing and before comparing with AuditFilter bounds (do not
//     leave it to the database, PostgreSQL rounds). They may come back in
//     another time zone: compare them with time.Time.Equal.
//   - Lists (Snapshot, QueryAudit) come back in a fixed order: identities
//     and grants sorted bytewise by id, audit records by sequence number.
//
// All methods are safe for concurrent use, also by several processes when
// the backend is shared (postgres): the one-time and uniqueness rules hold
// across all of them.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tagauth/tagauth/protocol"
)

// Errors of the Store methods. Backends wrap them with context; test them
// with errors.Is.
var (
	// ErrExists: the identity (or enrolment code) is already in the store.
	ErrExists = errors.New("store: already exists")
	// ErrNotFound: no such identity or grant.
	ErrNotFound = errors.New("store: not found")
	// ErrNamespace: under the classic profile a user id may not equal a
	// device id (their tags would be equal, spec section 4).
	ErrNamespace = errors.New("store: classic profile: user and device identities share one namespace")
	// ErrCodeInvalid: the enrolment code is unknown, already used or
	// expired. The three are not told apart, so that a guesser learns
	// nothing.
	ErrCodeInvalid = errors.New("store: enrolment code is unknown, used or expired")
	// ErrFull: the disk (or quota) holding the store is full. Nothing was
	// changed; free space and retry.
	ErrFull = errors.New("store: no space left on the device holding the store")
	// ErrInvalid: a record is malformed (empty or too long id, NUL byte,
	// key version 0...). Nothing was changed.
	ErrInvalid = errors.New("store: invalid record")
)

// User is a registered user identity ID_i.
type User struct {
	ID        string
	KV        uint8 // key version of the card's Tag_i (1 under classic)
	Created   time.Time
	Revoked   bool
	RevokedAt time.Time
}

// Device is a provisioned device identity DID_j.
type Device struct {
	ID        string
	KV        uint8  // key version of Tag_j (1 under classic)
	Group     string // policy group; may be empty (then only "*" grants reach it)
	Created   time.Time
	Revoked   bool
	RevokedAt time.Time
}

// AllGroups in a Grant's Group lets the user log in to every device.
const AllGroups = "*"

// Grant lets User log in to every device of Group (AllGroups: every device).
// Neither the user nor the group has to exist yet: an operator grants
// access when creating the enrolment code, before the user registers.
type Grant struct {
	User  string
	Group string
}

// AuditRecord is one line of the audit log.
//
// It must never hold a secret: no password, master key, tag, card, session
// key, enrolment code (not even its hash) or raw message bytes. Reason and
// Detail are for precise, fixed reasons (protocol.Reason strings, "user
// revoked by admin"); values that came off the wire belong in the typed
// fields (User, Device, Source), which the reader escapes when it prints
// them.
type AuditRecord struct {
	Time      time.Time
	Kind      string // enrol, provision, revoke, key, verify, policy
	Outcome   string // e.g. ok, refused, error
	Reason    string
	User      string
	Device    string
	Source    string // network address the request came from
	KVUser    uint8
	KVDevice  uint8
	LatencyUS int64
	Detail    string
	// Count is the number of events the record stands for: a sample
	// record of refusals (which the gateway aggregates, never storing one
	// per packet) carries how many refusals it summarises. 0 and 1 both
	// mean one event; backends read one back as 0.
	Count uint32
}

// Events is the number of events r stands for (see Count).
func (r *AuditRecord) Events() uint64 {
	if r.Count == 0 {
		return 1
	}
	return uint64(r.Count)
}

// Audit query limits.
const (
	// DefaultAuditLimit is the page size when AuditFilter.Limit is <= 0.
	DefaultAuditLimit = 100
	// MaxAuditLimit caps AuditFilter.Limit.
	MaxAuditLimit = 1000
)

// AuditFilter selects audit records. Zero fields select everything.
type AuditFilter struct {
	Kind, User, Device, Outcome string    // exact match when not empty
	Since                       time.Time // Time >= Since when not zero
	Until                       time.Time // Time < Until when not zero
	// After is a cursor: only records with a sequence number greater than
	// After. Pass the last sequence number of one page to get the next.
	After uint64
	// Limit is the most records returned: <= 0 means DefaultAuditLimit,
	// and it is capped at MaxAuditLimit.
	Limit int
}

// PageSize is the number of records a query with this filter returns at
// most.
func (f AuditFilter) PageSize() int {
	switch {
	case f.Limit <= 0:
		return DefaultAuditLimit
	case f.Limit > MaxAuditLimit:
		return MaxAuditLimit
	}
	return f.Limit
}

// Match reports whether r passes the filter's field and time conditions
// (not After or Limit, which are about sequence numbers). Backends that
// filter in Go use it so that every backend agrees.
func (f AuditFilter) Match(r *AuditRecord) bool {
	switch {
	case f.Kind != "" && r.Kind != f.Kind,
		f.User != "" && r.User != f.User,
		f.Device != "" && r.Device != f.Device,
		f.Outcome != "" && r.Outcome != f.Outcome,
		!f.Since.IsZero() && r.Time.Before(f.Since),
		!f.Until.IsZero() && !r.Time.Before(f.Until):
		return false
	}
	return true
}

// Snapshot is the whole registry: what the gateway loads at start.
type Snapshot struct {
	Users   []User   // sorted by ID
	Devices []Device // sorted by ID
	Grants  []Grant  // sorted by User, then Group
}

// Store persists the registry. See the package documentation for the rules
// every implementation keeps. It is safe for concurrent use.
type Store interface {
	// CreateUser registers u, active. It returns ErrExists if the id is
	// taken (even by a revoked user), and under classic ErrNamespace if a
	// device has that id. u.Revoked must be false.
	CreateUser(ctx context.Context, u User, profile protocol.Profile) error
	// RevokeUser marks a user revoked at the given time. Revoking a revoked
	// user changes nothing (the first time is kept). Unknown: ErrNotFound.
	RevokeUser(ctx context.Context, id string, at time.Time) error
	// CreateDevice registers d, active, under the same rules as CreateUser.
	CreateDevice(ctx context.Context, d Device, profile protocol.Profile) error
	// RevokeDevice marks a device revoked, as RevokeUser.
	RevokeDevice(ctx context.Context, id string, at time.Time) error
	// Grant adds a policy grant. Granting an existing grant changes nothing.
	Grant(ctx context.Context, g Grant) error
	// Ungrant removes a grant; ErrNotFound if there is no such grant.
	Ungrant(ctx context.Context, g Grant) error
	// PutEnrolCode stores the SHA-256 hash of a one-time enrolment code for
	// user, valid until expires. ErrExists if the hash is already stored.
	PutEnrolCode(ctx context.Context, codeHash [32]byte, user string, expires time.Time) error
	// TakeEnrolCode consumes a code: it returns its user and deletes it, in
	// one atomic step, so that of any number of concurrent takes exactly one
	// succeeds. A code is expired from its expiry time on (now >= expires).
	// Unknown, used or expired: ErrCodeInvalid.
	TakeEnrolCode(ctx context.Context, codeHash [32]byte, now time.Time) (user string, err error)
	// AppendAudit appends records, all or none, and gives them increasing
	// sequence numbers (from 1; not necessarily contiguous).
	AppendAudit(ctx context.Context, recs ...AuditRecord) error
	// QueryAudit returns the records that match f in increasing sequence
	// order, with their sequence numbers (seqs[i] belongs to recs[i]).
	QueryAudit(ctx context.Context, f AuditFilter) (recs []AuditRecord, seqs []uint64, err error)
	// Snapshot returns every user, device and grant, consistently (one
	// transaction).
	Snapshot(ctx context.Context) (Snapshot, error)

	// Shared reports whether other processes may write the store (the
	// replicas sharing a database): then the registry a gateway holds is
	// only as fresh as its feed, and it refuses logins while the feed is
	// down. An embedded store is written by its own process only.
	Shared() bool
	// Listen returns a feed of the changes committed from now on (see
	// changes.go): every create, revoke, grant and ungrant, and every key
	// version published or retired.
	Listen(ctx context.Context) (Feed, error)
	// Current reads, consistently, the state of every entity the changes
	// name. A ChangeReset names nothing: reload with Snapshot.
	Current(ctx context.Context, changes []Change) (State, error)
	// PublishKeys records the versions of a gateway's key file: live
	// versions not yet recorded are added, and versions in retire are
	// marked retired (the first retirement time is kept), all or none.
	// If a live version is recorded with another fingerprint, nothing is
	// changed and the error wraps ErrKeyConflict, naming the versions.
	// It returns every version recorded after the call, oldest first.
	PublishKeys(ctx context.Context, live []KeyVersion, retire []uint8, at time.Time) ([]KeyVersion, error)
	// KeyVersions lists every key version recorded, oldest first.
	KeyVersions(ctx context.Context) ([]KeyVersion, error)
	// Close releases the store. Closing twice is not an error; other
	// methods fail after Close.
	Close() error
}

// AuditPruner is implemented by stores that can delete old audit records
// (both backends do): retention.
type AuditPruner interface {
	// PruneAudit deletes up to about limit of the oldest records whose
	// Time is before before, and returns how many it deleted; call it
	// again while it deletes any. It never deletes a record at or after
	// before. A backend may keep a few older records that share their
	// storage with newer ones (bolt's runs).
	PruneAudit(ctx context.Context, before time.Time, limit int) (int, error)
}

// AuditJournaled is implemented by stores that keep, in the transaction
// that appends audit records, how far into a gateway's audit journal
// their records go, so that replaying the journal after a crash stores
// every record once (both backends do).
type AuditJournaled interface {
	// AppendAuditJournaled is AppendAudit that also sets the mark of
	// journal (an opaque id, at most 64 bytes) to upTo, in the same
	// transaction; a mark never goes back. Marks are below 2^63.
	AppendAuditJournaled(ctx context.Context, journal string, upTo uint64, recs ...AuditRecord) error
	// AuditJournalMark returns journal's mark, 0 when it has none.
	AuditJournalMark(ctx context.Context, journal string) (uint64, error)
}

// CheckID validates a user or device id as spec section 2 defines
// identities: UTF-8, 1 to protocol.MaxIDLen bytes, no NUL. The error wraps
// ErrInvalid.
func CheckID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty identity", ErrInvalid)
	case len(id) > protocol.MaxIDLen:
		return fmt.Errorf("%w: identity of %d bytes (at most %d)", ErrInvalid, len(id), protocol.MaxIDLen)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: identity is not UTF-8", ErrInvalid)
	case strings.IndexByte(id, 0) >= 0:
		return fmt.Errorf("%w: identity contains a NUL byte", ErrInvalid)
	}
	return nil
}

// CheckGroup validates a device group (empty allowed) or, with grant set,
// a grant's group (not empty; AllGroups allowed). Groups follow the id
// rules otherwise. The error wraps ErrInvalid.
func CheckGroup(g string, grant bool) error {
	switch {
	case g == "" && !grant:
		return nil
	case g == AllGroups && grant:
		return nil
	case g == AllGroups:
		return fmt.Errorf("%w: group %q is reserved for grants to every group", ErrInvalid, AllGroups)
	}
	if err := CheckID(g); err != nil {
		return fmt.Errorf("group: %w", err)
	}
	return nil
}

// CheckUser validates a user for CreateUser.
func CheckUser(u *User) error {
	if err := CheckID(u.ID); err != nil {
		return err
	}
	return checkNew(u.KV, u.Revoked, u.RevokedAt)
}

// CheckDevice validates a device for CreateDevice.
func CheckDevice(d *Device) error {
	if err := CheckID(d.ID); err != nil {
		return err
	}
	if err := CheckGroup(d.Group, false); err != nil {
		return err
	}
	return checkNew(d.KV, d.Revoked, d.RevokedAt)
}

// CheckGrant validates a grant.
func CheckGrant(g *Grant) error {
	if err := CheckID(g.User); err != nil {
		return err
	}
	return CheckGroup(g.Group, true)
}

func checkNew(kv uint8, revoked bool, revokedAt time.Time) error {
	if kv == 0 {
		return fmt.Errorf("%w: key version 0", ErrInvalid)
	}
	if revoked || !revokedAt.IsZero() {
		return fmt.Errorf("%w: a new identity cannot be revoked", ErrInvalid)
	}
	return nil
}

// CheckProfile refuses a profile this build does not implement: the
// namespace rule depends on it.
func CheckProfile(p protocol.Profile) error {
	if !p.Valid() {
		return fmt.Errorf("%w: %v", ErrInvalid, p)
	}
	return nil
}
