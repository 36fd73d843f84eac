package testenv

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// LockedBuffer is a bytes.Buffer that the code under test may write from
// its own goroutines (a logger, a serving loop) while the test reads it:
// the one log sink of every test that checks what was logged.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p under the lock.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns a copy of what has been written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Reset forgets what has been written, so that a test can look only at
// what comes after a step.
func (l *LockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

// Wait is how long Eventually waits: long enough for a loaded CI machine,
// and a bound, so that a condition that never comes fails the test
// instead of hanging it.
const Wait = 10 * time.Second

// Eventually polls cond until it holds, for at most Wait; otherwise it
// fails t with what (what the test was waiting for). It is for a
// condition that some other goroutine or process makes true and that
// offers nothing to block on: a counter, a file, a log line.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Wait, what, cond)
}

// EventuallyWithin is Eventually with its own bound d: a wait known to be
// longer than Wait (a process start, a reconnection), or a bound that is
// the behaviour under test (a change reaching every replica within a
// second). It returns how long cond took to hold, for the test's log.
func EventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	if !Poll(t.Context(), d, cond) {
		t.Fatalf("still waiting after %v for %s", d, what)
	}
	return time.Since(start)
}

// Poll reports whether cond came true within d, for a caller whose failure
// message needs what it sees at the deadline. It checks at once, then at
// intervals that grow from 1 ms to 50 ms: a quick condition costs little
// latency, a slow one little CPU. It gives up early when ctx ends (pass
// t.Context()).
func Poll(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	step := time.Millisecond
	for {
		if cond() {
			return true
		}
		tick := time.NewTimer(step)
		select {
		case <-tick.C:
		case <-deadline.C:
			tick.Stop()
			return cond()
		case <-ctx.Done():
			tick.Stop()
			return cond()
		}
		step = min(2*step, 50*time.Millisecond)
	}
}
