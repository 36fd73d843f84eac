package main

import (
	"context"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
)

// TestKeysRetireInUse: with the gateway running, "keys list --data" shows
// who holds each version and "keys retire --data" refuses a version an
// active device still holds, naming it, unless --force.
func TestKeysRetireInUse(t *testing.T) {
	dir, _ := gwServeTest(t)
	gwMustRun(t, "provision", "--id", "d1", "--out", filepath.Join(t.TempDir(), "d1.json"), "--data", dir)
	gwMustRun(t, "keys", "rotate", "--data", dir)
	gwWaitVersions(t, dir, "key versions: 1, 2")
	out := gwMustRun(t, "keys", "list", "--data", dir)
	if !regexp.MustCompile(`(?m)^1\s+\S+\s+0\s+1\s*$`).MatchString(out) || !regexp.MustCompile(`(?m)^2\s+\S+\s+0\s+0\s+newest`).MatchString(out) {
		t.Fatalf("keys list --data:\n%s", out)
	}
	rc, _, errOut := gwRun("keys", "retire", "1", "--data", dir)
	if rc != 1 || !strings.Contains(errOut, "0 active users and 1 active device (d1)") || !strings.Contains(errOut, "--force") {
		t.Fatalf("retire of a held version: %d %q", rc, errOut)
	}
	gwWaitVersions(t, dir, "key versions: 1, 2")
	out = gwMustRun(t, "keys", "retire", "1", "--force", "--data", dir)
	if !strings.Contains(out, "refused from now on: 0 active users and 1 active device (d1)") {
		t.Fatalf("forced retire said %q", out)
	}
	gwWaitVersions(t, dir, "key versions: 2\n")
}

// TestKeysRetireOffline: with no gateway running, the counts come from the
// store in --data, and the same refusal holds.
func TestKeysRetireOffline(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	g, err := gateway.Open(gateway.Config{DataDir: dir, CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", AuditOut: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	st, err := bolt.Open(filepath.Join(dir, gateway.StoreFileName))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, d := range []store.Device{{ID: "d1", KV: 1}, {ID: "d2", KV: 1}} {
		if err := st.CreateDevice(ctx, d, protocol.Hardened); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateUser(ctx, store.User{ID: "alice", KV: 1}, protocol.Hardened); err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeDevice(ctx, "d2", time.Now()); err != nil {
		t.Fatal(err)
	}
	st.Close()

	gwMustRun(t, "keys", "rotate", "--data", dir)
	out := gwMustRun(t, "keys", "list", "--data", dir)
	if !regexp.MustCompile(`(?m)^1\s+\S+\s+1\s+1\s*$`).MatchString(out) {
		t.Fatalf("keys list --data offline:\n%s", out)
	}
	rc, _, errOut := gwRun("keys", "retire", "1", "--data", dir)
	if rc != 1 || !strings.Contains(errOut, "1 active user (alice) and 1 active device (d1)") {
		t.Fatalf("offline retire of a held version: %d %q", rc, errOut)
	}
	if kf, err := keyfile.Load(filepath.Join(dir, keyfile.FileName)); err != nil || len(kf.Keys) != 2 {
		t.Fatalf("key file after a refused retire: %v %v", kf, err)
	}
	out = gwMustRun(t, "keys", "retire", "1", "--data", dir, "--force")
	if !strings.Contains(out, "refused from now on: 1 active user (alice) and 1 active device (d1)") {
		t.Fatalf("forced retire said %q", out)
	}
	if kf, err := keyfile.Load(filepath.Join(dir, keyfile.FileName)); err != nil || len(kf.Keys) != 1 || kf.Keys[0].Version != 2 {
		t.Fatalf("key file after a forced retire: %v %v", kf, err)
	}
}
