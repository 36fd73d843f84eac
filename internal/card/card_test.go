package card

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/tagauth/tagauth/protocol"
)

// tinyKDF keeps Argon2id cheap in tests; it lies inside the spec's range.
var tinyKDF = protocol.KDFParams{Time: 1, MemoryKiB: 8, Threads: 1}

// cheap admits only Argon2id parameters that cost next to nothing, for
// tests and fuzzing that mutate headers: a mutated m could otherwise ask
// for a valid but 1 GiB derivation.
func cheap(p protocol.KDFParams) bool {
	return p.Valid() && p.Time <= 2 && p.MemoryKiB <= 1024 && p.Threads <= 2
}

const password = "correct horse battery staple"

// seeded is a deterministic randomness source, so that test files and
// fuzz seeds are the same on every run.
func seeded(b byte) io.Reader {
	var seed [32]byte
	seed[0] = b
	return mrand.NewChaCha8(seed)
}

// issue registers id under profile p with the protocol's own enrolment and
// returns the card the gateway would hand out.
func issue(t testing.TB, p protocol.Profile, id string) protocol.Card {
	t.Helper()
	now := time.UnixMilli(1_700_000_000_000)
	cfg := protocol.Config{Now: func() time.Time { return now }, Rand: seeded(0x40 + byte(p))}
	req, err := protocol.NewRegistrationRequest(p, id, password, tinyKDF, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer req.Wipe()
	var mk protocol.MasterKey
	mk.Version = 3
	if p == protocol.Classic {
		mk.Version = protocol.ClassicKeyVersion
	}
	copy(mk.Key[:], "0123456789abcdef0123456789abcdef")
	c, err := protocol.IssueCard(&req, mk, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sealedTiny is a real card file for p sealed with tinyKDF, cheap to open
// many times.
func sealedTiny(t testing.TB, p protocol.Profile) (protocol.Card, []byte) {
	t.Helper()
	c := issue(t, p, "alice")
	data, err := seal(c, password, seeded(0x10+byte(p)), tinyKDF)
	if err != nil {
		t.Fatal(err)
	}
	return c, data
}

// checkFailure fails the test unless err is exactly one of the two errors
// Open may return.
func checkFailure(t *testing.T, err error, what string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("%s: opened", what)
	case errors.Is(err, ErrCorrupt) == errors.Is(err, ErrWrongPassword):
		t.Fatalf("%s: error %q is neither or both of ErrCorrupt and ErrWrongPassword", what, err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		t.Run(p.String(), func(t *testing.T) {
			c := issue(t, p, "alice")
			data, err := Seal(c, password, seeded(1))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, []byte("TAGAUTH-CARD\x00\x01")) || data[offProfile] != byte(p) {
				t.Fatalf("header starts %x", data[:offT])
			}
			want := protocol.DefaultKDF
			if p == protocol.Hardened {
				want = c.KDF
			}
			if got := headerKDF(data); got != want {
				t.Errorf("header KDF = %+v, want %+v", got, want)
			}
			if n := headerSize + 1 + len(c.ID) + bodyFixed - 1 + overhead; len(data) != n {
				t.Errorf("file is %d bytes, want %d", len(data), n)
			}
			if bytes.Contains(data, c.Alpha[:8]) || bytes.Contains(data, c.R[:8]) || bytes.Contains(data, []byte(c.ID)) {
				t.Error("alpha, r or the identity appear in clear in the file")
			}

			got, err := Open(data, password)
			if err != nil {
				t.Fatal(err)
			}
			if got != c {
				t.Fatalf("Open = %+v, want %+v", got, c)
			}
			// The opened card is a working card, not just equal bytes.
			u, err := protocol.Unlock(got, password, protocol.Config{Now: time.Now, Rand: seeded(9)})
			if err != nil {
				t.Fatalf("Unlock of the opened card: %v", err)
			}
			u.Close()

			again, err := Seal(c, password, seeded(2))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(again[offSalt:], data[offSalt:]) {
				t.Error("two seals of one card share salt or ciphertext")
			}
		})
	}
}

// headerKDF reads the Argon2id parameters of a file's header.
func headerKDF(data []byte) protocol.KDFParams {
	return protocol.KDFParams{
		Time:      uint32(data[offT]),
		MemoryKiB: uint32(data[offM])<<24 | uint32(data[offM+1])<<16 | uint32(data[offM+2])<<8 | uint32(data[offM+3]),
		Threads:   data[offP],
	}
}

func TestIdentityLengths(t *testing.T) {
	for _, id := range []string{"a", strings.Repeat("é", 32), strings.Repeat("x", protocol.MaxIDLen)} {
		c := issue(t, protocol.Hardened, id)
		data, err := Seal(c, password, seeded(3))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Open(data, password)
		if err != nil || got != c {
			t.Fatalf("%d-byte identity: Open = %+v, %v", len(id), got, err)
		}
	}
}

func TestWrongPassword(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		_, data := sealedTiny(t, p)
		for _, pw := range []string{"", "correct horse battery stapl", "Correct horse battery staple", password + " "} {
			_, err := Open(data, pw)
			if !errors.Is(err, ErrWrongPassword) || !errors.Is(err, protocol.ReasonWrongPassword) {
				t.Fatalf("%v, password %q: err = %v, want ErrWrongPassword", p, pw, err)
			}
			if errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v: wrong password reported as corrupt", p)
			}
			if !strings.Contains(err.Error(), "wrong password") || !strings.Contains(err.Error(), "altered") {
				t.Fatalf("message %q does not say wrong password or altered", err)
			}
		}
	}
}

