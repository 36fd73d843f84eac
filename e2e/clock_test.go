package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/device"
	gwd "github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// TestStaleClock runs the gateway daemon with a clock 30 s ahead of the
// device's and the user's. The login is refused as stale_timestamp; the
// user is told to check clock sync, and the gateway's audit record says by
// how much the timestamp was off.
func TestStaleClock(t *testing.T) {
	skew := 30 * time.Second
	g, err := gwd.Open(gwd.Config{
		DataDir: filepath.Join(t.TempDir(), "gw"), CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		AdminToken: "5f0c9e27d4b8a6130f7e2d9c4b1a8e63d05f72c9b4e8a1d6370c5f9e2b8d4a16", AuditOut: io.Discard, AllowAll: true, InsecureTestKDF: true,
		Now: func() time.Time { return time.Now().Add(skew) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Run(ctx)
	t.Cleanup(func() { g.Close() })
	ac, err := adminapi.NewClient(g.AdminURL(), g.Fingerprint(), "5f0c9e27d4b8a6130f7e2d9c4b1a8e63d05f72c9b4e8a1d6370c5f9e2b8d4a16", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	hc := ac.HTTP
	raw, err := ac.Provision(ctx, adminapi.DeviceRequest{ID: "sensor-7"})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := credfile.Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	code, err := ac.EnrolCode(ctx, adminapi.EnrolCodeRequest{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}

	// Enrolment checks T_reg against the gateway's clock too: the user's
	// clock must agree, so enrol with the gateway's time.
	gwCfg := protocol.Config{Now: func() time.Time { return time.Now().Add(skew) }, Rand: rand.Reader}
	c, err := userclient.Enroll(ctx, hc, g.AdminURL(), code.Code, "alice", "pw", protocol.Hardened,
		protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, gwCfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := device.New(device.Config{Credential: cred, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	t.Cleanup(func() { a.Close() })

	u, err := protocol.Unlock(c, "pw", protocol.Config{Now: time.Now, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	_, err = userclient.Login(ctx, u, &coap.Client{ACKTimeout: 200 * time.Millisecond}, a.Addr().String(), "sensor-7")
	if !errors.Is(err, protocol.ErrStaleTimestamp) || !strings.Contains(err.Error(), "clocks") {
		t.Fatalf("login with a skewed gateway: %v; want stale_timestamp and a hint to check the clocks", err)
	}
	page, err := ac.Audit(ctx, adminapi.AuditQuery{Kind: adminapi.KindVerify})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || !strings.HasPrefix(page.Records[0].Reason, "stale T") ||
		!strings.Contains(page.Records[0].Detail, "off by -30") {
		t.Fatalf("audit of the stale verify: %+v; want reason stale T1/T2 and the skew in ms", page.Records)
	}
}
