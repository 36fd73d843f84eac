package dump

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
)

// # Backups
//
// A backup is a tar archive, encrypted with age by whoever makes it
// (the gateway's admin API encrypts before a byte leaves it), of:
//
//	MANIFEST.json  {"format":1,"created":T,"profile":"hardened","backend":"bolt","store":"store.db"}
//	keys.json      the key file, as it is in the data directory
//	store.db       the embedded store, a bbolt read transaction's WriteTo
//	 or dump.jsonl the dump (audit included) of a PostgreSQL store, read in
//	               one REPEATABLE READ transaction
//
// Each is a consistent snapshot taken while the gateway serves. Restore
// unpacks one into an empty data directory.

// Archive member names.
const (
	ManifestName = "MANIFEST.json"
	DumpName     = "dump.jsonl"
)

// BackupFormat is the version of the archive layout.
const BackupFormat = 1

// Manifest is the first member of a backup.
type Manifest struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	Profile string    `json:"profile"`
	Backend string    `json:"backend"` // bolt or postgres
	Store   string    `json:"store"`   // the member holding the store: store.db or dump.jsonl
}

// WriteArchive writes a backup archive of st and the key file's bytes to
// w (unencrypted: encrypt w). A store.FileSnapshotter is copied as its
// file; any other store must be a store.Dumper and is dumped with its
// audit, through a temporary file because a tar member's size comes
// first.
func WriteArchive(ctx context.Context, w io.Writer, st store.Store, keyFile []byte, p protocol.Profile, now time.Time) (Manifest, error) {
	m := Manifest{Format: BackupFormat, Created: utc(now), Profile: p.String()}
	snap, isFile := st.(store.FileSnapshotter)
	dumper, isDumper := st.(store.Dumper)
	switch {
	case isFile:
		m.Backend, m.Store = "bolt", bolt.FileName
	case isDumper:
		m.Backend, m.Store = "postgres", DumpName
	default:
		return m, fmt.Errorf("backup: the store (%T) can be neither copied nor dumped", st)
	}
	tw := tar.NewWriter(w)
	mj, err := json.Marshal(m)
	if err != nil {
		return m, err
	}
	if err := putMember(tw, ManifestName, mj, now); err != nil {
		return m, err
	}
	if err := putMember(tw, keyfile.FileName, keyFile, now); err != nil {
		return m, err
	}
	if isFile {
		err = snap.WriteSnapshot(ctx, func(size int64) error {
			return tw.WriteHeader(&tar.Header{Name: m.Store, Mode: 0o600, Size: size, ModTime: now, Typeflag: tar.TypeReg})
		}, tw)
	} else {
		err = dumpMember(ctx, tw, dumper, p, now)
	}
	if err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	if err := tw.Close(); err != nil {
		return m, fmt.Errorf("backup: %w", err)
	}
	return m, nil
}

