package protocol_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// TestVerifyM2Admit: admit is asked once per login whose every check
// passed, never for a refused one, and its refusal answers the code it
// wraps without m3.
func TestVerifyM2Admit(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			x := newExampleDeployment(p)
			ctx := context.Background()
			_, m1, err := x.user.Login(nil, "sensor-7")
			if err != nil {
				t.Fatal(err)
			}
			_, b, err := x.dev.Start(ctx, nil, m1)
			if err != nil {
				t.Fatal(err)
			}
			m2, err := protocol.ParseM2(b)
			if err != nil {
				t.Fatal(err)
			}
			var asked []protocol.Verification
			refuse := errors.New("no")
			admit := func(v protocol.Verification) error {
				asked = append(asked, v)
				if len(asked) == 1 {
					return errors.Join(protocol.ErrRejected, refuse)
				}
				return nil
			}
			// A refusal by admit: rejected on the wire, the error kept.
			reply, v, err := x.gw.VerifyM2(ctx, nil, &m2, admit)
			if !errors.Is(err, refuse) || len(asked) != 1 || string(asked[0].User) != "alice" || string(v.Device) != "sensor-7" {
				t.Fatalf("admit refusing: err %v, asked %d times, v %+v", err, len(asked), v)
			}
			if _, code, perr := protocol.ParseError(reply); perr != nil || code != protocol.ErrRejected {
				t.Fatalf("answer of a refused admit: %x (%v, %v), want an error message saying rejected", reply, code, perr)
			}
			// The replay cache took m2 before admit: the same m2 is now a
			// replay, refused before admit is asked.
			if _, _, err := x.gw.VerifyM2(ctx, nil, &m2, admit); !errors.Is(err, protocol.ReasonLoginReplay) || len(asked) != 1 {
				t.Fatalf("replayed m2: %v, admit asked %d times, want a replay and no new question", err, len(asked))
			}
			// Another profile's gateway refuses a parsed m2 it does not serve.
			other := protocol.Classic
			if p == protocol.Classic {
				other = protocol.Hardened
			}
			m2.Profile = other
			if _, _, err := x.gw.VerifyM2(ctx, nil, &m2, admit); !errors.Is(err, protocol.ReasonWrongProfile) || len(asked) != 1 {
				t.Fatalf("m2 of the other profile: %v, admit asked %d times", err, len(asked))
			}
		})
	}
}
