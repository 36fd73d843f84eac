package testenv

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLockedBuffer(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
			}
		})
	}
	// Read while the writers write: the race detector checks the lock.
	for range 10 {
		_ = b.String()
	}
	wg.Wait()
	if got := len(b.String()); got != 8*100*2 {
		t.Fatalf("%d bytes written, want %d", got, 8*100*2)
	}
	b.Reset()
	if b.String() != "" {
		t.Fatalf("after Reset: %q", b.String())
	}
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 5 {
			n.Add(1)
		}
	}()
	Eventually(t, "five increments", func() bool { return n.Load() == 5 })
}

// fatalRecorder is a testing.TB whose Fatalf records instead of ending
// the test, so that a failing wait can be checked.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }
func (f *fatalRecorder) Helper()                           {}

func TestEventuallyFailsAtTheBound(t *testing.T) {
	r := &fatalRecorder{TB: t}
	calls := 0
	start := time.Now()
	EventuallyWithin(r, 30*time.Millisecond, "never", func() bool { calls++; return false })
	if r.msg != "still waiting after 30ms for never" {
		t.Fatalf("message %q", r.msg)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("gave up after %v, before its bound", el)
	}
	if calls < 2 {
		t.Fatalf("cond checked %d times; it must be polled", calls)
	}
}

func TestEventuallyChecksOnceMoreAtTheDeadline(t *testing.T) {
	r := &fatalRecorder{TB: t}
	start := time.Now()
	// True only from the deadline on: the last check must see it.
	EventuallyWithin(r, 20*time.Millisecond, "late", func() bool { return time.Since(start) >= 20*time.Millisecond })
	if r.msg != "" {
		t.Fatalf("failed although the condition held at the deadline: %s", r.msg)
	}
}
