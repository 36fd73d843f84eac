package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/device"
)

// userScene is a served gateway (cheap cards allowed), a device agent on
// loopback that alice is granted, and alice's enrolled card.
type userScene struct {
	dir, card, addr string
	agent           *device.Agent
}

const userTestPassword = "correct horse battery staple"

func newUserScene(t *testing.T, profile string) *userScene {
	t.Helper()
	dir, banner := gwServeTest(t, "--insecure-test-kdf", "--profile", profile)
	m := regexp.MustCompile(`admin API:\s+(\S+)\n\s+fingerprint:\s+([0-9a-f]{64})`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner:\n%s", banner)
	}
	credPath := filepath.Join(t.TempDir(), "d1.json")
	gwMustRun(t, "provision", "--id", "d1", "--group", "plant-a", "--out", credPath, "--data", dir)
	gwMustRun(t, "grant", "--user", "alice", "--group", "plant-a", "--data", dir)
	code := strings.TrimSpace(gwMustRun(t, "enrol-code", "--user", "alice", "--data", dir))
	t.Setenv("TAGAUTH_PASSWORD", userTestPassword)
	s := &userScene{dir: dir, card: filepath.Join(t.TempDir(), "alice.card")}
	userMustRun(t, nil, "enroll", "--admin", m[1], "--fingerprint", m[2], "--code", code, "--id", "alice",
		"--card", s.card, "--profile", profile, "--kdf-t", "1", "--kdf-m", "64")

	cred, err := credfile.Load(credPath)
	if err != nil {
		t.Fatal(err)
	}
	s.agent, err = device.New(device.Config{Credential: cred, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("device agent: %v", err)
		}
	})
	s.addr = s.agent.Addr().String()
	return s
}

// userRun runs "tagauth user ARGS" with stdin and returns its status and
// output.
func userRun(stdin io.Reader, args ...string) (int, string, string) {
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var stdout, stderr bytes.Buffer
	rc := runUserIO(args, stdin, &stdout, &stderr)
	return rc, stdout.String(), stderr.String()
}

func userMustRun(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	rc, out, errOut := userRun(stdin, args...)
	if rc != 0 {
		t.Fatalf("tagauth user %s: exit %d\n%s%s", strings.Join(args, " "), rc, out, errOut)
	}
	return out
}

// to is the login flags for the scene's device.
func (s *userScene) to(sub string, more ...string) []string {
	return append([]string{sub, "--card", s.card, "--device", s.addr, "--did", "d1"}, more...)
}

// TestUserPasswd: a login works before the change; after it the old
// password opens nothing and the new one logs in; a wrong old password
// changes no byte of the card file. Both profiles: under classic only the
// file's seal can tell a wrong old password.
func TestUserPasswd(t *testing.T) {
	for _, profile := range []string{"hardened", "classic"} {
		t.Run(profile, func(t *testing.T) {
			s := newUserScene(t, profile)
			if out := userMustRun(t, nil, s.to("login")...); !strings.Contains(out, "authenticated: user alice <-> device d1") {
				t.Fatalf("login before: %q", out)
			}
			before, err := os.ReadFile(s.card)
			if err != nil {
				t.Fatal(err)
			}

			// A wrong old password: refused, file untouched.
			t.Setenv("TAGAUTH_PASSWORD", "not the password")
			t.Setenv("TAGAUTH_NEW_PASSWORD", "new password 2")
			rc, _, errOut := userRun(nil, "passwd", "--card", s.card)
			if rc != 1 || !strings.Contains(errOut, "wrong password") || !strings.Contains(errOut, hintPassword) {
				t.Fatalf("passwd with a wrong old password: exit %d, %q", rc, errOut)
			}
			if after, _ := os.ReadFile(s.card); !bytes.Equal(after, before) {
				t.Fatal("a refused passwd changed the card file")
			}
			// The same password again: refused, nothing written.
			t.Setenv("TAGAUTH_PASSWORD", userTestPassword)
			t.Setenv("TAGAUTH_NEW_PASSWORD", userTestPassword)
			if rc, _, errOut := userRun(nil, "passwd", "--card", s.card); rc != 1 || !strings.Contains(errOut, "is the old one") {
				t.Fatalf("passwd to the same password: exit %d, %q", rc, errOut)
			}

			t.Setenv("TAGAUTH_NEW_PASSWORD", "new password 2")
			if out := userMustRun(t, nil, "passwd", "--card", s.card); !strings.Contains(out, "password changed") {
				t.Fatalf("passwd said %q", out)
			}
			fi, err := os.Stat(s.card)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("card file after passwd: %v %v", fi.Mode(), err)
			}

			// The old password no longer opens the card...
			rc, _, errOut = userRun(nil, s.to("login")...)
			if rc != 1 || !strings.Contains(errOut, "wrong password") {
				t.Fatalf("login with the old password: exit %d, %q", rc, errOut)
			}
			// ...and the new one logs in through the gateway.
			t.Setenv("TAGAUTH_PASSWORD", "new password 2")
			if out := userMustRun(t, nil, s.to("task", "echo", "after", "passwd")...); out != "after passwd\n" {
				t.Fatalf("task with the new password: %q", out)
			}
		})
	}
}

