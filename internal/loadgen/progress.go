package loadgen

import (
	"fmt"
	"io"
	"time"
)

// progress writes the live line: elapsed time, the last second's rate,
// p50 and p99, and the errors so far. It overwrites itself with a carriage
// return, so it is only for terminals.
type progress struct {
	w           io.Writer
	label       string
	stats       []*workerStats
	start, last time.Time
	base, prev  totals
	width       int
}

func newProgress(l Load, stats []*workerStats) *progress {
	return &progress{w: l.Progress, label: l.Label, stats: stats}
}

func (p *progress) begin(at time.Time, base totals) {
	p.start, p.last, p.base, p.prev = at, at, base, base
}

func (p *progress) update(now time.Time) {
	if p.w == nil {
		return
	}
	cur := sum(p.stats)
	iv := cur.minus(p.prev)
	all := cur.minus(p.base)
	secs := now.Sub(p.last).Seconds()
	line := fmt.Sprintf("%s  %5.1fs  %9.0f/s  p50 %s  p99 %s  ok %d  errors %d",
		p.label, now.Sub(p.start).Seconds(), float64(iv.lat.Count())/secs,
		FormatDuration(iv.lat.Quantile(0.5)), FormatDuration(iv.lat.Quantile(0.99)), all.ok, all.failed())
	pad := max(p.width-len(line), 0)
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%*s", line, pad, "")
	p.prev, p.last = cur, now
}

// done clears the line.
func (p *progress) done() {
	if p.w != nil && p.width > 0 {
		fmt.Fprintf(p.w, "\r%*s\r", p.width, "")
	}
}

// FormatDuration prints a latency with three significant digits in a
// unit that suits it: 812ns, 41.2us, 1.03ms, 2.50s.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig3(float64(d)/1e3) + "us"
	case d < time.Second:
		return sig3(float64(d)/1e6) + "ms"
	default:
		return sig3(float64(d)/1e9) + "s"
	}
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
