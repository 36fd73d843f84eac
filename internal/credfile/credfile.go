// Package credfile reads and writes a device's credential file: what the
// gateway hands out when it provisions a device (DID_j, Tag_j and, hardened,
// kv_j), plus where the device finds its gateway.
//
// The file is JSON, written by the gateway and read by the device agent:
//
//	{
//	  "profile": "hardened",
//	  "id": "sensor-7",
//	  "kv": 1,
//	  "tag": "<64 hex digits>",
//	  "gateway": "127.0.0.1:5683",
//	  "admin_url": "https://127.0.0.1:8443",
//	  "fingerprint": "<64 hex digits>"
//	}
//
// "gateway" is the host:port of the gateway's CoAP verify endpoint.
// "admin_url" (optional) is the gateway's HTTPS admin address and
// "fingerprint" the SHA-256 of its certificate (DER), which a client pins;
// the two come together. "kv" is the key version, 1-255 under hardened; a
// classic credential's is 1, the one master key of a classic gateway (its
// wire carries no key version). Files written before spec 1.1 may hold 0 or
// no "kv" for classic: Unmarshal reads that as 1.
//
// The tag is the device's long-term secret: with it anyone can act as the
// device. Save writes the file with mode 0600 and Load refuses a file that
// other users may read. Parsing is strict (one JSON object, exact field
// names, no unknown or repeated fields, every field checked) and its errors
// name the field at fault but never repeat the tag or other file contents.
package credfile

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tagauth/tagauth/protocol"
)

// Credential is a device credential and the gateway it belongs to.
type Credential struct {
	protocol.DeviceCredential
	// Gateway is the host:port of the gateway's CoAP /tagauth/verify.
	Gateway string
	// AdminURL is the gateway's HTTPS admin base URL; empty if unknown.
	AdminURL string
	// Fingerprint is the lowercase hex SHA-256 of the gateway's TLS
	// certificate (DER), required with AdminURL.
	Fingerprint string
}

// ErrInvalid is wrapped by every error about the content of a credential,
// as opposed to errors reading or writing the file.
var ErrInvalid = errors.New("invalid device credential")