// TestPasswordNFC: the same password typed as a precomposed or a
// combining character opens the file, as it unlocks the card.
func TestPasswordNFC(t *testing.T) {
	c := issue(t, protocol.Hardened, "alice")
	data, err := seal(c, "caf\u00e9", seeded(4), tinyKDF)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(data, "cafe\u0301"); err != nil {
		t.Fatalf("decomposed form of the password: %v", err)
	}
}

// TestTruncation cuts a real file at every length: no prefix opens, and
// each is refused as corrupt or as a wrong password. Prefixes too short
// to hold any card body are refused as corrupt, before a key is derived.
func TestTruncation(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		_, data := sealedTiny(t, p)
		for n := range len(data) {
			_, err := Open(data[:n], password)
			checkFailure(t, err, p.String()+" truncated")
			if n < headerSize+minBody+overhead && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v truncated to %d bytes: err = %v, want ErrCorrupt", p, n, err)
			}
		}
		// Trailing bytes are refused too: inside the length bound by the
		// AEAD, beyond it by the length check.
		for _, extra := range []int{1, protocol.MaxIDLen} {
			long := append(bytes.Clone(data), make([]byte, extra)...)
			_, err := Open(long, password)
			checkFailure(t, err, "trailing bytes")
		}
		_, err := Open(append(bytes.Clone(data), make([]byte, maxFileSize)...), password)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("oversized file: err = %v, want ErrCorrupt", err)
		}
	}
}

// TestBitFlips flips every bit of a real file. Nothing opens; a flip in the
// magic, version or profile is corrupt; a flip anywhere after the KDF
// parameters (salt, nonce, body, tag) is a wrong password, since the seal
// cannot tell an altered file from a wrong key.
func TestBitFlips(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		_, data := sealedTiny(t, p)
		for i := range len(data) {
			for bit := range 8 {
				mut := bytes.Clone(data)
				mut[i] ^= 1 << bit
				_, err := open(mut, password, cheap)
				checkFailure(t, err, "bit flip")
				switch {
				case i < offT && !errors.Is(err, ErrCorrupt):
					t.Fatalf("%v: flip of byte %d bit %d: err = %v, want ErrCorrupt", p, i, bit, err)
				case i >= offSalt && !errors.Is(err, ErrWrongPassword):
					t.Fatalf("%v: flip of byte %d bit %d: err = %v, want ErrWrongPassword", p, i, bit, err)
				}
			}
		}
	}
}

