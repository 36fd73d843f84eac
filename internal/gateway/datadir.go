package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// The data directory's rules.
//
// Strict modes (as sshd's StrictModes): whoever can write the directory or
// a file in it can replace keys.json and so forge every card and
// credential. The gateway refuses to start, and refuses to reload the key
// file, while the directory or anything in it is writable by group or
// others, or owned by a user other than the one running the gateway (or
// root, who can write it anyway).
//
// Only a first start creates: a directory that does not exist or is empty
// is made in a temporary sibling, filled (keys, store, token, certificate)
// and renamed into place only once every listener is bound, so a start
// that fails leaves nothing behind. An empty directory whose parent the
// gateway may not write is filled through a hidden directory in it
// instead, moved up the same way. A directory with files in it must have
// its key file and its store: a missing key file or a missing or empty
// store is refused with the backup to restore, never silently recreated
// (a new master key kills every card and credential; an empty store
// forgets every identity).

// inPlacePrefix names the hidden directory a first start fills inside an
// empty data directory whose parent it may not write.
const inPlacePrefix = ".new-"

// ErrDataDirInsecure is the error of a data directory, or a file in it,
// that another user could change.
var ErrDataDirInsecure = errors.New("insecure data directory")

// ErrDataDirIncomplete is the error of a data directory that has been
// used but lacks its key file or store.
var ErrDataDirIncomplete = errors.New("incomplete data directory")

// checkDataDir checks dir and everything in it against the strict modes.
func checkDataDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // ACLs, not modes: out of scope
	}
	euid := os.Geteuid()
	check := func(path string, fi fs.FileInfo) error {
		what := "file"
		if fi.IsDir() {
			what = "directory"
		}
		if uid, ok := fileOwner(fi); ok && uid != euid && uid != 0 {
			return fmt.Errorf("%w: %s %s is owned by uid %d, not by uid %d that runs the gateway: run chown %d %s (or remove it if you did not put it there)",
				ErrDataDirInsecure, what, path, uid, euid, euid, path)
		}
		if perm := fi.Mode().Perm(); perm&0o022 != 0 {
			fix := "chmod go-w " + path
			if fi.IsDir() {
				fix = "chmod 700 " + path
			}
			return fmt.Errorf("%w: %s %s has mode %04o, so other users can replace what is in it: run %s",
				ErrDataDirInsecure, what, path, perm, fix)
		}
		return nil
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		// Stat follows a link: what counts is the file the gateway reads.
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		return check(path, fi)
	})
}

// dataDirState is what a start finds at the data directory.
type dataDirState int

const (
	dirMissing  dataDirState = iota // no directory: first start
	dirEmpty                        // an empty directory: first start
	dirKeysOnly                     // only a key file: a replica seeded with keys.json
	dirUsed                         // anything else: a later start
)

func inspectDataDir(dir string) (dataDirState, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return dirMissing, nil
	}
	if err != nil {
		return 0, fmt.Errorf("gateway: data directory: %w", err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("gateway: data directory %s is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("gateway: data directory: %w", err)
	}
	// What a first start that crashed left in place does not make a used
	// directory (openDataDir removes it).
	ents = slices.DeleteFunc(ents, leftover)
	switch {
	case len(ents) == 0:
		return dirEmpty, nil
	case len(ents) == 1 && ents[0].Name() == KeyFileName:
		return dirKeysOnly, nil
	}
	return dirUsed, nil
}

// openDataDir applies the rules above before anything is read or made. At
// a first start it points g.cfg.DataDir at a temporary sibling, which
// commitDataDir moves into place; dropDataDir removes it after a failure.
func (g *Gateway) openDataDir() error {
	dir := g.cfg.DataDir
	state, err := inspectDataDir(dir)
	if err != nil {
		return err
	}
	if state != dirMissing {
		if err := checkDataDir(dir); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	switch state {
	case dirMissing, dirEmpty:
		if state == dirEmpty {
			if err := removeLeftovers(dir); err != nil {
				return err
			}
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("gateway: data directory: %w", err)
		}
		parent := filepath.Dir(abs)
		if err := os.MkdirAll(parent, 0o700); err != nil {
			return fmt.Errorf("gateway: creating data directory: %w", err)
		}
		tmp, err := os.MkdirTemp(parent, "."+filepath.Base(abs)+".new-")
		if err != nil && state == dirEmpty {
			// A directory made for the gateway in one it may not write
			// (/var/lib/tagauth owned by the gateway's user, or
			// ProtectSystem=strict): fill a hidden directory in it, whose
			// files commitDataDir moves up, the key file last.
			tmp, err = os.MkdirTemp(dir, inPlacePrefix)
		}
		if err != nil {
			return fmt.Errorf("gateway: creating data directory: %w", err)
		}
		g.dataFinal = dir
		g.cfg.DataDir = tmp
		return nil
	case dirUsed:
		return checkDataDirComplete(dir, g.cfg.Store == nil)
	}
	return checkDataDirComplete(dir, false) // dirKeysOnly: the store is made
}

// leftover is a first start's hidden directory, left by a crash.
func leftover(e fs.DirEntry) bool { return e.IsDir() && strings.HasPrefix(e.Name(), inPlacePrefix) }

// removeLeftovers removes from a data directory, checked and otherwise
// empty, what a first start that crashed left in it.
func removeLeftovers(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("gateway: data directory: %w", err)
	}
	for _, e := range ents {
		if leftover(e) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("gateway: removing what a failed first start left: %w", err)
			}
		}
	}
	return nil
}

