package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLoginAndTasks is the whole product path for each profile: a gateway
// process, an operator provisioning a device and granting a user, the user
// enrolling with the CLI, the device agent process, logins, tasks, and a
// revocation honoured on the next login.
func TestLoginAndTasks(t *testing.T) {
	for _, profile := range []string{"hardened", "classic"} {
		t.Run(profile, func(t *testing.T) {
			w := newWorld(t, profile)

			code, out, errs := w.user(nil, "login")
			if code != 0 {
				t.Fatalf("login: exit %d: %s %s", code, out, errs)
			}
			if !regexp.MustCompile(`authenticated: user alice <-> device sensor-7 \(`+profile+` profile\)`).MatchString(out) ||
				!regexp.MustCompile(`session key fingerprint: [0-9a-f]{16}\n`).MatchString(out) {
				t.Fatalf("login output: %q", out)
			}

			code, out, errs = w.user(nil, "task", "echo", "hello", "world")
			if code != 0 || strings.TrimSpace(out) != "hello world" {
				t.Fatalf("echo task: exit %d out %q err %q", code, out, errs)
			}
			code, out, errs = w.user(nil, "task", "sensor.read")
			if code != 0 || !strings.Contains(out, "simulated") {
				t.Fatalf("sensor.read task: exit %d out %q err %q", code, out, errs)
			}
			code, out, errs = w.user(nil, "task", "control.write", "valve-3=open")
			if code != 0 {
				t.Fatalf("control.write task: exit %d out %q err %q", code, out, errs)
			}
			code, _, errs = w.user(nil, "task", "no.such.task")
			if code == 0 || !strings.Contains(errs, "refused task") {
				t.Fatalf("unknown task: exit %d err %q", code, errs)
			}

			must(t, nil, "gateway", "revoke-user", "alice", "--data", w.gw.data)
			code, _, errs = w.user(nil, "login")
			if code == 0 || !strings.Contains(errs, "rejected") {
				t.Fatalf("revoked user: exit %d, stderr %q; want a rejected login", code, errs)
			}
			audit := must(t, nil, "gateway", "audit", "--data", w.gw.data, "--user", "alice", "--json")
			if !strings.Contains(audit, "revoked user") {
				t.Fatalf("audit log has no precise reason for the refused login:\n%s", audit)
			}
			// The audit never holds a password or the card's secrets.
			if strings.Contains(audit, "correct horse") {
				t.Fatal("audit log contains the password")
			}
		})
	}
}

// TestGatewayRestartKeepsState stops the gateway and starts it again on
// the same data directory and address: the enrolled user and the device
// still log in, and a revocation made before the restart still holds.
func TestGatewayRestartKeepsState(t *testing.T) {
	w := newWorld(t, "hardened")
	must(t, nil, "gateway", "provision", "--data", w.gw.data, "--id", "sensor-8", "--out", filepath.Join(w.dir, "sensor-8.json"))
	must(t, nil, "gateway", "revoke-device", "sensor-8", "--data", w.gw.data)
	addr := w.gw.coap
	w.gw.stop()
	if code, errs := w.gw.exited(10 * time.Second); code != 0 {
		t.Fatalf("gateway exited %d on SIGTERM: %s", code, errs)
	}
	w.gw = startGateway(t, w.gw.data, "hardened", addr)
	if code, out, errs := w.user(nil, "task", "echo", "again"); code != 0 || strings.TrimSpace(out) != "again" {
		t.Fatalf("after restart: exit %d out %q err %q", code, out, errs)
	}
	devices := must(t, nil, "gateway", "devices", "--data", w.gw.data)
	if !regexp.MustCompile(`sensor-8.*revoked`).MatchString(devices) {
		t.Fatalf("revocation lost across restart:\n%s", devices)
	}
}

