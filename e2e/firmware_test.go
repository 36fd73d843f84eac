package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
)

// The C device agent (firmware/examples/posix_agent.c, the firmware SDK on
// libcoap) against the real Go gateway and user CLI.

var (
	agentOnce sync.Once
	agentPath string
	agentErr  string
)

// buildAgent builds firmware/build/tagauth-agent once. Without a C
// toolchain or libcoap it skips, and fails under CI=true.
func buildAgent(t *testing.T) string {
	t.Helper()
	_, cc := exec.LookPath("cc")
	_, mk := exec.LookPath("make")
	_, hdr := os.Stat("/usr/include/coap3/coap.h")
	if cc != nil || mk != nil || hdr != nil {
		msg := "the C device agent needs make, a C compiler and libcoap: apt-get install build-essential libcoap3-dev"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	agentOnce.Do(func() {
		out, err := exec.Command("make", "-C", "../firmware", "agent").CombinedOutput()
		if err != nil {
			agentErr = "make -C firmware agent: " + err.Error() + "\n" + string(out)
			return
		}
		agentPath, _ = filepath.Abs("../firmware/build/tagauth-agent")
	})
	if agentErr != "" {
		t.Fatal(agentErr)
	}
	return agentPath
}

// startAgent runs the C agent on a free loopback port, as start runs the
// tagauth binary, with extra arguments after the usual ones.
func startAgent(t *testing.T, agent, cred string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--cred", cred, "--listen", freeUDPPort(t)}, extra...)
	p := &proc{t: t, cmd: exec.Command(agent, args...), done: make(chan struct{})}
	p.cmd.Stderr = &syncWriter{w: &p.stderr, mu: &p.mu}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// newFirmwareWorld is newWorld with the C agent in place of the Go one;
// extra goes to the agent.
func newFirmwareWorld(t *testing.T, profile, agent string, extra ...string) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, dir: dir}
	data := filepath.Join(dir, "gw")
	w.gw = startGateway(t, data, profile, freeUDPPort(t))
	cred := filepath.Join(dir, "sensor-7.json")
	must(t, nil, "gateway", "provision", "--data", data, "--id", "sensor-7", "--group", "plant-a", "--out", cred)
	must(t, nil, "gateway", "grant", "--data", data, "--user", "alice", "--group", "plant-a")
	code := strings.TrimSpace(must(t, nil, "gateway", "enrol-code", "--data", data, "--user", "alice"))
	w.card = filepath.Join(dir, "alice.card")
	w.userPW = []string{"TAGAUTH_PASSWORD=correct horse"}
	must(t, w.userPW, "user", "enroll", "--admin", w.gw.admin, "--fingerprint", w.gw.fingerprint,
		"--code", code, "--id", "alice", "--card", w.card, "--profile", profile, fastKDF, "--kdf-m=1024")
	w.dev = startAgent(t, agent, cred, extra...)
	w.devAt = w.dev.waitLine(`serving CoAP on (\S+),`)[1]
	return w
}

// TestFirmwareAgent: the Go user CLI enrols, logs in to the C agent (which
// relays m2 to the Go gateway), runs tasks over the sealed channel, and a
// revoked user is refused, under both profiles.
func TestFirmwareAgent(t *testing.T) {
	agent := buildAgent(t)
	for _, profile := range []string{"hardened", "classic"} {
		t.Run(profile, func(t *testing.T) {
			w := newFirmwareWorld(t, profile, agent)

			code, out, errs := w.user(nil, "login")
			if code != 0 {
				t.Fatalf("login: exit %d: %s %s\nagent: %s", code, out, errs, w.dev.errText())
			}
			if !regexp.MustCompile(`authenticated: user alice <-> device sensor-7 \(` + profile + ` profile\)`).MatchString(out) {
				t.Fatalf("login output: %q", out)
			}

			code, out, errs = w.user(nil, "task", "echo", "hello", "world")
			if code != 0 || strings.TrimSpace(out) != "hello world" {
				t.Fatalf("echo task: exit %d out %q err %q\nagent: %s", code, out, errs, w.dev.errText())
			}
			code, out, errs = w.user(nil, "task", "echo", `quote " and backslash \ stay`)
			if code != 0 || strings.TrimSpace(out) != `quote " and backslash \ stay` {
				t.Fatalf("echo task with JSON escapes: exit %d out %q err %q", code, out, errs)
			}
			code, _, errs = w.user(nil, "task", "no.such.task")
			if code == 0 || !strings.Contains(errs, "refused task") {
				t.Fatalf("unknown task: exit %d err %q", code, errs)
			}

			must(t, nil, "gateway", "revoke-user", "alice", "--data", w.gw.data)
			code, _, errs = w.user(nil, "login")
			if code == 0 || !strings.Contains(errs, "rejected") {
				t.Fatalf("revoked user: exit %d, stderr %q; want a rejected login\nagent: %s", code, errs, w.dev.errText())
			}
			if !strings.Contains(w.dev.errText(), "m3 (gateway) refused: rejected") {
				t.Fatalf("agent log does not show the gateway's refusal:\n%s", w.dev.errText())
			}
		})
	}
}

