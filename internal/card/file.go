package card

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Save writes a sealed card file to path with mode 0600, replacing any file
// already there. The write is atomic: a crash leaves either the old file or
// the new one, never a mix (temporary file in the same directory, fsync,
// rename, fsync of the directory).
func Save(path string, data []byte) error {
	return writeAtomic(path, data, true)
}

// SaveNew is Save for a file that must not exist yet: it fails, wrapping
// fs.ErrExist, rather than replace a card the user may still need.
func SaveNew(path string, data []byte) error {
	return writeAtomic(path, data, false)
}

// Load reads a card file. A missing file is reported with its path
// (wrapping fs.ErrNotExist); a file larger than any card file is refused
// as ErrCorrupt without reading it all.
func Load(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("card: no card file at %s: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("card: reading card file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("card: reading card file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("card: %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(maxFileSize)+1))
	if err != nil {
		return nil, fmt.Errorf("card: reading card file: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: %s is larger than any card file (%d bytes)", ErrCorrupt, path, maxFileSize)
	}
	return data, nil
}

// writeAtomic writes data to a temporary file next to path and moves it
// into place. With replace false the move is a hard link, which fails
// atomically if path exists; on file systems without hard links (FAT on a
// USB stick, say) it falls back to a check and a rename, which only a
// concurrent writer of the same path could race.
func writeAtomic(path string, data []byte, replace bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("card: writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if tmp != "" {
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
	if err != nil {
		return fmt.Errorf("card: writing %s: %w", path, err)
	}

	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			if _, serr := os.Lstat(path); serr == nil {
				err = fs.ErrExist
			} else {
				err = os.Rename(tmp, path)
			}
		}
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("card: %s already exists; refusing to overwrite it (move it away first): %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("card: writing %s: %w", path, err)
	}
	if !replace {
		os.Remove(tmp) // the link made path; the temporary name goes
	}
	tmp = ""
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("card: writing %s: syncing directory: %w", path, err)
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
