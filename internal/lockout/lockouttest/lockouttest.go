// Package lockouttest is the contract every lockout.Store passes: the
// in-memory store runs it, and so does every shared backend (Redis), so
// that the gateway cannot tell them apart.
package lockouttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/lockout"
)

// Run runs the contract against stores made by open. A shared backend may
// hand every call the same store: each test uses keys of its own, made
// from the test's name and random bytes, so that runs never see each
// other's state.
func Run(t *testing.T, open func(t *testing.T) lockout.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s lockout.Store, key func(string) string)
	}{
		{"FailCountsWithinWindow", testFailWindow},
		{"SameInstantCountsTwice", testSameInstant},
		{"KeysIndependent", testKeysIndependent},
		{"LockAndExpiry", testLock},
		{"UnlockClearsLockAndFailures", testUnlock},
		{"LockedLists", testLocked},
		{"ConcurrentFailAtomic", testConcurrent},
		{"RecordLocksAtThreshold", testRecord},
		{"StatusReportsLocks", testStatus},
		{"SucceedMakesFamiliar", testFamiliar},
		{"FamiliarBounded", testFamiliarBound},
		{"SucceedClearsSourceFailures", testSucceedClears},
		{"UnlockUserClearsEverySource", testUnlockUser},
		{"SmartLockoutPolicy", testSmart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			var rnd [6]byte
			if _, err := rand.Read(rnd[:]); err != nil {
				t.Fatal(err)
			}
			prefix := tc.name + "-" + hex.EncodeToString(rnd[:]) + "-"
			tc.f(t, s, func(k string) string { return prefix + k })
		})
	}
}

// base is a fixed instant on a whole millisecond, so that backends keeping
// milliseconds compare equal.
var base = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

var ctx = context.Background()

func fail(t *testing.T, s lockout.Store, key string, at time.Time, window time.Duration) int {
	t.Helper()
	n, err := s.Fail(ctx, key, at, window)
	if err != nil {
		t.Fatalf("Fail(%s): %v", key, err)
	}
	return n
}

func lockedUntil(t *testing.T, s lockout.Store, key string, now time.Time) (time.Time, bool) {
	t.Helper()
	u, ok, err := s.LockedUntil(ctx, key, now)
	if err != nil {
		t.Fatalf("LockedUntil(%s): %v", key, err)
	}
	return u, ok
}

func testFailWindow(t *testing.T, s lockout.Store, key func(string) string) {
	k, w := key("alice"), 10*time.Second
	for i, want := range []int{1, 2, 3} {
		if n := fail(t, s, k, base.Add(time.Duration(i)*time.Second), w); n != want {
			t.Fatalf("failure %d: count %d, want %d", i+1, n, want)
		}
	}
	// At base+11.5s the window (base+1.5s, base+11.5s] holds base+2s and
	// this one.
	if n := fail(t, s, k, base.Add(11500*time.Millisecond), w); n != 2 {
		t.Fatalf("after the window slid: count %d, want 2", n)
	}
	// A failure exactly one window old is out: the window is (now-w, now].
	k2 := key("bob")
	fail(t, s, k2, base, w)
	if n := fail(t, s, k2, base.Add(w), w); n != 1 {
		t.Fatalf("failure exactly one window old still counted: %d", n)
	}
}

func testSameInstant(t *testing.T, s lockout.Store, key func(string) string) {
	k := key("alice")
	fail(t, s, k, base, time.Minute)
	if n := fail(t, s, k, base, time.Minute); n != 2 {
		t.Fatalf("two failures at one instant counted as %d", n)
	}
}

