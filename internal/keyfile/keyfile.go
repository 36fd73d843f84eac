// Package keyfile holds the gateway's master keys K_GTW in a file of their
// own (DATA/keys.json), separate from the store, so that a copy of the
// store or its backups reveals no key.
//
// # Format
//
//	{"profile":"hardened","keys":[{"version":1,"key":"<64 hex digits>","created":"2025-01-02T03:04:05Z"}]}
//
// The parser is strict: unknown fields, trailing data, key versions 0 or
// repeated, keys that are not exactly 32 bytes of lowercase hex, an
// all-zero key, and (classic) more than one key or a version other than 1
// are refused. Classic messages carry no key version, so a classic
// deployment has exactly one key and cannot rotate it.
//
// # Key management
//
// Rotate adds a version; new cards and device credentials use the newest,
// older ones keep working until their version is retired (Retire), which
// is how K_GTW changes without a flag day (spec section 4). Versions only
// grow: a retired version number is never reused, so an old card can never
// meet a different key under its old version.
//
// The file must be readable by its owner only: Load refuses any mode but
// 0600 or 0400 and says which chmod fixes it. Save replaces the file
// atomically, so a crash leaves the old keys or the new ones, never half a
// file.
package keyfile

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/tagauth/tagauth/internal/atomicfile"
	"github.com/tagauth/tagauth/protocol"
)

// FileName is the key file's name in the gateway's data directory.
const FileName = "keys.json"

// maxFileSize bounds what Load reads: 255 keys take about 30 KB.
const maxFileSize = 1 << 20

// ErrInvalid is wrapped by every error about the file's content.
var ErrInvalid = errors.New("invalid key file")

// Key is one version of the master key.
type Key struct {
	Version uint8
	Key     [protocol.Size]byte
	Created time.Time
}

// String describes the key without its bytes, so that logging a Key or a
// File never leaks the secret.
func (k Key) String() string {
	return fmt.Sprintf("key version %d (created %s)", k.Version, k.Created.Format(time.RFC3339))
}

// GoString is String, for %#v.
func (k Key) GoString() string { return k.String() }

// File is the content of a key file. It is a plain value, not safe for
// concurrent use: the gateway loads it, changes it and saves it under its
// own lock.
type File struct {
	Profile protocol.Profile
	Keys    []Key // sorted by version; never empty in a valid file
}

// Create makes a new key file at path with one fresh key, version 1, drawn
// from rand. It fails if path exists: overwriting master keys would lock
// out every card and device.
func Create(path string, p protocol.Profile, rand io.Reader, now time.Time) (*File, error) {
	if !p.Valid() {
		return nil, fmt.Errorf("keyfile: unknown profile %v", p)
	}
	k, err := newKey(1, rand, now)
	if err != nil {
		return nil, err
	}
	f := &File{Profile: p, Keys: []Key{k}}
	data, err := f.Marshal()
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(path, data, true); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("key file %s already exists; not overwriting master keys: %w", path, fs.ErrExist)
		}
		return nil, err
	}
	return f, nil
}

func newKey(v uint8, rand io.Reader, now time.Time) (Key, error) {
	k := Key{Version: v, Created: now.UTC().Truncate(time.Second)}
	if _, err := io.ReadFull(rand, k.Key[:]); err != nil {
		return Key{}, fmt.Errorf("keyfile: reading randomness: %w", err)
	}
	if k.Key == ([protocol.Size]byte{}) {
		return Key{}, errors.New("keyfile: the random source returned zeros")
	}
	return k, nil
}

// Load reads and checks the key file at path. It refuses a file that
// others can read or write.
func Load(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	defer fh.Close()
	// Stat the open file, not the path, so that what is checked is what
	// is read.
	fi, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s is not a regular file (%v)", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm != 0o600 && perm != 0o400 {
		return nil, fmt.Errorf("key file %s has mode %04o; run: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading key file: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("key file %s is over %d bytes: %w", path, maxFileSize, ErrInvalid)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w; restore it from a backup", path, err)
	}
	return f, nil
}

// fileJSON is the file as written. Version is wider than uint8 so that an
// out-of-range version gets a clear message rather than a decoder error.
type fileJSON struct {
	Profile string    `json:"profile"`
	Keys    []keyJSON `json:"keys"`
}

type keyJSON struct {
	Version int64  `json:"version"`
	Key     string `json:"key"`
	Created string `json:"created"`
}

// Parse decodes and checks a key file's content. Errors wrap ErrInvalid.
func Parse(data []byte) (*File, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var raw fileJSON
	if err := dec.Decode(&raw); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: corrupt or truncated JSON (%v)", ErrInvalid, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrInvalid)
	}
	f := &File{}
	switch raw.Profile {
	case "classic":
		f.Profile = protocol.Classic
	case "hardened":
		f.Profile = protocol.Hardened
	case "":
		return nil, fmt.Errorf("%w: no profile (want \"classic\" or \"hardened\")", ErrInvalid)
	default:
		return nil, fmt.Errorf("%w: unknown profile %q (want \"classic\" or \"hardened\")", ErrInvalid, raw.Profile)
	}
	for i, rk := range raw.Keys {
		if rk.Version < 1 || rk.Version > 255 {
			return nil, fmt.Errorf("%w: key %d has version %d (want 1 to 255)", ErrInvalid, i+1, rk.Version)
		}
		k := Key{Version: uint8(rk.Version)}
		if len(rk.Key) != 2*protocol.Size || !isLowerHex(rk.Key) {
			return nil, fmt.Errorf("%w: key version %d: want %d lowercase hex digits, got %d characters", ErrInvalid, k.Version, 2*protocol.Size, len(rk.Key))
		}
		hex.Decode(k.Key[:], []byte(rk.Key))
		t, err := time.Parse(time.RFC3339, rk.Created)
		if err != nil {
			return nil, fmt.Errorf("%w: key version %d: created is not an RFC 3339 time (%q)", ErrInvalid, k.Version, rk.Created)
		}
		k.Created = t.UTC()
		f.Keys = append(f.Keys, k)
	}
	slices.SortFunc(f.Keys, func(a, b Key) int { return int(a.Version) - int(b.Version) })
	if err := f.check(); err != nil {
		return nil, err
	}
	return f, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// check is what makes a File valid; keys must be sorted.
