package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/protocol"
)

// Hints printed under an error. They say what the user can check, because
// the wire deliberately says little: "rejected" covers every failed
// verification, unknown or revoked identity and policy denial (spec
// section 7), so only the user can tell which applies.
const (
	hintRejected = `the gateway refused the login; it never says why, so check in turn:
- the password (a wrong one passes the card's own check 1 time in 256)
- the user or the device was revoked, or the user is locked out after failed logins
  (ask the operator: tagauth gateway audit --user ID)
- the user is not granted this device's group (tagauth gateway grants)
- the clocks of this host, the device and the gateway differ by more than the window (10s by default)
- --did is not this device's identity`
	hintSessionGone = "the session expired or was closed (the device restarted, or it was idle too long): log in again"
	hintBusy        = "the gateway or the device is busy (a full replay cache, a store that is down, every slot taken): try again in a moment"
	hintAdminDown   = "is the gateway running, and is --admin its admin URL? (the gateway prints the URL and its fingerprint at start)"
	hintNoDevice    = "no answer: is the device agent running, and is --device its address (or its broker, with --did its identity)?"
	hintPassword    = "check the password, and that --card is your card"
	hintNoCard      = "check --card (or TAGAUTH_CARD): it names the card file that tagauth user enroll wrote"
	hintCardDamaged = "the card file is damaged or not a card file: restore it from a backup, or enrol again"
)

// loginHint is the hint for an error of the login phase.
func loginHint(err error) string {
	switch {
	case errors.Is(err, protocol.ErrRejected) && !errors.Is(err, protocol.ReasonWrongPassword):
		return hintRejected
	}
	return commonHint(err)
}

// taskHint is the hint for an error of a task on an established session:
// there "rejected" means the device no longer knows the session.
func taskHint(err error) string {
	if errors.Is(err, protocol.ErrRejected) {
		return hintSessionGone
	}
	return commonHint(err)
}

// commonHint covers the errors every user command can meet.
func commonHint(err error) string {
	var pe *pinError
	switch {
	case errors.As(err, &pe):
		return "check --fingerprint against the one the gateway printed at start (tagauth gateway info on its host);\n" +
			"if they are the same, another server answers at --admin: do not send it anything"
	case errors.Is(err, card.ErrWrongPassword):
		return hintPassword
	case errors.Is(err, protocol.ReasonWrongPassword):
		return "wrong password (the card's own check caught it before anything was sent)"
	case errors.Is(err, card.ErrCorrupt):
		return hintCardDamaged
	case errors.Is(err, fs.ErrNotExist):
		return hintNoCard
	case errors.Is(err, protocol.ErrBusy):
		return hintBusy
	case adminUnreachable(err):
		return hintAdminDown
	case errors.Is(err, coap.ErrTimeout), errors.Is(err, mqttbind.ErrTimeout), errors.Is(err, coap.ErrReset),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, context.DeadlineExceeded):
		// Not the admin API (above): the device, over CoAP or the broker.
		return hintNoDevice
	}
	return ""
}

// adminUnreachable reports whether err is an HTTP request that never got
// an answer: refused, unresolvable, unroutable or timed out. A TLS failure
// is not one of them: the server answered.
func adminUnreachable(err error) bool {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return false
	}
	var oe *net.OpError
	var dnsErr *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.As(err, &dnsErr) ||
		(errors.As(err, &oe) && oe.Op == "dial") || ue.Timeout()
}

// pinError is a gateway certificate that does not match the pinned
// fingerprint. adminapi's message for it reads "cannot reach gateway admin
// API ...", which sends the user looking for a network fault; this type
// lets the CLI say what happened instead.
type pinError struct {
	got  [sha256.Size]byte
	want string
	err  error
}

func (e *pinError) Error() string {
	return fmt.Sprintf("certificate pin mismatch: the server presented a certificate with fingerprint %x, not the pinned %s", e.got, strings.ToLower(e.want))
}

func (e *pinError) Unwrap() error { return e.err }

// pinnedClient is adminapi.PinnedClient whose pin failure is a *pinError.
func pinnedClient(fingerprint string, timeout time.Duration) (*http.Client, error) {
	hc, err := adminapi.PinnedClient(fingerprint, timeout)
	if err != nil {
		return nil, err
	}
	tr, ok := hc.Transport.(*http.Transport)
	if !ok || tr.TLSClientConfig == nil || tr.TLSClientConfig.VerifyPeerCertificate == nil {
		return hc, nil // nothing to wrap: adminapi pins some other way now
	}
	verify := tr.TLSClientConfig.VerifyPeerCertificate
	tr.TLSClientConfig.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		if err == nil {
			return nil
		}
		pe := &pinError{want: fingerprint, err: err}
		if len(raw) > 0 {
			pe.got = sha256.Sum256(raw[0])
		}
		return pe
	}
	return hc, nil
}

// pinMessage replaces the message of an error that carries a *pinError:
// the layers above it wrapped it as a failure to reach the gateway, which
// it is not.
func pinMessage(err error) error {
	var pe *pinError
	if errors.As(err, &pe) {
		return pe
	}
	return err
}
