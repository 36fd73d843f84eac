package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Op is one kind of unit of load: a verify, a login, an echo, a TLS
// handshake. Every worker has its own Op, so an Op need not be safe for
// concurrent use; it may keep a socket and buffers between calls.
type Op interface {
	// Do performs one unit and returns nil or the reason it failed. It
	// bounds its own wait (retransmissions, deadlines) so that it always
	// returns.
	Do(ctx context.Context) error
	// Close releases the Op's sockets.
	Close()
}

// Load says how hard and for how long Drive pushes.
type Load struct {
	// Concurrency is the number of workers, each with one operation in
	// flight at most. At least 1.
	Concurrency int
	// Rate, when positive, starts operations at this many per second
	// (open loop): latency is measured from each operation's scheduled
	// start, so a server that falls behind is charged for the queueing.
	// Zero runs every worker back to back (closed loop).
	Rate float64
	// Duration bounds the measured window; Count bounds the number of
	// measured operations. At least one of them must be set; the run ends
	// at whichever comes first.
	Duration time.Duration
	Count    int64
	// Warmup runs operations, not counted, before the measured window.
	Warmup time.Duration
	// Progress, when not nil, receives a progress line every second,
	// rewritten in place with a carriage return.
	Progress io.Writer
	// Label names the run on the progress line.
	Label string
	// OnStart and OnStop, when not nil, are called at the measured
	// window's start (after the warm-up, before the window's clock starts)
	// and end, to sample a server's CPU time and memory.
	OnStart, OnStop func()
}

// Outcome is what Drive measured in the window.
type Outcome struct {
	Elapsed  time.Duration
	OK       uint64
	Errors   [numKinds]uint64
	Latency  *Snapshot
	Examples [numKinds]string // one error message of each kind seen
}

// Failed is the number of failed operations.
func (o *Outcome) Failed() uint64 {
	var n uint64
	for _, e := range o.Errors {
		n += e
	}
	return n
}

// workerStats is one worker's record. Every operation, good or failed,
// adds its latency to hist; failures are also counted by kind. The
// successes are the difference, so that a snapshot taken while workers
// run always has as many latencies as operations.
type workerStats struct {
	hist Hist
	errs [numKinds]atomic.Uint64
}

type totals struct {
	lat  *Snapshot
	ok   uint64
	errs [numKinds]uint64
}

func sum(ws []*workerStats) totals {
	t := totals{lat: new(Snapshot)}
	for _, w := range ws {
		// Failures first: an operation that ends between the two reads
		// then counts as a success rather than as nothing.
		for k := range w.errs {
			t.errs[k] += w.errs[k].Load()
		}
		t.lat.Add(&w.hist)
	}
	t.ok = t.lat.Count() - t.failed()
	return t
}

func (t totals) minus(prev totals) totals {
	d := totals{lat: t.lat.Sub(prev.lat), ok: t.ok - prev.ok}
	for k := range t.errs {
		d.errs[k] = t.errs[k] - prev.errs[k]
	}
	return d
}

func (t totals) failed() uint64 {
	var n uint64
	for _, e := range t.errs {
		n += e
	}
	return n
}

