package gateway_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/protocol"
)

// registerWith sends m_reg for id made with kdf and returns the error.
func (tg *testGW) registerWith(id string, kdf protocol.KDFParams) error {
	tg.t.Helper()
	req, err := protocol.NewRegistrationRequest(tg.g.Profile(), id, password, kdf, clientConfig())
	if err != nil {
		tg.t.Fatal(err)
	}
	body := adminapi.RegisterRequest{Code: tg.enrolCode(id), Profile: tg.g.Profile().String(), ID: id,
		W: hex.EncodeToString(req.W[:]), R: hex.EncodeToString(req.R[:]), T: req.T,
		KDF: adminapi.KDF{T: req.KDF.Time, MKiB: req.KDF.MemoryKiB, P: req.KDF.Threads}}
	var cj adminapi.Card
	return adminapi.PostJSON(context.Background(), tg.hc, tg.url("/v1/register"), "", body, &cj)
}

// TestKDFFloor: a hardened card cheaper than the gateway's floor (in time
// or memory) is refused at /v1/register with a message saying what to
// use, and audited; at or above the floor it is issued.
func TestKDFFloor(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.InsecureTestKDF = false
	cfg.KDFFloor = protocol.KDFParams{Time: 2, MemoryKiB: 64, Threads: 1}
	tg := startGateway(t, cfg)
	for i, kdf := range []protocol.KDFParams{
		{Time: 1, MemoryKiB: 64, Threads: 1},  // time below
		{Time: 2, MemoryKiB: 32, Threads: 1},  // memory below
		{Time: 1, MemoryKiB: 8, Threads: 1},   // the issue's --kdf-t 1 --kdf-m 8
		{Time: 64, MemoryKiB: 16, Threads: 2}, // more lanes do not buy memory
	} {
		id := "weak" + itoa(uint64(i))
		err := tg.registerWith(id, kdf)
		var ae *adminapi.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest ||
			!strings.Contains(ae.Message, "below this gateway's floor") || !strings.Contains(ae.Message, "--kdf-t 2 --kdf-m 64") {
			t.Fatalf("%+v: %v, want 400 below the floor", kdf, err)
		}
		if a := tg.lastAudit(gateway.KindEnrol); a.Reason != "kdf below floor" || a.User != id {
			t.Errorf("audit %+v", a)
		}
	}
	if err := tg.registerWith("strong", protocol.KDFParams{Time: 2, MemoryKiB: 64, Threads: 1}); err != nil {
		t.Fatalf("at the floor: %v", err)
	}
}

// TestKDFFloorDefault: with no floor configured it is the spec's
// defaults, so a test-sized card is refused unless the test-only switch
// is on.
func TestKDFFloorDefault(t *testing.T) {
	cfg := testConfig(t.TempDir(), protocol.Hardened)
	cfg.InsecureTestKDF = false
	tg := startGateway(t, cfg)
	err := tg.registerWith("alice", fastKDF)
	var ae *adminapi.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "floor (t>=2, m>=19456 KiB)") {
		t.Fatalf("fast KDF under the default floor: %v", err)
	}
	// The classic profile has no KDF: no floor.
	classic := startGateway(t, testConfig(t.TempDir(), protocol.Classic))
	classic.enrol("bob")
}

// TestKDFFloorRange: a floor outside the spec's range does not open.
func TestKDFFloorRange(t *testing.T) {
	for _, f := range []protocol.KDFParams{{Time: 65, MemoryKiB: 64}, {Time: 1, MemoryKiB: 4}, {Time: 1, MemoryKiB: 1 << 21}} {
		cfg := testConfig(t.TempDir(), protocol.Hardened)
		cfg.KDFFloor = f
		if _, err := gateway.Open(cfg); err == nil || !strings.Contains(err.Error(), "KDF floor") {
			t.Errorf("floor %+v: %v", f, err)
		}
	}
}
