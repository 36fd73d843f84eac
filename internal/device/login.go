package device

import (
	"context"
	"encoding/hex"
	"errors"
	"net/netip"
	"unicode"
	"unicode/utf8"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/echo"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/protocol"
)

// profileOf is the profile byte an error reply carries: the request's, or
// 0x00 when it could not be read (spec section 7).
func profileOf(b []byte) protocol.Profile {
	if len(b) > 0 && protocol.Profile(b[0]).Valid() {
		return protocol.Profile(b[0])
	}
	return 0
}

// refuse answers with the error message of spec section 7 and the CoAP code
// of section 11.
func refuse(dst, req []byte, c protocol.Code) (coap.Code, []byte) {
	return coapbind.Code(c), protocol.AppendError(dst, profileOf(req), c)
}

// serveLogin handles m1: Start, relay m2 to the gateway, Respond with m4.
// It blocks its worker for at most GatewayTimeout, holding a relay slot.
func (a *Agent) serveLogin(_ context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	m1 := req.Payload // valid until we return, which is all Start needs
	// The first checks of spec section 7 come before we read the user;
	// m1 is parsed here once, and started from the parsed form below.
	if err := protocol.CheckProfile(a.dev.Profile(), m1); err != nil {
		a.junk(req.From, "m1", err)
		return refuse(dst, m1, protocol.CodeOf(err))
	}
	parsed, err := protocol.ParseM1(m1)
	if err != nil {
		a.junk(req.From, "m1", err)
		return refuse(dst, m1, protocol.CodeOf(err))
	}
	user := string(parsed.ID)
	from := req.From.Addr()
	now := a.cfg.Now()

	var source []byte // the verified source the gateway charges a refusal to
	switch {
	case a.cfg.NoSourceVerification:
	case req.Peer != nil:
		// A binding without addresses (MQTT) verified the requester by
		// an Echo of its own: its name is the source.
		source = req.Peer
	default:
		if !a.verified.Has(from, now) {
			if req.Echo == nil || !a.echo.Valid(req.Echo, addrKey(from), now) {
				// RFC 9175 section 2.4: prove that you receive at this
				// address. Nothing else runs, the replay cache is not
				// touched, and the answer is smaller than the request.
				a.metrics.echoChallenges.Inc()
				var buf [echo.Size]byte
				req.SetResponseEcho(a.echo.Mint(buf[:0], addrKey(from), now))
				return coap.Unauthorized, dst
			}
			a.verified.Add(from, now)
		}
		source = sourceOption(from)[0].Value
	}
	if why := a.limits.acquire(from, now); why != "" {
		a.refused(user, req.From, "m1", limitError{why})
		return refuse(dst, m1, protocol.ErrBusy)
	}
	defer a.limits.release(from)

	select {
	case a.relays <- struct{}{}:
		defer func() { <-a.relays }()
	default:
		a.refused(user, req.From, "m1", busyError("every relay slot is waiting on the gateway"))
		return refuse(dst, m1, protocol.ErrBusy)
	}
	p, err := a.reserve(req.From.Addr(), user)
	if err != nil {
		a.refused(user, req.From, "m1", busyError(err.Error()))
		return refuse(dst, m1, protocol.ErrBusy)
	}
	dl, m2, err := a.dev.StartParsed(a.ctx, nil, parsed)
	if err != nil {
		a.drop(p)
		a.refused(user, req.From, "m1", err)
		return refuse(dst, m1, protocol.CodeOf(err))
	}

	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.GatewayTimeout)
	// A binding without addresses (MQTT) names the verified requester
	// in req.Peer; CoAP never sets it.
	code, m3, err := a.relay.Post(ctx, coapbind.PathVerify, m2, transport.Options{Source: source})
	cancel()
	if err != nil {
		dl.Close()
		a.drop(p)
		// The coap error says where and after how many tries.
		if a.logSampled() {
			a.log.Warn("gateway unreachable", "gateway", a.gateway, "user", logID(user), "from", req.From.String(), "err", err.Error())
		}
		a.refused(user, req.From, "m2", busyError("gateway "+a.gateway+" unreachable"))
		return refuse(dst, m1, protocol.ErrBusy)
	}
	if code != coap.Changed {
		dl.Close()
		a.drop(p)
		_, c, perr := protocol.ParseError(m3)
		if perr != nil {
			a.log.Error("gateway answered without a valid error message", "gateway", a.gateway, "coap_code", code.String())
			a.refused(user, req.From, "m3", protocol.ErrInternal)
			return refuse(dst, m1, protocol.ErrInternal)
		}
		// The gateway's audit log has the precise reason; we relay its
		// wire code unchanged.
		a.refused(user, req.From, "m3", gatewayRefusal{c})
		return refuse(dst, m1, c)
	}

	m4, s, err := dl.Respond(nil, m3)
	if err != nil {
		dl.Close()
		a.drop(p)
		a.refused(user, req.From, "m3", err)
		return refuse(dst, m1, respondCode(err))
	}
	if s != nil { // classic: established with m4
		if err := a.establish(p, s, user); err != nil {
			a.refused(user, req.From, "m4", busyError(err.Error()))
			return refuse(dst, m1, protocol.ErrBusy)
		}
		a.established(user, req.From, s)
		return coap.Changed, append(dst, m4...)
	}
	if !a.await(p, dl) {
		a.refused(user, req.From, "m4", busyError("agent stopping"))
		return refuse(dst, m1, protocol.ErrBusy)
	}
	a.log.Debug("login awaiting confirmation", "user", logID(user), "from", req.From.String())
	return coap.Changed, append(dst, m4...)
}

