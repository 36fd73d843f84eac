package protocol_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/tagauth/tagauth/protocol"
)

// A gateway that reads m2 before verifying it (here: a per-device quota)
// parses it once and hands it to VerifyM2. The admit hook runs once the
// proofs hold and before m3 is built: refusing there (here: the audit
// record cannot be written) computes no session secret at all.
func ExampleGateway_VerifyM2() {
	x := newExampleDeployment(protocol.Hardened)
	ctx := context.Background()
	login := func() []byte {
		_, m1, err := x.user.Login(nil, "sensor-7")
		if err != nil {
			log.Fatal(err)
		}
		_, m2, err := x.dev.Start(ctx, nil, m1)
		if err != nil {
			log.Fatal(err)
		}
		return m2
	}

	auditUp := true
	admit := func(v protocol.Verification) error {
		if !auditUp {
			return fmt.Errorf("%w: audit store down", protocol.ErrBusy)
		}
		fmt.Printf("admitted %s -> %s\n", v.User, v.Device)
		return nil
	}
	for range 2 {
		b := login()
		if err := protocol.CheckProfile(x.gw.Profile(), b); err != nil {
			log.Fatal(err)
		}
		m2, err := protocol.ParseM2(b)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("device %s asks\n", m2.DID) // the quota would go here
		reply, _, err := x.gw.VerifyM2(ctx, nil, &m2, admit)
		if err != nil {
			_, code, _ := protocol.ParseError(reply)
			fmt.Printf("refused: wire %s, busy: %t\n", code.String(), errors.Is(err, protocol.ErrBusy))
		} else {
			_, typ, _ := protocol.Header(reply)
			fmt.Printf("answered: message type 0x%02x (m3)\n", uint8(typ))
		}
		auditUp = false
	}

	// Output:
	// device sensor-7 asks
	// admitted alice -> sensor-7
	// answered: message type 0x03 (m3)
	// device sensor-7 asks
	// refused: wire busy, busy: true
}
