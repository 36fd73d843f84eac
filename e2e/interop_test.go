package e2e

import (
	"context"
	"crypto/rand"
	"github.com/tagauth/tagauth/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// coapClient finds libcoap's coap-client (Debian's libcoap3-bin installs it
// under its TLS flavour's name). In CI its absence is a failure: .ci/run
// installs it.
func coapClient(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"coap-client", "coap-client-notls", "coap-client-openssl", "coap-client-gnutls"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.SkipOrFail(t, "coap-client not found: apt-get install libcoap3-bin to run the libcoap interoperability test (.ci/run installs it)")
	return ""
}

// TestInteropLibcoap sends a valid m2, built by the project's own card and
// device code, to the running gateway with libcoap's coap-client, a CoAP
// implementation nobody here wrote, and checks the m3 that comes back: the
// device accepts it and the card completes the login with the same key.
func TestInteropLibcoap(t *testing.T) {
	client := coapClient(t)
	w := newWorld(t, "hardened")
	w.dev.stop() // the device role runs in this test instead

	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	data, err := card.Load(w.card)
	if err != nil {
		t.Fatal(err)
	}
	c, err := card.Open(data, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	u, err := protocol.Unlock(c, "correct horse", cfg)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := credfile.Load(filepath.Join(w.dir, "sensor-7.json"))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := protocol.NewDevice(cred.DeviceCredential, replay.New(64), cfg)
	if err != nil {
		t.Fatal(err)
	}
	login, m1, err := u.Login(nil, "sensor-7")
	if err != nil {
		t.Fatal(err)
	}
	dl, m2, err := dev.Start(context.Background(), nil, m1)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(w.dir, "m2.bin")
	out := filepath.Join(w.dir, "m3.bin")
	if err := os.WriteFile(in, m2, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, client, "-m", "post", "-t", "42", "-f", in, "-o", out,
		"coap://"+w.gw.coap+"/tagauth/verify")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("coap-client: %v\n%s", err, b)
	}
	m3, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, typ, err := protocol.Header(m3); err != nil || typ != protocol.TypeM3 {
		t.Fatalf("gateway answered % x, want an m3", m3)
	}
	m4, _, err := dl.Respond(nil, m3)
	if err != nil {
		t.Fatalf("device refused the m3 that came back through coap-client: %v", err)
	}
	us, m5, err := login.Finish(nil, m4)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := dl.Confirm(m5)
	if err != nil {
		t.Fatal(err)
	}
	if us.Fingerprint() != ds.Fingerprint() {
		t.Fatal("card and device hold different keys")
	}

	// The same m2 sent again through coap-client (a new CoAP exchange) is
	// a replay: the gateway answers 4.01 (libcoap prints the code of an
	// error response instead of writing the payload to the output file).
	os.Remove(out)
	cmd = exec.CommandContext(ctx, client, "-m", "post", "-t", "42", "-f", in, "-o", out,
		"coap://"+w.gw.coap+"/tagauth/verify")
	b, _ := cmd.CombinedOutput()
	reply, _ := os.ReadFile(out)
	if !strings.Contains(string(b), "4.01") {
		if _, code, err := protocol.ParseError(reply); err != nil || code != protocol.ErrReplayed {
			t.Fatalf("replayed m2: coap-client said %q, reply % x; want 4.01 replayed", strings.TrimSpace(string(b)), reply)
		}
	}
}