// TestHostileKDF rewrites the header of a real file with parameters outside
// the spec's range. Open must refuse them as corrupt before running
// Argon2id: several would make argon2 panic (t=0, p=0) or allocate
// terabytes (m=2^32-1), so reaching it would crash the test, and a
// derivation followed by a failed seal would report a wrong password.
func TestHostileKDF(t *testing.T) {
	_, data := sealedTiny(t, protocol.Hardened)
	for _, k := range []protocol.KDFParams{
		{Time: 0, MemoryKiB: 8, Threads: 1},
		{Time: 65, MemoryKiB: 8, Threads: 1},
		{Time: 255, MemoryKiB: 8, Threads: 1},
		{Time: 1, MemoryKiB: 8, Threads: 0},
		{Time: 1, MemoryKiB: 1024, Threads: 17},
		{Time: 1, MemoryKiB: 1024, Threads: 255},
		{Time: 1, MemoryKiB: 0, Threads: 1},
		{Time: 1, MemoryKiB: 7, Threads: 1},
		{Time: 1, MemoryKiB: 127, Threads: 16},
		{Time: 1, MemoryKiB: 1048577, Threads: 1},
		{Time: 1, MemoryKiB: 100 << 20, Threads: 1}, // 100 GiB
		{Time: 1, MemoryKiB: 0xffffffff, Threads: 1},
	} {
		mut := bytes.Clone(data)
		mut[offT] = byte(k.Time)
		mut[offM], mut[offM+1], mut[offM+2], mut[offM+3] = byte(k.MemoryKiB>>24), byte(k.MemoryKiB>>16), byte(k.MemoryKiB>>8), byte(k.MemoryKiB)
		mut[offP] = k.Threads
		_, err := Open(mut, password)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "before deriving") {
			t.Fatalf("%+v: err = %v, want ErrCorrupt refused before deriving", k, err)
		}
	}
}

func TestBadHeader(t *testing.T) {
	_, data := sealedTiny(t, protocol.Hardened)
	for _, tc := range []struct {
		name string
		mut  func([]byte) []byte
		want string
	}{
		{"empty", func(b []byte) []byte { return nil }, "shorter than"},
		{"JSON card", func([]byte) []byte {
			return []byte(`{"profile":"hardened","id":"alice","alpha":"00","r":"00"}` + strings.Repeat(" ", 100))
		}, "not a tagauth card file"},
		{"version 2", func(b []byte) []byte { b[offVersion] = 2; return b }, "format version 2"},
		{"profile 0", func(b []byte) []byte { b[offProfile] = 0; return b }, "profile byte 0x00"},
		{"profile 3", func(b []byte) []byte { b[offProfile] = 3; return b }, "profile byte 0x03"},
		{"header only", func(b []byte) []byte { return b[:headerSize] }, "sealed body is 0 bytes"},
	} {
		_, err := Open(tc.mut(bytes.Clone(data)), password)
		if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrCorrupt saying %q", tc.name, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "card file is corrupt or truncated") {
			t.Errorf("%s: message %q lacks the ErrCorrupt text", tc.name, err)
		}
	}
}

// sealBody seals an arbitrary body with the real header and key, as a
// writer holding the password could: the body parser and Validate are the
// only defence, and what they refuse is corrupt, not a wrong password.
func sealBody(t *testing.T, p protocol.Profile, body []byte) []byte {
	t.Helper()
	_, data := sealedTiny(t, p)
	hdr := bytes.Clone(data[:headerSize])
	key := deriveKey(password, hdr[offSalt:offNonce], tinyKDF)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return aead.Seal(bytes.Clone(hdr), hdr[offNonce:], body, hdr)
}

