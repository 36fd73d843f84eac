package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/tagauth/tagauth/internal/loadgen"
)

// TestPlotSweep draws a synthetic sweep: the PNG decodes and has the
// three panels' width; fixed-rate runs and single points are left out.
func TestPlotSweep(t *testing.T) {
	cpu := 12.5
	var rep loadgen.Report
	for _, c := range []int{1, 2, 4, 8} {
		for _, sys := range []string{"tagauth", "udp-echo", "mtls"} {
			rep.Results = append(rep.Results, loadgen.Result{System: sys, Mode: "verify", Concurrency: c,
				Throughput: float64(1000 * c), LatencyUS: loadgen.Quantiles{P99: float64(100 * c)}, ServerCPUPerOpUS: &cpu})
		}
	}
	rep.Results = append(rep.Results,
		loadgen.Result{System: "tagauth", Mode: "login", Concurrency: 1, Throughput: 500},                // one point: no line
		loadgen.Result{System: "tagauth", Mode: "verify", Concurrency: 16, Rate: 2000, Throughput: 2000}) // fixed rate
	ss := group(rep.Results)
	if len(ss) != 3 || len(ss[0].runs) != 4 {
		t.Fatalf("grouped into %d series (first has %d runs), want 3 of 4", len(ss), len(ss[0].runs))
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "r.json"), filepath.Join(dir, "p.png")
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(in, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(in, out, ""); err != nil {
		t.Fatal(err)
	}
	pb, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(pb))
	if err != nil {
		t.Fatal(err)
	}
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w <= 2*h {
		t.Errorf("image %dx%d: want three panels side by side", w, h)
	}
	if err := run(filepath.Join(dir, "missing.json"), out, ""); err == nil {
		t.Error("a missing report was accepted")
	}
}
