package adminsvc_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc/adminsvctest"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

func rowsOf(t *testing.T, csv string) []adminapi.DeviceRow {
	t.Helper()
	rows, err := adminapi.ParseDevicesCSV(strings.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func deviceCount(t *testing.T, h *adminsvctest.Harness) int {
	t.Helper()
	d, err := h.Svc.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return len(d.Devices)
}

func TestProvisionBatch(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	rows := rowsOf(t, "id,group\nsensor-1,plant-a\n\"a/b, \"\"c\"\"\",\n../x\n")
	res, err := h.Svc.ProvisionBatch(ctx, "10.0.0.9:1", rows)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Clear()
	wantIDs := []string{"sensor-1", `a/b, "c"`, "../x"}
	wantFiles := []string{"sensor-1.json", "a%2Fb%2C%20%22c%22.json", "%2E.%2Fx.json"}
	if len(res.Devices) != 3 {
		t.Fatalf("%d devices in the answer, want 3", len(res.Devices))
	}
	tags := map[[32]byte]bool{}
	for i, d := range res.Devices {
		c, err := credfile.Unmarshal(d.Credential)
		if err != nil || c.ID != wantIDs[i] || d.ID != wantIDs[i] || d.File != wantFiles[i] || d.Line != i+2 || c.KV != 1 || d.KV != 1 {
			t.Fatalf("device %d: %+v (credential %+v, %v)", i, d, c, err)
		}
		// The credential is the one Provision would issue.
		want, err := protocol.ProvisionDevice(protocol.Hardened, c.ID, h.Keys.Newest())
		if err != nil || want.Tag != c.Tag {
			t.Fatalf("device %q: tag is not Tag_j under the newest key (%v)", c.ID, err)
		}
		tags[c.Tag] = true
		if h.Reg.DeviceState(c.ID) != protocol.Active {
			t.Fatalf("device %q: the registry was not told", c.ID)
		}
	}
	if len(tags) != 3 {
		t.Fatal("two devices of a batch share a tag")
	}
	kept := h.Audit.Kept()
	if len(kept) != 3 {
		t.Fatalf("%d audit records, want one per device: %+v", len(kept), kept)
	}
	for i, r := range kept {
		if r.Kind != adminapi.KindProvision || r.Device != wantIDs[i] || r.Source != "10.0.0.9:1" || !strings.HasSuffix(r.Detail, "(batch of 3)") {
			t.Fatalf("audit record %d: %+v", i, r)
		}
	}
	if kept[0].Detail != "group plant-a (batch of 3)" {
		t.Fatalf("audit detail %q", kept[0].Detail)
	}

	// A re-run is refused, naming every row, and changes nothing.
	_, err = h.Svc.ProvisionBatch(ctx, "x", append(rows, adminapi.DeviceRow{Line: 9, ID: "new"}))
	wantKind(t, "re-run", err, adminsvc.Conflict)
	for _, want := range []string{"3 of 4 rows refused, nothing was provisioned", "line 2: device \"sensor-1\" is already provisioned", "line 4:"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("re-run: %q does not say %q", err, want)
		}
	}
	if n := deviceCount(t, h); n != 3 || h.Reg.DeviceState("new") != protocol.Unknown {
		t.Fatalf("after a refused re-run: %d devices", n)
	}
}

func TestProvisionBatchRefusals(t *testing.T) {
	h := adminsvctest.New(t, protocol.Classic)
	if _, err := h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "old"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Svc.RevokeDevice(ctx, "x", "old"); err != nil {
		t.Fatal(err)
	}
	code, err := h.Svc.EnrolCode(ctx, "x", adminapi.EnrolCodeRequest{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Svc.Register(ctx, "x", registerRequest(t, protocol.Classic, "alice", code.Code)); err != nil {
		t.Fatal(err)
	}
	before := len(h.Audit.Kept())
	long := strings.Repeat("x", protocol.MaxIDLen+1)
	rows := rowsOf(t, "ok-1,g\nold,g\nalice\n,g\nok-1\n"+long+"\nbad-group,*\n\"bad\xff\"\nok-2\n")
	_, err = h.Svc.ProvisionBatch(ctx, "x", rows)
	wantKind(t, "bad rows", err, adminsvc.Invalid)
	for _, want := range []string{
		"7 of 9 rows refused, nothing was provisioned",
		`line 2: device "old" is already provisioned (revoked ids stay taken)`,
		`line 3: classic profile: "alice" is a user id`,
		"line 4: id: empty identity",
		`line 5: device "ok-1" is also on line 1`,
		"line 6: id: identity of 65 bytes",
		"line 7: group \"*\" is reserved",
		"line 8: id: identity is not UTF-8",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if i, j := strings.Index(err.Error(), "line 2:"), strings.Index(err.Error(), "line 8:"); i < 0 || j < i {
		t.Errorf("refusal %q does not name the rows in the file's order", err)
	}
	if strings.Contains(err.Error(), "line 1:") || strings.Contains(err.Error(), "line 9:") {
		t.Errorf("refusal %q names a good row", err)
	}
	if n := deviceCount(t, h); n != 1 || len(h.Audit.Kept()) != before {
		t.Fatalf("after a refused batch: %d devices, %d new audit records", n, len(h.Audit.Kept())-before)
	}

	// Only taken ids: a conflict.
	_, err = h.Svc.ProvisionBatch(ctx, "x", rowsOf(t, "new\nold\n"))
	wantKind(t, "a taken id", err, adminsvc.Conflict)

	// The refusal lists the first maxProblems rows and counts the rest.
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, "dup\n%s\n", strings.Repeat("d", i%3+1))
	}
	_, err = h.Svc.ProvisionBatch(ctx, "x", rowsOf(t, b.String()))
	wantKind(t, "many bad rows", err, adminsvc.Invalid)
	if !strings.Contains(err.Error(), "56 of 60 rows refused") || !strings.Contains(err.Error(), "... and 36 more") || strings.Count(err.Error(), "\n  line ") != 20 {
		t.Fatalf("many bad rows: %q", err)
	}

	// Over the limit.
	big := make([]adminapi.DeviceRow, adminapi.MaxBatchRows+1)
	_, err = h.Svc.ProvisionBatch(ctx, "x", big)
	wantKind(t, "too many rows", err, adminsvc.Invalid)
	_, err = h.Svc.ProvisionBatch(ctx, "x", nil)
	wantKind(t, "no rows", err, adminsvc.Invalid)
}

// TestProvisionBatchStoreDecides: when the registry lags, the store's
// refusal names the row, and nothing is created.
func TestProvisionBatchStoreDecides(t *testing.T) {
	h := adminsvctest.New(t, protocol.Classic)
	h.SetLag(true)
	if _, err := h.Svc.Provision(ctx, "x", adminapi.DeviceRequest{ID: "taken"}); err != nil {
		t.Fatal(err)
	}
	_, err := h.Svc.ProvisionBatch(ctx, "x", rowsOf(t, "a\nb\ntaken\nc\n"))
	wantKind(t, "store refusal", err, adminsvc.Conflict)
	if !errors.Is(err, store.ErrExists) || !strings.Contains(err.Error(), `line 3: device "taken"`) || !strings.Contains(err.Error(), "nothing was provisioned") {
		t.Fatalf("store refusal: %v", err)
	}
	if n := deviceCount(t, h); n != 1 {
		t.Fatalf("%d devices after a refused batch, want 1", n)
	}
}

func TestProvisionBatchAuditDown(t *testing.T) {
	h := adminsvctest.New(t, protocol.Hardened)
	h.Audit.SetDown(errors.New("disk full"))
	_, err := h.Svc.ProvisionBatch(ctx, "x", rowsOf(t, "a\nb\n"))
	wantKind(t, "audit down", err, adminsvc.Unavailable)
	if n := deviceCount(t, h); n != 0 {
		t.Fatalf("%d devices provisioned with the audit down", n)
	}
}
