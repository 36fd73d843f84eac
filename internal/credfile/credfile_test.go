package credfile

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// tagHex is the tag of every test credential. No error message may contain
// it, or any long piece of it.
const tagHex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

const fpHex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// provisioned returns a credential made the way the gateway makes one.
func provisioned(t testing.TB, p protocol.Profile) Credential {
	t.Helper()
	mk := protocol.MasterKey{Version: 1}
	copy(mk.Key[:], "0123456789abcdef0123456789abcdef")
	dc, err := protocol.ProvisionDevice(p, "sensor-7", mk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hex.Decode(dc.Tag[:], []byte(tagHex)); err != nil {
		t.Fatal(err)
	}
	return Credential{DeviceCredential: dc, Gateway: "127.0.0.1:5683", AdminURL: "https://127.0.0.1:8443", Fingerprint: fpHex}
}

// goodJSON is a valid hardened credential as the package doc shows it.
const goodJSON = `{"profile":"hardened","id":"sensor-7","kv":1,"tag":"` + tagHex +
	`","gateway":"127.0.0.1:5683","admin_url":"https://127.0.0.1:8443","fingerprint":"` + fpHex + `"}`

func TestRoundTrip(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		c := provisioned(t, p)
		b, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("%v: %v\n%s", p, err, b)
		}
		if got != c {
			t.Fatalf("%v: round trip gave %+v, want %+v", p, got, c)
		}
		if !bytes.Contains(b, []byte(`"tag": "`+tagHex+`"`)) || !bytes.Contains(b, []byte(`"profile": "`+p.String()+`"`)) {
			t.Errorf("%v: unexpected encoding\n%s", p, b)
		}
	}
}

