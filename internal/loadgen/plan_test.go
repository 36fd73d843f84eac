package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/gateway"
)

// startGatewayInProcess runs a gateway in this process on loopback.
func startGatewayInProcess(t *testing.T) Target {
	t.Helper()
	const token = "0123456789abcdef0123456789abcdef"
	g, err := gateway.Open(gateway.Config{
		DataDir: t.TempDir(), CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		AdminToken: token, AuditOut: io.Discard,
		InsecureTestKDF: true, // the fleet's cards use BenchKDF
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return Target{CoAP: g.CoAPPublic(), AdminURL: g.AdminURL(), Fingerprint: g.Fingerprint(), Token: token}
}

// TestRunCompare runs the whole comparison for half a second each against
// an in-process gateway, with the baselines in process too: every run
// completes without an error, each link carries the datagrams the
// protocol says, and the report prints every column.
func TestRunCompare(t *testing.T) {
	target := startGatewayInProcess(t)
	rep, err := Run(context.Background(), Plan{
		Target: &target, Mode: ModeVerify, Users: 6, Devices: 2, Concurrency: []int{2},
		Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, Compare: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ system, mode string }{{"tagauth", "login"}, {"tagauth", "verify"}, {"udp-echo", "echo"}, {"mtls", "handshake"}}
	if len(rep.Results) != len(want) {
		t.Fatalf("%d results, want %d", len(rep.Results), len(want))
	}
	for i, w := range want {
		r := rep.Results[i]
		if r.System != w.system || r.Mode != w.mode {
			t.Fatalf("result %d is %s %s, want %s %s", i, r.System, r.Mode, w.system, w.mode)
		}
		if r.OK == 0 || r.Failed() != 0 {
			t.Errorf("%s %s: %d ok, errors %v %v", r.System, r.Mode, r.OK, r.Errors, r.ErrorExamples)
		}
		if r.LatencyUS.P50 <= 0 || r.LatencyUS.P50 > r.LatencyUS.P99 || r.LatencyUS.P99 > r.LatencyUS.Max*1.01 {
			t.Errorf("%s %s: latency %+v", r.System, r.Mode, r.LatencyUS)
		}
		if r.ServerCPUPerOpUS != nil {
			t.Errorf("%s %s: CPU per op reported without a server process", r.System, r.Mode)
		}
	}
	links := func(r Result) map[string]LinkResult {
		m := map[string]LinkResult{}
		for _, l := range r.Links {
			m[l.Name] = l
		}
		return m
	}
	// Datagrams by kind: less the repeats (retransmitted requests and the
	// late answers they draw, which a loaded machine adds), every
	// operation has a fixed number. Datagrams are counted over the window
	// and operations as they end, so each worker's operation in flight at
	// either edge may add or miss up to that number: the bound is exact,
	// not a tolerance on a ratio.
	const conc = 2
	exact := func(l LinkResult, per int, ops uint64) bool {
		got, want := int64(l.Datagrams-l.Repeats), int64(per)*int64(ops)
		slack := int64(2 * per * conc)
		return l.Repeats <= l.Datagrams && got >= want-slack && got <= want+slack
	}
	v := links(rep.Results[1])
	if l := v["device<->gateway"]; !exact(l, 2, rep.Results[1].Ops) || l.BytesPerOp < 150 {
		t.Errorf("verify: %+v over %d verifies, want 2 datagrams (m2, m3) per verify", l, rep.Results[1].Ops)
	}
	// Every echo datagram has the same size, whatever the edges.
	if echo := rep.Results[2]; echo.DatagramBytes < 100 ||
		math.Abs(links(echo)["client<->server"].BytesPerOp/links(echo)["client<->server"].DatagramsPerOp-float64(echo.DatagramBytes)) > 0.01 {
		t.Errorf("echo of %d bytes: %+v", echo.DatagramBytes, echo.Links)
	}
	if l := links(rep.Results[3])["client<->server"]; l.BytesPerOp < 1000 {
		t.Errorf("mTLS handshake of %.0f bytes: too small for two certificate chains", l.BytesPerOp)
	}
	login := links(rep.Results[0])
	if n := rep.Results[0].Ops; !exact(login["card<->device"], 4, n) || !exact(login["device<->gateway"], 2, n) || !exact(login["task (card<->device)"], 2, n) {
		t.Errorf("login links %+v over %d logins, want m1 m4 m5 ack; m2 m3; task and answer", rep.Results[0].Links, n)
	}
	if rep.Results[0].LoginLatencyUS == nil || rep.Results[0].LoginLatencyUS.P50 > rep.Results[0].LatencyUS.P50 {
		t.Errorf("login latency %+v vs login and task %+v", rep.Results[0].LoginLatencyUS, rep.Results[0].LatencyUS)
	}
	var bytesCheck bool
	for _, c := range rep.Checks {
		if strings.HasPrefix(c.Name, "bytes per login") {
			bytesCheck = c.Value > 0 && c.Value < 1
		}
	}
	if !bytesCheck {
		t.Errorf("no bytes-per-login check in %+v", rep.Checks)
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"system", "conc", "ops/s", "p50", "p90", "p99", "max", "errors", "server CPU/op", "bytes/op",
		"errors by kind: none", "card<->device", "device<->gateway", "targets"} {
		if !strings.Contains(table.String(), col) {
			t.Errorf("table lacks %q:\n%s", col, table.String())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != 4 || back.Results[1].OK != rep.Results[1].OK {
		t.Errorf("JSON does not round-trip: %v", err)
	}
}

// TestPlanCheck refuses plans that could not end or make no sense.
func TestPlanCheck(t *testing.T) {
	for name, p := range map[string]Plan{
		"no bound":         {Users: 1, Devices: 1, Exe: "x"},
		"bad mode":         {Users: 1, Devices: 1, Exe: "x", Duration: time.Second, Mode: "flood"},
		"no gateway":       {Users: 1, Devices: 1, Duration: time.Second},
		"bad baseline":     {Users: 1, Devices: 1, Exe: "x", Duration: time.Second, Baselines: []string{"kerberos"}},
		"huge concurrency": {Users: 1, Devices: 1, Exe: "x", Duration: time.Second, Concurrency: []int{1 << 20}},
	} {
		if err := p.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p := Plan{Users: 1, Devices: 1, Exe: "x", Duration: time.Second, Mode: ModeLogin, Concurrency: []int{100}}
	if err := p.check(); err != nil || p.Devices != 4 {
		t.Errorf("login at concurrency 100: %v, %d devices; want 4 (32 relays each)", err, p.Devices)
	}
}

// TestOfflineFleetSizesLikeProvisioned: with no gateway (--only-baselines)
// the echo's datagram is sized from a fleet made in memory; it must be the
// size a provisioned fleet's m2 has, so that the echo baseline is the same
// with or without a gateway.
func TestOfflineFleetSizesLikeProvisioned(t *testing.T) {
	target := startGatewayInProcess(t)
	online, err := Provision(context.Background(), target, 1, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer online.Close()
	offline, err := offlineFleet(online.Profile)
	if err != nil {
		t.Fatal(err)
	}
	defer offline.Close()
	want, err := m2Datagram(online)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m2Datagram(offline)
	if err != nil {
		t.Fatal(err)
	}
	if got != want || got < 100 {
		t.Fatalf("offline fleet's m2 datagram is %d bytes, a provisioned fleet's %d", got, want)
	}
}