// wire is the JSON form, in the order Marshal writes it.
type wire struct {
	Profile     string `json:"profile"`
	ID          string `json:"id"`
	KV          uint8  `json:"kv"`
	Tag         string `json:"tag"`
	Gateway     string `json:"gateway"`
	AdminURL    string `json:"admin_url,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Field names of the JSON form.
const (
	fProfile     = "profile"
	fID          = "id"
	fKV          = "kv"
	fTag         = "tag"
	fGateway     = "gateway"
	fAdminURL    = "admin_url"
	fFingerprint = "fingerprint"
)

// maxSize bounds a credential file; a real one is under 400 bytes.
const maxSize = 16 << 10

// Marshal checks c and encodes it as indented JSON with a final newline.
// The fingerprint is written in lowercase.
func Marshal(c Credential) ([]byte, error) {
	if err := check(&c); err != nil {
		return nil, err
	}
	w := wire{
		Profile:     c.Profile.String(),
		ID:          c.ID,
		KV:          c.KV,
		Tag:         hex.EncodeToString(c.Tag[:]),
		Gateway:     c.Gateway,
		AdminURL:    c.AdminURL,
		Fingerprint: c.Fingerprint,
	}
	b, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	return append(b, '\n'), nil
}

// Unmarshal parses and checks a credential. It accepts exactly one JSON
// object with the field names of the package doc, each at most once, and
// nothing after it. Errors wrap ErrInvalid and say which field is wrong.
func Unmarshal(b []byte) (Credential, error) {
	fields, err := readObject(b)
	if err != nil {
		return Credential{}, err
	}
	var c Credential
	var s string
	if s, err = stringField(fields, fProfile, true); err != nil {
		return Credential{}, err
	}
	switch s {
	case "classic":
		c.Profile = protocol.Classic
	case "hardened":
		c.Profile = protocol.Hardened
	default:
		return Credential{}, invalid(fProfile, `must be "classic" or "hardened"`)
	}
	if c.ID, err = stringField(fields, fID, true); err != nil {
		return Credential{}, err
	}
	if raw, ok := fields[fKV]; ok {
		n, err := strconv.ParseUint(string(raw), 10, 8)
		if err != nil {
			return Credential{}, invalid(fKV, "must be an integer from 0 to 255")
		}
		c.KV = uint8(n)
	} else if c.Profile == protocol.Hardened {
		return Credential{}, invalid(fKV, "is missing (a hardened credential has a key version 1-255)")
	}
	if s, err = stringField(fields, fTag, true); err != nil {
		return Credential{}, err
	}
	if !decodeHex32(c.Tag[:], s) {
		return Credential{}, invalid(fTag, "must be 64 hex digits")
	}
	if c.Gateway, err = stringField(fields, fGateway, true); err != nil {
		return Credential{}, err
	}
	if c.AdminURL, err = stringField(fields, fAdminURL, false); err != nil {
		return Credential{}, err
	}
	if c.Fingerprint, err = stringField(fields, fFingerprint, false); err != nil {
		return Credential{}, err
	}
	if err := check(&c); err != nil {
		return Credential{}, err
	}
	return c, nil
}

// readObject splits b into its top-level fields. encoding/json alone would
// match names case-insensitively, let a repeated field silently win and
// accept trailing data after a Decode, so the object is walked token by
// token. Its own errors give byte offsets, never the offending text.
func readObject(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		// encoding/json would quietly turn bad bytes into U+FFFD, changing
		// an identity.
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, syntaxError(dec, err, "want a JSON object")
	}
	fields := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxError(dec, err, "")
		}
		name, _ := tok.(string) // inside an object, Token returns keys as strings
		switch name {
		case fProfile, fID, fKV, fTag, fGateway, fAdminURL, fFingerprint:
		default:
			return nil, fmt.Errorf("%w: unknown field %s", ErrInvalid, quoteName(name))
		}
		if _, dup := fields[name]; dup {
			return nil, fmt.Errorf("%w: field %q appears twice", ErrInvalid, name)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxError(dec, err, "")
		}
		fields[name] = raw
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, syntaxError(dec, err, "")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object (at byte %d)", ErrInvalid, dec.InputOffset())
	}
	return fields, nil
}

// syntaxError reports where the JSON went wrong without quoting it: the
// text could be part of the tag.
func syntaxError(dec *json.Decoder, err error, want string) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%w: not valid JSON (syntax error at byte %d)", ErrInvalid, se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: not valid JSON (truncated)", ErrInvalid)
	case want != "":
		return fmt.Errorf("%w: %s", ErrInvalid, want)
	}
	return fmt.Errorf("%w: not valid JSON (near byte %d)", ErrInvalid, dec.InputOffset())
}

// quoteName quotes an unknown field name for an error if it is short and
// plain (a typo worth showing), and hides it otherwise.
func quoteName(name string) string {
	if len(name) > 24 {
		return "(a long name)"
	}
	for _, r := range name {
		if r < 0x20 || r > 0x7e {
			return "(a name with unusual characters)"
		}
	}
	return strconv.Quote(name)
}

// stringField decodes field name as a JSON string. A missing optional
// field is "".
func stringField(fields map[string]json.RawMessage, name string, required bool) (string, error) {
	raw, ok := fields[name]
	if !ok {
		if required {
			return "", invalid(name, "is missing")
		}
		return "", nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", invalid(name, "must be a string")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid(name, "must be a string")
	}
	return s, nil
}

// check validates every field of c and normalises its fingerprint to
// lowercase and a classic key version to 1. Messages name the field and the rule, never the value.
func check(c *Credential) error {
	switch {
	case !c.Profile.Valid():
		return invalid(fProfile, `must be "classic" or "hardened"`)
	case !protocol.ValidIdentity([]byte(c.ID)):
		return invalid(fID, "must be 1-64 bytes of UTF-8 without NUL")
	case c.Profile == protocol.Hardened && c.KV == 0:
		return invalid(fKV, "must be 1-255 for a hardened credential")
	case c.Profile == protocol.Classic && c.KV != protocol.ClassicKeyVersion && c.KV != 0:
		return invalid(fKV, "must be 1 for a classic credential (classic has one master key, version 1)")
	case c.Tag == [protocol.Size]byte{}:
		return invalid(fTag, "is all zeros (not a provisioned tag)")
	}
	if err := checkHostPort(c.Gateway); err != nil {
		return invalid(fGateway, err.Error())
	}
	if c.AdminURL != "" {
		u, err := url.Parse(c.AdminURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Opaque != "" {
			return invalid(fAdminURL, "must be an https:// URL with a host and no user info")
		}
		if c.Fingerprint == "" {
			return invalid(fFingerprint, "is missing (required with admin_url, to pin the gateway's certificate)")
		}
	}
	if c.Fingerprint != "" {
		var fp [32]byte
		if !decodeHex32(fp[:], c.Fingerprint) {
			return invalid(fFingerprint, "must be 64 hex digits (SHA-256 of the gateway certificate)")
		}
		c.Fingerprint = hex.EncodeToString(fp[:])
	}
	if c.Profile == protocol.Classic {
		c.KV = protocol.ClassicKeyVersion // 0 in files from before spec 1.1
	}
	return nil
}

// checkHostPort accepts host:port with a non-empty host and a port 1-65535.
func checkHostPort(s string) error {
	if s == "" {
		return errors.New("is missing")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("must be host:port (an IPv6 host in brackets)")
	}
	if host == "" || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' }) {
		return errors.New("must name a host before the port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return errors.New("must end in a port from 1 to 65535")
	}
	return nil
}

// decodeHex32 decodes exactly 64 hex digits into dst, without an error
// that would quote the offending digit.
func decodeHex32(dst []byte, s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

func invalid(field, rule string) error {
	return fmt.Errorf("%w: field %q %s", ErrInvalid, field, rule)
}
