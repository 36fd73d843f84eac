package coapbind

import (
	"testing"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/protocol"
)

func TestCode(t *testing.T) {
	want := map[protocol.Code]coap.Code{ // spec section 11
		protocol.ErrMalformed:          coap.BadRequest,
		protocol.ErrUnsupportedProfile: coap.BadRequest,
		protocol.ErrStaleTimestamp:     coap.Unauthorized,
		protocol.ErrReplayed:           coap.Unauthorized,
		protocol.ErrRejected:           coap.Unauthorized,
		protocol.ErrBusy:               coap.ServiceUnavailable,
		protocol.ErrInternal:           coap.InternalServerError,
	}
	for c := range 256 {
		pc := protocol.Code(c)
		w, ok := want[pc]
		if pc.Valid() != ok {
			t.Fatalf("protocol code %v: the table above misses it", pc)
		}
		if !ok {
			w = coap.InternalServerError // not a spec code: nothing better to say
		}
		if got := Code(pc); got != w {
			t.Errorf("Code(%v) = %v, want %v", pc, got, w)
		}
	}
	// The reasons a handler meets map through their code.
	if got := Code(protocol.CodeOf(protocol.ReasonUnknownUser)); got != coap.Unauthorized {
		t.Errorf("unknown user maps to %v", got)
	}
}