// checkDataDirComplete refuses a used data directory without its key
// file, or (embedded) without its store or with an empty one.
func checkDataDirComplete(dir string, embedded bool) error {
	keyPath := filepath.Join(dir, KeyFileName)
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("gateway: %w: %s has files but no key file %s: restore %s from your backup (docs/OPERATIONS.md#backup); "+
			"a new master key would make every card and device credential useless, so none is made. For a new gateway, give an empty or new --data directory",
			ErrDataDirIncomplete, dir, KeyFileName, keyPath)
	}
	storePath := filepath.Join(dir, StoreFileName)
	fi, err := os.Stat(storePath)
	switch {
	case !embedded || (err == nil && fi.Size() > 0):
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("gateway: %w: %s has a key file but no store %s: restore %s from your backup (docs/OPERATIONS.md#backup); "+
			"an empty store would forget every user, device and grant, so none is made", ErrDataDirIncomplete, dir, StoreFileName, storePath)
	case err != nil:
		return fmt.Errorf("gateway: store: %w", err)
	}
	return fmt.Errorf("gateway: %w: the store %s is empty (0 bytes): restore it from your backup (docs/OPERATIONS.md#backup); "+
		"it is not started as an empty registry", ErrDataDirIncomplete, storePath)
}

// commitDataDir moves a first start's directory into place. Open calls it
// once every listener is bound and every file made.
func (g *Gateway) commitDataDir() error {
	if g.dataFinal == "" {
		return nil
	}
	tmp, dir := g.cfg.DataDir, g.dataFinal
	// rename(2) replaces an empty directory too; a mount point or a
	// directory the gateway may not replace gets the files moved in.
	if err := os.Rename(tmp, dir); err != nil {
		ents, rerr := os.ReadDir(tmp)
		if rerr != nil {
			return fmt.Errorf("gateway: creating data directory %s: %w", dir, err)
		}
		if _, serr := os.Stat(dir); serr != nil {
			return fmt.Errorf("gateway: creating data directory %s: %w", dir, err)
		}
		// The key file goes last: it marks a used directory.
		var keys fs.DirEntry
		for _, e := range ents {
			if e.Name() == KeyFileName {
				keys = e
				continue
			}
			if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("gateway: creating data directory %s: %w", dir, err)
			}
		}
		if keys != nil {
			if err := os.Rename(filepath.Join(tmp, KeyFileName), filepath.Join(dir, KeyFileName)); err != nil {
				return fmt.Errorf("gateway: creating data directory %s: %w", dir, err)
			}
		}
		os.Remove(tmp)
	}
	syncDir(filepath.Dir(dir))
	g.cfg.DataDir, g.dataFinal = dir, ""
	g.keyPath = filepath.Join(dir, KeyFileName)
	if g.tokenPath != "" {
		g.tokenPath = filepath.Join(dir, adminapi.TokenFileName)
	}
	g.keysMu.Lock()
	g.keyStamp, _ = stampOf(g.keyPath)
	g.keysMu.Unlock()
	return nil
}

// dropDataDir removes a first start's temporary directory after a failed
// Open (release has closed the store in it).
func (g *Gateway) dropDataDir() {
	if g.dataFinal == "" {
		return
	}
	os.RemoveAll(g.cfg.DataDir)
	g.cfg.DataDir, g.dataFinal = g.dataFinal, ""
}

// syncDir makes a rename in dir durable, where the system can.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
