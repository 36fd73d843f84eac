package userclient

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/protocol"
)

func testUser(t *testing.T) *protocol.User {
	t.Helper()
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	mk := protocol.MasterKey{Version: 1}
	rand.Read(mk.Key[:])
	req, err := protocol.NewRegistrationRequest(protocol.Hardened, "alice", "pw", protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	card, err := protocol.IssueCard(&req, mk, cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := protocol.Unlock(card, "pw", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.Close)
	return u
}

// TestFlowRefusals: the flow turns a device's refusal into an error of
// its wire code, an answer without an error message into ErrBadAnswer,
// and a transport failure into itself; it sends m1 to the login path.
func TestFlowRefusals(t *testing.T) {
	u := testUser(t)
	noRoute := errors.New("no route")
	for _, tc := range []struct {
		name    string
		code    coap.Code
		payload []byte
		err     error
		want    error
	}{
		{"rejected", coap.Unauthorized, protocol.AppendError(nil, protocol.Hardened, protocol.ErrRejected), nil, protocol.ErrRejected},
		{"busy", coap.ServiceUnavailable, protocol.AppendError(nil, protocol.Hardened, protocol.ErrBusy), nil, protocol.ErrBusy},
		{"no error message", coap.NotFound, nil, nil, ErrBadAnswer},
		{"no answer", 0, nil, noRoute, noRoute},
		{"2.04 with garbage", coap.Changed, []byte{0x02, 0x04}, nil, protocol.ErrMalformed},
	} {
		var paths []string
		f := &Flow{Device: "dev", Post: func(_ context.Context, path string, _ []byte) (coap.Code, []byte, error) {
			paths = append(paths, path)
			return tc.code, tc.payload, tc.err
		}}
		s, err := f.Login(context.Background(), u, "sensor-7")
		if s != nil || !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if len(paths) != 1 || paths[0] != coapbind.PathLogin {
			t.Errorf("%s: requests to %q, want one to %s", tc.name, paths, coapbind.PathLogin)
		}
	}
}
