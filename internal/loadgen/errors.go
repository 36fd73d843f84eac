package loadgen

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/protocol"
)

// ErrKind classifies a failed operation for the report's "errors by kind".
type ErrKind uint8

// Error kinds. The protocol's wire codes come first, in spec order.
const (
	KindOther ErrKind = iota
	KindMalformed
	KindUnsupportedProfile
	KindStale
	KindReplayed
	KindRejected
	KindBusy
	KindInternal
	KindTimeout     // no answer after every retransmission
	KindNetwork     // a socket error
	KindBadResponse // an answer that does not parse or does not verify
	KindNotStarted  // fixed rate: the run ended before a free worker took it
	numKinds
)

var kindNames = [numKinds]string{
	KindOther:              "other",
	KindMalformed:          "malformed",
	KindUnsupportedProfile: "unsupported_profile",
	KindStale:              "stale_timestamp",
	KindReplayed:           "replayed",
	KindRejected:           "rejected",
	KindBusy:               "busy",
	KindInternal:           "internal",
	KindTimeout:            "timeout",
	KindNetwork:            "network",
	KindBadResponse:        "bad_response",
	KindNotStarted:         "not_started",
}

func (k ErrKind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "other"
}

// kindError tags an error with its kind.
type kindError struct {
	kind ErrKind
	err  error
}

func (e *kindError) Error() string { return e.kind.String() + ": " + e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

func withKind(k ErrKind, err error) error { return &kindError{k, err} }

// KindOf classifies err: an explicit kind, a protocol wire code, a
// timeout, a socket error, or other.
func KindOf(err error) ErrKind {
	var ke *kindError
	if errors.As(err, &ke) {
		return ke.kind
	}
	var c protocol.Code
	if errors.As(err, &c) {
		switch c {
		case protocol.ErrMalformed:
			return KindMalformed
		case protocol.ErrUnsupportedProfile:
			return KindUnsupportedProfile
		case protocol.ErrStaleTimestamp:
			return KindStale
		case protocol.ErrReplayed:
			return KindReplayed
		case protocol.ErrRejected:
			return KindRejected
		case protocol.ErrBusy:
			return KindBusy
		case protocol.ErrInternal:
			return KindInternal
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, coap.ErrTimeout) {
		return KindTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return KindTimeout
		}
		return KindNetwork
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return KindNetwork
	}
	return KindOther
}
