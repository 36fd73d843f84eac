package credfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"

	"github.com/tagauth/tagauth/internal/atomicfile"
)

// Save checks c and writes it to path with mode 0600, replacing any file
// there. The write is atomic: a crash leaves the old file or the new one,
// never a mix (temporary file in the same directory, fsync, rename, fsync
// of the directory).
func Save(path string, c Credential) error {
	b, err := Marshal(c)
	if err != nil {
		return err
	}
	defer clear(b)
	return writeAtomic(path, b)
}

// Load reads and checks the credential file at path. It refuses a file
// that users other than its owner may read or write, since the tag in it
// lets anyone act as the device. Content errors wrap ErrInvalid.
func Load(path string) (Credential, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Credential{}, fmt.Errorf("credential: no credential file at %s: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("credential: reading credential file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Credential{}, fmt.Errorf("credential: reading credential file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Credential{}, fmt.Errorf("credential: %s is not a regular file", path)
	}
	// Windows has no Unix permission bits to check; its ACLs are the
	// operator's business.
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return Credential{}, fmt.Errorf("credential file %s has mode %04o, so other users can read or change the device's secret tag; run: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return Credential{}, fmt.Errorf("credential: reading credential file: %w", err)
	}
	defer clear(b)
	if len(b) > maxSize {
		return Credential{}, fmt.Errorf("credential file %s: %w: larger than %d bytes", path, ErrInvalid, maxSize)
	}
	c, err := Unmarshal(b)
	if err != nil {
		return Credential{}, fmt.Errorf("credential file %s: %w", path, err)
	}
	return c, nil
}

// writeAtomic writes data through atomicfile, with this package's errors.
func writeAtomic(path string, data []byte) error {
	if err := atomicfile.Write(path, data); err != nil {
		return fmt.Errorf("credfile: writing %s: %w", path, err)
	}
	return nil
}