func (f *File) check() error {
	if !f.Profile.Valid() {
		return fmt.Errorf("%w: unknown profile %v", ErrInvalid, f.Profile)
	}
	if len(f.Keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrInvalid)
	}
	for i, k := range f.Keys {
		switch {
		case k.Version == 0:
			return fmt.Errorf("%w: key version 0", ErrInvalid)
		case i > 0 && k.Version == f.Keys[i-1].Version:
			return fmt.Errorf("%w: key version %d appears twice", ErrInvalid, k.Version)
		case i > 0 && k.Version < f.Keys[i-1].Version:
			return fmt.Errorf("%w: keys not sorted by version", ErrInvalid)
		case k.Key == [protocol.Size]byte{}:
			return fmt.Errorf("%w: key version %d is all zeros", ErrInvalid, k.Version)
		case k.Created.IsZero():
			return fmt.Errorf("%w: key version %d has no creation time", ErrInvalid, k.Version)
		}
	}
	if f.Profile == protocol.Classic {
		if len(f.Keys) != 1 {
			return fmt.Errorf("%w: classic profile with %d keys: classic messages carry no key version, so it has exactly one", ErrInvalid, len(f.Keys))
		}
		if f.Keys[0].Version != protocol.ClassicKeyVersion {
			return fmt.Errorf("%w: classic profile key has version %d, want %d", ErrInvalid, f.Keys[0].Version, protocol.ClassicKeyVersion)
		}
	}
	return nil
}

// Marshal encodes f in the file format. It refuses an invalid File.
func (f *File) Marshal() ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	raw := fileJSON{Profile: f.Profile.String()}
	for _, k := range f.Keys {
		if y := k.Created.Year(); y < 0 || y > 9999 {
			return nil, fmt.Errorf("%w: key version %d: creation year %d", ErrInvalid, k.Version, y)
		}
		raw.Keys = append(raw.Keys, keyJSON{
			Version: int64(k.Version),
			Key:     hex.EncodeToString(k.Key[:]),
			Created: k.Created.UTC().Format(time.RFC3339Nano),
		})
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// Save writes f to path atomically with mode 0600: a temporary file in the
// same directory, synced, renamed over path, and the directory synced.
func (f *File) Save(path string) error {
	data, err := f.Marshal()
	if err != nil {
		return err
	}
	return writeAtomic(path, data, false)
}

// Rotate adds a new key, one version above the newest, drawn from rand,
// and returns it. The caller saves the file. Under classic it refuses:
// classic has one key for good.
func (f *File) Rotate(rand io.Reader, now time.Time) (Key, error) {
	if err := f.check(); err != nil {
		return Key{}, err
	}
	if f.Profile == protocol.Classic {
		return Key{}, errors.New("keyfile: the classic profile has exactly one master key (its messages carry no key version): rotation needs the hardened profile")
	}
	newest := f.Keys[len(f.Keys)-1].Version
	if newest == 255 {
		return Key{}, errors.New("keyfile: key version 255 is the last one: no version left to rotate to (versions are never reused)")
	}
	k, err := newKey(newest+1, rand, now)
	if err != nil {
		return Key{}, err
	}
	f.Keys = append(f.Keys, k)
	return k, nil
}

// Retire removes key version v: cards and credentials under it stop
// working. It refuses the newest key, which new registrations use (and so
// also the only key).
func (f *File) Retire(v uint8) error {
	if err := f.check(); err != nil {
		return err
	}
	i := slices.IndexFunc(f.Keys, func(k Key) bool { return k.Version == v })
	switch {
	case i < 0:
		return fmt.Errorf("keyfile: no key version %d", v)
	case i == len(f.Keys)-1:
		return fmt.Errorf("keyfile: key version %d is the newest, which new cards and devices use: rotate first, then retire it", v)
	}
	f.Keys = slices.Delete(f.Keys, i, i+1)
	return nil
}

// Newest returns the newest key, the one new cards and credentials use.
// f must be valid (from Create or Load).
func (f *File) Newest() protocol.MasterKey {
	if len(f.Keys) == 0 {
		return protocol.MasterKey{}
	}
	k := f.Keys[len(f.Keys)-1]
	return protocol.MasterKey{Version: k.Version, Key: k.Key}
}

// MasterKeys returns every live key, oldest first, for the registry.
func (f *File) MasterKeys() []protocol.MasterKey {
	out := make([]protocol.MasterKey, len(f.Keys))
	for i, k := range f.Keys {
		out[i] = protocol.MasterKey{Version: k.Version, Key: k.Key}
	}
	return out
}

// writeAtomic writes data through atomicfile. With exclusive, it fails with
// fs.ErrExist if path exists.
func writeAtomic(path string, data []byte, exclusive bool) error {
	write := atomicfile.Write
	if exclusive {
		write = atomicfile.WriteNew
	}
	if err := write(path, data); err != nil {
		return fmt.Errorf("writing key file: %w", err)
	}
	return nil
}
