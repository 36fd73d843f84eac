package gateway

import (
	"context"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// serveVerify answers m2 on /tagauth/verify: m3 with 2.04, or an error
// message with the CoAP code of spec section 11. The wire says only the
// error code; the audit record says the precise reason.
func (g *Gateway) serveVerify(ctx context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	start := time.Now()
	out, v, err := g.proto.Verify(ctx, dst, req.Payload)
	code := coap.Changed
	rec := store.AuditRecord{
		Time:     g.now(),
		Kind:     KindVerify,
		Outcome:  OutcomeOK,
		User:     SanitizeID(v.User),
		Device:   SanitizeID(v.Device),
		Source:   req.From.String(),
		KVUser:   v.KVUser,
		KVDevice: v.KVDevice,
	}
	if err != nil {
		code = coap.ForProtocol(protocol.CodeOf(err))
		rec.Outcome = OutcomeRefused
		if protocol.CodeOf(err) == protocol.ErrInternal {
			rec.Outcome = OutcomeError
		}
		rec.Reason = reasonOf(err)
		rec.Detail = detailOf(err)
	}
	rec.LatencyUS = time.Since(start).Microseconds()
	g.audit.submit(rec)
	return code, out
}

// detailOf is what err says beyond its reason (a clock skew, a store
// failure), or "". Protocol errors never include message bytes.
func detailOf(err error) string {
	msg := err.Error()
	if r := protocol.ReasonOf(err); r != nil && msg == r.Error() {
		return ""
	}
	return strings.TrimPrefix(msg, "tagauth: ")
}
