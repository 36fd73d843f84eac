package lockout_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/lockout/lockouttest"
)

func TestMemoryContract(t *testing.T) {
	lockouttest.Run(t, func(*testing.T) lockout.Store { return lockout.NewMemory(0) })
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// TestMemoryBound: a full store drops expired keys, then unlocked ones,
// and never a lock in force.
func TestMemoryBound(t *testing.T) {
	ctx := context.Background()
	m := lockout.NewMemory(4)
	for i := range 4 {
		if _, err := m.Fail(ctx, fmt.Sprint("u", i), t0, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Lock(ctx, "u0", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Still inside the window: a new key evicts one unlocked key.
	if _, err := m.Fail(ctx, "new", t0.Add(time.Second), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := m.LockedUntil(ctx, "u0", t0.Add(time.Second)); !ok {
		t.Fatal("eviction dropped a lock in force")
	}
	// Lock the rest: then nothing can be evicted.
	for _, k := range []string{"u1", "u2", "u3", "new"} {
		m.Lock(ctx, k, t0.Add(time.Hour)) // evicted ones come back as locks while room lasts
	}
	locks, _ := m.Locked(ctx, t0.Add(2*time.Second))
	if len(locks) != 4 {
		t.Fatalf("%d locks, want 4 (the bound)", len(locks))
	}
	if _, err := m.Fail(ctx, "another", t0.Add(2*time.Second), time.Minute); !errors.Is(err, lockout.ErrFull) {
		t.Fatalf("Fail with a table full of locks: %v, want ErrFull", err)
	}
	// Once the locks end they make room again.
	if _, err := m.Fail(ctx, "another", t0.Add(2*time.Hour), time.Minute); err != nil {
		t.Fatalf("after the locks ended: %v", err)
	}
}

// TestMemoryTracked: counts saturate at MaxTracked, memory stays bounded.
func TestMemoryTracked(t *testing.T) {
	ctx := context.Background()
	m := lockout.NewMemory(1)
	var n int
	for i := range lockout.MaxTracked + 10 {
		var err error
		if n, err = m.Fail(ctx, "u", t0.Add(time.Duration(i)*time.Millisecond), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n != lockout.MaxTracked {
		t.Fatalf("count %d, want saturation at %d", n, lockout.MaxTracked)
	}
}

func TestPolicyDefaults(t *testing.T) {
	p := lockout.Policy{}.WithDefaults()
	if p.MaxFailures != 5 || p.Window != 5*time.Minute || p.LockFor != 15*time.Minute {
		t.Fatalf("defaults %+v", p)
	}
	if s := (lockout.Policy{}).String(); s != "5 failures within 5m0s lock for 15m0s" {
		t.Fatalf("String = %q", s)
	}
	p = lockout.Policy{MaxFailures: 3}.WithDefaults()
	if p.MaxFailures != 3 || p.Window != lockout.DefaultWindow {
		t.Fatalf("partial policy %+v", p)
	}
}