func TestMalformedBody(t *testing.T) {
	good := issue(t, protocol.Hardened, "alice")
	body := func(mut func(*protocol.Card)) []byte {
		c := good
		mut(&c)
		return appendBody(nil, &c)
	}
	// The valid body opens, so the failures below are the body's doing.
	if c, err := open(sealBody(t, protocol.Hardened, body(func(*protocol.Card) {})), password, cheap); err != nil || c != good {
		t.Fatalf("control: %+v, %v", c, err)
	}
	valid := body(func(*protocol.Card) {})
	for _, tc := range []struct {
		name string
		p    protocol.Profile
		body []byte
	}{
		{"trailing byte", protocol.Hardened, append(bytes.Clone(valid), 0)},
		{"one byte short", protocol.Hardened, valid[:len(valid)-1]},
		{"id length past the end", protocol.Hardened, append([]byte{200}, valid[1:]...)},
		{"empty identity", protocol.Hardened, body(func(c *protocol.Card) { c.ID = "" })},
		{"identity with NUL", protocol.Hardened, body(func(c *protocol.Card) { c.ID = "al\x00ce" })},
		{"identity not UTF-8", protocol.Hardened, body(func(c *protocol.Card) { c.ID = "al\xffce" })},
		{"hardened key version 0", protocol.Hardened, body(func(c *protocol.Card) { c.KV = 0 })},
		{"hardened Argon2id out of range", protocol.Hardened, body(func(c *protocol.Card) { c.KDF.Threads = 0 })},
	} {
		_, err := open(sealBody(t, tc.p, tc.body), password, cheap)
		if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongPassword) {
			t.Errorf("%s: err = %v, want ErrCorrupt", tc.name, err)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy pool on fire") }

func TestSealRefuses(t *testing.T) {
	good := issue(t, protocol.Hardened, "alice")
	for _, tc := range []struct {
		name string
		mut  func(*protocol.Card)
	}{
		{"unknown profile", func(c *protocol.Card) { c.Profile = 7 }},
		{"empty identity", func(c *protocol.Card) { c.ID = "" }},
		{"65-byte identity", func(c *protocol.Card) { c.ID = strings.Repeat("x", 65) }},
		{"hardened key version 0", func(c *protocol.Card) { c.KV = 0 }},
		{"hardened Argon2id too big", func(c *protocol.Card) { c.KDF.MemoryKiB = 1 << 21 }},
		{"classic card with a huge unused time", func(c *protocol.Card) { c.Profile = protocol.Classic; c.KDF.Time = 256 }},
	} {
		c := good
		tc.mut(&c)
		if _, err := Seal(c, password, seeded(5)); err == nil {
			t.Errorf("%s: sealed", tc.name)
		}
	}
	if _, err := Seal(good, password, nil); err == nil {
		t.Error("sealed with nil randomness")
	}
	if _, err := Seal(good, password, failingReader{}); err == nil || !strings.Contains(err.Error(), "on fire") {
		t.Errorf("failing randomness: err = %v", err)
	}
}

func TestSaveLoad(t *testing.T) {
	_, data := sealedTiny(t, protocol.Hardened)
	dir := t.TempDir()
	path := filepath.Join(dir, "alice.card")

	if err := SaveNew(path, data); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path)
	got, err := Load(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Load = %x, %v", got, err)
	}

	// SaveNew refuses to replace, and leaves the old file as it was.
	_, other := sealedTiny(t, protocol.Classic)
	err = SaveNew(path, other)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("SaveNew over an existing file: err = %v", err)
	}
	if got, _ := Load(path); !bytes.Equal(got, data) {
		t.Fatal("SaveNew changed the existing file")
	}

	// Save replaces, and the result is 0600 even over a 0644 file.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Save(path, other); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path)
	if got, _ := Load(path); !bytes.Equal(got, other) {
		t.Fatal("Save did not replace the file")
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after saving, want 1 (temporary files left?)", len(entries))
	}
}

func checkMode(t *testing.T, path string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Fatalf("%s has mode %04o, want 0600", path, m)
	}
}

func TestSaveErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "alice.card")
	if err := Save(missing, []byte("x")); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Save into a missing directory: err = %v", err)
	}
	if err := SaveNew(missing, []byte("x")); err == nil {
		t.Error("SaveNew into a missing directory succeeded")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nobody.card")
	_, err := Load(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist naming the path", err)
	}

	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}

	big := filepath.Join(dir, "big.card")
	if err := os.WriteFile(big, make([]byte, maxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); !errors.Is(err, ErrCorrupt) {
		t.Errorf("oversized file: err = %v, want ErrCorrupt", err)
	}
	exact := filepath.Join(dir, "max.card")
	if err := os.WriteFile(exact, make([]byte, maxFileSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Load(exact); err != nil || len(b) != maxFileSize {
		t.Errorf("largest possible file: %d bytes, %v", len(b), err)
	}
}
