package coap

import (
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

func TestForProtocol(t *testing.T) {
	want := map[protocol.Code]Code{ // spec section 11
		protocol.ErrMalformed:          BadRequest,
		protocol.ErrUnsupportedProfile: BadRequest,
		protocol.ErrStaleTimestamp:     Unauthorized,
		protocol.ErrReplayed:           Unauthorized,
		protocol.ErrRejected:           Unauthorized,
		protocol.ErrBusy:               ServiceUnavailable,
		protocol.ErrInternal:           InternalServerError,
	}
	for c := range 256 {
		pc := protocol.Code(c)
		w, ok := want[pc]
		if pc.Valid() != ok {
			t.Fatalf("protocol code %v: the table above misses it", pc)
		}
		if !ok {
			w = InternalServerError // not a spec code: nothing better to say
		}
		if got := ForProtocol(pc); got != w {
			t.Errorf("ForProtocol(%v) = %v, want %v", pc, got, w)
		}
	}
	// The reasons a handler meets map through their code.
	if got := ForProtocol(protocol.CodeOf(protocol.ReasonUnknownUser)); got != Unauthorized {
		t.Errorf("unknown user maps to %v", got)
	}
}

func TestCodeString(t *testing.T) {
	for c, s := range map[Code]string{
		0x00: "0.00", methodPOST: "0.02", Changed: "2.04", BadRequest: "4.00", Unauthorized: "4.01",
		NotFound: "4.04", MethodNotAllowed: "4.05", RequestEntityTooLarge: "4.13",
		unsupportedContentFormat: "4.15", InternalServerError: "5.00", ServiceUnavailable: "5.03", 0xff: "7.31",
	} {
		if got := c.String(); got != s {
			t.Errorf("Code(%#x).String() = %q, want %q", uint8(c), got, s)
		}
	}
}
