package lockout

import (
	"context"
	"fmt"
	"time"
)

// WithDefaults returns p with its zero fields set to the defaults.
func (p Policy) WithDefaults() Policy {
	if p.MaxFailures <= 0 {
		p.MaxFailures = DefaultMaxFailures
	}
	if p.Window <= 0 {
		p.Window = DefaultWindow
	}
	if p.LockFor <= 0 {
		p.LockFor = DefaultLockFor
	}
	return p
}

// String describes the policy for logs and the operator guide.
func (p Policy) String() string {
	p = p.WithDefaults()
	return fmt.Sprintf("%d failures within %s lock for %s", p.MaxFailures, p.Window, p.LockFor)
}

// Outcome is what Record did.
type Outcome struct {
	// Failures is the number of failures of the key within the window,
	// this one included.
	Failures int
	// Locked is true when this failure reached Policy.MaxFailures and
	// locked the key; Until is then the end of the lock.
	Locked bool
	Until  time.Time
}

// Record counts one failure of key at now under policy p and locks the key
// when the count reaches p.MaxFailures. It does not look at an existing
// lock: callers check LockedUntil first and do not count failures of a
// locked key, so that a lock is never extended by the attempts it refuses.
func Record(ctx context.Context, s Store, p Policy, key string, now time.Time) (Outcome, error) {
	p = p.WithDefaults()
	n, err := s.Fail(ctx, key, now, p.Window)
	if err != nil {
		return Outcome{}, err
	}
	o := Outcome{Failures: n}
	if n >= p.MaxFailures {
		o.Locked, o.Until = true, now.Add(p.LockFor)
		if err := s.Lock(ctx, key, o.Until); err != nil {
			return Outcome{Failures: n}, err
		}
	}
	return o, nil
}
