package redisstate_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/lockout/lockouttest"
	"github.com/tagauth/tagauth/internal/redisstate"
)

var l0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func lt(ms int) time.Time { return l0.Add(time.Duration(ms) * time.Millisecond) }

// TestLockoutLikeMemory runs one script of operations on the Redis store
// and on lockout.NewMemory and requires the same answers: the shared store
// keeps the single gateway's semantics.
func TestLockoutLikeMemory(t *testing.T) {
	s, _ := fresh(t, redisstate.Options{})
	stores := map[string]lockout.Store{"redis": s.Lockout(), "memory": lockout.NewMemory(0)}
	type result struct {
		n      int
		until  time.Time
		locked bool
		locks  []lockout.Lock
	}
	const w = 5 * time.Minute
	steps := []struct {
		name string
		do   func(st lockout.Store) (result, error)
	}{
		{"fail alice", func(st lockout.Store) (result, error) {
			n, err := st.Fail(ctx, "alice", lt(0), w)
			return result{n: n}, err
		}},
		{"fail alice same instant", func(st lockout.Store) (result, error) {
			n, err := st.Fail(ctx, "alice", lt(0), w)
			return result{n: n}, err
		}},
		{"fail alice later", func(st lockout.Store) (result, error) {
			n, err := st.Fail(ctx, "alice", lt(60_000), w)
			return result{n: n}, err
		}},
		{"fail bob", func(st lockout.Store) (result, error) {
			n, err := st.Fail(ctx, "bob", lt(60_000), w)
			return result{n: n}, err
		}},
		// Exactly one window after the first two, they fall out: (now-w, now].
		{"fail alice at window edge", func(st lockout.Store) (result, error) {
			n, err := st.Fail(ctx, "alice", lt(300_000), w)
			return result{n: n}, err
		}},
		{"not locked", func(st lockout.Store) (result, error) {
			u, ok, err := st.LockedUntil(ctx, "alice", lt(300_000))
			return result{until: u, locked: ok}, err
		}},
		{"lock alice", func(st lockout.Store) (result, error) { return result{}, st.Lock(ctx, "alice", lt(900_000)) }},
		{"lock zed", func(st lockout.Store) (result, error) { return result{}, st.Lock(ctx, "zed", lt(400_000)) }},
		{"lock bob", func(st lockout.Store) (result, error) { return result{}, st.Lock(ctx, "bob", lt(800_000)) }},
		{"alice locked", func(st lockout.Store) (result, error) {
			u, ok, err := st.LockedUntil(ctx, "alice", lt(899_999))
			return result{until: u, locked: ok}, err
		}},
		{"alice lock ends at until", func(st lockout.Store) (result, error) {
			u, ok, err := st.LockedUntil(ctx, "alice", lt(900_000))
			return result{until: u, locked: ok}, err
		}},
		{"locked list, sorted", func(st lockout.Store) (result, error) {
			l, err := st.Locked(ctx, lt(300_001))
			return result{locks: l}, err
		}},
		{"locked list after zed's end", func(st lockout.Store) (result, error) {
			l, err := st.Locked(ctx, lt(400_000))
			return result{locks: l}, err
		}},
		{"unlock alice", func(st lockout.Store) (result, error) { return result{}, st.Unlock(ctx, "alice") }},
		{"alice unlocked", func(st lockout.Store) (result, error) {
			u, ok, err := st.LockedUntil(ctx, "alice", lt(300_002))
			return result{until: u, locked: ok}, err
		}},
		{"unlock cleared the failures", func(st lockout.Store) (result, error) {
			n, err := st.Fail(ctx, "alice", lt(300_003), w)
			return result{n: n}, err
		}},
		{"unlock unknown", func(st lockout.Store) (result, error) { return result{}, st.Unlock(ctx, "nobody") }},
		{"relock shortens", func(st lockout.Store) (result, error) {
			if err := st.Lock(ctx, "bob", lt(500_000)); err != nil {
				return result{}, err
			}
			u, ok, err := st.LockedUntil(ctx, "bob", lt(300_000))
			return result{until: u, locked: ok}, err
		}},
	}
	for _, step := range steps {
		var got [2]result
		for i, name := range []string{"redis", "memory"} {
			r, err := step.do(stores[name])
			if err != nil {
				t.Fatalf("%s: %s: %v", step.name, name, err)
			}
			got[i] = r
		}
		r, m := got[0], got[1]
		if r.n != m.n || r.locked != m.locked || !r.until.Equal(m.until) ||
			!slices.EqualFunc(r.locks, m.locks, func(a, b lockout.Lock) bool { return a.Key == b.Key && a.Until.Equal(b.Until) }) {
			t.Fatalf("%s: redis %+v, memory %+v", step.name, r, m)
		}
	}
}