// TestUserTasks: the device lists its tasks, which the CLI shows as a
// table or as the device's JSON; a task an integrator adds is listed too.
func TestUserTasks(t *testing.T) {
	s := newUserScene(t, "hardened")
	s.agent.Handle("door.open", func(context.Context, string, []byte) ([]byte, error) { return []byte("open"), nil })
	out := userMustRun(t, nil, s.to("tasks")...)
	for _, want := range []string{"TASK", "echo", "[TEXT]", "sensor.read", "[temperature|humidity]", "control.write", "INSTRUCTION", "tasks", "door.open"} {
		if !strings.Contains(out, want) {
			t.Errorf("tasks lacks %q:\n%s", want, out)
		}
	}
	var list []device.TaskInfo
	if err := json.Unmarshal([]byte(userMustRun(t, nil, s.to("tasks", "--json")...)), &list); err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(list))
	for i, ti := range list {
		names[i] = ti.Name
	}
	if got := strings.Join(names, " "); got != "control.write door.open echo sensor.read tasks" {
		t.Errorf("tasks --json names %q", got)
	}
	// So many tasks that their descriptions do not fit one answer: the
	// names alone come back, then as many as fit and how many did not;
	// a prefix lists those.
	for i := range 16 {
		s.agent.Handle(fmt.Sprintf("plant.line%02d.valve", i), func(context.Context, string, []byte) ([]byte, error) { return nil, nil })
	}
	list = nil
	if err := json.Unmarshal([]byte(userMustRun(t, nil, s.to("tasks", "--json")...)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 21 || list[0].About != "" || list[20].Name != "tasks" {
		t.Errorf("a long list: %d entries, first %+v; want 21, names only", len(list), list[0])
	}
	for i := 16; i < 60; i++ {
		s.agent.Handle(fmt.Sprintf("plant.line%02d.valve", i), func(context.Context, string, []byte) ([]byte, error) { return nil, nil })
	}
	list = nil
	if err := json.Unmarshal([]byte(userMustRun(t, nil, s.to("tasks", "--json")...)), &list); err != nil {
		t.Fatal(err)
	}
	last := list[len(list)-1]
	if last.Name != "..." || !strings.Contains(last.About, fmt.Sprintf("%d more", 65-(len(list)-1))) {
		t.Errorf("a list too long for one answer ends with %+v (%d entries)", last, len(list))
	}
	out = userMustRun(t, nil, s.to("tasks", "plant.line5")...)
	if strings.Count(out, "plant.line5") != 10 || strings.Contains(out, "echo") {
		t.Errorf("tasks plant.line5:\n%s", out)
	}
}

// TestUserShell: several tasks over one login; a refused task is reported
// and the session goes on; the exit status says a task failed.
func TestUserShell(t *testing.T) {
	s := newUserScene(t, "hardened")
	in := "# a comment\n\necho one\nsensor.read humidity\nno.such.task\nhelp\necho two words\nquit\necho never\n"
	rc, out, errOut := userRun(strings.NewReader(in), s.to("shell")...)
	if rc != 1 {
		t.Fatalf("shell: exit %d, want 1 (one task failed)\n%s%s", rc, out, errOut)
	}
	lines := strings.Split(out, "\n")
	if lines[0] != "one" || !strings.Contains(lines[1], `"sensor":"humidity"`) || !strings.Contains(out, "two words\n") {
		t.Errorf("shell output:\n%s", out)
	}
	if strings.Contains(out, "never") {
		t.Error("the shell ran a task after quit")
	}
	if !strings.Contains(out, "end the session") {
		t.Error("help printed no help")
	}
	if !strings.Contains(errOut, `tagauth user shell: device d1 refused task "no.such.task": unknown task`) {
		t.Errorf("shell stderr %q", errOut)
	}
	// One login for all of it: the gateway counts one verify.
	stats := gwMustRun(t, "stats", "--json", "--data", s.dir)
	var st struct {
		Minutes []struct {
			OK int `json:"ok"`
		} `json:"minutes"`
	}
	if err := json.Unmarshal([]byte(stats), &st); err != nil {
		t.Fatalf("stats: %v\n%s", err, stats)
	}
	ok := 0
	for _, v := range st.Minutes {
		ok += v.OK
	}
	if ok != 1 {
		t.Errorf("the gateway verified %d logins for one shell, want 1\n%s", ok, stats)
	}

	// End of input ends it too, with status 0 when every task worked.
	if rc, out, errOut := userRun(strings.NewReader("echo a\necho b"), s.to("shell")...); rc != 0 || out != "a\nb\n" {
		t.Fatalf("shell to EOF: exit %d, %q %q", rc, out, errOut)
	}
}

// TestUserErrorHints: a refused login lists its possible causes; an
// unreachable admin API and a wrong pin say so; no prefix is doubled.
func TestUserErrorHints(t *testing.T) {
	s := newUserScene(t, "hardened")
	gwMustRun(t, "ungrant", "--user", "alice", "--group", "plant-a", "--data", s.dir)
	rc, _, errOut := userRun(nil, s.to("login")...)
	if rc != 1 || !strings.Contains(errOut, "refused") || !strings.Contains(errOut, "not granted this device's group") ||
		!strings.Contains(errOut, "clocks") || !strings.Contains(errOut, "--did") {
		t.Fatalf("refused login: exit %d\n%s", rc, errOut)
	}
	if strings.Contains(errOut, ": tagauth: ") {
		t.Errorf("doubled prefix: %q", errOut)
	}

	// A device address where nothing listens, and a card that is not there.
	rc, _, errOut = userRun(nil, "login", "--card", s.card, "--device", "127.0.0.1:9", "--did", "d1", "--timeout", "5s", "--ack-timeout", "200ms")
	if rc != 1 || !strings.Contains(errOut, "no answer from 127.0.0.1:9") || !strings.Contains(errOut, "is the device agent running") {
		t.Errorf("login to no device: exit %d\n%s", rc, errOut)
	}
	rc, _, errOut = userRun(nil, "login", "--card", s.card+".nope", "--device", s.addr, "--did", "d1")
	if rc != 1 || !strings.Contains(errOut, "no card file") || !strings.Contains(errOut, "check --card") {
		t.Errorf("login with no card: exit %d\n%s", rc, errOut)
	}

	// Enrolment against a port where nothing listens.
	rc, _, errOut = userRun(nil, "enroll", "--admin", "https://127.0.0.1:1", "--fingerprint", strings.Repeat("ab", 32),
		"--code", "AAAA-BBBB", "--id", "bob", "--card", filepath.Join(t.TempDir(), "bob.card"), "--timeout", "5s")
	if rc != 1 || !strings.Contains(errOut, "is the gateway running") || strings.Contains(errOut, "enroll: enrol:") {
		t.Fatalf("enroll with no gateway: exit %d\n%s", rc, errOut)
	}
	// Enrolment against the gateway with another fingerprint.
	banner := gwMustRun(t, "info", "--data", s.dir)
	m := regexp.MustCompile(`https://\S+`).FindString(banner)
	if m == "" {
		t.Fatalf("info names no admin URL:\n%s", banner)
	}
	rc, _, errOut = userRun(nil, "enroll", "--admin", m, "--fingerprint", strings.Repeat("ab", 32),
		"--code", "AAAA-BBBB", "--id", "bob", "--card", filepath.Join(t.TempDir(), "bob.card"))
	if rc != 1 || !strings.Contains(errOut, "certificate pin mismatch") || strings.Contains(errOut, "cannot reach") ||
		!strings.Contains(errOut, "check --fingerprint") {
		t.Fatalf("enroll with a wrong pin: exit %d\n%s", rc, errOut)
	}
}

func TestErrorLine(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		err  error
		want string
	}{
		{"gateway serve", errors.New("gateway: store is locked by another process"), "tagauth gateway serve: store is locked by another process"},
		{"gateway", fmt.Errorf("gateway: %w", errors.New("gateway: x")), "tagauth gateway: x"},
		{"user enroll", errors.New("enrol: cannot reach"), "tagauth user enroll: cannot reach"},
		{"user login", errors.New("login at 1.2.3.4 refused (4.03): tagauth: rejected"), "tagauth user login: login at 1.2.3.4 refused (4.03): rejected"},
		{"user login", errors.New("tagauth: wrong password (fuzzy verifier)"), "tagauth user login: wrong password (fuzzy verifier)"},
		{"user login", errors.New("card: no card file at x"), "tagauth user login: card: no card file at x"},
		{"user task", errors.New("user: "), "tagauth user task: user: "},
		{"user task", errors.New("device d1 refused task: x"), "tagauth user task: device d1 refused task: x"},
	} {
		if got := errorLine(tc.cmd, tc.err); got != tc.want {
			t.Errorf("errorLine(%q, %q) = %q, want %q", tc.cmd, tc.err, got, tc.want)
		}
	}
}