func testKeysIndependent(t *testing.T, s lockout.Store, key func(string) string) {
	a, b := key("alice"), key("bob")
	fail(t, s, a, base, time.Minute)
	fail(t, s, a, base.Add(time.Second), time.Minute)
	if n := fail(t, s, b, base.Add(2*time.Second), time.Minute); n != 1 {
		t.Fatalf("bob's first failure counted %d", n)
	}
	if err := s.Lock(ctx, a, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, ok := lockedUntil(t, s, b, base); ok {
		t.Fatal("locking alice locked bob")
	}
}

func testLock(t *testing.T, s lockout.Store, key func(string) string) {
	k := key("alice")
	if _, ok := lockedUntil(t, s, k, base); ok {
		t.Fatal("a key never locked is locked")
	}
	until := base.Add(10 * time.Second)
	if err := s.Lock(ctx, k, until); err != nil {
		t.Fatal(err)
	}
	u, ok := lockedUntil(t, s, k, base)
	if !ok || !u.Equal(until) {
		t.Fatalf("LockedUntil = %v %v, want %v true", u, ok, until)
	}
	if _, ok := lockedUntil(t, s, k, until.Add(-time.Millisecond)); !ok {
		t.Fatal("lock ended early")
	}
	if _, ok := lockedUntil(t, s, k, until); ok {
		t.Fatal("still locked at its end (a lock holds while now < until)")
	}
}

func testUnlock(t *testing.T, s lockout.Store, key func(string) string) {
	k := key("alice")
	for i := range 3 {
		fail(t, s, k, base.Add(time.Duration(i)*time.Second), time.Minute)
	}
	if err := s.Lock(ctx, k, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, ok := lockedUntil(t, s, k, base.Add(5*time.Second)); ok {
		t.Fatal("still locked after Unlock")
	}
	if n := fail(t, s, k, base.Add(5*time.Second), time.Minute); n != 1 {
		t.Fatalf("Unlock kept the failures: count %d, want 1", n)
	}
	// Unlocking a key that is not locked is not an error.
	if err := s.Unlock(ctx, key("nobody")); err != nil {
		t.Fatalf("Unlock of an unknown key: %v", err)
	}
}

func testLocked(t *testing.T, s lockout.Store, key func(string) string) {
	c, a, b := key("carol"), key("alice"), key("bob")
	for _, l := range []lockout.Lock{{Key: c, Until: base.Add(time.Hour)}, {Key: a, Until: base.Add(time.Minute)}, {Key: b, Until: base.Add(time.Second)}} {
		if err := s.Lock(ctx, l.Key, l.Until); err != nil {
			t.Fatal(err)
		}
	}
	mine := func(now time.Time) []lockout.Lock {
		all, err := s.Locked(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		// A shared backend may hold other tests' locks.
		return slices.DeleteFunc(all, func(l lockout.Lock) bool { return l.Key != a && l.Key != b && l.Key != c })
	}
	got := mine(base.Add(2 * time.Second))
	if len(got) != 2 || got[0].Key != a || got[1].Key != c || !got[0].Until.Equal(base.Add(time.Minute)) || !got[1].Until.Equal(base.Add(time.Hour)) {
		t.Fatalf("Locked = %+v, want alice then carol (sorted by key), bob expired", got)
	}
	if got := mine(base.Add(2 * time.Hour)); len(got) != 0 {
		t.Fatalf("Locked after every lock ended = %+v", got)
	}
}

func testConcurrent(t *testing.T, s lockout.Store, key func(string) string) {
	k := key("alice")
	const n = 40
	counts := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			counts[i], errs[i] = s.Fail(ctx, k, base.Add(time.Duration(i)*time.Millisecond), time.Hour)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(counts)
	for i, c := range counts {
		if c != i+1 {
			t.Fatalf("concurrent Fail counts %v: want each of 1..%d once (Fail must be atomic)", counts, n)
		}
	}
}

func testRecord(t *testing.T, s lockout.Store, key func(string) string) {
	k := key("alice")
	p := lockout.Policy{MaxFailures: 3, Window: time.Minute, LockFor: 10 * time.Minute}
	for i := range 3 {
		at := base.Add(time.Duration(i) * time.Second)
		o, err := lockout.Record(ctx, s, p, k, at)
		if err != nil {
			t.Fatal(err)
		}
		if o.Failures != i+1 || o.Locked != (i == 2) {
			t.Fatalf("failure %d: %+v", i+1, o)
		}
		if i == 2 && !o.Until.Equal(at.Add(10*time.Minute)) {
			t.Fatalf("lock until %v, want %v", o.Until, at.Add(10*time.Minute))
		}
	}
	u, ok := lockedUntil(t, s, k, base.Add(3*time.Second))
	if !ok || !u.Equal(base.Add(2*time.Second+10*time.Minute)) {
		t.Fatalf("after the third failure: locked %v until %v", ok, u)
	}
}

var (
	srcA = lockout.SourceOf([]byte{192, 0, 2, 1})
	srcB = lockout.SourceOf([]byte{192, 0, 2, 2})
)

func status(t *testing.T, s lockout.Store, user string, src lockout.Source, now time.Time) lockout.Status {
	t.Helper()
	st, err := s.Status(ctx, []byte(user), src, now)
	if err != nil {
		t.Fatalf("Status(%s, %v): %v", user, src, err)
	}
	return st
}

func succeed(t *testing.T, s lockout.Store, user string, src lockout.Source, now time.Time, f lockout.Familiarity) {
	t.Helper()
	if err := s.Succeed(ctx, []byte(user), src, now, f); err != nil {
		t.Fatalf("Succeed(%s, %v): %v", user, src, err)
	}
}

func testStatus(t *testing.T, s lockout.Store, key func(string) string) {
	u := key("alice")
	if st := status(t, s, u, srcA, base); st != (lockout.Status{}) {
		t.Fatalf("fresh user: %+v", st)
	}
	if err := s.Lock(ctx, lockout.SourceKey(u, srcA.Key()), base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, lockout.UnfamiliarKey(u), base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	st := status(t, s, u, srcA, base)
	if !st.SourceUntil.Equal(base.Add(time.Minute)) || !st.UnfamiliarUntil.Equal(base.Add(time.Hour)) {
		t.Fatalf("Status with both locks: %+v", st)
	}
	if st := status(t, s, u, srcB, base); !st.SourceUntil.IsZero() || st.UnfamiliarUntil.IsZero() {
		t.Fatalf("another source sees the first one's lock: %+v", st)
	}
	if st := status(t, s, u, srcA, base.Add(time.Minute)); !st.SourceUntil.IsZero() {
		t.Fatalf("source lock still reported at its end: %+v", st)
	}
	if st := status(t, s, key("bob"), srcA, base); st != (lockout.Status{}) {
		t.Fatalf("alice's locks reported for bob: %+v", st)
	}
}

func testFamiliar(t *testing.T, s lockout.Store, key func(string) string) {
	u := key("alice")
	f := lockout.Familiarity{For: time.Hour, Max: 4}
	succeed(t, s, u, srcA, base, f)
	if !status(t, s, u, srcA, base.Add(time.Minute)).Familiar {
		t.Fatal("a source is not familiar after a success")
	}
	if status(t, s, u, srcB, base.Add(time.Minute)).Familiar {
		t.Fatal("another source became familiar")
	}
	if status(t, s, key("bob"), srcA, base.Add(time.Minute)).Familiar {
		t.Fatal("alice's source is familiar to bob")
	}
	if status(t, s, u, srcA, base.Add(time.Hour)).Familiar {
		t.Fatal("still familiar after Familiarity.For")
	}
	succeed(t, s, u, lockout.Unverified, base, f)
	if status(t, s, u, lockout.Unverified, base.Add(time.Minute)).Familiar {
		t.Fatal("the unverified source became familiar")
	}
	// A later success renews.
	succeed(t, s, u, srcA, base.Add(50*time.Minute), f)
	if !status(t, s, u, srcA, base.Add(90*time.Minute)).Familiar {
		t.Fatal("a second success did not renew the source")
	}
}

func testFamiliarBound(t *testing.T, s lockout.Store, key func(string) string) {
	u := key("alice")
	f := lockout.Familiarity{For: time.Hour, Max: 3}
	srcs := make([]lockout.Source, 5)
	for i := range srcs {
		srcs[i] = lockout.SourceOf([]byte(fmt.Sprint("client-", i)))
		succeed(t, s, u, srcs[i], base.Add(time.Duration(i)*time.Second), f)
	}
	now := base.Add(10 * time.Second)
	for i, src := range srcs {
		if got, want := status(t, s, u, src, now).Familiar, i >= 2; got != want {
			t.Fatalf("source %d familiar %v, want %v (the 3 most recent of 5)", i, got, want)
		}
	}
}

func testSucceedClears(t *testing.T, s lockout.Store, key func(string) string) {
	u := key("alice")
	ka, kb := lockout.SourceKey(u, srcA.Key()), lockout.SourceKey(u, srcB.Key())
	for i := range 3 {
		fail(t, s, ka, base.Add(time.Duration(i)*time.Second), time.Hour)
		fail(t, s, kb, base.Add(time.Duration(i)*time.Second), time.Hour)
	}
	succeed(t, s, u, srcA, base.Add(5*time.Second), lockout.Familiarity{For: time.Hour, Max: 8})
	if n := fail(t, s, ka, base.Add(6*time.Second), time.Hour); n != 1 {
		t.Fatalf("after a success from the source: count %d, want 1", n)
	}
	if n := fail(t, s, kb, base.Add(6*time.Second), time.Hour); n != 4 {
		t.Fatalf("a success from another source cleared this one: count %d, want 4", n)
	}
}

func testUnlockUser(t *testing.T, s lockout.Store, key func(string) string) {
	u, other := key("al"), key("alice") // one id a prefix of the other
	keys := []string{lockout.SourceKey(u, srcA.Key()), lockout.SourceKey(u, lockout.Unverified.Key()), lockout.UnfamiliarKey(u), u}
	for _, k := range append(keys, lockout.SourceKey(other, srcA.Key())) {
		fail(t, s, k, base, time.Hour)
		fail(t, s, k, base.Add(time.Second), time.Hour)
		if err := s.Lock(ctx, k, base.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	was, err := s.UnlockUser(ctx, u, base.Add(2*time.Second))
	if err != nil || !was {
		t.Fatalf("UnlockUser = %v, %v; want true", was, err)
	}
	for _, k := range keys {
		if _, ok := lockedUntil(t, s, k, base.Add(3*time.Second)); ok {
			t.Fatalf("key %q still locked after UnlockUser", k)
		}
		if n := fail(t, s, k, base.Add(3*time.Second), time.Hour); n != 1 {
			t.Fatalf("key %q kept its failures: count %d, want 1", k, n)
		}
	}
	ko := lockout.SourceKey(other, srcA.Key())
	if _, ok := lockedUntil(t, s, ko, base.Add(3*time.Second)); !ok {
		t.Fatal("unlocking one user unlocked another whose id it prefixes")
	}
	if n := fail(t, s, ko, base.Add(3*time.Second), time.Hour); n != 3 {
		t.Fatalf("the other user's failures changed: count %d, want 3", n)
	}
	if was, err := s.UnlockUser(ctx, key("nobody"), base); err != nil || was {
		t.Fatalf("UnlockUser of an unknown user = %v, %v", was, err)
	}
}

// testSmart runs the policy over the store: a familiar source keeps
// working while unfamiliar ones exhaust the budget.
func testSmart(t *testing.T, s lockout.Store, key func(string) string) {
	u := key("alice")
	p := lockout.Policy{MaxFailures: 3, Window: time.Minute, LockFor: 10 * time.Minute, UnfamiliarFailures: 4, FamiliarFor: time.Hour, MaxFamiliar: 8}
	home := srcA
	succeed(t, s, u, home, base, p.Familiarity())
	decide := func(src lockout.Source, at time.Time) lockout.Decision {
		return lockout.Decide(status(t, s, u, src, at), src)
	}
	now := base.Add(time.Second)
	// Four outsiders, one failure each: the budget is spent.
	for i := range 4 {
		src := lockout.SourceOf([]byte{203, 0, 113, byte(i)})
		d := decide(src, now)
		if d.Locked() || d.Familiar {
			t.Fatalf("outsider %d: %+v", i, d)
		}
		f, err := lockout.RecordFailure(ctx, s, p, u, src, d, now)
		if err != nil {
			t.Fatal(err)
		}
		if f.Unfamiliar.Failures != i+1 || f.Unfamiliar.Locked != (i == 3) || !f.Counted {
			t.Fatalf("outsider %d: %+v", i, f)
		}
	}
	if d := decide(lockout.SourceOf([]byte{198, 51, 100, 9}), now); d.Scope != lockout.ScopeUnfamiliar || !d.Until.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("a new source after the budget: %+v, want the unfamiliar lock", d)
	}
	if d := decide(lockout.Unverified, now); d.Scope != lockout.ScopeUnfamiliar {
		t.Fatalf("an unverified login after the budget: %+v", d)
	}
	d := decide(home, now)
	if d.Locked() || !d.Familiar {
		t.Fatalf("the familiar source: %+v, want open and familiar", d)
	}
	// The familiar source has its own counter, not charged to the budget.
	for i := range 3 {
		f, err := lockout.RecordFailure(ctx, s, p, u, home, d, now)
		if err != nil {
			t.Fatal(err)
		}
		if f.Counted || f.Source.Locked != (i == 2) {
			t.Fatalf("familiar failure %d: %+v", i, f)
		}
	}
	if d := decide(home, now); d.Scope != lockout.ScopeSource {
		t.Fatalf("familiar source after its own failures: %+v, want a source lock", d)
	}
}
