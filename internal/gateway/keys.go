package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// The keyring: the master keys K_GTW of DATA/keys.json, as the registry
// serves them. The file is the truth: it is polled, and a rotation or
// retirement made with "tagauth gateway keys" (or the admin API, which
// edits the file the same way) reaches the registry within a poll. On a
// replica the versions and retirements are also published to the shared
// store, and versions retired or disagreeing elsewhere are refused here
// (sync, ban).

// keyring owns the key file and the keys in use.
type keyring struct {
	path    string
	profile protocol.Profile
	log     *slog.Logger
	now     func() time.Time
	reg     *registry.Memory // the registry serving the keys; set once it is loaded
	bk      *backends        // replicas: the shared store; nil on a single gateway
	events  *events
	// audit keeps a key change's record. It reads the gateway's audit
	// writer when called: the writer opens after the keys.
	audit func(store.AuditRecord)

	mu    sync.Mutex // guards file and stamp, and serializes edits of the file
	file  *keyfile.File
	stamp fileStamp

	shared keySync // what sync last published (replicas)
}

// openKeyring loads the key file in dir, creating it (version 1) at first
// start.
func openKeyring(dir string, profile protocol.Profile, now func() time.Time, log *slog.Logger) (*keyring, error) {
	path := filepath.Join(dir, KeyFileName)
	f, err := keyfile.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = keyfile.Create(path, profile, rand.Reader, now())
		if err == nil {
			log.Info("created key file with master key version 1", "path", path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if f.Profile != profile {
		return nil, fmt.Errorf("gateway: key file %s is for the %v profile but the gateway was asked to serve %v: start it with --profile %v, or use another data directory",
			path, f.Profile, profile, f.Profile)
	}
	k := &keyring{path: path, profile: profile, log: log, now: now, file: f}
	k.stamp, _ = stampOf(path)
	return k, nil
}

// moved points the keyring at the key file in dir, where a first start's
// data directory was moved (datadir.go).
func (k *keyring) moved(dir string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.path = filepath.Join(dir, KeyFileName)
	k.stamp, _ = stampOf(k.path)
}

// masterKeys are the keys in use, for a registry being loaded.
func (k *keyring) masterKeys() []protocol.MasterKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.file.MasterKeys()
}

// newest is the key new cards and credentials are issued under.
func (k *keyring) newest() protocol.MasterKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.file.Newest()
}

// KeyVersions lists the live master-key versions, oldest first.
func (g *Gateway) KeyVersions() []uint8 { return g.keys.versions() }

func (k *keyring) versions() []uint8 {
	k.mu.Lock()
	defer k.mu.Unlock()
	vs := make([]uint8, len(k.file.Keys))
	for i, key := range k.file.Keys {
		vs[i] = key.Version
	}
	return vs
}

// created lists the live versions with their creation times, for the
// admin service.
func (k *keyring) created() []adminsvc.KeyVersion {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]adminsvc.KeyVersion, len(k.file.Keys))
	for i, key := range k.file.Keys {
		out[i] = adminsvc.KeyVersion{Version: key.Version, Created: key.Created}
	}
	return out
}

// readFile is the key file's content, read under the lock so that it is
// never caught half edited (backups).
func (k *keyring) readFile() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return os.ReadFile(k.path)
}

// poll reloads the key file whenever it changes, until ctx is done.
func (k *keyring) poll(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		path := k.path
		s, err := stampOf(path)
		changed := err == nil && s.changed(k.stamp)
		k.mu.Unlock()
		if err != nil {
			k.log.Warn("cannot check the key file; keeping the keys in use", "path", path, "err", err)
			continue
		}
		if changed {
			k.reload(ctx)
		}
	}
}

// ReloadKeys re-reads the key file and brings the registry's master keys
// in line with it: new versions are served, versions gone from the file are
// refused from the next verify. A file that does not load (bad mode,
// corrupt, another profile) changes nothing: the gateway keeps the keys it
// has and logs why. Every change is audited.
func (g *Gateway) ReloadKeys() error { return g.keys.reload(context.Background()) }

// reload is ReloadKeys whose audit records name ctx's caller (an admin's
// rotate or retire through the admin service).
func (k *keyring) reload(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	stamp, _ := stampOf(k.path)
	// A key file someone else could have written is not loaded, however
	// well formed (datadir.go).
	err := checkDataDir(filepath.Dir(k.path))
	var f *keyfile.File
	if err == nil {
		f, err = keyfile.Load(k.path)
	}
	if err == nil && f.Profile != k.profile {
		err = fmt.Errorf("key file %s is now for the %v profile, the gateway serves %v", k.path, f.Profile, k.profile)
	}
	if err != nil {
		// Remember the stamp so that a bad file is reported once, not
		// every second; the next change is looked at again.
		k.stamp = stamp
		k.log.Error("key file changed but does not load; keeping the keys in use", "err", err)
		k.audit(store.AuditRecord{Time: k.now(), Kind: KindKey, Outcome: OutcomeError,
			Reason: "key file does not load", Detail: err.Error()})
		return fmt.Errorf("gateway: %w", err)
	}
	old := make(map[uint8][protocol.Size]byte, len(k.file.Keys))
	for _, key := range k.file.Keys {
		old[key.Version] = key.Key
	}
	newest := f.Newest().Version
	for _, key := range f.MasterKeys() {
		prev, had := old[key.Version]
		delete(old, key.Version)
		switch {
		case !had:
			k.reg.AddKey(key)
			k.event(ctx, "added", key.Version, newest)
		case prev != key.Key:
			// Versions are never reused by the key tools; a changed key
			// under an old version is an operator's hand edit.
			k.reg.AddKey(key)
			k.event(ctx, "replaced", key.Version, newest)
		}
	}
	gone := make([]uint8, 0, len(old))
	for v := range old {
		gone = append(gone, v)
	}
	slices.Sort(gone)
	for _, v := range gone {
		k.reg.RetireKey(v)
		k.event(ctx, "retired", v, newest)
	}
	k.file = f
	k.stamp = stamp
	k.events.fire()
	return nil
}

