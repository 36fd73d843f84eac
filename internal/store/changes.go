package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

// Change feed and key publication: what a gateway needs to keep its
// in-memory registry in line with the store, whoever wrote it. A
// PostgreSQL store shared by replicas feeds every replica the changes any
// of them (or an operator) commits; the embedded bbolt store feeds the
// changes of its own process. The gateway follows the feed the same way
// with either.

// ChangeKind says what a Change is about.
type ChangeKind uint8

// Kinds of Change.
const (
	// ChangeReset: a table was truncated, a notification could not be
	// read or a reader fell behind: reload everything (Snapshot).
	ChangeReset ChangeKind = iota
	ChangeUser
	ChangeDevice
	ChangeGrant
	ChangeKey
)

func (k ChangeKind) String() string {
	switch k {
	case ChangeUser:
		return "user"
	case ChangeDevice:
		return "device"
	case ChangeGrant:
		return "grant"
	case ChangeKey:
		return "key"
	}
	return "reset"
}

// Change names one entity whose state changed. It carries no state: the
// reader asks Store.Current for the state as it is now, so that changes
// read late or twice never bring an old state back.
type Change struct {
	Kind    ChangeKind
	ID      string // user or device id; a grant's user
	Group   string // a grant's group
	Version uint8  // a key version
}

// Feed delivers the changes committed after Store.Listen returned it, in
// commit order. It is used by one goroutine at a time.
type Feed interface {
	// Next waits for the next change. When ctx ends first and the feed
	// is still healthy it returns an error wrapping ErrFeedTimeout; any
	// other error means the feed is gone (Close it and Listen again).
	Next(ctx context.Context) (Change, error)
	// Ping checks that the feed still works (a round trip for a remote
	// store).
	Ping(ctx context.Context) error
	// Close stops the feed.
	Close()
}

// ErrFeedTimeout is returned by Feed.Next when its context ended while the
// feed stayed healthy.
var ErrFeedTimeout = errors.New("store: no change before the deadline")

// State is the current state of the entities named by some changes.
type State struct {
	Users       []User   // users that exist
	GoneUsers   []string // users named but not in the store
	Devices     []Device // devices that exist
	GoneDevices []string
	Grants      []Grant // grants that exist
	GoneGrants  []Grant
	// Keys is every key version, when a change named one.
	Keys []KeyVersion
}

// KeyVersion is what a store knows of one master-key version: never the
// key, only a fingerprint that lets gateways sharing the store check that
// their key files agree, and whether (and when) it was retired.
type KeyVersion struct {
	Version     uint8
	Fingerprint [32]byte
	Created     time.Time
	Retired     bool
	RetiredAt   time.Time
}

// KeyFingerprint is HMAC-SHA256 under the key of a fixed label and the
// version: equal for equal keys, and useless for finding the key.
func KeyFingerprint(mk protocol.MasterKey) [32]byte {
	m := hmac.New(sha256.New, mk.Key[:])
	m.Write([]byte("tagauth key fingerprint v1"))
	m.Write([]byte{mk.Version})
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// ErrKeyConflict: a key version is recorded with another fingerprint: two
// gateways sharing the store hold different keys under one version.
var ErrKeyConflict = errors.New("store: key version recorded with a different key")
