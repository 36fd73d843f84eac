package credfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
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

// writeAtomic writes data to a temporary file next to path, mode 0600, and
// renames it into place.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("credential: writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	// CreateTemp already uses 0600 less the umask; Chmod makes it exactly
	// 0600 whatever the umask.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("credential: writing %s: %w", path, err)
	}
	if err = syncDir(dir); err != nil {
		// The file is in place; only its durability is in doubt.
		return fmt.Errorf("credential: writing %s: syncing directory: %w", path, err)
	}
	return nil
}

// syncDir makes a rename in dir durable. Windows cannot fsync a directory
// and does not need to.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
