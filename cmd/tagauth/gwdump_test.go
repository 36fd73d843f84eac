package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
)

// registryLines are a dump's user, device, grant and key lines: what must
// survive every move.
func registryLines(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		for _, p := range []string{`{"user":`, `{"device":`, `{"grant":`, `{"key":`} {
			if strings.HasPrefix(l, p) {
				keep = append(keep, l)
			}
		}
	}
	return strings.Join(keep, "")
}

// TestGatewayBackupDumpCLI drives backup, restore, audit export, dump and
// load as an operator would: a served gateway is backed up (passphrase
// and recipient), restored, dumped, loaded into PostgreSQL and back into
// a new embedded store; refusals exit 1 and change nothing.
func TestGatewayBackupDumpCLI(t *testing.T) {
	dir, _ := gwServeTest(t)
	byData := []string{"--data", dir}
	tmp := t.TempDir()
	gwMustRun(t, append([]string{"provision", "--id", "d1", "--group", "lab", "--out", filepath.Join(tmp, "d1.json")}, byData...)...)
	gwMustRun(t, append([]string{"provision", "--id", "d2", "--out", filepath.Join(tmp, "d2.json")}, byData...)...)
	gwMustRun(t, append([]string{"grant", "--user", "alice", "--group", "lab"}, byData...)...)
	gwMustRun(t, append([]string{"revoke-device", "d2"}, byData...)...)

	// The served embedded store cannot be dumped: the message says what to do.
	rc, _, errOut := gwRun("dump", "--data", dir, "--out", filepath.Join(tmp, "x.jsonl"))
	if rc != 1 || !strings.Contains(errOut, "tagauth gateway backup") {
		t.Fatalf("dump of a served store: %d %q", rc, errOut)
	}

	// Audit export: the gateway's own audit lines, for the range.
	export := filepath.Join(tmp, "audit.jsonl")
	gwMustRun(t, append([]string{"audit", "export", "--since", "1h", "--out", export}, byData...)...)
	f, err := os.Open(export)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l["msg"] != "audit" || l["level"] != "INFO" {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		kinds = append(kinds, l["kind"].(string))
	}
	f.Close()
	if got := strings.Join(kinds, ","); got != "provision,provision,policy,revoke" {
		t.Errorf("exported kinds %s", got)
	}
	if rc, out, _ := gwRun(append([]string{"audit", "export", "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02T00:00:00Z"}, byData...)...); rc != 0 || out != "" {
		t.Errorf("export of an empty range: %d %q", rc, out)
	}
	if rc, _, _ := gwRun(append([]string{"audit", "export"}, byData...)...); rc != 2 {
		t.Errorf("export without --since: exit %d, want 2", rc)
	}

	// Backups: to a passphrase read from a file, and to a recipient.
	pass := filepath.Join(tmp, "pass")
	if err := os.WriteFile(pass, []byte("a long backup passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bPass := filepath.Join(tmp, "b1.age")
	gwMustRun(t, append([]string{"backup", "--out", bPass, "--passphrase-file", pass}, byData...)...)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(tmp, "id.txt")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bRecip := filepath.Join(tmp, "b2.age")
	gwMustRun(t, append([]string{"backup", "--out", bRecip, "--recipient", id.Recipient().String()}, byData...)...)
	for _, b := range []string{bPass, bRecip} {
		fi, err := os.Stat(b)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup %s: %v %v", b, fi, err)
		}
	}
	if rc, _, _ := gwRun(append([]string{"backup", "--out", filepath.Join(tmp, "b3.age"), "--recipient", "age1nope"}, byData...)...); rc != 2 {
		t.Errorf("backup to a bad recipient: exit %d, want 2", rc)
	}

	// Restores: the wrong passphrase restores nothing.
	wrong := filepath.Join(tmp, "wrong")
	if err := os.WriteFile(wrong, []byte("not it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r0 := filepath.Join(tmp, "r0")
	if rc, _, errOut := gwRun("restore", "--in", bPass, "--data", r0, "--passphrase-file", wrong); rc != 1 || !strings.Contains(errOut, "does not decrypt") {
		t.Fatalf("restore with the wrong passphrase: %d %q", rc, errOut)
	}
	if _, err := os.Stat(r0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore made %s", r0)
	}
	r1, r2 := filepath.Join(tmp, "r1"), filepath.Join(tmp, "r2")
	gwMustRun(t, "restore", "--in", bPass, "--data", r1, "--passphrase-file", pass)
	gwMustRun(t, "restore", "--in", bRecip, "--data", r2, "--identity", idFile)
	if rc, _, errOut := gwRun("restore", "--in", bRecip, "--data", r2, "--identity", idFile); rc != 1 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("restore into a filled directory: %d %q", rc, errOut)
	}

	// Dump the restored store, load it into PostgreSQL, dump that and load
	// it into a new embedded store: the registry survives every step.
	d1 := filepath.Join(tmp, "d1.jsonl")
	gwMustRun(t, "dump", "--data", r1, "--audit", "--out", d1)
	reg := registryLines(t, d1)
	if !strings.Contains(reg, `"id":"d1"`) || !strings.Contains(reg, `"revoked":true`) || !strings.Contains(reg, `"group":"lab"`) || !strings.Contains(reg, `{"key":`) {
		t.Fatalf("the dump of the restored store:\n%s", reg)
	}
	su, _ := pgtest.Schema(t)
	gwMustRun(t, "load", "--in", d1, "--store", su, "--data", r1)
	if rc, _, errOut := gwRun("load", "--in", d1, "--store", su, "--data", r1); rc != 1 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("a second load: %d %q", rc, errOut)
	}
	d2 := filepath.Join(tmp, "d2.jsonl")
	gwMustRun(t, "dump", "--store", su, "--data", r1, "--audit", "--out", d2)
	if got := registryLines(t, d2); got != reg {
		t.Fatalf("postgres dump differs:\n%s\nvs\n%s", got, reg)
	}

	back := filepath.Join(tmp, "back")
	if err := os.Mkdir(back, 0o700); err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(filepath.Join(r1, keyfile.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(back, keyfile.FileName), kb, 0o600); err != nil {
		t.Fatal(err)
	}
	// A truncated dump is refused by line and leaves no store behind.
	raw, err := os.ReadFile(d2)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(tmp, "cut.jsonl")
	if err := os.WriteFile(cut, raw[:len(raw)-20], 0o600); err != nil {
		t.Fatal(err)
	}
	if rc, _, errOut := gwRun("load", "--in", cut, "--data", back); rc != 1 || !strings.Contains(errOut, "truncated") || !strings.Contains(errOut, "line ") {
		t.Fatalf("load of a truncated dump: %d %q", rc, errOut)
	}
	if _, err := os.Stat(filepath.Join(back, bolt.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused load left a store")
	}
	gwMustRun(t, "load", "--in", d2, "--data", back)
	d3 := filepath.Join(tmp, "d3.jsonl")
	gwMustRun(t, "dump", "--data", back, "--audit", "--out", d3)
	if got := registryLines(t, d3); got != reg {
		t.Fatalf("bolt dump after the round trip differs:\n%s\nvs\n%s", got, reg)
	}
	a1, a3 := strings.Count(string(raw), `{"audit":`), strings.Count(readText(t, d3), `{"audit":`)
	if a1 == 0 || a1 != a3 {
		t.Errorf("audit records: %d in the postgres dump, %d after the round trip", a1, a3)
	}
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGatewayDumpCLIUsage: missing or conflicting flags are usage errors
// (exit 2), and -h is help (exit 0).
func TestGatewayDumpCLIUsage(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"dump"},
		{"dump", "--out", "x", "stray"},
		{"dump", "--out", "x", "--store", "postgres://127.0.0.1:1/x"}, // no key file, no --profile
		{"load"},
		{"backup", "--data", dir},
		{"backup", "--out", "x", "--recipient", "age1x", "--passphrase-file", "p", "--data", dir},
		{"restore", "--in", "x"},
		{"restore", "--in", "x", "--data", dir, "--identity", "i", "--passphrase-file", "p"},
	} {
		if rc, _, errOut := gwRun(args...); rc != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, rc, errOut)
		}
	}
	for _, c := range []string{"dump", "load", "backup", "restore"} {
		if rc, _, errOut := gwRun(c, "-h"); rc != 0 || !strings.Contains(errOut, "usage: tagauth gateway "+c) {
			t.Errorf("%s -h: exit %d %q", c, rc, errOut)
		}
	}
	if rc, _, errOut := gwRun("audit", "export", "-h"); rc != 0 || !strings.Contains(errOut, "usage: tagauth gateway audit export") {
		t.Errorf("audit export -h: exit %d %q", rc, errOut)
	}
	if rc, out, _ := gwRun("help"); rc != 0 || !strings.Contains(out, "restore") || !strings.Contains(out, "dump") {
		t.Errorf("help lists no dump/restore: %q", out)
	}
}