// TestBadInputs: each gets a clear error and changes nothing.
func TestBadInputs(t *testing.T) {
	w := newWorld(t, "hardened")

	t.Run("wrong password", func(t *testing.T) {
		code, _, errs := w.user([]string{"TAGAUTH_PASSWORD=wrong horse"}, "login")
		if code == 0 || !strings.Contains(errs, "wrong password") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
		// The right password still works: nothing was changed.
		if code, _, errs := w.user(nil, "login"); code != 0 {
			t.Fatalf("right password after a wrong one: %s", errs)
		}
	})

	t.Run("corrupt card", func(t *testing.T) {
		data, err := os.ReadFile(w.card)
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(w.dir, "truncated.card")
		if err := os.WriteFile(bad, data[:len(data)/3], 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errs := run(t, w.userPW, "user", "login", "--card", bad, "--device", w.devAt, "--did", "sensor-7")
		if code == 0 || !strings.Contains(errs, "corrupt") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})

	t.Run("corrupt credential", func(t *testing.T) {
		bad := filepath.Join(w.dir, "bad-cred.json")
		if err := os.WriteFile(bad, []byte(`{"profile":"hardened","id":"x"`), 0o600); err != nil {
			t.Fatal(err)
		}
		p := start(t, nil, "device", "--cred", bad, "--listen", "127.0.0.1:0")
		if code, errs := p.exited(10 * time.Second); code == 0 || !strings.Contains(errs, bad) {
			t.Fatalf("device on a corrupt credential: exit %d, stderr %q", code, errs)
		}
	})

	t.Run("device unreachable", func(t *testing.T) {
		args := []string{"user", "login", "--card", w.card, "--device", freeUDPPort(t), "--did", "sensor-7", "--ack-timeout", "50ms", "--timeout", "3s"}
		code, _, errs := run(t, w.userPW, args...)
		if code == 0 || !regexp.MustCompile(`127\.0\.0\.1:\d+`).MatchString(errs) {
			t.Fatalf("exit %d, stderr %q: want an error that names the address", code, errs)
		}
	})

	t.Run("gateway unreachable", func(t *testing.T) {
		// A second agent for the same device, pointed at a port where no
		// gateway listens: the user is told the device is busy.
		p := start(t, nil, "device", "--cred", filepath.Join(w.dir, "sensor-7.json"), "--listen", "127.0.0.1:0", "--gateway", freeUDPPort(t))
		at := p.waitLine(`serving CoAP on (\S+),`)[1]
		code, _, errs := run(t, w.userPW, "user", "login", "--card", w.card, "--device", at, "--did", "sensor-7", "--timeout", "20s")
		if code == 0 || !strings.Contains(errs, "busy") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
		if !strings.Contains(p.errText(), "unreachable") && !strings.Contains(p.errText(), "no answer") {
			t.Fatalf("device log does not say the gateway is unreachable:\n%s", p.errText())
		}
	})

	t.Run("gateway refuses a key file others can read", func(t *testing.T) {
		data := filepath.Join(w.dir, "gw2")
		g := startGateway(t, data, "hardened", "127.0.0.1:0")
		g.stop()
		if err := os.Chmod(filepath.Join(data, "keys.json"), 0o644); err != nil {
			t.Fatal(err)
		}
		p := start(t, nil, "gateway", "serve", "--data", data, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0")
		if code, errs := p.exited(10 * time.Second); code == 0 || !strings.Contains(errs, "chmod 600") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})

	t.Run("gateway refuses a corrupt store", func(t *testing.T) {
		data := filepath.Join(w.dir, "gw3")
		g := startGateway(t, data, "hardened", "127.0.0.1:0")
		g.stop()
		if err := os.WriteFile(filepath.Join(data, "store.db"), []byte("not a database at all, just text"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := start(t, nil, "gateway", "serve", "--data", data, "--coap", "127.0.0.1:0", "--admin", "127.0.0.1:0")
		if code, errs := p.exited(10 * time.Second); code == 0 || !strings.Contains(errs, "corrupt") {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
	})
}
