package protocol

import (
	"errors"
	"fmt"
)

// Code is a wire error code (spec section 7). Every Code is an error, so a
// protocol outcome can be tested with errors.Is(err, protocol.ErrReplayed).
type Code uint8

// Wire error codes. The wire deliberately says only ErrRejected for every
// failed verification, unknown or revoked identity and policy denial.
const (
	ErrMalformed          Code = 0x01
	ErrUnsupportedProfile Code = 0x02
	ErrStaleTimestamp     Code = 0x03
	ErrReplayed           Code = 0x04
	ErrRejected           Code = 0x05
	ErrBusy               Code = 0x06
	ErrInternal           Code = 0x07
)

var codeNames = [...]string{
	ErrMalformed:          "malformed",
	ErrUnsupportedProfile: "unsupported_profile",
	ErrStaleTimestamp:     "stale_timestamp",
	ErrReplayed:           "replayed",
	ErrRejected:           "rejected",
	ErrBusy:               "busy",
	ErrInternal:           "internal",
}

// String returns the spec's name of the code.
func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("code(0x%02x)", uint8(c))
}

func (c Code) Error() string { return "tagauth: " + c.String() }

// Valid reports whether c is one of the codes the spec defines.
func (c Code) Valid() bool { return c >= ErrMalformed && c <= ErrInternal }

// Reason is the precise cause of a refusal, for audit logs and local errors.
// It never travels on the wire: CodeOf maps it to its wire code. Reasons are
// sentinels: test them with errors.Is. Their names start with Reason and the
// wire codes' with Err, so that ReasonLoginReplay (a precise cause) cannot be
// mistaken for ErrReplayed (what the wire says about it and its siblings).
type Reason struct {
	name string
	code Code
}

func (r *Reason) Error() string { return "tagauth: " + r.name }

// Unwrap returns the wire code, so that errors.Is(err, ErrRejected) holds for
// every rejection reason.
func (r *Reason) Unwrap() error { return r.code }

// Name is a short stable identifier for logs and metrics labels.
func (r *Reason) Name() string { return r.name }

// Precise reasons. The comments say which party reports them.
var (
	// Any party.
	ReasonWrongProfile = &Reason{"unsupported profile", ErrUnsupportedProfile}
	ReasonBadMessage   = &Reason{"malformed message", ErrMalformed}
	ReasonStaleT1      = &Reason{"stale T1", ErrStaleTimestamp}
	ReasonStaleT2      = &Reason{"stale T2", ErrStaleTimestamp}
	ReasonStaleT3      = &Reason{"stale T3", ErrStaleTimestamp}
	ReasonStaleT4      = &Reason{"stale T4", ErrStaleTimestamp}
	ReasonStaleReg     = &Reason{"stale registration timestamp", ErrStaleTimestamp}
	ReasonLoginReplay  = &Reason{"login replayed", ErrReplayed}
	// ReasonStepReplay is a second m3, m4 or m5 of a login that has already
	// passed that step (spec section 7).
	ReasonStepReplay = &Reason{"message for a step the login has already passed", ErrReplayed}
	ReasonCacheFull  = &Reason{"replay cache full or unavailable", ErrBusy}
	ReasonBusyStore  = &Reason{"registry unavailable", ErrBusy}

	// Gateway.
	ReasonUnknownUser       = &Reason{"unknown user", ErrRejected}
	ReasonRevokedUser       = &Reason{"revoked user", ErrRejected}
	ReasonUnknownDevice     = &Reason{"unknown device", ErrRejected}
	ReasonRevokedDevice     = &Reason{"revoked device", ErrRejected}
	ReasonUnknownKeyVersion = &Reason{"unknown key version", ErrRejected}
	ReasonPolicyDenied      = &Reason{"user not allowed on device", ErrRejected}
	ReasonBadE              = &Reason{"E_i does not verify", ErrRejected}
	ReasonBadI              = &Reason{"I_j does not verify", ErrRejected}

	// Device.
	ReasonBadM3 = &Reason{"m3 does not verify", ErrRejected}
	ReasonBadM5 = &Reason{"key confirmation tau_i does not verify", ErrRejected}

	// Card.
	ReasonWrongPassword = &Reason{"wrong password (fuzzy verifier)", ErrRejected}
	ReasonBadGamma      = &Reason{"gamma_i does not verify", ErrRejected}
	ReasonBadM4         = &Reason{"key confirmation tau_j does not verify", ErrRejected}

	// Session channel.
	ReasonBadRecord      = &Reason{"record does not authenticate", ErrRejected}
	ReasonRecordReplay   = &Reason{"record sequence number not increasing", ErrReplayed}
	ReasonSessionExpired = &Reason{"session expired", ErrRejected}
)

// Local misuse errors: not protocol outcomes, never sent on the wire.
var (
	// ErrState is returned when a step is called out of order or on a
	// session that has already finished or failed.
	ErrState = errors.New("tagauth: step out of order or session finished")
	// ErrConfig is returned when a Config lacks its clock or randomness.
	ErrConfig = errors.New("tagauth: config needs Now and Rand")
)

// CodeOf returns the wire code for err: its own code if it is (or wraps) a
// Code, ErrInternal otherwise.
func CodeOf(err error) Code {
	var c Code
	if errors.As(err, &c) && c.Valid() {
		return c
	}
	return ErrInternal
}

// ReasonOf returns the precise reason carried by err, or nil.
func ReasonOf(err error) *Reason {
	var r *Reason
	if errors.As(err, &r) {
		return r
	}
	return nil
}

// staleError says by how much a timestamp missed the window, for the
// person who has to fix a clock; the skew is a number, never attacker text.
func staleError(r *Reason, t, now uint64) error {
	skew := int64(t - now)
	return fmt.Errorf("%w: off by %d ms (check clock sync)", r, skew)
}
