package gateway

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// The verify pipeline: what a verify request goes through, whatever
// transport brought it (CoAP here, verify.go; MQTT through
// VerifyHandler):
//
//	parse m2 once
//	-> rate limits (source address, then claimed device)     limits.go
//	-> section 7's first checks, then the lock decision       limits.go
//	-> protocol.Gateway.VerifyM2 (freshness, replay, registry, proofs)
//	   -> admit: the I_j mark, the audit record, the source made familiar
//	   -> m3, built only once admitted
//	-> failure counting (a bad E_i), refusal audit, metrics
//
// A login is admitted only once its audit record is kept (in the CoAP
// receive batch's journal write, or committed to a replica's shared
// store), so a login that cannot be recorded is refused busy before any
// m3 exists.

// verifyRequest is one verify request as a transport hands it over.
type verifyRequest struct {
	// M2 is the request's payload; it is read during the call only.
	M2 []byte
	// From is the sender's address (the relaying device's).
	From netip.AddrPort
	// Source is the client address the device vouches for (the CoAP
	// Source option, coap.OptionSource), or nil.
	Source []byte
	// Slot is the request's place in its transport's receive batch
	// (coap.Request.Index), which the batched audit commit answers by.
	Slot int
}

// verifier is the verify pipeline of one gateway. It holds no transport;
// it is safe for concurrent use.
type verifier struct {
	proto   *protocol.Gateway
	profile protocol.Profile
	window  time.Duration
	now     func() time.Time
	guard   *guard
	proofs  protocol.ReplayCache // I_j values seen (firstProof)
	audit   *auditWriter
	replica bool // a replica commits each success to the shared store before admitting it
	metrics *gwMetrics
	log     *slog.Logger
}

// errLimited is the refusal of a rate-limited request: busy on the wire.
var errLimited = fmt.Errorf("%w: rate limited", protocol.ErrBusy)

// auditDownError is a login admitted by the protocol but refused (busy)
// because its audit record could not be kept.
type auditDownError struct{ err error }

func (e *auditDownError) Error() string {
	return "login refused: its audit record could not be written: " + e.err.Error()
}
func (e *auditDownError) Unwrap() []error { return []error{protocol.ErrBusy, e.err} }

// verify runs one request through the pipeline and appends its answer to
// dst: m3 and nil, or an error message and the error, whose wire code is
// protocol.CodeOf(err).
func (vf *verifier) verify(ctx context.Context, req *verifyRequest, dst []byte) ([]byte, error) {
	start := time.Now()
	// A message that does not parse is limited by its source only, and
	// then refused by CheckProfile or as malformed.
	m, perr := protocol.ParseM2(req.M2)
	if out, limited := vf.rateLimit(req, &m, perr, dst); limited {
		return out, errLimited
	}
	var (
		out []byte
		v   protocol.Verification
		why string // overrides the error's reason in the audit record
		err error
	)
	if err = protocol.CheckProfile(vf.profile, req.M2); err == nil {
		err = perr
	}
	if err != nil {
		out = protocol.AppendError(dst, protocol.ErrorProfile(req.M2), protocol.CodeOf(err))
	} else {
		out, v, why, err = vf.verifyLocked(ctx, req, &m, dst, start)
	}
	elapsed := time.Since(start)
	// keep's error comes back from VerifyM2 as it was returned (no
	// errors.As: its target would cost an allocation per verify).
	down, _ := err.(*auditDownError)
	if down != nil {
		why = ReasonAuditDown
	}
	vf.metrics.observe(err, why, v.KVUser, v.KVDevice, elapsed, vf.now())
	if err != nil && down == nil {
		vf.refused(ctx, req, &v, why, err, elapsed)
	}
	return out, err
}

