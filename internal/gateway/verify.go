package gateway

import (
	"context"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/protocol"
)

// serveVerify is the CoAP endpoint /tagauth/verify over the verify
// pipeline (pipeline.go): m3 with 2.04, or an error message with the CoAP
// code of spec section 11. The wire says only the error code; the audit
// record says the precise reason.
func serveVerify(vf *verifier, ctx context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	in := verifyRequest{M2: req.Payload, From: req.From, Source: req.Source, Slot: req.Index}
	out, err := vf.verify(ctx, &in, dst)
	if err != nil {
		return coapbind.Code(protocol.CodeOf(err)), out
	}
	return coap.Changed, out
}