// respondCode is the code the user gets when the gateway's m3 fails the
// device's checks. An m3 that does not even parse is the gateway's fault,
// not the user's, so it is internal rather than malformed.
func respondCode(err error) protocol.Code {
	switch c := protocol.CodeOf(err); c {
	case protocol.ErrMalformed, protocol.ErrUnsupportedProfile:
		return protocol.ErrInternal
	default:
		return c
	}
}

// serveConfirm handles the confirm request, sid || m5 (spec section 11):
// it finds the pending login by sid, from whatever address, and
// establishes it once its tau_i verifies.
func (a *Agent) serveConfirm(_ context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	sid, m5, err := protocol.SplitConfirmPayload(req.Payload)
	if err != nil {
		// Too short to hold an m5: answered with profile byte 0x00.
		a.junk(req.From, "m5", err)
		return refuse(dst, nil, protocol.CodeOf(err))
	}
	// Section 7's checks of m5 come before the sid is looked up.
	if err := protocol.CheckProfile(a.dev.Profile(), m5); err != nil {
		a.junk(req.From, "m5", err)
		return refuse(dst, m5, protocol.CodeOf(err))
	}
	if _, err := protocol.ParseM5(m5); err != nil {
		a.junk(req.From, "m5", err)
		return refuse(dst, m5, protocol.CodeOf(err))
	}
	p := a.awaiting(sid)
	if p == nil {
		if a.lookup(sid) != nil {
			// The login has passed m5 already (section 7).
			a.refused("", req.From, "m5", protocol.ReasonStepReplay)
			return refuse(dst, m5, protocol.ErrReplayed)
		}
		// Anyone can make up a sid: debug level, like other junk.
		a.junk(req.From, "m5", localReason{"no login is waiting for m5 with this sid (never started, dropped or ended)", protocol.ErrRejected})
		return refuse(dst, m5, protocol.ErrRejected)
	}
	s, err := p.login.Confirm(m5)
	if err != nil {
		// ReasonBadM5 leaves the login pending; an expired one goes.
		if errors.Is(err, protocol.ReasonSessionExpired) {
			a.drop(p)
		}
		a.refused(p.user, req.From, "m5", err)
		return refuse(dst, m5, protocol.CodeOf(err))
	}
	if err := a.establish(p, s, p.user); err != nil {
		a.refused(p.user, req.From, "m5", busyError(err.Error()))
		return refuse(dst, m5, protocol.ErrBusy)
	}
	a.established(p.user, req.From, s)
	return coap.Changed, dst
}