// TestGatewayPostgresBackupCLI: a replica on PostgreSQL is exported,
// backed up while it serves (a dump taken in one transaction) and restored
// into another, empty PostgreSQL store.
func TestGatewayPostgresBackupCLI(t *testing.T) {
	su, _ := pgtest.Schema(t)
	t.Setenv(envAdminToken, "pg-backup-cli-admin-token-0123456789")
	dir, _ := gwServeTest(t, "--store", su)
	byData := []string{"--data", dir}
	tmp := t.TempDir()
	gwMustRun(t, append([]string{"provision", "--id", "d1", "--group", "lab", "--out", filepath.Join(tmp, "d1.json")}, byData...)...)
	gwMustRun(t, append([]string{"grant", "--user", "alice", "--group", "lab"}, byData...)...)

	out := gwMustRun(t, append([]string{"audit", "export", "--since", "1h"}, byData...)...)
	if n := strings.Count(out, "\n"); n != 2 || !strings.Contains(out, `"kind":"provision"`) || !strings.Contains(out, `"device":"d1"`) {
		t.Fatalf("export from the postgres store:\n%s", out)
	}

	pass := filepath.Join(tmp, "pass")
	if err := os.WriteFile(pass, []byte("another backup passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bk := filepath.Join(tmp, "b.age")
	gwMustRun(t, append([]string{"backup", "--out", bk, "--passphrase-file", pass}, byData...)...)
	su2, _ := pgtest.Schema(t)
	rdir := filepath.Join(tmp, "r")
	gwMustRun(t, "restore", "--in", bk, "--data", rdir, "--passphrase-file", pass, "--store", su2)
	if _, err := os.Stat(filepath.Join(rdir, keyfile.FileName)); err != nil {
		t.Fatalf("no key file restored: %v", err)
	}
	d := filepath.Join(tmp, "d.jsonl")
	gwMustRun(t, "dump", "--store", su2, "--data", rdir, "--audit", "--out", d)
	got := readText(t, d)
	if !strings.Contains(got, `{"device":{"id":"d1","kv":1,"group":"lab"`) || !strings.Contains(got, `{"grant":{"user":"alice","group":"lab"}}`) ||
		strings.Count(got, `{"audit":`) < 2 {
		t.Fatalf("the restored store's dump:\n%s", got)
	}
	// The restored store is not empty any more: a second restore is refused
	// and leaves no directory.
	r2 := filepath.Join(tmp, "r2")
	if rc, _, errOut := gwRun("restore", "--in", bk, "--data", r2, "--passphrase-file", pass, "--store", su2); rc != 1 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("restore into a used store: %d %q", rc, errOut)
	}
	if _, err := os.Stat(r2); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore left %s", r2)
	}
}
