package device

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// TestDeviceInfo is item 13: the user's client learns which DID_j the
// agent serves and stops before m1 when it is not the one typed, so a
// mistyped --did never reaches the gateway as a failed login.
func TestDeviceInfo(t *testing.T) {
	r := newRig(t, protocol.Hardened, nil)
	ctx := context.Background()
	p, did, err := userclient.DeviceInfo(ctx, r.user, r.addr)
	if err != nil || p != protocol.Hardened || did != deviceID {
		t.Fatalf("DeviceInfo: %v %q %v, want hardened %q", p, did, err, deviceID)
	}
	if err := userclient.CheckDevice(ctx, r.user, r.addr, deviceID, protocol.Hardened); err != nil {
		t.Fatalf("CheckDevice with the right DID: %v", err)
	}
	err = userclient.CheckDevice(ctx, r.user, r.addr, "sensor-8", protocol.Hardened)
	if !errors.Is(err, userclient.ErrWrongDevice) || !strings.Contains(err.Error(), `serves DID "sensor-7", not "sensor-8"`) {
		t.Fatalf("CheckDevice with a mistyped DID: %v", err)
	}
	if err := userclient.CheckDevice(ctx, r.user, r.addr, deviceID, protocol.Classic); !errors.Is(err, userclient.ErrWrongDevice) {
		t.Fatalf("CheckDevice with the other profile: %v", err)
	}
	if s := r.gw.seenSources(); len(s) != 0 {
		t.Errorf("asking for the device's info reached the gateway %d times", len(s))
	}
	if st := r.agent.Stats(); st.Pending != 0 {
		t.Errorf("asking for the device's info left %d pending logins", st.Pending)
	}
	// Without the padding, no answer larger than the request.
	req, resp, n := rawExchange(t, "127.0.0.1:0", r.addr, coapbind.PathInfo, []byte{0})
	if coap.Code(resp.Code) != coap.BadRequest || len(resp.Payload) != 0 || n >= len(req) {
		t.Errorf("unpadded info request answered %s with %d bytes (request %d)", coap.Code(resp.Code), n, len(req))
	}
	req, resp, n = rawExchange(t, "127.0.0.1:0", r.addr, coapbind.PathInfo, make([]byte, coapbind.InfoRequestSize))
	if coap.Code(resp.Code) != coap.Changed || n >= len(req) {
		t.Errorf("info answered %s with %d bytes for a request of %d", coap.Code(resp.Code), n, len(req))
	}
}
