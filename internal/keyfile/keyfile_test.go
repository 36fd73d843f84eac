package keyfile

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

// counter is a deterministic "random" source: bytes 1, 2, 3, ...
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		c.n++
		p[i] = c.n
	}
	return len(p), nil
}

var now = time.Date(2025, 6, 1, 12, 30, 45, 987654321, time.FixedZone("CEST", 2*3600))

func keysEqual(a, b []Key) bool {
	return slices.EqualFunc(a, b, func(x, y Key) bool {
		return x.Version == y.Version && x.Key == y.Key && x.Created.Equal(y.Created)
	})
}

func TestCreateLoad(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Hardened, protocol.Classic} {
		t.Run(p.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			f, err := Create(path, p, &counter{}, now)
			if err != nil {
				t.Fatal(err)
			}
			var want [32]byte
			for i := range want {
				want[i] = byte(i + 1)
			}
			if f.Profile != p || len(f.Keys) != 1 || f.Keys[0].Version != 1 || f.Keys[0].Key != want ||
				!f.Keys[0].Created.Equal(now.Truncate(time.Second)) {
				t.Fatalf("Create: %+v", f)
			}
			if mk := f.Newest(); mk.Version != 1 || mk.Key != want {
				t.Fatalf("Newest: version %d", mk.Version)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("created with mode %04o, want 0600", fi.Mode().Perm())
			}
			// The file is the documented JSON, nothing more.
			data, _ := os.ReadFile(path)
			wantJSON := fmt.Sprintf(`{"profile":%q,"keys":[{"version":1,"key":%q,"created":"2025-06-01T10:30:45Z"}]}`+"\n",
				p.String(), hex.EncodeToString(want[:]))
			if string(data) != wantJSON {
				t.Fatalf("file content\n got %s\nwant %s", data, wantJSON)
			}
			g, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if g.Profile != p || !keysEqual(g.Keys, f.Keys) {
				t.Fatalf("Load: %+v, want %+v", g, f)
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
				t.Fatalf("Create left %d files in the directory, want 1", len(entries))
			}

			// Create never overwrites keys.
			_, err = Create(path, p, &counter{n: 100}, now)
			if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Create over an existing file: %v, want ErrExist naming the path", err)
			}
			if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
				t.Fatal("Create changed an existing key file")
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
				t.Fatalf("failed Create left %d files in the directory, want 1", len(entries))
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(filepath.Join(dir, "a"), protocol.Profile(9), &counter{}, now); err == nil {
		t.Fatal("Create with an unknown profile succeeded")
	}
	if _, err := Create(filepath.Join(dir, "b"), protocol.Hardened, iotest.ErrReader(errors.New("no entropy")), now); err == nil || !strings.Contains(err.Error(), "no entropy") {
		t.Fatalf("Create with a failing random source: %v", err)
	}
	if _, err := Create(filepath.Join(dir, "c"), protocol.Hardened, bytes.NewReader(make([]byte, 64)), now); err == nil {
		t.Fatal("Create accepted an all-zero key")
	}
	if _, err := Create(filepath.Join(dir, "missing", "d"), protocol.Hardened, &counter{}, now); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Create in a missing directory: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("failed Creates left files: %v", entries)
	}
}

func TestLoadMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	if _, err := Create(path, protocol.Hardened, &counter{}, now); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660, 0o700, 0o666, 0o440, 0o200} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		want := fmt.Sprintf("key file %s has mode %04o; run: chmod 600 %s", path, mode, path)
		if err == nil || err.Error() != want {
			t.Errorf("mode %04o: got %v, want %q", mode, err, want)
		}
	}
	for _, mode := range []fs.FileMode{0o600, 0o400} {
		os.Chmod(path, mode)
		if _, err := Load(path); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	if _, err := Load(filepath.Join(filepath.Dir(path), "nope")); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Load of a missing file: %v", err)
	}
	if _, err := Load(filepath.Dir(path)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load of a directory: %v", err)
	}
}

const (
	hexA = "0101010101010101010101010101010101010101010101010101010101010101"
	hexB = "0202020202020202020202020202020202020202020202020202020202020202"
)

func validHardened() string {
	return `{"profile":"hardened","keys":[{"version":1,"key":"` + hexA + `","created":"2025-01-02T03:04:05Z"},` +
		`{"version":3,"key":"` + hexB + `","created":"2025-02-03T04:05:06.5+01:00"}]}`
}

func validClassic() string {
	return `{"profile":"classic","keys":[{"version":1,"key":"` + hexA + `","created":"2025-01-02T03:04:05Z"}]}`
}

