package card

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/tagauth/tagauth/internal/atomicfile"
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

// writeAtomic writes data through atomicfile, with this package's errors.
func writeAtomic(path string, data []byte, replace bool) error {
	write := atomicfile.WriteNew
	if replace {
		write = atomicfile.Write
	}
	err := write(path, data)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("card: %s already exists; refusing to overwrite it (move it away first): %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("card: writing %s: %w", path, err)
	}
	return nil
}
