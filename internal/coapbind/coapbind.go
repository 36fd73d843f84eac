// Package coapbind is the contract of tagauth's CoAP binding (spec section
// 11) shared by both of its ends: the resource paths, the CoAP code that
// answers each protocol outcome, the task exchange's plaintext JSON and
// the device-info extension's encoding. The device agent, the user's
// client, the gateway, the load tool and the MQTT binding (whose topics
// name the same endpoints, spec section 12) all import it, so that none
// of them imports another for a constant or a type. It is no transport:
// package coap carries the datagrams.
package coapbind

import (
	"errors"
	"fmt"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/protocol"
)

// Resource paths (spec section 11). PathInfo is a binding extension in
// front of the protocol: which device an agent is.
const (
	PathLogin   = "/tagauth/login"   // the device's: m1, answered with m4
	PathConfirm = "/tagauth/confirm" // the device's: sid || m5 (hardened)
	PathTask    = "/tagauth/task"    // the device's: a sealed task record
	PathInfo    = "/tagauth/info"    // the device's: its profile and DID_j
	PathVerify  = "/tagauth/verify"  // the gateway's: m2, answered with m3
)

// Code maps a protocol wire error code to the CoAP response code of spec
// section 11: malformed and unsupported_profile are the client's fault
// (4.00), stale_timestamp, replayed and rejected are refusals (4.01), busy
// asks the client to come back (5.03) and everything else, including a
// code the spec does not define, is internal (5.00).
func Code(c protocol.Code) coap.Code {
	switch c {
	case protocol.ErrMalformed, protocol.ErrUnsupportedProfile:
		return coap.BadRequest
	case protocol.ErrStaleTimestamp, protocol.ErrReplayed, protocol.ErrRejected:
		return coap.Unauthorized
	case protocol.ErrBusy:
		return coap.ServiceUnavailable
	default:
		return coap.InternalServerError
	}
}

// Refuse returns the answer that refuses a request with wire code c: its
// CoAP code and the error message of spec section 7 for profile p,
// appended to dst.
func Refuse(dst []byte, p protocol.Profile, c protocol.Code) (coap.Code, []byte) {
	return Code(c), protocol.AppendError(dst, p, c)
}

// TaskRequest is the plaintext a user's client seals to run a task.
type TaskRequest struct {
	Task string `json:"task"`
	Args string `json:"args,omitempty"`
}

// TaskResponse is the plaintext of the device's sealed answer to a task.
type TaskResponse struct {
	OK     bool   `json:"ok"`
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// InfoRequestSize is the padding of an info request: the largest answer,
// a profile byte and id8 of a 64-byte identity, so that an answer never
// amplifies a spoofed request. A device ignores the bytes.
const InfoRequestSize = 1 + 1 + protocol.MaxIDLen

// AppendDeviceInfo appends the info answer for profile p and identity did:
// profile byte || id8(DID_j).
func AppendDeviceInfo(dst []byte, p protocol.Profile, did string) []byte {
	dst = append(dst, byte(p), byte(len(did)))
	return append(dst, did...)
}

// ParseDeviceInfo decodes an info answer, which comes from the network
// and is untrusted: it checks the profile byte and that the identity is a
// valid one (1 to 64 bytes of UTF-8, no NUL), with nothing after it.
func ParseDeviceInfo(b []byte) (protocol.Profile, string, error) {
	if len(b) < 2 {
		return 0, "", errors.New("device info: too short")
	}
	p := protocol.Profile(b[0])
	if !p.Valid() {
		return 0, "", fmt.Errorf("device info: unknown profile byte 0x%02x", b[0])
	}
	n := int(b[1])
	if len(b) != 2+n {
		return 0, "", fmt.Errorf("device info: identity length %d, but %d bytes follow", n, len(b)-2)
	}
	if !protocol.ValidIdentity(b[2:]) {
		return 0, "", errors.New("device info: not a valid identity (1 to 64 bytes of UTF-8, no NUL)")
	}
	return p, string(b[2:]), nil
}