// TestLockoutSaturates: the failure set is bounded like the memory store's.
func TestLockoutSaturates(t *testing.T) {
	s, _ := fresh(t, redisstate.Options{})
	l := s.Lockout()
	var n int
	var err error
	for i := range lockout.MaxTracked + 10 {
		if n, err = l.Fail(ctx, "flood", lt(i), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n != lockout.MaxTracked {
		t.Fatalf("count after %d failures: %d, want %d", lockout.MaxTracked+10, n, lockout.MaxTracked)
	}
	if c, _ := s.Client().ZCard(ctx, s.Prefix()+"lock:fail:flood").Result(); c != lockout.MaxTracked {
		t.Fatalf("failure set holds %d, want %d", c, lockout.MaxTracked)
	}
}

// TestLockoutSharedAcrossReplicas: failures recorded by several replicas
// at once are all counted, and a lock set by one is seen by another.
func TestLockoutSharedAcrossReplicas(t *testing.T) {
	s, u := fresh(t, redisstate.Options{})
	other := open(t, u, redisstate.Options{})
	const each = 25
	var wg sync.WaitGroup
	for _, st := range []*redisstate.State{s, other} {
		for g := range 4 {
			wg.Go(func() {
				for i := range each {
					if _, err := st.Lockout().Fail(ctx, "mallory", lt(g*each+i), time.Hour); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	n, err := s.Lockout().Fail(ctx, "mallory", lt(1000), time.Hour)
	if err != nil || n != 2*4*each+1 {
		t.Fatalf("count after %d concurrent failures and one more: %d, %v", 2*4*each, n, err)
	}
	res, err := lockout.Record(ctx, other.Lockout(), lockout.Policy{MaxFailures: 3}, "eve", lt(0))
	if err != nil || res.Locked {
		t.Fatalf("first failure: %+v %v", res, err)
	}
	lockout.Record(ctx, s.Lockout(), lockout.Policy{MaxFailures: 3}, "eve", lt(1))
	res, err = lockout.Record(ctx, other.Lockout(), lockout.Policy{MaxFailures: 3}, "eve", lt(2))
	if err != nil || !res.Locked {
		t.Fatalf("third failure across replicas: %+v %v, want locked", res, err)
	}
	until, ok, err := s.Lockout().LockedUntil(ctx, "eve", lt(3))
	if err != nil || !ok || !until.Equal(res.Until) {
		t.Fatalf("lock seen by the other replica: %v %v %v, want until %v", until, ok, err, res.Until)
	}
	locks, err := s.Lockout().Locked(ctx, lt(3))
	if err != nil || len(locks) != 1 || locks[0].Key != "eve" {
		t.Fatalf("Locked: %+v %v", locks, err)
	}
}

// TestLockoutContract runs the contract every lockout.Store passes.
func TestLockoutContract(t *testing.T) {
	s, _ := fresh(t, redisstate.Options{})
	lockouttest.Run(t, func(*testing.T) lockout.Store { return s.Lockout() })
}
