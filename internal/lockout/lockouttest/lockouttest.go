// Package lockouttest is the contract every lockout.Store passes: the
// in-memory store runs it, and so does every shared backend (Redis), so
// that the gateway cannot tell them apart.
package lockouttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
