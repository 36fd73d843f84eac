package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Kerberos figures measured earlier on this project's machine (issue 5):
// MIT KDC 1.20, best case.
const (
	KerberosCPUPerASUS   = 163.0
	KerberosBytesPerAuth = 984.0
)

// Targets of issue 5.
const (
	TargetCPURatioVsUDP     = 1.3    // gateway CPU per verify / UDP echo CPU per datagram, at most
	TargetPerCoreVsMTLS     = 100    // gateway verifies per core / mTLS handshakes per core, at least
	TargetLoginP50MS        = 0.3    // full login p50 with one client, at most
	TargetBytesFractionMTLS = 1. / 3 // bytes per login / mTLS bytes per handshake, under
)

// Quantiles of a latency distribution, in microseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func quantiles(s *Snapshot) Quantiles {
	return Quantiles{P50: us(s.Quantile(0.5)), P90: us(s.Quantile(0.9)), P99: us(s.Quantile(0.99)), Max: us(s.Max())}
}

// LinkResult is what one operation costs on one link, both directions.
type LinkResult struct {
	Name           string  `json:"name"`
	DatagramsPerOp float64 `json:"datagrams_per_op"`
	BytesPerOp     float64 `json:"bytes_per_op"`
	// Datagrams is the window's total; Repeats of them are retransmitted
	// requests and answers to no request in flight, which losses and
	// timeouts add to the protocol's own.
	Datagrams uint64 `json:"datagrams"`
	Repeats   uint64 `json:"repeats,omitempty"`
}

// Result is one measured run: one system, one load.
type Result struct {
	System      string  `json:"system"` // tagauth, udp-echo or mtls
	Mode        string  `json:"mode"`   // verify, login, echo or handshake
	Profile     string  `json:"profile,omitempty"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate_per_s,omitempty"`
	Seconds     float64 `json:"seconds"`
	// Ops is every operation finished in the window; OK those that
	// succeeded.
	Ops           uint64            `json:"ops"`
	OK            uint64            `json:"ok"`
	Errors        map[string]uint64 `json:"errors"`
	ErrorExamples map[string]string `json:"error_examples,omitempty"`
	Throughput    float64           `json:"throughput_per_s"`
	LatencyUS     Quantiles         `json:"latency_us"`
	// LoginLatencyUS is the login alone (m1 to m5 acknowledged), without
	// the task, in login mode.
	LoginLatencyUS *Quantiles `json:"login_latency_us,omitempty"`
	// ServerCPUPerOpUS is the server process's CPU time (user and system,
	// all threads) in the window divided by Ops; ServerCores the same
	// time divided by the window. Absent when the process is unknown.
	ServerCPUPerOpUS *float64     `json:"server_cpu_per_op_us,omitempty"`
	ServerCores      *float64     `json:"server_cores,omitempty"`
	Links            []LinkResult `json:"links"`
	Retransmits      uint64       `json:"retransmits,omitempty"`
	DatagramBytes    int          `json:"datagram_bytes,omitempty"`
	HeapBefore       *HeapStats   `json:"heap_before,omitempty"`
	HeapAfter        *HeapStats   `json:"heap_after,omitempty"`
}

func (r *Result) fill(o *Outcome) {
	r.Seconds = o.Elapsed.Seconds()
	r.OK = o.OK
	r.Ops = o.OK + o.Failed() - o.Errors[KindNotStarted]
	r.Errors = map[string]uint64{}
	for k, n := range o.Errors {
		if n > 0 {
			r.Errors[ErrKind(k).String()] = n
			if o.Examples[k] != "" {
				if r.ErrorExamples == nil {
					r.ErrorExamples = map[string]string{}
				}
				r.ErrorExamples[ErrKind(k).String()] = o.Examples[k]
			}
		}
	}
	if r.Seconds > 0 {
		r.Throughput = float64(r.OK) / r.Seconds
	}
	r.LatencyUS = quantiles(o.Latency)
}

// Failed is the number of failed operations.
func (r *Result) Failed() uint64 {
	var n uint64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// BytesPerOp is the sum over the run's links, the task excluded.
func (r *Result) BytesPerOp() float64 {
	var b float64
	for _, l := range r.Links {
		if !strings.HasPrefix(l.Name, "task") {
			b += l.BytesPerOp
		}
	}
	return b
}

// Check is one target of the issue, with the measured value.
type Check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
}

