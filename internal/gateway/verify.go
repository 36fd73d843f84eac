package gateway

import (
	"cmp"
	"context"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// serveVerify answers m2 on /tagauth/verify: m3 with 2.04, or an error
// message with the CoAP code of spec section 11. The wire says only the
// error code; the audit record says the precise reason.
func (g *Gateway) serveVerify(ctx context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	start := time.Now()
	if code, out, limited := g.rateLimit(req, dst); limited { // limits.go
		return code, out
	}
	out, v, why, err := g.verifyLocked(ctx, req, dst) // limits.go: the lockout around the verify
	now := g.now()
	code := coap.Changed
	rec := store.AuditRecord{
		Time:     now,
		Kind:     KindVerify,
		Outcome:  OutcomeOK,
		KVUser:   v.KVUser,
		KVDevice: v.KVDevice,
	}
	if err != nil {
		wire := protocol.CodeOf(err)
		code = coapbind.Code(wire)
		rec.Outcome = OutcomeRefused
		if wire == protocol.ErrInternal {
			rec.Outcome = OutcomeError
		}
		rec.Reason = cmp.Or(why, reasonOf(err))
		rec.Detail = detailOf(err)
	}
	elapsed := time.Since(start)
	rec.LatencyUS = elapsed.Microseconds()
	g.metrics.observe(err, why, v.KVUser, v.KVDevice, elapsed, rec.Time) // metrics.go
	// backends.go: a replica answers m3 once its audit record is committed.
	if err == nil && g.bk != nil {
		fillVerifyNames(&rec, v.User, v.Device, req.From) // audit.go
		return g.commitVerify(&rec, code, out, dst, v.Profile)
	}
	// The writer fills User, Device and Source off the hot path (audit.go);
	// a login that cannot be recorded is answered busy.
	if g.audit.submitVerify(ctx, rec, v.User, v.Device, req, v.Profile) != nil {
		clear(out[len(dst):]) // an m3 must not stay in a buffer that is reused
		return coapbind.Code(protocol.ErrBusy), protocol.AppendError(dst, v.Profile, protocol.ErrBusy)
	}
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