func TestUnmarshalDocExample(t *testing.T) {
	c, err := Unmarshal([]byte(goodJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := provisioned(t, protocol.Hardened)
	if c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

func TestOptionalFields(t *testing.T) {
	// A classic file from before spec 1.1 has no kv: it reads as key
	// version 1, the one classic key. admin_url and fingerprint may both
	// be absent.
	c, err := Unmarshal([]byte(`{"profile":"classic","id":"d","tag":"` + tagHex + `","gateway":"gw.example:5683"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Profile != protocol.Classic || c.KV != protocol.ClassicKeyVersion || c.AdminURL != "" || c.Fingerprint != "" || c.Gateway != "gw.example:5683" {
		t.Fatalf("got %+v", c)
	}
	b, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("admin_url")) || bytes.Contains(b, []byte("fingerprint")) {
		t.Errorf("empty optional fields written:\n%s", b)
	}
	if !bytes.Contains(b, []byte(`"kv": 1,`)) {
		t.Errorf("a classic credential is not written with key version 1:\n%s", b)
	}
	// IPv6 gateway, uppercase fingerprint normalised to lowercase.
	s := strings.Replace(goodJSON, "127.0.0.1:5683", "[::1]:5683", 1)
	s = strings.Replace(s, fpHex, strings.ToUpper(fpHex), 1)
	c, err = Unmarshal([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	if c.Fingerprint != fpHex || c.Gateway != "[::1]:5683" {
		t.Fatalf("got %+v", c)
	}
	// Whitespace around and inside is fine.
	if _, err := Unmarshal([]byte("\n  " + strings.ReplaceAll(goodJSON, ",", " ,\n\t") + "\n\n")); err != nil {
		t.Fatal(err)
	}
}

// TestUnmarshalRejects checks each rule: the error wraps ErrInvalid, names
// the field at fault and never contains the tag.
func TestUnmarshalRejects(t *testing.T) {
	repl := func(old, new string) string {
		if !strings.Contains(goodJSON, old) {
			t.Fatalf("test bug: %q not in goodJSON", old)
		}
		return strings.Replace(goodJSON, old, new, 1)
	}
	drop := func(field string) string {
		// Rebuild without one field, keeping the others as they are.
		parts := strings.Split(strings.Trim(goodJSON, "{}"), ",")
		var kept []string
		for _, p := range parts {
			if !strings.HasPrefix(p, `"`+field+`":`) {
				kept = append(kept, p)
			}
		}
		return "{" + strings.Join(kept, ",") + "}"
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", ``, "truncated"},
		{"not an object", `[1,2]`, "want a JSON object"},
		{"two objects", goodJSON + goodJSON, "data after the JSON object"},
		{"trailing garbage", goodJSON + "x", "data after the JSON object"},
		{"truncated", goodJSON[:len(goodJSON)-1], "truncated"},
		{"truncated inside the tag", goodJSON[:strings.Index(goodJSON, tagHex)+10], "truncated"},
		{"syntax error", repl(`"kv":1`, `"kv":1,,`), "syntax error at byte"},
		{"syntax error inside the tag", repl(tagHex, tagHex[:20]+"\x01"+tagHex[21:]), "syntax error at byte"},
		{"bad UTF-8", repl("sensor-7", "sensor-\xff"), "UTF-8"},
		{"unknown field", repl(`"kv":1`, `"kv":1,"gatway":"x"`), `unknown field "gatway"`},
		{"unknown field, case differs", repl(`"id"`, `"ID"`), `unknown field "ID"`},
		{"unknown long field", repl(`"kv":1`, `"kv":1,"`+tagHex+`":1`), "unknown field (a long name)"},
		{"duplicate field", repl(`"kv":1`, `"kv":1,"kv":2`), `field "kv" appears twice`},
		{"duplicate tag", repl(`"kv":1`, `"kv":1,"tag":"`+tagHex+`"`), `field "tag" appears twice`},
		{"missing profile", drop("profile"), `field "profile" is missing`},
		{"missing id", drop("id"), `field "id" is missing`},
		{"missing tag", drop("tag"), `field "tag" is missing`},
		{"missing gateway", drop("gateway"), `field "gateway" is missing`},
		{"missing kv, hardened", drop("kv"), `field "kv" is missing`},
		{"missing fingerprint with admin_url", drop("fingerprint"), `field "fingerprint" is missing`},
		{"unknown profile", repl(`"hardened"`, `"Hardened"`), `field "profile" must be`},
		{"profile not a string", repl(`"hardened"`, `2`), `field "profile" must be a string`},
		{"empty id", repl(`"sensor-7"`, `""`), `field "id" must be 1-64 bytes`},
		{"long id", repl(`"sensor-7"`, `"`+strings.Repeat("x", 65)+`"`), `field "id" must be 1-64 bytes`},
		{"id with NUL", repl(`"sensor-7"`, `"sensor\u0000"`), `field "id" must be 1-64 bytes`},
		{"id null", repl(`"sensor-7"`, `null`), `field "id" must be a string`},
		{"kv 0 under hardened", repl(`"kv":1`, `"kv":0`), `field "kv" must be 1-255`},
		{"kv 256", repl(`"kv":1`, `"kv":256`), `field "kv" must be an integer`},
		{"kv negative", repl(`"kv":1`, `"kv":-1`), `field "kv" must be an integer`},
		{"kv fraction", repl(`"kv":1`, `"kv":1.0`), `field "kv" must be an integer`},
		{"kv exponent", repl(`"kv":1`, `"kv":1e0`), `field "kv" must be an integer`},
		{"kv string", repl(`"kv":1`, `"kv":"1"`), `field "kv" must be an integer`},
		{"kv null", repl(`"kv":1`, `"kv":null`), `field "kv" must be an integer`},
		{"kv 2 under classic", strings.Replace(repl(`"hardened"`, `"classic"`), `"kv":1`, `"kv":2`, 1), `field "kv" must be 1 for a classic credential`},
		{"tag short", repl(tagHex, tagHex[:62]), `field "tag" must be 64 hex digits`},
		{"tag long", repl(tagHex, tagHex+"00"), `field "tag" must be 64 hex digits`},
		{"tag not hex", repl(tagHex, "zz"+tagHex[2:]), `field "tag" must be 64 hex digits`},
		{"tag zero", repl(tagHex, strings.Repeat("0", 64)), `field "tag" is all zeros`},
		{"tag number", repl(`"`+tagHex+`"`, `123`), `field "tag" must be a string`},
		{"gateway without port", repl("127.0.0.1:5683", "127.0.0.1"), `field "gateway" must be host:port`},
		{"gateway without host", repl("127.0.0.1:5683", ":5683"), `field "gateway" must name a host`},
		{"gateway port 0", repl("127.0.0.1:5683", "127.0.0.1:0"), `field "gateway" must end in a port`},
		{"gateway port too big", repl("127.0.0.1:5683", "127.0.0.1:65536"), `field "gateway" must end in a port`},
		{"gateway port by name", repl("127.0.0.1:5683", "127.0.0.1:coap"), `field "gateway" must end in a port`},
		{"gateway URL", repl("127.0.0.1:5683", "coap://127.0.0.1:5683"), `field "gateway"`},
		{"gateway with space", repl("127.0.0.1:5683", "127.0.0.1 :5683"), `field "gateway" must name a host`},
		{"admin_url http", repl("https://", "http://"), `field "admin_url" must be an https:// URL`},
		{"admin_url no host", repl("https://127.0.0.1:8443", "https://"), `field "admin_url" must be an https:// URL`},
		{"admin_url user info", repl("https://", "https://u:p@"), `field "admin_url" must be an https:// URL`},
		{"fingerprint short", repl(fpHex, fpHex[:40]), `field "fingerprint" must be 64 hex digits`},
		{"fingerprint colons", repl(fpHex, "e3:b0"+fpHex[6:]), `field "fingerprint" must be 64 hex digits`},
	} {
		_, err := Unmarshal([]byte(tc.in))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrInvalid saying %q", tc.name, err, tc.want)
			continue
		}
		checkNoTag(t, err)
	}
}

// checkNoTag fails if err quotes any 16-digit piece of the test tag.
func checkNoTag(t *testing.T, err error) {
	t.Helper()
	msg := strings.ToLower(err.Error())
	for i := 0; i+16 <= len(tagHex); i++ {
		if strings.Contains(msg, tagHex[i:i+16]) {
			t.Fatalf("error %q quotes part of the tag", err)
		}
	}
}

func TestMarshalRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Credential)
		want string
	}{
		{"profile", func(c *Credential) { c.Profile = 9 }, `"profile"`},
		{"id", func(c *Credential) { c.ID = "" }, `"id"`},
		{"hardened kv 0", func(c *Credential) { c.KV = 0 }, `"kv"`},
		{"classic kv 2", func(c *Credential) { c.Profile, c.KV = protocol.Classic, 2 }, `"kv"`},
		{"zero tag", func(c *Credential) { c.Tag = [32]byte{} }, `"tag"`},
		{"no gateway", func(c *Credential) { c.Gateway = "" }, `"gateway"`},
		{"bad admin URL", func(c *Credential) { c.AdminURL = "ftp://x" }, `"admin_url"`},
		{"admin URL without fingerprint", func(c *Credential) { c.Fingerprint = "" }, `"fingerprint"`},
		{"bad fingerprint", func(c *Credential) { c.Fingerprint = "abc" }, `"fingerprint"`},
	} {
		c := provisioned(t, protocol.Hardened)
		tc.mut(&c)
		_, err := Marshal(c)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrInvalid naming %s", tc.name, err, tc.want)
		}
		if err := Save(filepath.Join(t.TempDir(), "dev.json"), c); err == nil {
			t.Errorf("%s: Save wrote an invalid credential", tc.name)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sensor-7.json")
	want := provisioned(t, protocol.Hardened)
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path, 0o600)
	got, err := Load(path)
	if err != nil || got != want {
		t.Fatalf("Load = %+v, %v", got, err)
	}

	// Save replaces an existing file, which ends up 0600 whatever it was.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	want2 := provisioned(t, protocol.Classic)
	if err := Save(path, want2); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path, 0o600)
	if got, err := Load(path); err != nil || got != want2 {
		t.Fatalf("after replacing: %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want 1 (temporary files left?)", len(entries))
	}

	// A read-only owner file is fine.
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestLoadRefusesOpenPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits")
	}
	path := filepath.Join(t.TempDir(), "dev.json")
	if err := Save(path, provisioned(t, protocol.Hardened)); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o620, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: err = %v, want a chmod 600 hint", mode, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.json")
	if _, err := Load(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing: err = %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
	corrupt := filepath.Join(dir, "corrupt.json")
	if err := os.WriteFile(corrupt, []byte(goodJSON[:100]), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(corrupt)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), corrupt) {
		t.Errorf("corrupt: err = %v, want ErrInvalid naming the path", err)
	}
	checkNoTag(t, err)
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, bytes.Repeat([]byte(" "), maxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized: err = %v", err)
	}
	if err := Save(filepath.Join(dir, "no", "such", "dev.json"), provisioned(t, protocol.Hardened)); err == nil {
		t.Error("Save into a missing directory succeeded")
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Fatalf("%s has mode %04o, want %04o", path, got, want)
	}
}
