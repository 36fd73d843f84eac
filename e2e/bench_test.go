package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchSmoke runs "tagauth bench --compare" for a second per run: the
// bench starts its own gateway, UDP echo server and TLS server as child
// processes, and must finish by itself with no error of any kind, print
// every column of its table, a gateway CPU figure from the child's own CPU
// time, and every target line. No timing is asserted.
func TestBenchSmoke(t *testing.T) {
	out := must(t, nil, "bench", "--compare", "--duration", "1s", "--warmup", "200ms",
		"--concurrency", "4", "--users", "8", "--devices", "2")
	for _, want := range []string{
		"system", "mode", "conc", "ops/s", "p50", "p90", "p99", "max", "errors", "server CPU/op", "server cores", "bytes/op",
		"tagauth", "udp-echo", "mtls", "verify", "login", "handshake",
		"card<->device", "device<->gateway", "errors by kind: none",
		"gateway CPU per verify / UDP echo CPU per datagram",
		"gateway verifies per core / mTLS handshakes per core",
		"full login p50, one client",
		"bytes per login / mTLS bytes per handshake",
		"Argon2id t=1 m=64 KiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 12 && (f[0] == "tagauth" || f[0] == "udp-echo" || f[0] == "mtls") && f[12] == "-" {
			t.Errorf("no server CPU figure in %q", line)
		}
	}
}

// TestBenchJSON: --json writes one report with every run and no errors.
func TestBenchJSON(t *testing.T) {
	out := must(t, nil, "bench", "--json", "--duration", "500ms", "--warmup", "100ms", "--concurrency", "2", "--users", "4", "--devices", "1")
	var rep struct {
		Results []struct {
			System string            `json:"system"`
			OK     uint64            `json:"ok"`
			Errors map[string]uint64 `json:"errors"`
			CPU    *float64          `json:"server_cpu_per_op_us"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if len(rep.Results) != 1 || rep.Results[0].System != "tagauth" || rep.Results[0].OK == 0 || len(rep.Results[0].Errors) != 0 || rep.Results[0].CPU == nil {
		t.Fatalf("report %+v", rep.Results)
	}
}
