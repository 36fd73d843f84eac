// Package lockout locks a user identity after repeated failed logins, the
// way a Kerberos KDC does: Policy.MaxFailures failures within Policy.Window
// lock the identity for Policy.LockFor, until an operator unlocks it. The
// state lives behind Store so that gateway replicas can share it (Redis);
// NewMemory serves a single gateway.
package lockout

import (
	"context"
	"time"
)

// Policy says when an identity is locked. The zero value means the
// defaults: 5 failures in 5 minutes lock for 15 minutes.
type Policy struct {
	MaxFailures int
	Window      time.Duration
	LockFor     time.Duration
}

// Defaults of Policy.
const (
	DefaultMaxFailures = 5
	DefaultWindow      = 5 * time.Minute
	DefaultLockFor     = 15 * time.Minute
)

// Lock is one locked identity.
type Lock struct {
	Key   string
	Until time.Time
}

// Store keeps failure counts and locks. Implementations are safe for
// concurrent use, also across processes when shared; every method is one
// atomic operation on the backing service.
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
}