// Drive runs newOp's operations under load l and measures them. It returns
// when the window is over and every operation in flight has returned, or
// when ctx ends (then with ctx's error and what was measured so far).
func Drive(ctx context.Context, l Load, newOp func(worker int) (Op, error)) (*Outcome, error) {
	if l.Concurrency < 1 {
		return nil, errors.New("loadgen: concurrency must be at least 1")
	}
	if l.Duration <= 0 && l.Count <= 0 {
		return nil, errors.New("loadgen: give a duration or a count, so that the run ends")
	}
	ops := make([]Op, l.Concurrency)
	defer func() {
		for _, op := range ops {
			if op != nil {
				op.Close()
			}
		}
	}()
	for i := range ops {
		op, err := newOp(i)
		if err != nil {
			return nil, fmt.Errorf("loadgen: preparing worker %d: %w", i, err)
		}
		ops[i] = op
	}

	stats := make([]*workerStats, l.Concurrency)
	for i := range stats {
		stats[i] = new(workerStats)
	}
	var examples [numKinds]atomic.Pointer[string]
	var (
		stop      = make(chan struct{}) // no new operations
		measuring atomic.Bool
		claimed   atomic.Int64 // measured operations started, for Count
		wg        sync.WaitGroup
	)
	// ticket says whether a worker may start another operation.
	ticket := func() bool {
		select {
		case <-stop:
			return false
		default:
		}
		if l.Count > 0 && measuring.Load() && claimed.Add(1) > l.Count {
			return false
		}
		return true
	}
	record := func(w *workerStats, start time.Time, err error) {
		if err != nil {
			// Counted before its latency: see sum.
			k := KindOf(err)
			w.errs[k].Add(1)
			if examples[k].Load() == nil {
				msg := err.Error()
				examples[k].CompareAndSwap(nil, &msg)
			}
		}
		w.hist.Record(time.Since(start))
	}

	var notStarted atomic.Uint64
	var tokens chan time.Time
	if l.Rate > 0 {
		tokens = make(chan time.Time, min(max(int(l.Rate), 1024), 1<<20))
	}
	for i := range ops {
		w, op := stats[i], ops[i]
		wg.Go(func() {
			for ticket() {
				start := time.Now()
				if tokens != nil {
					var ok bool
					select {
					case start, ok = <-tokens:
					case <-stop:
					}
					if !ok {
						return
					}
				}
				if ctx.Err() != nil {
					return
				}
				record(w, start, op.Do(ctx))
			}
		})
	}
	if tokens != nil {
		wg.Go(func() { schedule(l.Rate, tokens, stop, &notStarted) })
	}

	// Warm up, then measure.
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return true
		}
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	progress := newProgress(l, stats)
	aborted := !wait(l.Warmup)
	if l.OnStart != nil {
		l.OnStart()
	}
	// From here operations claim their ticket (Count); the window counts
	// what finishes after base.
	measuring.Store(true)
	base := sum(stats)
	notStartedBase := notStarted.Load()
	start := time.Now()
	progress.begin(start, base)

	var end <-chan time.Time
	if l.Duration > 0 {
		tm := time.NewTimer(l.Duration)
		defer tm.Stop()
		end = tm.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	countDone := func() bool { return l.Count > 0 && claimed.Load() >= l.Count }
	for !aborted && !countDone() {
		select {
		case <-end:
			aborted = true // the window is over: leave the loop
			continue
		case <-ctx.Done():
			aborted = true
			continue
		case <-tick.C:
			progress.update(time.Now())
		case <-time.After(10 * time.Millisecond):
			// Polls countDone; the count is reached between ticks.
		}
	}
	if countDone() {
		// A count ends when its last operation does: let the ones in
		// flight finish inside the window.
		close(stop)
		wg.Wait()
	}
	stopAt := time.Now()
	final := sum(stats)
	if l.OnStop != nil {
		l.OnStop()
	}
	select {
	case <-stop:
	default:
		close(stop)
		wg.Wait()
	}
	progress.done()

	d := final.minus(base)
	out := &Outcome{Elapsed: stopAt.Sub(start), OK: d.ok, Errors: d.errs, Latency: d.lat}
	out.Errors[KindNotStarted] += notStarted.Load() - notStartedBase
	for k := range examples {
		if p := examples[k].Load(); p != nil && out.Errors[k] > 0 {
			out.Examples[k] = *p
		}
	}
	return out, ctx.Err()
}

// schedule sends the intended start times of a fixed rate into tokens
// until stop closes. When every worker is busy and tokens is full, an
// operation is counted as not started rather than queued without bound.
func schedule(rate float64, tokens chan<- time.Time, stop <-chan struct{}, notStarted *atomic.Uint64) {
	defer close(tokens)
	interval := time.Duration(float64(time.Second) / rate)
	begin := time.Now()
	tm := time.NewTimer(0)
	defer tm.Stop()
	for k := int64(0); ; k++ {
		at := begin.Add(time.Duration(k) * interval)
		if d := time.Until(at); d > 0 {
			tm.Reset(d)
			select {
			case <-tm.C:
			case <-stop:
				return
			}
		} else {
			select {
			case <-stop:
				return
			default:
			}
		}
		select {
		case tokens <- at:
		default:
			notStarted.Add(1)
		}
	}
}
