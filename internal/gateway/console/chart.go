package console

import (
	"strconv"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// chart is the overview's bar chart of verifies per minute, drawn as
// inline SVG by the template from these numbers (no script, no image).
type chart struct {
	Width, Height int
	PlotTop       int // y of the plot's top edge
	PlotBottom    int // y of the x axis
	PlotLeft      int
	PlotRight     int
	Bars          []bar
	YTicks        []tick
	XTicks        []tick
	Empty         bool
}

// bar is one minute: stacked segments, bottom up.
type bar struct {
	Title string // tooltip: the minute and its counts
	Segs  []seg
}

type seg struct {
	X, Y, W, H int
	Class      string
}

type tick struct {
	X, Y  int
	Label string
}

// newChart lays out minutes (oldest first) in a 760x220 box.
func newChart(minutes []adminapi.StatsMinute) chart {
	c := chart{Width: 760, Height: 220, PlotTop: 12, PlotBottom: 190, PlotLeft: 48, PlotRight: 748}
	var peak uint64
	for _, m := range minutes {
		peak = max(peak, m.OK+m.Refused+m.Error)
	}
	c.Empty = peak == 0
	top := niceCeil(max(peak, 10))
	h := c.PlotBottom - c.PlotTop
	n := max(len(minutes), 1)
	slot := (c.PlotRight - c.PlotLeft) / n
	w := max(slot-2, 1)
	scale := func(v uint64) int { return int(v * uint64(h) / top) }
	for i, m := range minutes {
		x := c.PlotLeft + i*slot + 1
		y := c.PlotBottom
		b := bar{Title: m.Start.UTC().Format("15:04") + " UTC: " + strconv.FormatUint(m.OK, 10) + " ok, " +
			strconv.FormatUint(m.Refused, 10) + " refused, " + strconv.FormatUint(m.Error, 10) + " errors"}
		for _, part := range []struct {
			v     uint64
			class string
		}{{m.OK, "ok"}, {m.Refused, "refused"}, {m.Error, "error"}} {
			ph := scale(part.v)
			if part.v > 0 && ph == 0 {
				ph = 1
			}
			if ph == 0 {
				continue
			}
			y -= ph
			b.Segs = append(b.Segs, seg{X: x, Y: y, W: w, H: ph, Class: part.class})
		}
		c.Bars = append(c.Bars, b)
	}
	for i := uint64(0); i <= 2; i++ {
		v := top * i / 2
		c.YTicks = append(c.YTicks, tick{X: c.PlotLeft - 6, Y: c.PlotBottom - scale(v), Label: strconv.FormatUint(v, 10)})
	}
	if len(minutes) > 0 {
		for _, i := range []int{0, len(minutes) / 2, len(minutes) - 1} {
			c.XTicks = append(c.XTicks, tick{X: c.PlotLeft + i*slot + slot/2, Y: c.PlotBottom + 18,
				Label: minutes[i].Start.UTC().Format(time.TimeOnly[:5])})
		}
	}
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so that the
// axis reads well.
func niceCeil(v uint64) uint64 {
	p := uint64(1)
	for {
		for _, m := range []uint64{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
		p *= 10
	}
}