func TestParseValid(t *testing.T) {
	f, err := Parse([]byte(validHardened()))
	if err != nil {
		t.Fatal(err)
	}
	if f.Profile != protocol.Hardened || len(f.Keys) != 2 || f.Keys[0].Version != 1 || f.Keys[1].Version != 3 ||
		f.Keys[1].Key[0] != 2 || !f.Keys[1].Created.Equal(time.Date(2025, 2, 3, 3, 5, 6, 5e8, time.UTC)) {
		t.Fatalf("Parse: %+v", f)
	}
	if mk := f.Newest(); mk.Version != 3 || mk.Key[31] != 2 {
		t.Fatalf("Newest: %d", mk.Version)
	}
	if mks := f.MasterKeys(); len(mks) != 2 || mks[0].Version != 1 || mks[1].Version != 3 || mks[0].Key[0] != 1 {
		t.Fatalf("MasterKeys: %d keys", len(mks))
	}
	// Keys out of order in the file come back sorted; whitespace is fine.
	swapped := `{ "keys": [ {"created":"2025-01-02T03:04:05Z","key":"` + hexB + `","version":7},
		{"version":2,"key":"` + hexA + `","created":"2025-01-02T03:04:05Z"} ], "profile": "hardened" }` + "\n\n"
	f, err = Parse([]byte(swapped))
	if err != nil {
		t.Fatal(err)
	}
	if f.Keys[0].Version != 2 || f.Keys[1].Version != 7 {
		t.Fatalf("keys not sorted: %+v", f.Keys)
	}
	if _, err := Parse([]byte(validClassic())); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	key := func(v, k, c string) string {
		return `{"version":` + v + `,"key":"` + k + `","created":"` + c + `"}`
	}
	const c0 = "2025-01-02T03:04:05Z"
	file := func(profile string, keys ...string) string {
		return `{"profile":"` + profile + `","keys":[` + strings.Join(keys, ",") + `]}`
	}
	cases := []struct {
		name, data, want string
	}{
		{"empty", ``, "corrupt or truncated"},
		{"not JSON", `profile=hardened`, "corrupt or truncated"},
		{"truncated", validHardened()[:50], "corrupt or truncated"},
		{"array", `[]`, "cannot unmarshal"},
		{"trailing data", validHardened() + `{}`, "data after"},
		{"trailing garbage", validHardened() + `x`, "data after"},
		{"unknown field", `{"profile":"hardened","extra":1,"keys":[` + key("1", hexA, c0) + `]}`, "unknown field"},
		{"unknown key field", `{"profile":"hardened","keys":[{"version":1,"key":"` + hexA + `","created":"` + c0 + `","kv":2}]}`, "unknown field"},
		{"no profile", `{"keys":[` + key("1", hexA, c0) + `]}`, "no profile"},
		{"unknown profile", file("paranoid", key("1", hexA, c0)), "unknown profile"},
		{"profile case", file("Hardened", key("1", hexA, c0)), "unknown profile"},
		{"no keys", `{"profile":"hardened"}`, "no keys"},
		{"null keys", `{"profile":"hardened","keys":null}`, "no keys"},
		{"empty keys", file("hardened"), "no keys"},
		{"version 0", file("hardened", key("0", hexA, c0)), "version 0"},
		{"version missing", `{"profile":"hardened","keys":[{"key":"` + hexA + `","created":"` + c0 + `"}]}`, "version 0"},
		{"version 256", file("hardened", key("256", hexA, c0)), "version 256"},
		{"version -1", file("hardened", key("-1", hexA, c0)), "version -1"},
		{"version fraction", file("hardened", key("1.5", hexA, c0)), "cannot unmarshal"},
		{"version string", file("hardened", key(`"1"`, hexA, c0)), "cannot unmarshal"},
		{"duplicate version", file("hardened", key("2", hexA, c0), key("2", hexB, c0)), "appears twice"},
		{"short key", file("hardened", key("1", hexA[:62], c0)), "64 lowercase hex digits, got 62"},
		{"long key", file("hardened", key("1", hexA+"01", c0)), "got 66"},
		{"odd key", file("hardened", key("1", hexA[:63], c0)), "got 63"},
		{"empty key", file("hardened", key("1", "", c0)), "got 0"},
		{"upper-case hex", file("hardened", key("1", strings.ToUpper("ab"+hexA[2:]), c0)), "lowercase hex"},
		{"not hex", file("hardened", key("1", "zz"+hexA[2:], c0)), "lowercase hex"},
		{"zero key", file("hardened", key("1", strings.Repeat("0", 64), c0)), "all zeros"},
		{"no created", `{"profile":"hardened","keys":[{"version":1,"key":"` + hexA + `"}]}`, "created is not"},
		{"bad created", file("hardened", key("1", hexA, "yesterday")), "created is not"},
		{"created without zone", file("hardened", key("1", hexA, "2025-01-02T03:04:05")), "created is not"},
		{"classic two keys", file("classic", key("1", hexA, c0), key("2", hexB, c0)), "classic profile with 2 keys"},
		{"classic version 2", file("classic", key("2", hexA, c0)), "want 1"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.data))
			if err == nil {
				t.Fatalf("Parse(%s) succeeded", c.data)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse(%s): %v, want ErrInvalid saying %q", c.data, err, c.want)
			}
			// Load says which file and what to do.
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			if err := os.WriteFile(path, []byte(c.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Load(path)
			if err == nil || !strings.HasPrefix(err.Error(), "key file "+path+": ") ||
				!strings.HasSuffix(err.Error(), "; restore it from a backup") || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load: %v", err)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	// No proper prefix of a valid file parses (a truncated file is caught
	// however it was cut).
	for _, valid := range []string{validHardened(), validClassic()} {
		for i := range len(valid) {
			if _, err := Parse([]byte(valid[:i])); err == nil {
				t.Fatalf("prefix %q parsed", valid[:i])
			}
		}
	}
}

func TestLoadTooBig(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	big := validClassic() + strings.Repeat(" ", maxFileSize)
	os.WriteFile(path, []byte(big), 0o600)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("Load of a %d-byte file: %v", len(big), err)
	}
}

func TestRotateRetire(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	f, err := Create(path, protocol.Hardened, &counter{}, now)
	if err != nil {
		t.Fatal(err)
	}
	rnd := &counter{n: 50}
	later := now.Add(24 * time.Hour)
	k2, err := f.Rotate(rnd, later)
	if err != nil {
		t.Fatal(err)
	}
	if k2.Version != 2 || k2.Key[0] != 51 || !k2.Created.Equal(later.Truncate(time.Second)) {
		t.Fatalf("Rotate: %v %x", k2, k2.Key[:2])
	}
	if f.Newest().Version != 2 || f.Newest().Key != k2.Key || len(f.Keys) != 2 {
		t.Fatalf("after Rotate: %+v", f.Keys)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	g, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !keysEqual(g.Keys, f.Keys) {
		t.Fatalf("after Save and Load: %+v, want %+v", g.Keys, f.Keys)
	}

	if err := f.Retire(2); err == nil || !strings.Contains(err.Error(), "newest") {
		t.Fatalf("Retire of the newest: %v", err)
	}
	if err := f.Retire(9); err == nil || !strings.Contains(err.Error(), "no key version 9") {
		t.Fatalf("Retire of an unknown version: %v", err)
	}
	if err := f.Retire(1); err != nil {
		t.Fatal(err)
	}
	if len(f.Keys) != 1 || f.Keys[0].Version != 2 {
		t.Fatalf("after Retire(1): %+v", f.Keys)
	}
	if err := f.Retire(1); err == nil {
		t.Fatal("Retire of a retired version succeeded")
	}
	if err := f.Retire(2); err == nil {
		t.Fatal("Retire of the only key succeeded")
	}
	// Versions are never reused: after retiring 1, the next is 3.
	k3, err := f.Rotate(rnd, later)
	if err != nil || k3.Version != 3 {
		t.Fatalf("Rotate after Retire: version %d, %v", k3.Version, err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	g, err = Load(path)
	if err != nil || !keysEqual(g.Keys, f.Keys) {
		t.Fatalf("Load after Retire and Rotate: %+v, %v", g, err)
	}
}

func TestRotateLimits(t *testing.T) {
	var a, b [32]byte
	a[0], b[0] = 1, 2
	f := &File{Profile: protocol.Hardened, Keys: []Key{{Version: 254, Key: a, Created: now}}}
	k, err := f.Rotate(&counter{}, now)
	if err != nil || k.Version != 255 {
		t.Fatalf("Rotate to 255: %v, %v", k.Version, err)
	}
	before := slices.Clone(f.Keys)
	if _, err := f.Rotate(&counter{}, now); err == nil || !strings.Contains(err.Error(), "255") {
		t.Fatalf("Rotate past 255: %v", err)
	}
	if !keysEqual(f.Keys, before) {
		t.Fatal("a failed Rotate changed the keys")
	}
	if _, err := f.Rotate(iotest.ErrReader(errors.New("no entropy")), now); err == nil {
		t.Fatal("Rotate with a failing random source succeeded")
	}
	if !keysEqual(f.Keys, before) {
		t.Fatal("a failed Rotate changed the keys")
	}

	c := &File{Profile: protocol.Classic, Keys: []Key{{Version: 1, Key: a, Created: now}}}
	if _, err := c.Rotate(&counter{}, now); err == nil || !strings.Contains(err.Error(), "classic") {
		t.Fatalf("classic Rotate: %v", err)
	}
	if len(c.Keys) != 1 {
		t.Fatal("classic Rotate added a key")
	}
	if err := c.Retire(1); err == nil {
		t.Fatal("classic Retire of its only key succeeded")
	}
}

func TestSave(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	f, err := Create(path, protocol.Hardened, &counter{}, now)
	if err != nil {
		t.Fatal(err)
	}
	// A read-only key file is replaced by a 0600 one.
	os.Chmod(path, 0o400)
	if _, err := f.Rotate(&counter{n: 9}, now); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved with mode %04o", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("Save left %d files, want 1", len(entries))
	}
	good, _ := os.ReadFile(path)

	// An invalid File is not written, and the old file stays.
	for name, bad := range map[string]*File{
		"duplicate": {Profile: protocol.Hardened, Keys: []Key{f.Keys[0], f.Keys[0]}},
		"version 0": {Profile: protocol.Hardened, Keys: []Key{{Version: 0, Key: f.Keys[0].Key, Created: now}}},
		"no keys":   {Profile: protocol.Hardened},
		"classic 2": {Profile: protocol.Classic, Keys: f.Keys},
		"profile":   {Profile: 0, Keys: f.Keys[:1]},
		"zero key":  {Profile: protocol.Hardened, Keys: []Key{{Version: 1, Created: now}}},
		"no time":   {Profile: protocol.Hardened, Keys: []Key{{Version: 1, Key: f.Keys[0].Key}}},
		"unsorted":  {Profile: protocol.Hardened, Keys: []Key{f.Keys[1], f.Keys[0]}},
	} {
		if err := bad.Save(path); err == nil {
			t.Errorf("%s: Save of an invalid File succeeded", name)
		}
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, good) {
		t.Fatal("a refused Save changed the file")
	}
	if err := f.Save(filepath.Join(dir, "missing", FileName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Save into a missing directory: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("failed Saves left %d files, want 1", len(entries))
	}
}

func TestSecretsNotPrinted(t *testing.T) {
	f, err := Parse([]byte(validHardened()))
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("%v %+v %#v %s %v", f, f, f, f.Keys, f.Keys[0])
	for _, k := range f.Keys {
		for _, leak := range []string{hex.EncodeToString(k.Key[:]), fmt.Sprint(k.Key[:8])[1:16], fmt.Sprintf("%#v", k.Key[:4])[8:]} {
			if strings.Contains(out, leak) {
				t.Fatalf("formatting a File shows key bytes (%q): %s", leak, out)
			}
		}
	}
	if !strings.Contains(out, "key version 3") {
		t.Fatalf("formatting a File does not describe its keys: %s", out)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(validHardened()))
	f.Add([]byte(validClassic()))
	f.Add([]byte(`{"profile":"hardened","keys":[{"version":255,"key":"` + hexB + `","created":"9999-12-31T23:59:59.999999999+14:00"}]}`))
	f.Add([]byte(`{"profile":"hardened","keys":[]}`))
	f.Add([]byte(`{"profile":"classic","keys":[{"version":1,"key":"` + hexA + `","created":"2025-01-02T03:04:05Z"}]}x`))
	f.Add([]byte(``))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Parse(data)
		if err != nil {
			if a != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error %v without ErrInvalid or with a File", err)
			}
			return
		}
		// What parses re-encodes, and the encoding parses to the same.
		enc, err := a.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed file: %v", err)
		}
		b, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse of Marshal output %s: %v", enc, err)
		}
		if a.Profile != b.Profile || !keysEqual(a.Keys, b.Keys) {
			t.Fatalf("round trip changed the file: %+v -> %+v", a, b)
		}
		if enc2, _ := b.Marshal(); !bytes.Equal(enc, enc2) {
			t.Fatalf("Marshal is not canonical: %s then %s", enc, enc2)
		}
		var m map[string]any
		if err := json.Unmarshal(enc, &m); err != nil || len(m) != 2 {
			t.Fatalf("Marshal output is not the documented object: %s", enc)
		}
	})
}
