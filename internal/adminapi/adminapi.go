// Package adminapi holds the JSON shapes of the gateway's HTTPS admin API
// and a small client for it, shared by the gateway, the user CLI and the
// admin CLI so that both ends agree on every field.
package adminapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tagauth/tagauth/internal/buildinfo"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

// PinnedClient returns an HTTPS client that accepts exactly the server
// certificate whose SHA-256 (of the DER) is fingerprint, hex encoded. The
// gateway's admin certificate is self-signed, so the pin replaces the
// usual chain check.
func PinnedClient(fingerprint string, timeout time.Duration) (*http.Client, error) {
	want, err := hex.DecodeString(fingerprint)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("fingerprint must be 64 hex digits (the gateway prints it at start)")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate's pin
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("gateway sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("gateway certificate fingerprint %x does not match the pinned one", got)
			}
			return nil
		},
	}}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// KDF and cardJSON are the admin API's registration shapes.
// KDF is the Argon2id parameter set in JSON.
type KDF struct {
	T    uint32 `json:"t"`
	MKiB uint32 `json:"m_kib"`
	P    uint8  `json:"p"`
}

// RegisterRequest is m_reg with the one-time enrolment code.
type RegisterRequest struct {
	Code    string `json:"code"`
	Profile string `json:"profile"`
	ID      string `json:"id"`
	W       string `json:"w"`
	R       string `json:"r"`
	T       uint64 `json:"t"`
	KDF     KDF    `json:"kdf"`
}

// Card is the card as the gateway returns it from /v1/register.
type Card struct {
	Profile string `json:"profile"`
	ID      string `json:"id"`
	Alpha   string `json:"alpha"`
	R       string `json:"r"`
	KV      uint8  `json:"kv"`
	Fuzzy   uint8  `json:"fuzzy"`
	KDF     KDF    `json:"kdf"`
}

// Card converts the JSON form to a protocol.Card and validates it.
func (c Card) Card() (protocol.Card, error) {
	p, err := protocol.ParseProfile(c.Profile)
	if err != nil {
		return protocol.Card{}, err
	}
	out := protocol.Card{Profile: p, ID: c.ID, KV: c.KV, Fuzzy: c.Fuzzy,
		KDF: protocol.KDFParams{Time: c.KDF.T, MemoryKiB: c.KDF.MKiB, Threads: c.KDF.P}}
	if err := unhex32(&out.Alpha, c.Alpha, "alpha"); err != nil {
		return protocol.Card{}, err
	}
	if err := unhex32(&out.R, c.R, "r"); err != nil {
		return protocol.Card{}, err
	}
	return out, out.Validate()
}

// CardToJSON is the inverse of Card.Card.
func CardToJSON(c protocol.Card) Card {
	return Card{Profile: c.Profile.String(), ID: c.ID, Alpha: hex.EncodeToString(c.Alpha[:]),
		R: hex.EncodeToString(c.R[:]), KV: c.KV, Fuzzy: c.Fuzzy,
		KDF: KDF{T: c.KDF.Time, MKiB: c.KDF.MemoryKiB, P: c.KDF.Threads}}
}

func unhex32(dst *[protocol.Size]byte, s, field string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != protocol.Size {
		return fmt.Errorf("card field %s must be 64 hex digits", field)
	}
	copy(dst[:], b)
	return nil
}

// APIError is an error answer of the admin API.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("gateway said %d: %s", e.Status, e.Message) }

// PostJSON sends in as JSON to url (with a bearer token if token is not
// empty) and decodes the answer into out. Error answers become *APIError.
func PostJSON(ctx context.Context, hc *http.Client, url, token string, in, out any) error {
	return DoJSON(ctx, hc, http.MethodPost, url, token, in, out)
}

// DoJSON is PostJSON for any method; in may be nil.
func DoJSON(ctx context.Context, hc *http.Client, method, url, token string, in, out any) error {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach gateway admin API at %s: %w", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("gateway answer is not the expected JSON: %w", err)
	}
	return nil
}

// EnrolCodeRequest asks for a one-time enrolment code for a user.
type EnrolCodeRequest struct {
	User string `json:"user"`
	TTLs int    `json:"ttl_s,omitempty"`
}

// EnrolCode is the answer: the code to hand to the user, once.
type EnrolCode struct {
	Code    string    `json:"code"`
	Expires time.Time `json:"expires"`
}

// DeviceRequest provisions a device.
type DeviceRequest struct {
	ID    string `json:"id"`
	Group string `json:"group,omitempty"`
}

// Grant lets a user log in to every device of a group ("*": all).
type Grant struct {
	User  string `json:"user"`
	Group string `json:"group"`
}

// Info is the unauthenticated /v1/info answer.
type Info struct {
	Profile string `json:"profile"`
	// SpecVersion is the version of the protocol specification
	// (docs/spec/PROTOCOL.md) the gateway implements, protocol.SpecVersion.
	SpecVersion string `json:"spec_version"`
	// KeyVersions are the live master-key versions, oldest first: a JSON
	// array of integers (a Go []uint8 would be marshalled as base64).
	KeyVersions []int  `json:"key_versions"`
	Fingerprint string `json:"fingerprint"`
	CoAP        string `json:"coap"`
	// Build is what the gateway's binary knows of its build: module
	// version, VCS revision, Go version, spec version and profiles (the
	// same as "tagauth version --json").
	Build buildinfo.Info `json:"build"`
}

// ErrorBody is every error answer's body.
type ErrorBody struct {
	Error string `json:"error"`
}

// IDRequest names the identity of POST /v1/users/unlock,
// /v1/users/revoke and /v1/devices/revoke. Carried in the body, every
// identity of the spec arrives intact, whatever routers and proxies do to
// paths (Go's router, for one, cannot match a segment that is an escaped
// "/"): the CLI and the console use these routes.
type IDRequest struct {
	ID string `json:"id"`
}

// PathSegment escapes an identity for one segment of an admin API path,
// such as /v1/users/{id}/revoke. Every identity the protocol allows (1 to
// 64 bytes of UTF-8 without NUL) survives: url.PathEscape already escapes
// "/", "%", "?", spaces and non-ASCII; this also escapes every ".", since
// the segments "." and ".." would otherwise be cleaned away by the
// server's router (and by browsers and proxies) before the id is read.
// One identity still cannot travel in a path: "/" alone (Go's router takes
// a segment that unescapes to "/" for a trailing slash); IDRequest can
// carry it.
func PathSegment(id string) string {
	return strings.ReplaceAll(url.PathEscape(id), ".", "%2E")
}