// TestFirmwareAgentRefusals sends the C agent's endpoints inputs that each
// must be refused with one answer (spec sections 7, 9 and 11): the error
// message's bytes and the CoAP code. A login still works afterwards.
func TestFirmwareAgentRefusals(t *testing.T) {
	agent := buildAgent(t)
	w := newFirmwareWorld(t, "hardened", agent)
	classic := bytes.Repeat([]byte{0x5a}, 120)
	classic[0] = 0x01
	unknownRecord := append([]byte{0x02, 0x10}, bytes.Repeat([]byte{0xa5}, 40)...)
	sid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	for _, tc := range []struct {
		name, path string
		payload    []byte
		code       coap.Code
		want       string
	}{
		{"login empty", "/tagauth/login", nil, coap.BadRequest, "007f01"},
		{"login classic", "/tagauth/login", classic, coap.BadRequest, "017f02"},
		{"login byte 0x07", "/tagauth/login", []byte{0x07, 0x01}, coap.BadRequest, "007f02"},
		{"login hardened byte only", "/tagauth/login", []byte{0x02}, coap.BadRequest, "027f01"},
		{"login stale", "/tagauth/login", staleM1(), coap.Unauthorized, "027f03"},
		{"confirm sid only", "/tagauth/confirm", sid, coap.BadRequest, "007f01"},
		{"confirm classic m5", "/tagauth/confirm", append(sid, classic[:34]...), coap.BadRequest, "017f02"},
		{"confirm unknown sid", "/tagauth/confirm", append(sid, append([]byte{0x02, 0x05}, make([]byte, 32)...)...), coap.Unauthorized, "027f05"},
		{"task 33 bytes", "/tagauth/task", unknownRecord[:33], coap.BadRequest, "027f01"},
		{"task unknown sid", "/tagauth/task", unknownRecord, coap.Unauthorized, "027f05"},
	} {
		client := &coap.Client{ACKTimeout: 200 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, resp, err := client.Post(ctx, w.devAt, tc.path, tc.payload)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := hex.EncodeToString(resp); got != tc.want || code != tc.code {
			t.Errorf("%s: answer %s %s, want %s %s", tc.name, code, got, tc.code, tc.want)
		}
	}
	if code, _, errs := w.user(nil, "login"); code != 0 {
		t.Fatalf("login after the refusals: %s", errs)
	}
}

// staleM1 is a well-formed hardened m1 for user alice from 1970.
func staleM1() []byte {
	m := []byte{0x02, 0x01, 5, 'a', 'l', 'i', 'c', 'e', 1}
	m = append(m, make([]byte, 16+32+32)...)
	return append(m, 0, 0, 0, 0, 0, 0, 0, 1)
}

// TestFirmwareAgentConfirmChecksBeforeRoom: with every session slot taken,
// the C agent still answers a confirm request by the checks of spec
// sections 7 and 11 (a short payload, another profile, an unknown sid), not
// busy: room for a session matters only once an m5 has verified, as in the
// Go agent.
func TestFirmwareAgentConfirmChecksBeforeRoom(t *testing.T) {
	agent := buildAgent(t)
	w := newFirmwareWorld(t, "hardened", agent, "--sessions", "1")
	if code, _, errs := w.user(nil, "login"); code != 0 {
		t.Fatalf("login: %s\nagent: %s", errs, w.dev.errText())
	}
	// The one session slot is now taken by alice's session.
	sid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	m5 := append([]byte{0x02, 0x05}, make([]byte, 32)...)
	classicM5 := append([]byte{0x01, 0x05}, make([]byte, 32)...)
	for _, tc := range []struct {
		name    string
		payload []byte
		code    coap.Code
		want    string
	}{
		{"sid only", sid, coap.BadRequest, "007f01"},
		{"classic m5", append(slices.Clone(sid), classicM5...), coap.BadRequest, "017f02"},
		{"truncated m5", append(slices.Clone(sid), m5[:20]...), coap.BadRequest, "027f01"},
		{"unknown sid", append(slices.Clone(sid), m5...), coap.Unauthorized, "027f05"},
	} {
		client := &coap.Client{ACKTimeout: 200 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, resp, err := client.Post(ctx, w.devAt, "/tagauth/confirm", tc.payload)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := hex.EncodeToString(resp); got != tc.want || code != tc.code {
			t.Errorf("%s: answer %s %s, want %s %s", tc.name, code, got, tc.code, tc.want)
		}
	}
}