func (k *keyring) event(ctx context.Context, what string, v, newest uint8) {
	k.log.Info("master key "+what, "version", v, "newest", newest)
	k.audit(adminsvc.ByCaller(ctx, store.AuditRecord{Time: k.now(), Kind: KindKey, Outcome: OutcomeOK, Reason: what,
		Detail: fmt.Sprintf("key version %d %s; newest is %d", v, what, newest)}))
}

// change edits the key file (re-read first, so that an edit made with
// "tagauth gateway keys" meanwhile is kept) and reloads it, which audits
// the change, naming ctx's caller.
func (k *keyring) change(ctx context.Context, edit func(f *keyfile.File) (uint8, error)) (uint8, error) {
	k.mu.Lock()
	f, err := keyfile.Load(k.path)
	var v uint8
	if err == nil {
		v, err = edit(f)
	}
	if err == nil {
		err = f.Save(k.path)
	}
	k.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return v, k.reload(ctx)
}

// keySync is what sync remembers between runs.
type keySync struct {
	published map[uint8][32]byte // local versions last published
	retired   []uint8            // retirements last published
	missing   map[uint8]bool     // versions others use that this file lacks, warned of
	conflict  map[uint8]bool     // versions warned of as conflicting
	recorded  []store.KeyVersion
}

// local lists the key file's versions and their fingerprints, and the
// versions the file retired: those below its newest that it lacks (a key
// file only ever gains version max+1, so a gap is a retirement).
func (k *keyring) local() (map[uint8][32]byte, []uint8, []store.KeyVersion) {
	k.mu.Lock()
	f := k.file
	k.mu.Unlock()
	return keysOf(f)
}

func keysOf(f *keyfile.File) (map[uint8][32]byte, []uint8, []store.KeyVersion) {
	live := map[uint8][32]byte{}
	var kvs []store.KeyVersion
	for _, k := range f.Keys {
		mk := protocol.MasterKey{Version: k.Version, Key: k.Key}
		fp := store.KeyFingerprint(mk)
		clear(mk.Key[:])
		live[k.Version] = fp
		kvs = append(kvs, store.KeyVersion{Version: k.Version, Fingerprint: fp, Created: k.Created})
	}
	var gone []uint8
	newest := f.Newest().Version
	for v := uint8(1); v < newest; v++ {
		if _, ok := live[v]; !ok {
			gone = append(gone, v)
		}
	}
	return live, gone, kvs
}

// sync publishes the key file's versions and retirements to the shared
// store when they changed (always when force), and refuses the versions
// that are retired anywhere or whose key differs from the one recorded.
// At start (force) a differing key is an error: the replica must not run
// with another key file than the others.
func (k *keyring) sync(ctx context.Context, force bool) error {
	s := &k.shared
	live, gone, kvs := k.local()
	if !force && s.recorded != nil && mapsEqual(live, s.published) && slices.Equal(gone, s.retired) {
		return nil
	}
	all, err := k.bk.st.PublishKeys(ctx, kvs, gone, k.now())
	if err != nil && !errors.Is(err, store.ErrKeyConflict) {
		return fmt.Errorf("gateway: publishing key versions: %w", err)
	}
	if errors.Is(err, store.ErrKeyConflict) && force {
		return fmt.Errorf("gateway: key file %s does not match the other replicas' (%v, recorded in the shared store): every replica needs the same key file; copy keys.json from a running replica into this data directory", k.path, err)
	}
	s.published, s.retired = live, gone
	k.ban(all)
	return nil
}

// ban refuses, on this replica, the key versions that are retired in
// the shared store or whose recorded key differs from the local one, and
// warns once of versions the others use that the local key file lacks.
func (k *keyring) ban(all []store.KeyVersion) {
	s := &k.shared
	live, _, _ := k.local()
	var banned [256]bool
	if s.missing == nil {
		s.missing, s.conflict = map[uint8]bool{}, map[uint8]bool{}
	}
	for _, kv := range all {
		fp, have := live[kv.Version]
		switch {
		case kv.Retired:
			banned[kv.Version] = true
		case have && fp != kv.Fingerprint:
			banned[kv.Version] = true
			if !s.conflict[kv.Version] {
				s.conflict[kv.Version] = true
				k.log.Error("key file disagrees with the other replicas: logins under this version are refused here; copy keys.json from a running replica",
					"version", kv.Version, "path", k.path)
			}
		case !have && !s.missing[kv.Version]:
			s.missing[kv.Version] = true
			k.log.Warn("other replicas use a master-key version this key file lacks: logins under it are refused here until you copy keys.json from a replica that has it",
				"version", kv.Version, "path", k.path)
		}
	}
	s.recorded = all
	k.bk.shared.banned.Store(&banned)
	k.events.fire()
}

func mapsEqual(a, b map[uint8][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
