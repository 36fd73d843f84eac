package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/protocol"
)

// TestFirstChecksEveryEndpoint sends the same bad inputs to every endpoint
// of the running daemons (the device's login, confirm and task, the
// gateway's verify) and requires the one answer of spec section 7: empty
// -> malformed with profile byte 0x00; a first byte that is not the
// receiver's profile -> unsupported_profile whatever follows, carrying that
// byte when it names a profile and 0x00 otherwise; the receiver's profile
// byte alone -> malformed. The confirm endpoint gets each input as the m5
// behind a sid (section 11), so a bare sid is the "empty" case there.
func TestFirstChecksEveryEndpoint(t *testing.T) {
	w := newWorld(t, "hardened")
	endpoints := []struct {
		name, addr, path string
		wrap             func([]byte) []byte
	}{
		{"device login", w.devAt, "/tagauth/login", nil},
		{"device confirm", w.devAt, "/tagauth/confirm", func(m []byte) []byte {
			return append([]byte{1, 2, 3, 4, 5, 6, 7, 8}, m...) // an unknown sid || m
		}},
		{"device task", w.devAt, "/tagauth/task", nil},
		{"gateway verify", w.gw.coap, "/tagauth/verify", nil},
	}
	classic := bytes.Repeat([]byte{0x5a}, 120)
	classic[0] = byte(protocol.Classic)
	inputs := []struct {
		name string
		msg  []byte
		want string // the error message, in hex
	}{
		{"empty", nil, "007f01"},
		{"no profile 0x07, long", append([]byte{0x07}, classic[1:]...), "007f02"},
		{"no profile 0x00", []byte{0x00}, "007f02"},
		{"classic, long", classic, "017f02"},
		{"classic record", append([]byte{0x01, 0x10}, bytes.Repeat([]byte{0xa5}, 40)...), "017f02"},
		{"classic, type byte only", []byte{0x01, 0x10}, "017f02"},
		{"classic byte only", []byte{0x01}, "017f02"},
		{"hardened byte only", []byte{0x02}, "027f01"},
	}
	client := &coap.Client{ACKTimeout: 200 * time.Millisecond}
	for _, ep := range endpoints {
		for _, in := range inputs {
			payload := in.msg
			if ep.wrap != nil {
				payload = ep.wrap(in.msg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			code, resp, err := client.Post(ctx, ep.addr, ep.path, payload)
			cancel()
			if err != nil {
				t.Fatalf("%s, %s: %v", ep.name, in.name, err)
			}
			if got := hex.EncodeToString(resp); got != in.want || code != coap.BadRequest {
				t.Errorf("%s, %s: answer %s %s, want 4.00 %s", ep.name, in.name, code, got, in.want)
			}
		}
	}
	// Nothing was changed: a login still works.
	if code, _, errs := w.user(nil, "login"); code != 0 {
		t.Fatalf("login after the bad inputs: %s", errs)
	}
}