func putMember(tw *tar.Writer, name string, data []byte, now time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// dumpMember dumps st into a temporary file (it holds no key) and copies
// that into the archive.
func dumpMember(ctx context.Context, tw *tar.Writer, st store.Dumper, p protocol.Profile, now time.Time) error {
	tmp, err := os.CreateTemp("", "tagauth-backup-*.jsonl")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := Dump(ctx, st, tmp, Options{Profile: p, Audit: true, Source: "postgres", Now: now}); err != nil {
		return err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: DumpName, Mode: 0o600, Size: size, ModTime: now, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.Copy(tw, tmp)
	return err
}

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// Dir is the data directory to fill: it must not exist (its parent
	// must) or be empty.
	Dir string
	// Target, when not nil, receives the registry (a shared PostgreSQL
	// store, which must be empty); Dir then gets the key file only.
	// Nil: the registry goes to Dir's embedded store.
	Target store.Loader
}

// ErrDirNotEmpty: Restore was given a data directory with files in it.
var ErrDirNotEmpty = errors.New("restore: the data directory is not empty")

// maxSmallMember bounds the manifest and the key file.
const maxSmallMember = 1 << 20

// Restore unpacks a backup archive (decrypted) from r. On an error it
// removes what it wrote, and the directory if it made it.
func Restore(ctx context.Context, r io.Reader, opt RestoreOptions) (m Manifest, err error) {
	made, err := prepareDir(opt.Dir)
	if err != nil {
		return m, err
	}
	var written []string
	defer func() {
		if err == nil {
			return
		}
		for _, p := range written {
			os.Remove(p)
		}
		if made {
			os.Remove(opt.Dir)
		}
	}()
	tr := tar.NewReader(r)
	member := func(want string) (*tar.Header, error) {
		h, err := tr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("restore: reading %s: %w (is the backup truncated?)", want, err)
		}
		if h.Name != want || h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("restore: found %q where the backup has %s: not a tagauth backup", h.Name, want)
		}
		return h, nil
	}
	small := func(want string) ([]byte, error) {
		h, err := member(want)
		if err != nil {
			return nil, err
		}
		if h.Size > maxSmallMember {
			return nil, fmt.Errorf("restore: %s of %d bytes: not a tagauth backup", want, h.Size)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("restore: reading %s: %w", want, err)
		}
		return b, nil
	}
	mj, err := small(ManifestName)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(mj, &m); err != nil {
		return m, fmt.Errorf("restore: %s: %w", ManifestName, err)
	}
	if m.Format != BackupFormat {
		return m, fmt.Errorf("restore: backup format %d, this tagauth reads %d", m.Format, BackupFormat)
	}
	kj, err := small(keyfile.FileName)
	if err != nil {
		return m, err
	}
	kf, err := keyfile.Parse(kj)
	if err != nil {
		return m, fmt.Errorf("restore: the backup's key file: %w", err)
	}
	if kf.Profile.String() != m.Profile {
		return m, fmt.Errorf("restore: the backup's key file is of the %v profile, its manifest says %s", kf.Profile, m.Profile)
	}
	keyPath := filepath.Join(opt.Dir, keyfile.FileName)
	written = append(written, keyPath)
	if err := writeFile(keyPath, func(f *os.File) error { _, err := f.Write(kj); return err }); err != nil {
		return m, err
	}
	h, err := member(m.Store)
	if err != nil {
		return m, err
	}
	storePath := filepath.Join(opt.Dir, bolt.FileName)
	switch {
	case h.Name == bolt.FileName && opt.Target == nil:
		written = append(written, storePath)
		if err := writeFile(storePath, func(f *os.File) error { _, err := io.Copy(f, tr); return err }); err != nil {
			return m, err
		}
		st, err := bolt.Open(storePath) // checks every page
		if err != nil {
			return m, fmt.Errorf("restore: the restored store: %w", err)
		}
		if err := st.Close(); err != nil {
			return m, err
		}
	case h.Name == bolt.FileName:
		if err := boltInto(ctx, tr, kf, opt.Target); err != nil {
			return m, err
		}
	case h.Name == DumpName:
		target := opt.Target
		if target == nil {
			written = append(written, storePath)
			st, err := bolt.Open(storePath)
			if err != nil {
				return m, fmt.Errorf("restore: %w", err)
			}
			defer st.Close()
			target = st
		}
		if _, _, err := Load(ctx, target, tr, kf); err != nil {
			return m, fmt.Errorf("restore: %w", err)
		}
	default:
		return m, fmt.Errorf("restore: the manifest names the store %q: not a tagauth backup", m.Store)
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		return m, errors.New("restore: more members after the store: not a tagauth backup")
	}
	// Read the rest (the archive's padding), so that an encrypted
	// stream's last chunk is authenticated too.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return m, fmt.Errorf("restore: %w", err)
	}
	return m, nil
}

// prepareDir makes sure dir is empty, making it (0700) when it does not
// exist.
func prepareDir(dir string) (made bool, err error) {
	if dir == "" {
		return false, errors.New("restore: no data directory")
	}
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dir, 0o700); err != nil {
			return false, fmt.Errorf("restore: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("restore: %w", err)
	case len(ents) > 0:
		return false, fmt.Errorf("%w: %s holds %s: restore only into an empty or new directory", ErrDirNotEmpty, dir, ents[0].Name())
	}
	return false, nil
}

// writeFile creates path (0600, not existing) with fill and syncs it.
func writeFile(path string, fill func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: writing %s: %w", path, err)
	}
	return nil
}

// boltInto loads the registry and audit of a bbolt snapshot into target,
// through a temporary copy of the file and the dump format.
func boltInto(ctx context.Context, r io.Reader, kf *keyfile.File, target store.Loader) error {
	dir, err := os.MkdirTemp("", "tagauth-restore-")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, bolt.FileName)
	if err := writeFile(path, func(f *os.File) error { _, err := io.Copy(f, r); return err }); err != nil {
		return err
	}
	src, err := bolt.Open(path)
	if err != nil {
		return fmt.Errorf("restore: the backup's store: %w", err)
	}
	defer src.Close()
	if err := Copy(ctx, target, src, kf); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// Copy loads everything src holds, audit included, into the empty target,
// through the dump format (so the same checks apply). kf is the key file
// both serve.
func Copy(ctx context.Context, target store.Loader, src store.Dumper, kf *keyfile.File) error {
	pr, pw := io.Pipe()
	go func() {
		_, err := Dump(ctx, src, pw, Options{Profile: kf.Profile, Audit: true, Keys: KeysOf(kf)})
		pw.CloseWithError(err)
	}()
	_, _, err := Load(ctx, target, pr, kf)
	pr.CloseWithError(errors.New("load ended"))
	return err
}
