// Package lockout bounds online password guessing without letting an
// outsider lock users out ("smart lockout", as large identity services do
// it). Failed logins are counted per (user, source), where the source is
// the client address a device verified by return routability (or a
// broker's authenticated client), so that failures an outsider provokes
// from its own sources never lock the user out of the sources the user
// really logs in from:
//
//   - Policy.MaxFailures failures of a user from one source within
//     Policy.Window lock that (user, source) for Policy.LockFor.
//   - A successful login makes its source familiar to the user for
//     Policy.FamiliarFor (the Policy.MaxFamiliar most recent per user) and
//     clears that source's failures.
//   - Failures from sources not familiar to the user, and from unverified
//     ones (no source given), also count against the user's unfamiliar
//     budget: Policy.UnfamiliarFailures of them within Policy.Window lock
//     every unfamiliar and unverified source of the user for
//     Policy.LockFor, while familiar sources keep their own counters.
//
// An operator's unlock clears every lock and failure of a user. The state
// lives behind Store so that gateway replicas can share it (Redis);
// NewMemory serves a single gateway.
package lockout

import (
	"context"
	"strings"
	"time"
)

// Policy says when a user is locked, and from where. The zero value means
// the defaults: 5 failures from one source in 5 minutes lock that source
// for 15 minutes; 10 failures from unfamiliar sources in 5 minutes lock
// all of them for 15 minutes; a source is familiar for 30 days after a
// successful login from it, 8 sources per user at most.
type Policy struct {
	MaxFailures int
	Window      time.Duration
	LockFor     time.Duration
	// UnfamiliarFailures is the user's unfamiliar budget: failures from
	// sources not familiar to the user (unverified ones included) within
	// Window that lock those sources.
	UnfamiliarFailures int
	// FamiliarFor is how long a successful login makes its source
	// familiar to the user.
	FamiliarFor time.Duration
	// MaxFamiliar is how many familiar sources a user keeps (the most
	// recent ones).
	MaxFamiliar int
}

// Defaults of Policy.
const (
	DefaultMaxFailures        = 5
	DefaultWindow             = 5 * time.Minute
	DefaultLockFor            = 15 * time.Minute
	DefaultUnfamiliarFailures = 10
	DefaultFamiliarFor        = 30 * 24 * time.Hour
	DefaultMaxFamiliar        = 8
	// MaxFamiliarLimit bounds Policy.MaxFamiliar.
	MaxFamiliarLimit = 64
)

// Lock is one locked key.
type Lock struct {
	Key   string
	Until time.Time
}

// Status is what a store knows of a login of a user from a source before
// it is verified: the locks in force that could refuse it (zero times
// when none) and whether the source is familiar to the user.
type Status struct {
	Familiar        bool
	SourceUntil     time.Time // lock of (user, source)
	UnfamiliarUntil time.Time // lock of the user's unfamiliar sources
}

// Store keeps failure counts, locks and familiar sources.
// Implementations are safe for concurrent use, also across processes when
// shared; every method is one atomic operation on the backing service.
//
// Keys are strings; the key of a user's counter is the user id, a NUL
// byte (never in an id) and a suffix (SourceKey, UnfamiliarKey), so that a
// store can tell a key's user (UserOf) to unlock all of a user at once.
type Store interface {
	// Fail records one failure of key at now and returns how many failures
	// of key fall in the window (now-window, now].
	Fail(ctx context.Context, key string, now time.Time, window time.Duration) (int, error)
	// Lock locks key until the given time.
	Lock(ctx context.Context, key string, until time.Time) error
	// LockedUntil reports whether key is locked at now, and until when.
	LockedUntil(ctx context.Context, key string, now time.Time) (time.Time, bool, error)
	// Unlock removes key's lock and its failures.
	Unlock(ctx context.Context, key string) error
	// Locked lists the keys locked at now.
	Locked(ctx context.Context, now time.Time) ([]Lock, error)

	// Status reports, in one read, the locks of SourceKey(user,
	// src.Key()) and UnfamiliarKey(user) in force at now and whether src
	// is familiar to user at now. The gateway calls it before every
	// verify, with user aliasing the request: it must not keep user, and
	// the in-memory store allocates nothing (hence bytes and a Source
	// value, which an interface call does not move to the heap).
	Status(ctx context.Context, user []byte, src Source, now time.Time) (Status, error)
	// Succeed records a successful login of user from src at now: the
	// failures of SourceKey(user, src.Key()) are cleared and, if src is
	// not Unverified, it is familiar to user until now+f.For; the user
	// keeps the f.Max sources familiar the longest. Like Status, it must
	// not keep user.
	Succeed(ctx context.Context, user []byte, src Source, now time.Time, f Familiarity) error
	// UnlockUser removes every lock of user's keys and discounts every
	// failure of them recorded at or before now. It reports whether a lock
	// was in force at now.
	UnlockUser(ctx context.Context, user string, now time.Time) (bool, error)
}

// Familiarity is how Store.Succeed remembers sources.
type Familiarity struct {
	For time.Duration
	Max int
}

// Key suffixes after the NUL: a source's key (Source.Key) starts with
// one of '4', '6', 'n', 'u'; the unfamiliar budget is "*".
const (
	sep           = "\x00"
	unfamiliarTag = "*"
)

// SourceKey is the key of user's failures from the source whose key
// (Source.Key) is source.
func SourceKey(user, source string) string { return user + sep + source }

// UnfamiliarKey is the key of user's unfamiliar budget.
func UnfamiliarKey(user string) string { return user + sep + unfamiliarTag }

// UserOf is the user of a key: the part before the first NUL, or the
// whole key (a key from before sources were counted).
func UserOf(key string) string {
	u, _, _ := strings.Cut(key, sep)
	return u
}

// Scope says which of a user's logins a lock refuses.
type Scope uint8

// Scopes of a lock.
const (
	ScopeNone       Scope = iota
	ScopeSource           // logins from one source
	ScopeUnfamiliar       // logins from every source not familiar to the user
	ScopeUser             // every login (a lock stored by an older version)
)

func (s Scope) String() string {
	switch s {
	case ScopeSource:
		return "source"
	case ScopeUnfamiliar:
		return "unfamiliar sources"
	case ScopeUser:
		return "all sources"
	}
	return "none"
}

// ParseKey splits a key into its user, the scope of a lock on it and, for
// ScopeSource, the source. ok is false for a key no Store user makes.
func ParseKey(key string) (user string, scope Scope, src Source, ok bool) {
	u, suffix, found := strings.Cut(key, sep)
	switch {
	case !found:
		return u, ScopeUser, Source{}, true
	case suffix == unfamiliarTag:
		return u, ScopeUnfamiliar, Source{}, true
	}
	src, ok = sourceFromKey(suffix)
	return u, ScopeSource, src, ok
}