// Report is everything one invocation measured.
type Report struct {
	Started           time.Time `json:"started"`
	Machine           string    `json:"machine"`
	GoVersion         string    `json:"go_version"`
	Profile           string    `json:"profile,omitempty"`
	Gateway           string    `json:"gateway,omitempty"`
	Users             int       `json:"users"`
	Devices           int       `json:"devices"`
	SimulatedKDF      string    `json:"simulated_kdf"`
	SimulatedUnlockUS float64   `json:"simulated_unlock_us,omitempty"`
	DefaultUnlockMS   float64   `json:"default_unlock_ms,omitempty"`
	Results           []Result  `json:"results"`
	Checks            []Check   `json:"checks,omitempty"`
	Notes             []string  `json:"notes,omitempty"`
}

func newReport(p Plan) *Report {
	return &Report{
		Started: time.Now().UTC().Truncate(time.Second), Machine: machine(), GoVersion: runtime.Version(),
		Users: p.Users, Devices: p.Devices,
		SimulatedKDF: fmt.Sprintf("Argon2id t=%d m=%d KiB p=%d", BenchKDF.Time, BenchKDF.MemoryKiB, BenchKDF.Threads),
	}
}

// machine describes the CPU: cores, GOMAXPROCS and model.
func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimLeft(v, "\t :"))
				break
			}
		}
	}
	s := fmt.Sprintf("%d cores, GOMAXPROCS %d, %s/%s", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	if model != "" {
		s += ", " + model
	}
	return s
}

func (rep *Report) find(system, mode string, c int) *Result {
	for i := range rep.Results {
		r := &rep.Results[i]
		if r.System == system && r.Mode == mode && r.Concurrency == c {
			return r
		}
	}
	return nil
}