// verifyLocked is the verify of a parsed m2 of the gateway's profile with
// the lockout around it. It returns the answer, the verification, a
// reason that overrides the error's in the audit record (or "") and the
// error to report.
func (vf *verifier) verifyLocked(ctx context.Context, req *verifyRequest, m *protocol.M2, dst []byte, start time.Time) ([]byte, protocol.Verification, string, error) {
	gd := vf.guard
	if gd.off {
		out, v, err := vf.proto.VerifyM2(ctx, dst, m, func(v protocol.Verification) error {
			return vf.keep(ctx, &v, req, start)
		})
		return out, v, "", err
	}
	src := lockout.SourceOf(req.Source)
	now := vf.now()
	var d lockout.Decision
	// An id with a NUL cannot be registered: Verify refuses it as
	// unknown, and it could not be told apart in the store's keys. So
	// does a stale message: freshness comes before any registry or
	// policy check, and its answer must not tell anyone who is locked.
	if bytes.IndexByte(m.ID, 0) < 0 && vf.inWindow(m, now) {
		// From the lock decision to the count of the failure, one
		// verify of a user at a time (per stripe of users): else every
		// guess in flight when the limit is reached would pass the
		// decision and count past the limit. Not for replicas: there
		// this span holds network round trips, and a flood of one
		// user's logins would keep every worker waiting on its stripe;
		// the bound grows by the user's verifies in flight instead
		// (docs/THREAT-MODEL.md).
		if !vf.replica {
			mu := gd.userStripe(m.ID)
			mu.Lock()
			defer mu.Unlock()
		}
		v := protocol.Verification{Profile: m.Profile, User: m.ID, Device: m.DID, KVUser: m.KV, KVDevice: m.KVDev}
		var err error
		d, err = gd.decide(ctx, m.ID, src, now)
		if err != nil {
			// No log line per request: the shared store logs when it
			// becomes unreachable and again when it is back.
			vf.metrics.storeError("lockout")
			return protocol.AppendError(dst, m.Profile, protocol.ErrBusy), v, ReasonLockoutDown, fmt.Errorf("%w (%v)", errLockoutDown, err)
		}
		if d.Locked() {
			le := &lockedError{d: d, src: src}
			return protocol.AppendError(dst, m.Profile, protocol.ErrRejected), v, le.reason(), le
		}
	}
	out, v, err := vf.proto.VerifyM2(ctx, dst, m, func(v protocol.Verification) error {
		// Copies of this m2 must never count (firstProof); a cache that
		// cannot say only costs that protection, not the login.
		vf.firstProof(ctx, m)
		if err := vf.keep(ctx, &v, req, start); err != nil {
			return err
		}
		if serr := gd.succeed(ctx, v.User, src, now); serr != nil {
			// Availability only: the login stands, the source is not
			// remembered this time.
			vf.metrics.storeError("lockout")
			vf.log.Error("lockout store failed to remember a source", "err", serr)
		}
		return nil
	})
	if errors.Is(err, protocol.ReasonBadE) && vf.firstProof(ctx, m) {
		vf.countFailure(ctx, v, src, d, now)
	}
	return out, v, "", err
}

// keep keeps the audit record of a login the protocol admits, before m3
// is built: in the transport's receive batch when ctx carries one (its
// answers leave once the batch is journaled), committed to the shared
// store on a replica, else appended to the journal now. It fails when the
// record cannot be kept: the login is then refused busy.
func (vf *verifier) keep(ctx context.Context, v *protocol.Verification, req *verifyRequest, start time.Time) error {
	rec := store.AuditRecord{Time: vf.now(), Kind: KindVerify, Outcome: OutcomeOK, KVUser: v.KVUser, KVDevice: v.KVDevice,
		LatencyUS: time.Since(start).Microseconds()}
	if !vf.replica {
		if err := vf.audit.submitVerify(ctx, rec, v.User, v.Device, req.From, req.Slot, v.Profile); err != nil {
			return &auditDownError{err}
		}
		return nil
	}
	fillVerifyNames(&rec, v.User, v.Device, req.From) // audit.go
	err := vf.audit.commit(rec)
	if err == nil {
		return nil
	}
	vf.log.Warn("successful verify answered busy: its audit record could not be committed", "user", rec.User, "device", rec.Device, "err", err)
	rec.Outcome, rec.Reason, rec.Detail = OutcomeRefused, ReasonAuditDown, err.Error()
	vf.audit.submit(rec)
	return &auditDownError{err}
}

