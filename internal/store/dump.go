package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

// This file holds the capabilities behind dump, load and online backup
// (internal/dump): small interfaces that each backend implements in a
// file of its own, so that the dump format knows no backend and a backend
// knows no format.

// ErrNotEmpty: a load was asked of a store that already holds identities,
// grants, key versions, enrolment codes or audit records. Loading merges
// nothing: the store is left as it was.
var ErrNotEmpty = errors.New("store: not empty")

// KeyRecord is what a store knows of one master-key version: never the
// key, only its fingerprint (see postgres.KeyFingerprint), so that a dump
// can say which key its cards were issued under without holding it.
type KeyRecord struct {
	Version     uint8
	Fingerprint [32]byte
	Created     time.Time
	Retired     bool
	RetiredAt   time.Time
}

// DumpSink receives a store's content, section by section in this order:
// users, devices, grants (each sorted as in Snapshot), key versions
// (oldest first), then audit records in sequence order. A non-nil error
// from a method stops the dump and is returned by Dump.
type DumpSink interface {
	User(User) error
	Device(Device) error
	Grant(Grant) error
	Key(KeyRecord) error
	Audit(seq uint64, r AuditRecord) error
}

// Dumper is implemented by stores that can hand their whole content to a
// DumpSink from one consistent read (one bbolt read transaction, one
// PostgreSQL REPEATABLE READ transaction) while they keep serving.
// Enrolment codes are not dumped: they are one-time and short-lived, and a
// dump file is not encrypted.
type Dumper interface {
	// Dump calls sink for every identity, grant and key version, and for
	// every audit record when audit is set.
	Dump(ctx context.Context, audit bool, sink DumpSink) error
}

// LoadSet is what a load writes: the registry in memory, and the audit
// records streamed, so that a long log need not fit in memory.
type LoadSet struct {
	// Profile decides the namespace rule the loaded identities must keep.
	Profile protocol.Profile
	Users   []User
	Devices []Device
	Grants  []Grant
	Keys    []KeyRecord
	// NextAudit returns the audit records in order, then io.EOF. Any
	// other error (a truncated or damaged file found late) aborts the
	// load, which then changes nothing. Nil: no audit records.
	NextAudit func() (AuditRecord, error)
}

// Loader is implemented by stores that can take a whole LoadSet into an
// empty store in one transaction: all of it or, on any error, nothing.
type Loader interface {
	// Load writes set. It returns ErrNotEmpty, changing nothing, when the
	// store holds anything already; otherwise the identities keep their
	// creation and revocation times and the audit records their order
	// (sequence numbers are given anew).
	Load(ctx context.Context, set *LoadSet) error
}

// FileSnapshotter is implemented by stores kept in one file (bolt) that
// can copy it, as a consistent snapshot, while they serve: the copy opens
// as the store did when the snapshot was taken, enrolment codes and audit
// included.
type FileSnapshotter interface {
	// WriteSnapshot writes the snapshot's size to size (once known, before
	// any byte goes to w) and then the file to w.
	WriteSnapshot(ctx context.Context, size func(int64) error, w io.Writer) error
}

// CheckLoadedUser validates a user for Load: as CheckUser, except that a
// loaded user may be revoked (a revocation time without Revoked is
// refused).
func CheckLoadedUser(u *User) error {
	if err := CheckID(u.ID); err != nil {
		return fmt.Errorf("user %q: %w", u.ID, err)
	}
	if err := checkLoaded(u.KV, u.Revoked, u.RevokedAt); err != nil {
		return fmt.Errorf("user %q: %w", u.ID, err)
	}
	return nil
}

// CheckLoadedDevice validates a device for Load, as CheckLoadedUser.
func CheckLoadedDevice(d *Device) error {
	if err := CheckID(d.ID); err != nil {
		return fmt.Errorf("device %q: %w", d.ID, err)
	}
	if err := CheckGroup(d.Group, false); err != nil {
		return fmt.Errorf("device %q: %w", d.ID, err)
	}
	if err := checkLoaded(d.KV, d.Revoked, d.RevokedAt); err != nil {
		return fmt.Errorf("device %q: %w", d.ID, err)
	}
	return nil
}

func checkLoaded(kv uint8, revoked bool, revokedAt time.Time) error {
	if kv == 0 {
		return fmt.Errorf("%w: key version 0", ErrInvalid)
	}
	if !revoked && !revokedAt.IsZero() {
		return fmt.Errorf("%w: a revocation time on an active identity", ErrInvalid)
	}
	return nil
}

// CheckKeyRecord validates a key version for Load.
func CheckKeyRecord(k *KeyRecord) error {
	switch {
	case k.Version == 0:
		return fmt.Errorf("%w: key version 0", ErrInvalid)
	case k.Fingerprint == [32]byte{}:
		return fmt.Errorf("%w: key version %d has no fingerprint", ErrInvalid, k.Version)
	case !k.Retired && !k.RetiredAt.IsZero():
		return fmt.Errorf("%w: key version %d: a retirement time on a live version", ErrInvalid, k.Version)
	}
	return nil
}
