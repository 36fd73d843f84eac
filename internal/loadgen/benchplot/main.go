// Command benchplot draws the concurrency sweep of "tagauth bench" as a
// PNG: throughput, p99 latency and the server's CPU time per operation
// against concurrency, one line per system (tagauth verify and the
// baselines). It reads the report that
// "tagauth bench --sweep ... --json" writes:
//
//	tagauth bench --sweep 1,2,4,8,16,32,64 --baseline all --json > sweep.json
//	go run ./internal/loadgen/benchplot -in sweep.json -out docs/img/bench-concurrency.png
//
// It is a separate program so that the plotting library stays out of the
// tagauth binary.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"os"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/tagauth/tagauth/internal/loadgen"
)

func main() {
	in := flag.String("in", "", "report `file` written by tagauth bench --json (required)")
	out := flag.String("out", "bench-concurrency.png", "PNG `file` to write")
	title := flag.String("title", "", "title above the plots (default: from the report)")
	flag.Parse()
	if err := run(*in, *out, *title); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(in, out, title string) error {
	if in == "" {
		return errors.New("-in FILE is required")
	}
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s is not a bench report: %w", in, err)
	}
	series := group(rep.Results)
	if len(series) == 0 {
		return errors.New("the report has no closed-loop runs to plot")
	}
	if title == "" {
		title = fmt.Sprintf("tagauth bench, %s (%s)", rep.Profile, rep.Machine)
	}
	return draw2(series, title, out)
}

// series is one system's runs, by concurrency.
type series struct {
	name string
	runs []loadgen.Result
}

// group sorts the closed-loop runs by system and concurrency; the
// one-client login of --compare is left out unless it is part of a sweep.
func group(results []loadgen.Result) []series {
	var out []series
	for _, r := range results {
		if r.Rate > 0 {
			continue
		}
		name := r.System
		if r.System == "tagauth" {
			name += " " + r.Mode
		}
		i := slices.IndexFunc(out, func(s series) bool { return s.name == name })
		if i < 0 {
			out = append(out, series{name: name})
			i = len(out) - 1
		}
		out[i].runs = append(out[i].runs, r)
	}
	out = slices.DeleteFunc(out, func(s series) bool { return len(s.runs) < 2 })
	for _, s := range out {
		slices.SortFunc(s.runs, func(a, b loadgen.Result) int { return a.Concurrency - b.Concurrency })
	}
	return out
}

var colors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

// concurrencyPlot is one panel: log-log, concurrency on X.
func concurrencyPlot(title, yLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "concurrency (requests in flight)"
	p.Y.Label.Text = yLabel
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = pow2Ticks{}, plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	return p
}

// draw2 draws throughput, p99 and server CPU per operation side by side.
func draw2(ss []series, title, out string) error {
	thr := concurrencyPlot("throughput", "operations per second (log)")
	p99 := concurrencyPlot("p99 latency", "milliseconds (log)")
	cpu := concurrencyPlot("server CPU per operation", "microseconds (log)")
	for i, s := range ss {
		var a, b, u plotter.XYs
		for _, r := range s.runs {
			if r.ServerCPUPerOpUS != nil && *r.ServerCPUPerOpUS > 0 {
				u = append(u, plotter.XY{X: float64(r.Concurrency), Y: *r.ServerCPUPerOpUS})
			}
			if r.Throughput > 0 {
				a = append(a, plotter.XY{X: float64(r.Concurrency), Y: r.Throughput})
			}
			if r.LatencyUS.P99 > 0 {
				b = append(b, plotter.XY{X: float64(r.Concurrency), Y: r.LatencyUS.P99 / 1e3})
			}
		}
		c := colors[i%len(colors)]
		for _, pair := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{thr, a}, {p99, b}, {cpu, u}} {
			if len(pair.xys) == 0 {
				continue
			}
			l, pts, err := plotter.NewLinePoints(pair.xys)
			if err != nil {
				return err
			}
			l.Color, pts.Color = c, c
			l.Width = vg.Points(1.5)
			pts.Shape = draw.CircleGlyph{}
			pair.p.Add(l, pts)
			pair.p.Legend.Add(s.name, l, pts)
		}
	}
	// Room above the lines for the legend (the scales are logarithmic).
	for _, p := range []*plot.Plot{thr, p99, cpu} {
		p.Y.Max *= 8
	}
	const w, h = 15 * vg.Inch, 4.6 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	top := vg.Length(0.35) * vg.Inch
	head := draw.Crop(dc, 0, 0, h-top, 0)
	head.FillText(draw.TextStyle{Color: color.Black, Font: thr.Title.TextStyle.Font, Handler: thr.Title.TextStyle.Handler, XAlign: draw.XCenter},
		vg.Point{X: w / 2, Y: h - top/2 - 4}, title)
	body := draw.Crop(dc, 0, 0, 0, -top)
	tiles := draw.Tiles{Rows: 1, Cols: 3, PadX: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{{thr, p99, cpu}}, tiles, body)
	thr.Draw(canvases[0][0])
	p99.Draw(canvases[0][1])
	cpu.Draw(canvases[0][2])
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pow2Ticks labels powers of two: the levels a sweep usually runs.
type pow2Ticks struct{}

func (pow2Ticks) Ticks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	for v := 1.0; v <= max*1.0001; v *= 2 {
		if v >= min*0.9999 {
			ts = append(ts, plot.Tick{Value: v, Label: strings.TrimSuffix(fmt.Sprintf("%.0f", v), ".0")})
		}
	}
	if len(ts) == 0 {
		ts = append(ts, plot.Tick{Value: min, Label: fmt.Sprintf("%.0f", min)}, plot.Tick{Value: max, Label: fmt.Sprintf("%.0f", max)})
	}
	return ts
}
