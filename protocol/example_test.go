package protocol_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/protocol/prototest"
)

// exampleKDF keeps Argon2id fast so that the examples run quickly. Real
// cards use protocol.DefaultKDF.
var exampleKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// A full hardened login in one process: the gateway provisions a device and
// registers a user, then the card, the device and the gateway exchange
// m1..m5 as byte slices, as a transport would carry them.
func Example() {
	ctx := context.Background()
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	p := protocol.Hardened

	// Gateway: one master key, one device, one user.
	mk := protocol.MasterKey{Version: 1}
	if _, err := rand.Read(mk.Key[:]); err != nil {
		log.Fatal(err)
	}
	reg := prototest.NewRegistry(p, true)
	reg.AddKey(mk)
	gw, err := protocol.NewGateway(p, reg, &prototest.ReplayCache{}, cfg)
	if err != nil {
		log.Fatal(err)
	}
	cred, err := protocol.ProvisionDevice(p, "sensor-7", mk)
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.AddDevice("sensor-7"); err != nil {
		log.Fatal(err)
	}
	dev, err := protocol.NewDevice(cred, &prototest.ReplayCache{}, cfg)
	if err != nil {
		log.Fatal(err)
	}

	// Registration: the enroller's request goes to the gateway over TLS.
	req, err := protocol.NewRegistrationRequest(p, "alice", "correct horse", exampleKDF, cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := reg.AddUser("alice"); err != nil {
		log.Fatal(err)
	}
	card, err := protocol.IssueCard(&req, mk, cfg)
	req.Wipe()
	if err != nil {
		log.Fatal(err)
	}

	// Login.
	user, err := protocol.Unlock(card, "correct horse", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer user.Close()
	login, m1, err := user.Login(nil, "sensor-7") // card -> device
	if err != nil {
		log.Fatal(err)
	}
	dl, m2, err := dev.Start(ctx, nil, m1) // device -> gateway
	if err != nil {
		log.Fatal(err)
	}
	m3, _, err := gw.Verify(ctx, nil, m2) // gateway -> device
	if err != nil {
		log.Fatal(err)
	}
	m4, _, err := dl.Respond(nil, m3) // device -> card; no session yet under hardened
	if err != nil {
		log.Fatal(err)
	}
	userSess, m5, err := login.Finish(nil, m4) // card -> device
	if err != nil {
		log.Fatal(err)
	}
	devSess, err := dl.Confirm(m5)
	if err != nil {
		log.Fatal(err)
	}

	fmt.Println("bytes:", len(m1), len(m2), len(m3), len(m4), len(m5))
	if userSess.Fingerprint() == devSess.Fingerprint() {
		fmt.Println("keys match")
	}
	// Output:
	// bytes: 97 115 74 114 34
	// keys match
}

// exampleDeployment is the set-up of Example, folded into one helper so
// that the other examples can show only their own point.
type exampleDeployment struct {
	cfg  protocol.Config
	reg  *prototest.Registry
	gw   *protocol.Gateway
	dev  *protocol.Device
	user *protocol.User
}

func newExampleDeployment(p protocol.Profile) *exampleDeployment {
	x := &exampleDeployment{cfg: protocol.Config{Now: time.Now, Rand: rand.Reader}}
	mk := protocol.MasterKey{Version: protocol.ClassicKeyVersion}
	if _, err := rand.Read(mk.Key[:]); err != nil {
		log.Fatal(err)
	}
	x.reg = prototest.NewRegistry(p, true)
	x.reg.AddKey(mk)
	var err error
	if x.gw, err = protocol.NewGateway(p, x.reg, &prototest.ReplayCache{}, x.cfg); err != nil {
		log.Fatal(err)
	}
	cred, err := protocol.ProvisionDevice(p, "sensor-7", mk)
	if err != nil {
		log.Fatal(err)
	}
	if err := x.reg.AddDevice("sensor-7"); err != nil {
		log.Fatal(err)
	}
	if x.dev, err = protocol.NewDevice(cred, &prototest.ReplayCache{}, x.cfg); err != nil {
		log.Fatal(err)
	}
	req, err := protocol.NewRegistrationRequest(p, "alice", "correct horse", exampleKDF, x.cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer req.Wipe()
	if err := x.reg.AddUser("alice"); err != nil {
		log.Fatal(err)
	}
	card, err := protocol.IssueCard(&req, mk, x.cfg)
	if err != nil {
		log.Fatal(err)
	}
	if x.user, err = protocol.Unlock(card, "correct horse", x.cfg); err != nil {
		log.Fatal(err)
	}
	return x
}

// sessions runs one login and returns the card's and the device's sessions.
func (x *exampleDeployment) sessions() (userSess, devSess *protocol.Session) {
	ctx := context.Background()
	login, m1, err := x.user.Login(nil, "sensor-7")
	if err != nil {
		log.Fatal(err)
	}
	dl, m2, err := x.dev.Start(ctx, nil, m1)
	if err != nil {
		log.Fatal(err)
	}
	m3, _, err := x.gw.Verify(ctx, nil, m2)
	if err != nil {
		log.Fatal(err)
	}
	m4, devSess, err := dl.Respond(nil, m3)
	if err != nil {
		log.Fatal(err)
	}
	userSess, m5, err := login.Finish(nil, m4)
	if err != nil {
		log.Fatal(err)
	}
	if m5 != nil {
		if devSess, err = dl.Confirm(m5); err != nil {
			log.Fatal(err)
		}
	}
	return userSess, devSess
}

// A device answering many logins keeps one buffer for its m2 and hands it
// over emptied each time: Start appends to it, so the message costs no
// allocation once the buffer is big enough. The same holds for every step
// that builds a message (Login, Respond, Finish, Gateway.Verify).
func ExampleDevice_Start() {
	x := newExampleDeployment(protocol.Hardened)
	ctx := context.Background()
	buf := make([]byte, 0, 128)
	for range 2 {
		login, m1, err := x.user.Login(nil, "sensor-7")
		if err != nil {
			log.Fatal(err)
		}
		dl, m2, err := x.dev.Start(ctx, buf[:0], m1)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("m2:", len(m2), "bytes, in buf:", &m2[0] == &buf[:1][0])
		// ... m2 goes to the gateway here; this example stops early.
		dl.Close()
		login.Close()
	}
	// Output:
	// m2: 115 bytes, in buf: true
	// m2: 115 bytes, in buf: true
}

// A gateway answers every failure with an error message for the wire and
// an error for its audit log. The wire code is coarse on purpose (every
// refusal of an identity or a proof is "rejected"); the reason is precise.
func ExampleGateway_Verify() {
	x := newExampleDeployment(protocol.Hardened)
	ctx := context.Background()
	_, m1, err := x.user.Login(nil, "sensor-7")
	if err != nil {
		log.Fatal(err)
	}
	_, m2, err := x.dev.Start(ctx, nil, m1)
	if err != nil {
		log.Fatal(err)
	}

	// report prints what the device receives and what the audit log gets.
	report := func(reply []byte, err error) {
		if err == nil {
			_, typ, _ := protocol.Header(reply)
			fmt.Printf("ok: message type 0x%02x (m3)\n", uint8(typ))
			return
		}
		_, code, perr := protocol.ParseError(reply)
		if perr != nil {
			log.Fatal(perr)
		}
		fmt.Printf("wire: %s (code %d), audit: %s, is ErrRejected: %t\n",
			code.String(), uint8(protocol.CodeOf(err)), protocol.ReasonOf(err).Name(), errors.Is(err, protocol.ErrRejected))
	}

	reply, _, err := x.gw.Verify(ctx, nil, m2)
	report(reply, err)

	// The same m2 again: the gateway's replay cache has seen (ID_i, n_i).
	reply, _, err = x.gw.Verify(ctx, nil, m2)
	report(reply, err)

	// A revoked user: refused with the same wire code as a bad proof.
	if err := x.reg.RevokeUser("alice"); err != nil {
		log.Fatal(err)
	}
	_, m1, err = x.user.Login(nil, "sensor-7")
	if err != nil {
		log.Fatal(err)
	}
	_, m2, err = x.dev.Start(ctx, nil, m1)
	if err != nil {
		log.Fatal(err)
	}
	reply, _, err = x.gw.Verify(ctx, nil, m2)
	report(reply, err)
	fmt.Println("errors.Is(err, protocol.ReasonRevokedUser):", errors.Is(err, protocol.ReasonRevokedUser))

	// Output:
	// ok: message type 0x03 (m3)
	// wire: replayed (code 4), audit: login replayed, is ErrRejected: false
	// wire: rejected (code 5), audit: revoked user, is ErrRejected: true
	// errors.Is(err, protocol.ReasonRevokedUser): true
}

// After a login, the card and the device exchange tasks as sealed records.
// Each direction numbers its records, so a replayed record is refused.
func ExampleSession_Seal() {
	userSess, devSess := newExampleDeployment(protocol.Hardened).sessions()
	defer userSess.Close()
	defer devSess.Close()

	rec, err := userSess.Seal(nil, []byte("sensor.read"))
	if err != nil {
		log.Fatal(err)
	}
	task, err := devSess.Open(nil, rec)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("device got %q in a %d-byte record\n", task, len(rec))

	reply, err := devSess.Seal(nil, []byte("21.4C"))
	if err != nil {
		log.Fatal(err)
	}
	reading, err := userSess.Open(nil, reply)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("card got %q\n", reading)

	_, err = devSess.Open(nil, rec)
	fmt.Println("replayed record:", errors.Is(err, protocol.ErrReplayed))
	// Output:
	// device got "sensor.read" in a 45-byte record
	// card got "21.4C"
	// replayed record: true
}
