package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// TestTokenCommands: an admin adds an operator token to a 0600 file and
// an auditor token on the terminal; each can do its role's work and is
// refused the rest; list shows them without the tokens; revoke ends one.
func TestTokenCommands(t *testing.T) {
	banner := gwServeUntil(t, "rate limits:")
	m := regexp.MustCompile(`admin API:\s+(\S+)\n\s+fingerprint:\s+([0-9a-f]{64})\n\s+admin token:\s+(\S+)`).FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("banner:\n%s", banner)
	}
	conn := []string{"--admin", m[1], "--fingerprint", m[2]}
	as := func(tokenFile string, args ...string) []string {
		return append(append(args, conn...), "--token-file", tokenFile)
	}
	admin := m[3]

	opsFile := filepath.Join(t.TempDir(), "ops.token")
	out := gwMustRun(t, as(admin, "token", "add", "--name", "ops", "--role", "operator", "--out", opsFile)...)
	if !strings.Contains(out, "wrote it to "+opsFile) {
		t.Fatalf("token add --out: %s", out)
	}
	fi, err := os.Stat(opsFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	opsToken, _ := os.ReadFile(opsFile)
	if strings.Contains(out, strings.TrimSpace(string(opsToken))) {
		t.Fatal("token add --out also printed the token")
	}
	if rc, _, errs := gwRun(as(admin, "token", "add", "--name", "ops2", "--role", "operator", "--out", opsFile)...); rc != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("token add over a file: %d %s", rc, errs)
	}

	out = gwMustRun(t, as(admin, "token", "add", "--name", "audit", "--role", "auditor")...)
	tok := regexp.MustCompile(`(?m)^([0-9a-f]{64})$`).FindStringSubmatch(out)
	if tok == nil {
		t.Fatalf("token add printed no token:\n%s", out)
	}
	auditFile := filepath.Join(t.TempDir(), "audit.token")
	if err := os.WriteFile(auditFile, []byte(tok[1]), 0o600); err != nil {
		t.Fatal(err)
	}

	// Each role's work, and a refusal of the rest.
	gwMustRun(t, as(opsFile, "enrol-code", "--user", "alice")...)
	gwMustRun(t, as(opsFile, "users")...)
	if rc, _, errs := gwRun(as(opsFile, "audit")...); rc != 1 || !strings.Contains(errs, "role operator") {
		t.Fatalf("audit as operator: %d %s", rc, errs)
	}
	if out := gwMustRun(t, as(auditFile, "audit", "--kind", "enrol")...); !strings.Contains(out, "by token ops") {
		t.Fatalf("audit as auditor lacks the acting token:\n%s", out)
	}
	if rc, _, errs := gwRun(as(auditFile, "users")...); rc != 1 || !strings.Contains(errs, "role auditor") {
		t.Fatalf("users as auditor: %d %s", rc, errs)
	}
	if rc, _, errs := gwRun(as(opsFile, "token", "list")...); rc != 1 || !strings.Contains(errs, "role operator") {
		t.Fatalf("token list as operator: %d %s", rc, errs)
	}

	var list adminapi.TokenList
	if err := json.Unmarshal([]byte(gwMustRun(t, as(admin, "token", "list", "--json")...)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Tokens) != 2 || list.Tokens[0].Name != "audit" || list.Tokens[1].Name != "ops" || list.Tokens[1].Role != adminapi.RoleOperator {
		t.Fatalf("token list --json: %+v", list)
	}
	text := gwMustRun(t, as(admin, "token", "list")...)
	if !regexp.MustCompile(`(?m)^ops\s+operator\s+\S+\s+\S+`).MatchString(text) || strings.Contains(text, tok[1]) {
		t.Fatalf("token list:\n%s", text)
	}

	if out := gwMustRun(t, as(admin, "token", "revoke", "ops")...); !strings.Contains(out, "revoked token ops") {
		t.Fatalf("token revoke: %s", out)
	}
	if rc, _, errs := gwRun(as(opsFile, "users")...); rc != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("users with a revoked token: %d %s", rc, errs)
	}
	if rc, _, errs := gwRun(as(admin, "token", "revoke", "ops")...); rc != 1 || !strings.Contains(errs, `no token named "ops"`) {
		t.Fatalf("revoking twice: %d %s", rc, errs)
	}
}

// TestTokenHelp: every token subcommand's -h has its synopsis and exits 0;
// misuse exits 2 before anything is sent.
func TestTokenHelp(t *testing.T) {
	for _, sub := range []string{"add", "list", "revoke"} {
		rc, _, errs := gwRun("token", sub, "-h")
		if rc != 0 || !strings.HasPrefix(errs, "usage: tagauth gateway token "+sub) || !strings.Contains(errs, "  -") {
			t.Errorf("token %s -h: exit %d\n%s", sub, rc, errs)
		}
	}
	var stdout, stderr bytes.Buffer
	if rc := runGateway([]string{"token", "-h"}, &stdout, &stderr); rc != 0 || !strings.Contains(stdout.String(), "tagauth gateway token add") {
		t.Errorf("token -h: exit %d %q", rc, stdout.String())
	}
	for _, args := range [][]string{
		{"token"}, {"token", "spin"}, {"token", "add", "--name", "x"}, {"token", "add", "--name", "x", "--role", "root"},
		{"token", "revoke"},
	} {
		if rc, _, _ := gwRun(args...); rc != 2 {
			t.Errorf("tagauth gateway %q: exit %d, want 2", args, rc)
		}
	}
}
