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
	if p.UnfamiliarFailures <= 0 {
		p.UnfamiliarFailures = DefaultUnfamiliarFailures
	}
	if p.FamiliarFor <= 0 {
		p.FamiliarFor = DefaultFamiliarFor
	}
	if p.MaxFamiliar <= 0 {
		p.MaxFamiliar = DefaultMaxFamiliar
	}
	p.MaxFamiliar = min(p.MaxFamiliar, MaxFamiliarLimit)
	return p
}

// String describes the policy for logs and the operator guide.
func (p Policy) String() string {
	p = p.WithDefaults()
	return fmt.Sprintf("%d failures within %s lock for %s", p.MaxFailures, p.Window, p.LockFor)
}

// Describe is the whole policy in words, sources included.
func (p Policy) Describe() string {
	p = p.WithDefaults()
	return fmt.Sprintf("%d failures within %s from one source lock it for %s; %d from unfamiliar or unverified sources lock all of those; a successful login makes its source familiar for %s (%d per user)",
		p.MaxFailures, p.Window, p.LockFor, p.UnfamiliarFailures, p.FamiliarFor, p.MaxFamiliar)
}

// Familiarity is the policy's Familiarity for Store.Succeed.
func (p Policy) Familiarity() Familiarity {
	p = p.WithDefaults()
	return Familiarity{For: p.FamiliarFor, Max: p.MaxFamiliar}
}

// Decision is the lockout's answer to a login before it is verified.
type Decision struct {
	// Familiar tells whether the login's source is familiar to the user.
	Familiar bool
	// Scope is the lock that refuses the login (ScopeNone: none), in
	// force until Until.
	Scope Scope
	Until time.Time
}

// Locked tells whether the decision refuses the login.
func (d Decision) Locked() bool { return d.Scope != ScopeNone }

// Decide turns a Status of a login from src into a decision: the source's
// own lock refuses it; the unfamiliar lock refuses it unless src is
// familiar (an unverified source never is).
func Decide(st Status, src Source) Decision {
	d := Decision{Familiar: st.Familiar && src.Verified()}
	switch {
	case !st.SourceUntil.IsZero():
		d.Scope, d.Until = ScopeSource, st.SourceUntil
	case !d.Familiar && !st.UnfamiliarUntil.IsZero():
		d.Scope, d.Until = ScopeUnfamiliar, st.UnfamiliarUntil
	}
	return d
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
	return record(ctx, s, p, p.MaxFailures, key, now)
}

func record(ctx context.Context, s Store, p Policy, limit int, key string, now time.Time) (Outcome, error) {
	n, err := s.Fail(ctx, key, now, p.Window)
	if err != nil {
		return Outcome{}, err
	}
	o := Outcome{Failures: n}
	if n >= limit {
		o.Locked, o.Until = true, now.Add(p.LockFor)
		if err := s.Lock(ctx, key, o.Until); err != nil {
			return Outcome{Failures: n}, err
		}
	}
	return o, nil
}

// Failure is what RecordFailure did: the outcome of the source's counter
// and, for an unfamiliar source, of the user's unfamiliar budget.
type Failure struct {
	Source     Outcome
	Unfamiliar Outcome
	Counted    bool // the unfamiliar budget was charged
}

// RecordFailure counts a failed login of user from src under p: against
// (user, src) and, unless d says src is familiar, against the user's
// unfamiliar budget; each locks when it reaches its limit. Call it only
// for a login d did not refuse, so that locks never extend themselves.
func RecordFailure(ctx context.Context, s Store, p Policy, user string, src Source, d Decision, now time.Time) (Failure, error) {
	p = p.WithDefaults()
	var f Failure
	var err error
	if f.Source, err = record(ctx, s, p, p.MaxFailures, SourceKey(user, src.Key()), now); err != nil {
		return f, err
	}
	if !d.Familiar {
		f.Counted = true
		if f.Unfamiliar, err = record(ctx, s, p, p.UnfamiliarFailures, UnfamiliarKey(user), now); err != nil {
			return f, err
		}
	}
	return f, nil
}