// refused hands the record of a refused verify to the audit writer, which
// samples refusals.
func (vf *verifier) refused(ctx context.Context, req *verifyRequest, v *protocol.Verification, why string, err error, elapsed time.Duration) {
	rec := store.AuditRecord{Time: vf.now(), Kind: KindVerify, Outcome: OutcomeRefused, KVUser: v.KVUser, KVDevice: v.KVDevice,
		Reason: cmp.Or(why, reasonOf(err)), Detail: detailOf(err), LatencyUS: elapsed.Microseconds()}
	if protocol.CodeOf(err) == protocol.ErrInternal {
		rec.Outcome = OutcomeError
	}
	// A refusal never fails: it is sampled, and kept when it can be.
	_ = vf.audit.submitVerify(ctx, rec, v.User, v.Device, req.From, req.Slot, v.Profile)
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

// rateLimit applies the rate limits to a verify request before anything
// else runs: the source address's, then (when m2 parses) the claimed
// device's. When it refuses, it returns the busy answer and true.
func (vf *verifier) rateLimit(req *verifyRequest, m *protocol.M2, perr error, dst []byte) ([]byte, bool) {
	gd := vf.guard
	if gd.source == nil && gd.device == nil {
		return nil, false
	}
	now := vf.now()
	if gd.source != nil {
		if ok, n := gd.source.allow(req.From.Addr().Unmap(), now); !ok {
			return vf.limited(req, dst, ReasonLimitedSource, nil, n, now), true
		}
	}
	// A message that does not parse goes on to the verify, which refuses
	// it as malformed.
	if gd.device != nil && perr == nil {
		if ok, n := gd.device.allow(deviceKeyOf(m.DID), now); !ok {
			return vf.limited(req, dst, ReasonLimitedDevice, m.DID, n, now), true
		}
	}
	return nil, false
}

// limited answers a rate-limited request busy, counts it and, when n > 0,
// audits the n refusals of this key since its previous record.
func (vf *verifier) limited(req *verifyRequest, dst []byte, reason string, device []byte, n int, now time.Time) []byte {
	vf.metrics.limitedOne(reason, now)
	if n > 0 {
		what := "this source address"
		if device != nil {
			what = "this device id"
		}
		vf.audit.submit(store.AuditRecord{Time: now, Kind: KindVerify, Outcome: OutcomeRefused, Reason: reason,
			Device: auditjson.SanitizeID(device), Source: req.From.String(),
			Detail: fmt.Sprintf("%d requests for %s answered busy in the last %s or less", n, what, auditEvery)})
	}
	return protocol.AppendError(dst, protocol.ErrorProfile(req.M2), protocol.ErrBusy)
}

// inWindow reports whether m2's T1 and T2 are within dT of now, the
// freshness that Verify checks first (spec section 6).
func (vf *verifier) inWindow(m *protocol.M2, now time.Time) bool {
	ms, w := uint64(max(now.UnixMilli(), 0)), uint64(vf.window.Milliseconds())
	in := func(t uint64) bool {
		if t >= ms {
			return t-ms <= w
		}
		return ms-t <= w
	}
	return in(m.T1) && in(m.T2)
}

// proofDomain is the first byte of the replay-cache keys of firstProof,
// beside the protocol's own domains (0x01 to 0x03).
const proofDomain = 0x80

// firstProof reports whether m2 is the first verify request to carry its
// I_j, and remembers it for dT past T2 (in the replay cache when replicas
// share one, else in a cache of its own). I_j covers E_i, DID_j and T2
// only (spec section 6), not ID_i, n_i, T1 or the Source option: whoever
// sees one m2 on its way from a device could send copies with any user's
// ID_i, a new n_i or T1 and any Source, each of them a failed proof with a
// valid I_j, and lock any user's familiar sources. So only the first m2
// with a given I_j may count as a failure, and a successful verify marks
// its I_j too, so that copies of a genuine login never count. A cache that
// cannot answer lets the failure count: guesses stay bounded. Under the
// classic profile I_j does not cover T2 either, so a copy counts again
// once the mark expires.
func (vf *verifier) firstProof(ctx context.Context, m *protocol.M2) bool {
	var k protocol.ReplayKey
	k[0] = proofDomain
	k[1] = byte(copy(k[2:2+protocol.MaxIDLen], m.DID))
	copy(k[2+protocol.MaxIDLen:], m.I[:])
	now := uint64(vf.now().UnixMilli())
	fresh, err := vf.proofs.Insert(ctx, k, max(m.T2, now)+uint64(vf.window.Milliseconds()), now)
	return fresh || err != nil
}

// countFailure charges a wrong password to the user's counters and locks
// what reached its limit.
func (vf *verifier) countFailure(ctx context.Context, v protocol.Verification, src lockout.Source, d lockout.Decision, now time.Time) {
	gd := vf.guard
	user := auditjson.SanitizeID(v.User)
	f, err := lockout.RecordFailure(ctx, gd.store, gd.policy, string(v.User), src, d, now)
	if err != nil {
		vf.metrics.storeError("lockout")
		vf.log.Error("lockout store failed to count a failure", "user", user, "source", src.String(), "err", err)
	}
	lock := func(scope lockout.Scope, o lockout.Outcome, limit int) {
		if !o.Locked {
			return
		}
		vf.metrics.lockouts.Inc()
		what := "source " + src.String()
		if scope == lockout.ScopeUnfamiliar {
			what = "unfamiliar sources (the last: " + src.String() + ")"
		}
		vf.log.Warn("user locked out", "user", user, "scope", scope.String(), "source", src.String(), "failures", o.Failures,
			"until", o.Until.UTC().Format(time.RFC3339))
		vf.audit.submit(store.AuditRecord{Time: now, Kind: KindLockout, Outcome: OutcomeLocked, Reason: "too many failed logins (" + scope.String() + ")",
			User: user, Device: auditjson.SanitizeID(v.Device),
			Detail: fmt.Sprintf("%d failures within %s (limit %d) from %s; locked until %s", o.Failures, gd.policy.Window, limit, what, o.Until.UTC().Format(time.RFC3339))})
	}
	lock(lockout.ScopeSource, f.Source, gd.policy.MaxFailures)
	lock(lockout.ScopeUnfamiliar, f.Unfamiliar, gd.policy.UnfamiliarFailures)
}
