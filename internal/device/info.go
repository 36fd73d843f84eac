package device

import (
	"context"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
)

// serveInfo answers POST /tagauth/info, a binding extension in front of
// spec section 11: the device says which profile and DID_j it serves, so
// that a user's client can tell a mistyped device apart before it sends
// m1 (which the gateway would count as a failed login). The request
// carries at least coapbind.InfoRequestSize bytes of padding, so that
// the answer is never larger than the request and a spoofed source gains
// no amplification; a shorter one is answered 4.00 with no payload. The
// identity is no secret: it is in every m1 sent to this device.
func (a *Agent) serveInfo(_ context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	if len(req.Payload) < coapbind.InfoRequestSize {
		return coap.BadRequest, dst
	}
	return coap.Changed, coapbind.AppendDeviceInfo(dst, a.dev.Profile(), a.dev.ID())
}
