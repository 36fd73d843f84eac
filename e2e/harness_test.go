// Package e2e runs the real tagauth binary: a gateway process, a device
// agent process and the user CLI, talking over loopback UDP and HTTPS.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/tagauth/tagauth/internal/testenv"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is the tagauth binary built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tagauth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "tagauth")
	build := exec.Command("go", "build", "-o", bin, "github.com/tagauth/tagauth/cmd/tagauth")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tagauth:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a long-running tagauth subcommand whose stdout is scanned for
// lines and whose stderr is kept for failure messages.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    []string
	stderr bytes.Buffer
	done   chan struct{}
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
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

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// waitLine waits for a stdout line matching re and returns its submatches.
func (p *proc) waitLine(re string) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	scan := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.out {
			if m = rx.FindStringSubmatch(l); m != nil {
				return true
			}
		}
		return false
	}
	exited := false
	found := testenv.Poll(p.t.Context(), 20*time.Second, func() bool {
		if scan() {
			return true
		}
		select {
		case <-p.done:
			// Every line is in p.out once done is closed: look once
			// more, for a line read after the scan above.
			exited = true
			scan()
			return true
		default:
			return false
		}
	})
	switch {
	case m == nil && exited:
		p.t.Fatalf("%s exited before printing %q\nstdout: %s\nstderr: %s", p.cmd.Args[1], re, p.stdout(), p.errText())
	case !found:
		p.t.Fatalf("%s did not print %q in time\nstdout: %s\nstderr: %s", p.cmd.Args[1], re, p.stdout(), p.errText())
	}
	return m
}

func (p *proc) stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

func (p *proc) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// stop sends SIGTERM and waits for a clean exit; SIGKILL after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exited waits for the process to end by itself and returns its stderr.
func (p *proc) exited(timeout time.Duration) (int, string) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %v", p.cmd.Args[1], timeout)
	}
	return p.cmd.ProcessState.ExitCode(), p.errText()
}

// run runs a short tagauth command and returns its exit code, stdout and
// stderr.
func run(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			t.Fatalf("running %v: %v", args, err)
		}
	}
	return code, out.String(), errb.String()
}

// must runs a command that has to succeed and returns its stdout.
func must(t *testing.T, env []string, args ...string) string {
	t.Helper()
	code, out, errs := run(t, env, args...)
	if code != 0 {
		t.Fatalf("tagauth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// freeUDPPort returns a loopback UDP port that was free a moment ago, so
// that a restarted gateway can come back on the same address.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// gateway is a running gateway process and how to reach it.
type gateway struct {
	*proc
	data, coap, admin, fingerprint string
}

func startGateway(t *testing.T, data, profile, coapAddr string) *gateway {
	t.Helper()
	p := start(t, nil, "gateway", "serve", "--data", data, "--profile", profile,
		"--coap", coapAddr, "--admin", "127.0.0.1:0", "--audit-log", data+"-audit.jsonl", "--insecure-test-kdf",
		"--audit-sample", "100ms") // refusal samples (with their counts) are written soon: see refusalCounts
	g := &gateway{proc: p, data: data}
	g.coap = p.waitLine(`CoAP verify:\s+(\S+)`)[1]
	g.admin = p.waitLine(`admin API:\s+(\S+)`)[1]
	g.fingerprint = p.waitLine(`fingerprint:\s+([0-9a-f]{64})`)[1]
	return g
}

// world is a gateway, a provisioned device agent and an enrolled user.
type world struct {
	t      *testing.T
	dir    string
	gw     *gateway
	dev    *proc
	devAt  string
	card   string
	userPW []string // environment carrying the password
}

const fastKDF = "--kdf-t=1"

func newWorld(t *testing.T, profile string) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, dir: dir}
	data := filepath.Join(dir, "gw")
	w.gw = startGateway(t, data, profile, freeUDPPort(t))
	must(t, nil, "gateway", "provision", "--data", data, "--id", "sensor-7", "--group", "plant-a", "--out", filepath.Join(dir, "sensor-7.json"))
	must(t, nil, "gateway", "grant", "--data", data, "--user", "alice", "--group", "plant-a")
	code := strings.TrimSpace(must(t, nil, "gateway", "enrol-code", "--data", data, "--user", "alice"))
	w.card = filepath.Join(dir, "alice.card")
	w.userPW = []string{"TAGAUTH_PASSWORD=correct horse"}
	must(t, w.userPW, "user", "enroll", "--admin", w.gw.admin, "--fingerprint", w.gw.fingerprint,
		"--code", code, "--id", "alice", "--card", w.card, "--profile", profile, fastKDF, "--kdf-m=1024")
	w.startDevice("")
	return w
}

func (w *world) startDevice(gatewayOverride string) {
	w.t.Helper()
	args := []string{"device", "--cred", filepath.Join(w.dir, "sensor-7.json"), "--listen", "127.0.0.1:0"}
	if gatewayOverride != "" {
		args = append(args, "--gateway", gatewayOverride)
	}
	w.dev = start(w.t, nil, args...)
	w.devAt = w.dev.waitLine(`serving CoAP on (\S+),`)[1]
}

// user runs "tagauth user SUB" against the world's device.
func (w *world) user(env []string, sub string, extra ...string) (int, string, string) {
	w.t.Helper()
	args := append([]string{"user", sub, "--card", w.card, "--device", w.devAt, "--did", "sensor-7", "--ack-timeout", "200ms", "--timeout", "10s"}, extra...)
	return run(w.t, append(append([]string(nil), w.userPW...), env...), args...)
}

// refusalCounts is the number of refused verifies of user by reason, as
// the audit trail has them: refusals are sampled, so a record stands for
// its count of them (1 when it has none).
func refusalCounts(t *testing.T, data, user string) map[string]int {
	t.Helper()
	var audit struct {
		Records []struct {
			Kind, Outcome, Reason string
			Count                 int
		}
	}
	if err := json.Unmarshal([]byte(must(t, nil, "gateway", "audit", "--data", data, "--user", user, "--kind", "verify", "--json")), &audit); err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, r := range audit.Records {
		if r.Outcome == "refused" {
			n[r.Reason] += max(r.Count, 1)
		}
	}
	return n
}