// compare computes the targets from this report's runs at
// concurrency c (and the one-client login).
func (rep *Report) compare(c int) {
	v, echo, tls := rep.find("tagauth", ModeVerify, c), rep.find(BaselineUDPEcho, "echo", c), rep.find(BaselineMTLS, "handshake", c)
	login := rep.find("tagauth", ModeLogin, 1)
	if v != nil && echo != nil && v.ServerCPUPerOpUS != nil && echo.ServerCPUPerOpUS != nil {
		ratio := *v.ServerCPUPerOpUS / *echo.ServerCPUPerOpUS
		rep.Checks = append(rep.Checks, Check{
			Name: "gateway CPU per verify / UDP echo CPU per datagram", Value: ratio,
			Target: fmt.Sprintf("<= %.1f", TargetCPURatioVsUDP), Met: ratio <= TargetCPURatioVsUDP,
			Detail: fmt.Sprintf("%.2f us / %.2f us", *v.ServerCPUPerOpUS, *echo.ServerCPUPerOpUS),
		})
	}
	if v != nil && tls != nil && v.ServerCPUPerOpUS != nil && tls.ServerCPUPerOpUS != nil {
		ratio := *tls.ServerCPUPerOpUS / *v.ServerCPUPerOpUS
		rep.Checks = append(rep.Checks, Check{
			Name: "gateway verifies per core / mTLS handshakes per core", Value: ratio,
			Target: fmt.Sprintf(">= %d", TargetPerCoreVsMTLS), Met: ratio >= TargetPerCoreVsMTLS,
			Detail: fmt.Sprintf("%.0f/s vs %.0f/s per core of server CPU", 1e6 / *v.ServerCPUPerOpUS, 1e6 / *tls.ServerCPUPerOpUS),
		})
		rep.Checks = append(rep.Checks, Check{
			Name: "(reference) Kerberos CPU per AS exchange / gateway CPU per verify", Value: KerberosCPUPerASUS / *v.ServerCPUPerOpUS,
			Target: "none", Met: true,
			Detail: fmt.Sprintf("MIT KDC 1.20 %.0f us measured earlier, not in this run", KerberosCPUPerASUS),
		})
	}
	if login != nil && login.LoginLatencyUS != nil {
		p50 := login.LoginLatencyUS.P50 / 1e3
		rep.Checks = append(rep.Checks, Check{
			Name: "full login p50, one client (ms)", Value: p50,
			Target: fmt.Sprintf("<= %.1f", TargetLoginP50MS), Met: p50 <= TargetLoginP50MS,
			Detail: fmt.Sprintf("m1 to m5 through a device agent and the gateway; with the sealed task: p50 %.3f ms; card unlock excluded (default Argon2id: %.1f ms)", login.LatencyUS.P50/1e3, rep.DefaultUnlockMS),
		})
	}
	if login != nil && tls != nil {
		b, t := login.BytesPerOp(), tls.BytesPerOp()
		if t > 0 {
			rep.Checks = append(rep.Checks, Check{
				Name: "bytes per login / mTLS bytes per handshake", Value: b / t,
				Target: fmt.Sprintf("< %.3f", TargetBytesFractionMTLS), Met: b/t < TargetBytesFractionMTLS,
				Detail: fmt.Sprintf("%.0f B (every datagram of m1..m5 with CoAP headers) vs %.0f B (Kerberos: %.0f B, measured earlier)", b, t, KerberosBytesPerAuth),
			})
		}
	}
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteTable writes the report for people.
func (rep *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "machine: %s (%s)\n", rep.Machine, rep.GoVersion)
	if rep.Gateway != "" {
		fmt.Fprintf(w, "gateway: %s, profile %s, %d users, %d devices\n", rep.Gateway, rep.Profile, rep.Users, rep.Devices)
		fmt.Fprintf(w, "cards: simulated with %s (unlock %.0f us each); the default Argon2id takes %.1f ms per unlock and is excluded from every latency below\n",
			rep.SimulatedKDF, rep.SimulatedUnlockUS, rep.DefaultUnlockMS)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tmode\tconc\trate/s\tsecs\tok\terrors\tops/s\tp50\tp90\tp99\tmax\tserver CPU/op\tserver cores\tbytes/op\t")
	for _, r := range rep.Results {
		rate := "-"
		if r.Rate > 0 {
			rate = fmt.Sprintf("%.0f", r.Rate)
		}
		cpu, cores := "-", "-"
		if r.ServerCPUPerOpUS != nil {
			cpu = fmt.Sprintf("%.2fus", *r.ServerCPUPerOpUS)
			cores = fmt.Sprintf("%.2f", *r.ServerCores)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.1f\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t\n",
			r.System, r.Mode, r.Concurrency, rate, r.Seconds, r.OK, r.Failed(), r.Throughput,
			fmtUS(r.LatencyUS.P50), fmtUS(r.LatencyUS.P90), fmtUS(r.LatencyUS.P99), fmtUS(r.LatencyUS.Max), cpu, cores, r.BytesPerOp())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "per operation, on each link (UDP payload for CoAP: header, options, payload; TLS records for mTLS):")
	for _, r := range rep.Results {
		var parts []string
		for _, l := range r.Links {
			if r.System == BaselineMTLS {
				parts = append(parts, fmt.Sprintf("%s %.0f B", l.Name, l.BytesPerOp))
			} else {
				parts = append(parts, fmt.Sprintf("%s %.1f datagrams %.0f B", l.Name, l.DatagramsPerOp, l.BytesPerOp))
			}
		}
		extra := ""
		if r.LoginLatencyUS != nil {
			extra = fmt.Sprintf("; login alone p50 %s p99 %s", fmtUS(r.LoginLatencyUS.P50), fmtUS(r.LoginLatencyUS.P99))
		}
		if r.Retransmits > 0 {
			extra += fmt.Sprintf("; %d retransmissions", r.Retransmits)
		}
		fmt.Fprintf(w, "  %s %s c=%d: %s%s\n", r.System, r.Mode, r.Concurrency, strings.Join(parts, "; "), extra)
	}
	var errs []string
	for _, r := range rep.Results {
		for k, n := range r.Errors {
			e := fmt.Sprintf("  %s %s c=%d: %s %d", r.System, r.Mode, r.Concurrency, k, n)
			if ex := r.ErrorExamples[k]; ex != "" {
				e += " (first: " + ex + ")"
			}
			errs = append(errs, e)
		}
	}
	if len(errs) == 0 {
		fmt.Fprintln(w, "errors by kind: none")
	} else {
		fmt.Fprintln(w, "errors by kind:")
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
	}
	for _, r := range rep.Results {
		if r.HeapBefore != nil && r.HeapAfter != nil {
			fmt.Fprintf(w, "gateway heap (after GC), %s %s c=%d: before %s, after %s (%d -> %d objects); RSS %s -> %s\n",
				r.System, r.Mode, r.Concurrency, mib(r.HeapBefore.HeapInuse), mib(r.HeapAfter.HeapInuse),
				r.HeapBefore.HeapObjects, r.HeapAfter.HeapObjects, mib(r.HeapBefore.RSS), mib(r.HeapAfter.RSS))
		}
	}
	if len(rep.Checks) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "targets (issue 5), from this run:")
		for _, c := range rep.Checks {
			mark := "met"
			switch {
			case c.Target == "none":
				mark = "info"
			case !c.Met:
				mark = "MISSED"
			}
			fmt.Fprintf(w, "  %-66s %8.3f  target %-7s %-6s %s\n", c.Name, c.Value, c.Target, mark, c.Detail)
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	return nil
}

func fmtUS(v float64) string { return FormatDuration(time.Duration(v * 1e3)) }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
