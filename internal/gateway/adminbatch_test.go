package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/protocol"
)

// TestProvisionBatchLogin: devices provisioned in a batch through the
// HTTPS API log in at once, through the gateway's real CoAP port, and the
// route refuses what is not a CSV batch it can take.
func TestProvisionBatchLogin(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	card := tg.enrol("alice")
	tg.grant("alice", "plant-a")
	c := &adminapi.Client{Base: tg.g.AdminURL(), Token: tg.token, HTTP: tg.hc}
	ctx := context.Background()
	res, err := c.ProvisionBatch(ctx, []byte("id,group\nbulk-1,plant-a\n\"bulk/2\",plant-a\nbulk-3\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Clear()
	if len(res.Devices) != 3 || res.Devices[1].File != "bulk%2F2.json" {
		t.Fatalf("batch answer: %+v", res.Devices)
	}
	var creds []credfile.Credential
	for _, d := range res.Devices {
		cred, err := credfile.Unmarshal(d.Credential)
		if err != nil || cred.ID != d.ID || cred.Gateway != tg.g.CoAPPublic() || cred.Fingerprint != tg.g.Fingerprint() {
			t.Fatalf("credential of %q: %+v %v", d.ID, cred, err)
		}
		creds = append(creds, cred)
	}
	tg.mustLogin(card, creds[0])
	tg.mustLogin(card, creds[1])
	tg.mustRefuse(card, creds[2], protocol.ReasonPolicyDenied.Name())
	if last := tg.lastAudit("provision"); last.Device != "bulk-3" || last.Detail != "no group (batch of 3); by token bootstrap" {
		t.Fatalf("last provision record: %+v", last)
	}

	status := func(err error) int {
		var ae *adminapi.APIError
		if errors.As(err, &ae) {
			return ae.Status
		}
		return 0
	}
	// A re-run: 409, naming the rows.
	_, err = c.ProvisionBatch(ctx, []byte("new\nbulk-1,plant-a\nbulk-3\n"))
	if status(err) != http.StatusConflict || !strings.Contains(err.Error(), `line 2: device "bulk-1" is already provisioned`) ||
		!strings.Contains(err.Error(), `line 3: device "bulk-3"`) || strings.Contains(err.Error(), "line 1") {
		t.Fatalf("re-run: %v", err)
	}
	// Bad CSV, too many rows, too many bytes, JSON instead of CSV.
	if _, err := c.ProvisionBatch(ctx, []byte("a,b,c\n")); status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "line 1: 3 fields") {
		t.Fatalf("three fields: %v", err)
	}
	var b strings.Builder
	for i := range adminapi.MaxBatchRows + 1 {
		fmt.Fprintf(&b, "many-%d\n", i)
	}
	if _, err := c.ProvisionBatch(ctx, []byte(b.String())); status(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "more than 10000 devices") {
		t.Fatalf("10001 rows: %v", err)
	}
	if _, err := c.ProvisionBatch(ctx, []byte(strings.Repeat("x", adminapi.MaxBatchBytes+1))); status(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body over the limit: %v", err)
	}
	if ae := tg.callErr(http.MethodPost, adminapi.PathDevicesBatch, tg.token, adminapi.DeviceRequest{ID: "x"}, http.StatusUnsupportedMediaType); !strings.Contains(ae.Message, "text/csv") {
		t.Fatalf("JSON body: %v", ae)
	}
	tg.callErr(http.MethodPost, adminapi.PathDevicesBatch, "wrong", nil, http.StatusUnauthorized)
	var dl adminapi.DeviceList
	tg.call(http.MethodGet, adminapi.PathDevices, nil, &dl)
	if len(dl.Devices) != 3 {
		t.Fatalf("%d devices after the refused batches, want 3", len(dl.Devices))
	}
}
