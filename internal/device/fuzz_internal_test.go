package device

import (
	"context"
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/protocol"
)

// FuzzAgent sends arbitrary payloads to each of the agent's endpoints and
// arbitrary plaintexts to the task decoder. Nothing may panic; a login or
// task answer is either the spec's error message or, for a plaintext, a
// task response; nothing random establishes a session.
func FuzzAgent(f *testing.F) {
	mk := protocol.MasterKey{Version: 1}
	rand.Read(mk.Key[:])
	dc, err := protocol.ProvisionDevice(protocol.Hardened, "sensor-7", mk)
	if err != nil {
		f.Fatal(err)
	}
	// The gateway address is a closed port: a login that gets as far as the
	// relay fails fast.
	a, err := New(Config{Credential: credfile.Credential{DeviceCredential: dc, Gateway: "127.0.0.1:9"},
		Listen: "127.0.0.1:0", GatewayTimeout: 50 * time.Millisecond,
		Client: &coap.Client{ACKTimeout: 10 * time.Millisecond, MaxRetransmit: 1}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	a.ctx = ctx // what Run would set; the fuzz calls the handlers directly

	f.Add(uint8(0), []byte{0x02, 0x01, 0x05, 'a', 'l', 'i', 'c', 'e'})
	f.Add(uint8(1), append(make([]byte, protocol.SIDSize), append([]byte{0x02, 0x05}, make([]byte, 32)...)...))
	f.Add(uint8(2), append([]byte{0x02, 0x10}, make([]byte, 40)...))
	f.Add(uint8(3), []byte(`{"task":"echo","args":"hi"}`))
	f.Add(uint8(3), []byte(`{"task":"sensor.read"}{}`))
	from := netip.MustParseAddrPort("127.0.0.1:40000")
	// A verified source, so that well-formed m1s reach the relay rather
	// than the Echo challenge (whose answer is no error message).
	a.verified.Add(from.Addr(), time.Now())
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		req := &coap.Request{Payload: payload, From: from}
		var code coap.Code
		var out []byte
		switch which % 4 {
		case 0:
			req.Path = "/tagauth/login"
			code, out = a.serveLogin(ctx, req, nil)
		case 1:
			req.Path = "/tagauth/confirm"
			code, out = a.serveConfirm(ctx, req, nil)
		case 2:
			req.Path = "/tagauth/task"
			code, out = a.serveTask(ctx, req, nil)
		case 3:
			if r := a.runTask("alice", payload); !r.OK && r.Error == "" {
				t.Fatalf("task refusal without a reason for %q", payload)
			}
			return
		}
		if code == coap.Changed {
			t.Fatalf("%s accepted random payload % x", req.Path, payload)
		}
		if _, _, err := protocol.ParseError(out); err != nil {
			t.Fatalf("%s answered %s with % x, not an error message", req.Path, code, out)
		}
		if s := a.Stats(); s.Sessions != 0 {
			t.Fatal("a random payload established a session")
		}
	})
}
