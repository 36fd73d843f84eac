package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

// fakeOp fails every fail-th call with err and takes d per call on the
// fake clock of the synctest bubble its test runs in: no real time passes,
// and the bubble's clock moves only once every goroutine of the run (the
// workers in Do, Drive on its timers) waits, so the operations' timing
// against the window is exact rather than up to the scheduler.
type fakeOp struct {
	calls  *atomic.Int64
	fail   int64
	err    error
	d      time.Duration
	closed *atomic.Int64
}

func (o *fakeOp) Do(ctx context.Context) error {
	n := o.calls.Add(1)
	if o.d > 0 {
		tm := time.NewTimer(o.d) // the bubble's clock
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		}
	}
	if o.fail > 0 && n%o.fail == 0 {
		return o.err
	}
	return nil
}

func (o *fakeOp) Close() { o.closed.Add(1) }

// TestDriveCount: a count bounds the measured operations; every Op is
// closed; failures are sorted by kind with an example; CPU hooks run once.
func TestDriveCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls, closed atomic.Int64
		var starts, stops int
		out, err := Drive(context.Background(), Load{
			Concurrency: 4, Count: 200, Duration: time.Minute,
			OnStart: func() { starts++ }, OnStop: func() { stops++ },
		}, func(int) (Op, error) {
			return &fakeOp{calls: &calls, closed: &closed, d: 100 * time.Microsecond, fail: 10, err: fmt.Errorf("gateway said: %w", protocol.ErrBusy)}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// On the fake clock no operation ends while Drive opens the
		// window, so all 200 that claimed their place end in it; the
		// operations in flight when it opened (at most one per worker)
		// started before it but end in it, and count too.
		n := out.OK + out.Failed()
		if n < 200 || n > 200+4 {
			t.Errorf("%d operations measured, want 200 to 204 (the count, and those in flight as the window opened)", n)
		}
		if out.Errors[KindBusy] == 0 || out.Errors[KindBusy] != out.Failed() {
			t.Errorf("errors %v, want only busy", out.Errors)
		}
		if out.Examples[KindBusy] != "gateway said: "+protocol.ErrBusy.Error() {
			t.Errorf("example %q", out.Examples[KindBusy])
		}
		if out.Latency.Count() != n {
			t.Errorf("%d latencies for %d operations", out.Latency.Count(), n)
		}
		if closed.Load() != 4 {
			t.Errorf("%d ops closed, want 4", closed.Load())
		}
		if starts != 1 || stops != 1 {
			t.Errorf("OnStart %d, OnStop %d times, want once each", starts, stops)
		}
	})
}

// TestDriveDurationAndWarmup: the window lasts the duration, and the
// operations of the warm-up are not counted.
func TestDriveDurationAndWarmup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls, closed atomic.Int64
		out, err := Drive(context.Background(), Load{Concurrency: 2, Duration: 300 * time.Millisecond, Warmup: 200 * time.Millisecond},
			func(int) (Op, error) { return &fakeOp{calls: &calls, closed: &closed, d: time.Millisecond}, nil })
		if err != nil {
			t.Fatal(err)
		}
		if out.Elapsed != 300*time.Millisecond {
			t.Errorf("window %v, want 300ms on the fake clock", out.Elapsed)
		}
		// Two workers, 1 ms each, 300 ms: 600 operations end in the
		// window, give or take those that end at its two edges, at the
		// same instant as Drive's timers.
		if got := out.OK; got < 600-2 || got > 600+2 {
			t.Errorf("%d measured, want 600 (2 workers x 300 ms / 1 ms)", got)
		}
		if c := calls.Load(); c < 2*(200+300) {
			t.Errorf("%d calls, want at least %d: the warm-up runs operations too", c, 2*(200+300))
		}
	})
}

// TestDriveRate: at a fixed rate the number of operations follows the
// rate, not the speed of the workers.
func TestDriveRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls, closed atomic.Int64
		out, err := Drive(context.Background(), Load{Concurrency: 8, Rate: 200, Duration: time.Second},
			func(int) (Op, error) { return &fakeOp{calls: &calls, closed: &closed}, nil })
		if err != nil {
			t.Fatal(err)
		}
		// Instant operations, one every 5 ms for 1 s; the one at each
		// edge of the window may or may not count.
		if out.OK < 199 || out.OK > 201 {
			t.Errorf("%d operations in 1 s at 200/s, want 200", out.OK)
		}
		if out.Errors[KindNotStarted] != 0 {
			t.Errorf("%d not started with 8 idle workers", out.Errors[KindNotStarted])
		}
	})
}

// TestDriveRefusesUnbounded: a run must end by itself.
func TestDriveRefusesUnbounded(t *testing.T) {
	if _, err := Drive(context.Background(), Load{Concurrency: 1}, nil); err == nil {
		t.Error("a load without duration or count was accepted")
	}
	if _, err := Drive(context.Background(), Load{Duration: time.Second}, nil); err == nil {
		t.Error("concurrency 0 was accepted")
	}
	_, err := Drive(context.Background(), Load{Concurrency: 1, Duration: time.Second}, func(int) (Op, error) {
		return nil, errors.New("no socket")
	})
	if err == nil {
		t.Error("a failing newOp did not fail the run")
	}
}

// TestKindOf sorts the errors the ops return.
func TestKindOf(t *testing.T) {
	for err, want := range map[error]ErrKind{
		fmt.Errorf("x: %w", protocol.ErrRejected):        KindRejected,
		fmt.Errorf("x: %w", protocol.ErrReplayed):        KindReplayed,
		fmt.Errorf("x: %w", protocol.ErrStaleTimestamp):  KindStale,
		withKind(KindTimeout, errors.New("no answer")):   KindTimeout,
		withKind(KindBadResponse, protocol.ErrMalformed): KindBadResponse,
		context.DeadlineExceeded:                         KindTimeout,
		errors.New("something else"):                     KindOther,
	} {
		if got := KindOf(err); got != want {
			t.Errorf("KindOf(%v) = %v, want %v", err, got, want)
		}
	}
}

// TestUserOf: workers use disjoint sets of users covering all of them
// when there are enough users.
func TestUserOf(t *testing.T) {
	for _, tc := range []struct{ workers, users int }{{4, 10}, {3, 3}, {1, 5}, {16, 100}} {
		owner := map[int]int{}
		for w := range tc.workers {
			for n := range 3 * tc.users {
				u := userOf(w, n, tc.workers, tc.users)
				if u < 0 || u >= tc.users {
					t.Fatalf("%+v: user %d out of range", tc, u)
				}
				if o, ok := owner[u]; ok && o != w {
					t.Fatalf("%+v: user %d used by workers %d and %d", tc, u, o, w)
				}
				owner[u] = w
			}
		}
		if len(owner) != tc.users {
			t.Errorf("%+v: %d users used, want all %d", tc, len(owner), tc.users)
		}
	}
	if u := userOf(5, 7, 8, 3); u != 2 {
		t.Errorf("fewer users than workers: worker 5 got user %d, want 5 %% 3", u)
	}
}
