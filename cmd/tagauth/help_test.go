package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/buildinfo"
	"github.com/tagauth/tagauth/protocol"
)

// TestTopLevelHelp: every way of asking for help prints the usage on
// stdout and exits 0; "help CMD" prints CMD's own -h text.
func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}, {"help", "help"}, {"help", "-h"}} {
		var stdout, stderr bytes.Buffer
		if rc := run(args, &stdout, &stderr); rc != 0 || !strings.HasPrefix(stdout.String(), "usage: tagauth <command>") {
			t.Errorf("tagauth %q: exit %d, stdout %q, stderr %q", args, rc, stdout.String(), stderr.String())
		}
		for _, c := range commands() {
			if !strings.Contains(stdout.String(), "  "+c.name+" ") {
				t.Errorf("tagauth %q does not list %s", args, c.name)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "user"}, "usage: tagauth user <subcommand>"},
		{[]string{"help", "user", "passwd"}, "usage: tagauth user passwd --card FILE"},
		{[]string{"user", "help", "shell"}, "usage: tagauth user shell --card FILE"},
		{[]string{"help", "demo"}, "usage: tagauth demo "},
		{[]string{"help", "version"}, "usage: tagauth version [--json]"},
		{[]string{"help", "gateway"}, "usage: tagauth gateway"},
		{[]string{"help", "bench", "mqtt"}, "usage: tagauth bench mqtt "},
	} {
		var stdout, stderr bytes.Buffer
		if rc := run(tc.args, &stdout, &stderr); rc != 0 || !strings.HasPrefix(stdout.String(), tc.want) {
			t.Errorf("tagauth %q: exit %d, stdout %q, stderr %q; want %q first", tc.args, rc, stdout.String(), stderr.String(), tc.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"help", "nosuch"}, &stdout, &stderr); rc != 2 || !strings.Contains(stderr.String(), `unknown command "nosuch"`) {
		t.Errorf("help nosuch: exit %d, %q", rc, stderr.String())
	}
}

// TestSubcommandHelp: each subcommand's -h prints "usage: tagauth CMD SUB
// ...", a description and its flags, and exits 0 (not Go's bare "Usage
// of ...").
func TestSubcommandHelp(t *testing.T) {
	for _, args := range [][]string{
		{"user", "enroll", "-h"}, {"user", "login", "-h"}, {"user", "task", "-h"}, {"user", "tasks", "-h"},
		{"user", "shell", "--help"}, {"user", "passwd", "-h"}, {"device", "-h"}, {"demo", "-h"},
		{"bench", "-h"}, {"bench", "mqtt", "-h"}, {"bench", "serve", "-h"}, {"version", "-h"},
	} {
		var stdout, stderr bytes.Buffer
		rc := run(args, &stdout, &stderr)
		words := args[:len(args)-1]
		want := "usage: tagauth " + strings.Join(words, " ")
		text := stderr.String()
		if rc != 0 || !strings.HasPrefix(text, want) || strings.Contains(text, "Usage of") {
			t.Errorf("tagauth %q: exit %d, stderr %q; want exit 0 and %q first", args, rc, text, want)
			continue
		}
		lines := strings.Split(text, "\n")
		if len(lines) < 3 || lines[1] != "" || len(lines[2]) < 10 {
			t.Errorf("tagauth %q: no description after the synopsis:\n%s", args, text)
		}
		if words[len(words)-1] != "serve" && !strings.Contains(text, "  -") {
			t.Errorf("tagauth %q lists no flags:\n%s", args, text)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"version"}, &stdout, &stderr); rc != 0 {
		t.Fatalf("version: exit %d %q", rc, stderr.String())
	}
	for _, want := range []string{"module:   github.com/tagauth/tagauth\n", "spec:     " + protocol.SpecVersion + "\n", "profiles: hardened, classic\n", "go:       go1."} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("version lacks %q:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if rc := run([]string{"version", "--json"}, &stdout, &stderr); rc != 0 {
		t.Fatalf("version --json: exit %d %q", rc, stderr.String())
	}
	var in buildinfo.Info
	if err := json.Unmarshal(stdout.Bytes(), &in); err != nil {
		t.Fatal(err)
	}
	if want := buildinfo.Read(); in.SpecVersion != protocol.SpecVersion || in.GoVersion != want.GoVersion || in.Revision != want.Revision || len(in.Profiles) != 2 {
		t.Errorf("version --json: %+v", in)
	}
	stdout.Reset()
	if rc := run([]string{"--version"}, &stdout, &stderr); rc != 0 || !strings.Contains(stdout.String(), "spec:") {
		t.Errorf("--version: exit %d %q", rc, stdout.String())
	}
	if rc := run([]string{"version", "extra"}, &stdout, &stderr); rc != 2 {
		t.Errorf("version extra: exit %d, want 2", rc)
	}
}
