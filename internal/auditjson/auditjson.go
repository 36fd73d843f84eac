// Package auditjson is the one encoder of tagauth's audit lines: the JSON
// the gateway writes to its audit output and tagauth gateway audit export
// writes from the store, which SIEMs parse. It is a contract, so it lives
// apart from the gateway daemon: both ends import it, and it depends only
// on the record type (internal/store) and the standard library.
//
// Identities in a record come off the wire; SanitizeID is how they are
// made safe to log before they reach a record.
package auditjson

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// AppendLine appends r as one JSON line, in the shape slog's JSONHandler
// gives ({"time","level","msg":"audit",...}), with the record's own time
// (now when it has none). The gateway's audit output and tagauth gateway
// audit export both write it, so a SIEM reads the same lines from either;
// a test holds it to slog's output. Every field is either fixed text or
// sanitized (SanitizeID); appendString escapes the rest.
func AppendLine(b []byte, r *store.AuditRecord) []byte {
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"audit","kind":`...)
	b = appendString(b, r.Kind)
	b = append(b, `,"outcome":`...)
	b = appendString(b, r.Outcome)
	str := func(key, v string) {
		if v != "" {
			b = append(b, ',', '"')
			b = append(b, key...)
			b = append(b, '"', ':')
			b = appendString(b, v)
		}
	}
	num := func(key string, v int64) {
		if v != 0 {
			b = append(b, ',', '"')
			b = append(b, key...)
			b = append(b, '"', ':')
			b = strconv.AppendInt(b, v, 10)
		}
	}
	str("reason", r.Reason)
	str("user", r.User)
	str("device", r.Device)
	str("source", r.Source)
	num("kv_user", int64(r.KVUser))
	num("kv_device", int64(r.KVDevice))
	num("latency_us", r.LatencyUS)
	str("detail", r.Detail)
	if r.Count > 1 {
		num("count", int64(r.Count))
	}
	return append(b, '}', '\n')
}

// appendString appends s as a JSON string, escaped as slog escapes
// it: quotes, backslashes and control characters; invalid UTF-8 becomes
// U+FFFD; U+2028 and U+2029, which end lines for JavaScript, are escaped.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// maxSanitized caps a sanitized identity, in bytes of input.
const maxSanitized = protocol.MaxIDLen

// SanitizeID turns an identity claimed on the wire into text that is safe
// to log and print: printable UTF-8 is kept as is; anything else (invalid
// UTF-8, control or format characters) becomes "hex:" followed by the hex
// of the bytes. Input longer than protocol.MaxIDLen bytes is cut there and
// marked with a trailing "...".
func SanitizeID(b []byte) string {
	cut := false
	if len(b) > maxSanitized {
		b, cut = b[:maxSanitized], true
	}
	s := ""
	if printable(b) {
		s = string(b)
	} else {
		s = "hex:" + hex.EncodeToString(b)
	}
	if cut {
		s += "..."
	}
	return s
}

// Safe reports whether SanitizeID gives id back as it is (printable and
// at most protocol.MaxIDLen bytes), so that a caller may skip the copy.
func Safe(id []byte) bool { return len(id) <= maxSanitized && printable(id) }

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		// Spaces other than U+0020 and format characters (bidi
		// overrides) can make a log line lie about what it says.
		if !unicode.IsPrint(r) {
			return false
		}
		b = b[n:]
	}
	return true
}
