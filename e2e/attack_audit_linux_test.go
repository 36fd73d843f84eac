//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
)

// The full-disk attack needs a file system that fills up: a tmpfs, which
// only Linux (and root) can mount. It belongs with attack_audit_test.go.

// TestAttackAuditDiskFull: on a full disk (a tmpfs filled up) the gateway
// answers logins busy once it cannot write their records, refuses admin
// actions, and serves again by itself once space returns; every login it
// answered has its record.
func TestAttackAuditDiskFull(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		// Under CI=true a missing facility fails: CI runs as root and
		// must run this test.
		testenv.SkipOrFail(t, fmt.Sprintf("cannot mount a tmpfs here (%v): run as root (CAP_SYS_ADMIN) to test a real full disk (the journal's ENOSPC test in internal/auditlog uses /dev/full)", err))
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	data := filepath.Join(mnt, "gw")
	g := auditGateway(t, data)
	rs, card, cred := auditWorld(t, g)
	if a := login(card, cred, g.coap); !a.ok {
		t.Fatalf("login before the disk fills: %+v", a)
	}
	// Fill the file system.
	filler := filepath.Join(mnt, "filler")
	fill := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=64k")
	fill.Run() // ends with "No space left on device"
	busy, ok := 0, 1
	for range 400 {
		a := login(card, cred, g.coap)
		if a.ok {
			ok++ // the journal's last page still had room
			continue
		}
		if a.code == 0xa3 && a.wire == protocol.ErrBusy {
			busy++
			break
		}
		t.Fatalf("login on a full disk: %+v", a)
	}
	if busy == 0 {
		t.Fatal("no login answered busy on a full disk")
	}
	ac, err := adminapi.NewClient(g.admin, g.fingerprint, replicaToken, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ac.Provision(context.Background(), adminapi.DeviceRequest{ID: "d2"})
	if ae, isAPI := err.(*adminapi.APIError); !isAPI || ae.Status != http.StatusServiceUnavailable {
		t.Fatalf("provisioning on a full disk: %v, want 503", err)
	}
	if n := strings.Count(g.errText(), "audit records cannot be written"); n != 1 {
		t.Fatalf("%d log lines say audit is failing, want 1", n)
	}
	os.Remove(filler)
	testenv.EventuallyWithin(t, 10*time.Second, "logins to be served again", func() bool {
		a := login(card, cred, g.coap)
		if a.ok {
			ok++
		}
		return a.ok
	})
	recs := auditRecords(t, rs, adminapi.AuditQuery{Kind: adminapi.KindVerify, Outcome: adminapi.OutcomeOK})
	if len(recs) < ok {
		t.Fatalf("%d logins answered, %d recorded", ok, len(recs))
	}
	if !strings.Contains(g.errText(), "audit records are written again") {
		t.Fatal("no log line says audit recovered")
	}
}
