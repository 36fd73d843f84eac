// Package atomicfile writes secret files so that a crash never leaves a
// half-written one: data goes to a synced temporary file in the same
// directory, which is then moved into place and the directory synced. The
// file's mode is exactly 0600 whatever the umask (WritePerm's: the mode
// given, for files others may read, such as a certificate).
package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Write puts data at path, replacing any file there.
func Write(path string, data []byte) error { return write(path, data, 0o600, true) }

// WritePerm is Write with the file mode perm (exactly, whatever the umask)
// instead of 0600.
func WritePerm(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, true)
}

// WriteNew puts data at path and fails with an error wrapping fs.ErrExist if
// path exists. The move is a hard link, which fails atomically if path
// exists; on file systems without hard links (FAT on a USB stick, say) it
// falls back to a check and a rename, which only a concurrent writer of the
// same path could race.
func WriteNew(path string, data []byte) error { return write(path, data, 0o600, false) }

// WriteNewFrom is WriteNew for content too large to hold in memory (a
// backup, a dump): fill writes it to the temporary file. An error of
// fill's leaves nothing at path.
func WriteNewFrom(path string, fill func(io.Writer) error) error {
	return writeFrom(path, fill, 0o600, false)
}

func write(path string, data []byte, perm fs.FileMode, replace bool) error {
	return writeFrom(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}, perm, replace)
}

func writeFrom(path string, fill func(io.Writer) error, perm fs.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if tmp != "" {
			os.Remove(tmp)
		}
	}()
	err = f.Chmod(perm)
	if err == nil {
		err = fill(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			if _, serr := os.Lstat(path); serr == nil {
				err = &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
			} else {
				err = os.Rename(tmp, path)
			}
		}
	}
	if err != nil {
		return err
	}
	if !replace {
		os.Remove(tmp) // the link made path; the temporary name goes
	}
	tmp = ""
	return syncDir(dir)
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
