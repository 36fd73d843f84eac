package card

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/text/unicode/norm"

	"github.com/tagauth/tagauth/protocol"
)

// FuzzOpen feeds arbitrary files and passwords to the opener. It must never
// panic, every failure must be exactly one of ErrCorrupt and
// ErrWrongPassword, and only a genuine file with its password (in any
// Unicode form with the same NFC) may open, giving back the sealed card.
// Headers are held to cheap Argon2id parameters so that each iteration
// stays fast; the refusal path is the one Open takes for out-of-range ones.
func FuzzOpen(f *testing.F) {
	type genuine struct {
		data []byte
		card protocol.Card
	}
	var files []genuine
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		c, data := sealedTiny(f, p)
		files = append(files, genuine{data, c})
		f.Add(data, password)
		f.Add(data, "wrong")
		f.Add(data[:len(data)-1], password)
		f.Add(data[:headerSize], password)
	}
	f.Add([]byte{}, "")
	f.Add([]byte(magic), password)

	f.Fuzz(func(t *testing.T, data []byte, pw string) {
		c, err := open(data, pw, cheap)
		if err != nil {
			if errors.Is(err, ErrCorrupt) == errors.Is(err, ErrWrongPassword) {
				t.Fatalf("error %q is neither or both of ErrCorrupt and ErrWrongPassword", err)
			}
			return
		}
		for _, g := range files {
			if bytes.Equal(data, g.data) {
				if norm.NFC.String(pw) != norm.NFC.String(password) {
					t.Fatalf("genuine file opened with password %q", pw)
				}
				if c != g.card {
					t.Fatalf("opened %+v, sealed %+v", c, g.card)
				}
				return
			}
		}
		t.Fatalf("a file that was never sealed opened: %x", data)
	})
}