// localReason is a precise reason of the agent's own, for its log; code is
// what the wire says.
type localReason struct {
	why  string
	code protocol.Code
}

func (e localReason) Error() string { return e.why }
func (e localReason) Unwrap() error { return e.code }

// busyError is a local reason for answering busy.
func busyError(why string) error { return localReason{why, protocol.ErrBusy} }

// gatewayRefusal is the gateway's wire code for a refused verify.
type gatewayRefusal struct{ code protocol.Code }

func (e gatewayRefusal) Error() string { return "gateway refused: " + e.code.String() }
func (e gatewayRefusal) Unwrap() error { return e.code }

// limitError is a login refused busy by the per-source limits; why is
// reasonSourceRate or reasonSourceShare.
type limitError struct{ why string }

func (e limitError) Error() string { return e.why + " reached for this address" }
func (e limitError) Unwrap() error { return protocol.ErrBusy }

// refused logs a refused login step. user is the identity claimed in m1
// (empty when unknown); it is never trusted for anything but the log.
// Anyone can cause refusals, so the lines are sampled (logSampled); the
// metrics count every one.
func (a *Agent) refused(user string, from netip.AddrPort, step string, err error) {
	a.metrics.login("refused", step, err)
	if !a.logSampled() {
		return
	}
	a.log.Info("login", "user", logID(user), "from", from.String(), "outcome", "refused", "step", step,
		"code", protocol.CodeOf(err).String(), "reason", err.Error())
}

// logSampled reports whether a refusal line may be written now, and
// writes the count of the lines the last interval suppressed.
func (a *Agent) logSampled() bool {
	ok, n := a.logs.allow(a.cfg.Now())
	a.reportSuppressed(n)
	if !ok {
		a.metrics.logSuppressed.Inc()
	}
	return ok
}

// flushRefusalLog reports the lines suppressed in an interval that has
// ended, so that a flood that stops is still summed up.
func (a *Agent) flushRefusalLog() { a.reportSuppressed(a.logs.flush(a.cfg.Now())) }

func (a *Agent) reportSuppressed(n uint64) {
	if n > 0 {
		a.log.Warn("login refusals not logged (counted in tagauth_device_logins_total)", "lines", n, "interval", refusalLogEvery.String())
	}
}

// logID is an identity as the agent logs it: as it is when every rune is
// printable, else "hex:" and its bytes, as auditjson.SanitizeID writes it.
// An identity claimed in m1 is anyone's choice, and even a registered one
// may hold a bidi override or an invisible space, which a JSON log
// handler (it escapes control characters only) would write raw.
func logID(id string) string {
	for _, r := range id {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return "hex:" + hex.EncodeToString([]byte(id))
		}
	}
	return id
}

// junk logs, at debug level only, a message that does not even parse:
// anyone can send those, and the CoAP server's counters already show them.
func (a *Agent) junk(from netip.AddrPort, step string, err error) {
	a.metrics.login("refused", step, err)
	a.log.Debug("login", "from", from.String(), "outcome", "refused", "step", step,
		"code", protocol.CodeOf(err).String(), "reason", err.Error())
}

// established logs a new session with a prefix of its key fingerprint, which
// the user's client shows too; it reveals nothing about the key.
func (a *Agent) established(user string, from netip.AddrPort, s *protocol.Session) {
	a.metrics.login("established", finalStep(s.Profile()), nil)
	fp := s.Fingerprint()
	a.log.Info("login", "user", logID(user), "from", from.String(), "outcome", "established",
		"profile", s.Profile().String(), "fingerprint", hex.EncodeToString(fp[:8]))
}
