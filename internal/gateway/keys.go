package gateway

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// newestKey is the key new cards and credentials are issued under.
func (g *Gateway) newestKey() protocol.MasterKey {
	g.keysMu.Lock()
	defer g.keysMu.Unlock()
	return g.keys.Newest()
}

// KeyVersions lists the live master-key versions, oldest first.
func (g *Gateway) KeyVersions() []uint8 {
	g.keysMu.Lock()
	defer g.keysMu.Unlock()
	vs := make([]uint8, len(g.keys.Keys))
	for i, k := range g.keys.Keys {
		vs[i] = k.Version
	}
	return vs
}

// pollKeys reloads the key file whenever it changes, until ctx is done.
func (g *Gateway) pollKeys(ctx context.Context) {
	t := time.NewTicker(g.cfg.KeyPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s, err := stampOf(g.keyPath)
		g.keysMu.Lock()
		changed := err == nil && s.changed(g.keyStamp)
		g.keysMu.Unlock()
		if err != nil {
			g.log.Warn("cannot check the key file; keeping the keys in use", "path", g.keyPath, "err", err)
			continue
		}
		if changed {
			g.ReloadKeys()
		}
	}
}

// ReloadKeys re-reads the key file and brings the registry's master keys
// in line with it: new versions are served, versions gone from the file are
// refused from the next verify. A file that does not load (bad mode,
// corrupt, another profile) changes nothing: the gateway keeps the keys it
// has and logs why. Every change is audited.
func (g *Gateway) ReloadKeys() error {
	g.keysMu.Lock()
	defer g.keysMu.Unlock()
	stamp, _ := stampOf(g.keyPath)
	// A key file someone else could have written is not loaded, however
	// well formed (datadir.go).
	err := checkDataDir(filepath.Dir(g.keyPath))
	var f *keyfile.File
	if err == nil {
		f, err = keyfile.Load(g.keyPath)
	}
	if err == nil && f.Profile != g.profile {
		err = fmt.Errorf("key file %s is now for the %v profile, the gateway serves %v", g.keyPath, f.Profile, g.profile)
	}
	if err != nil {
		// Remember the stamp so that a bad file is reported once, not
		// every second; the next change is looked at again.
		g.keyStamp = stamp
		g.log.Error("key file changed but does not load; keeping the keys in use", "err", err)
		g.audit.submit(store.AuditRecord{Time: g.now(), Kind: KindKey, Outcome: OutcomeError,
			Reason: "key file does not load", Detail: err.Error()})
		return fmt.Errorf("gateway: %w", err)
	}
	old := make(map[uint8][protocol.Size]byte, len(g.keys.Keys))
	for _, k := range g.keys.Keys {
		old[k.Version] = k.Key
	}
	newest := f.Newest().Version
	for _, k := range f.MasterKeys() {
		prev, had := old[k.Version]
		delete(old, k.Version)
		switch {
		case !had:
			g.reg.AddKey(k)
			g.keyEvent("added", k.Version, newest)
		case prev != k.Key:
			// Versions are never reused by the key tools; a changed key
			// under an old version is an operator's hand edit.
			g.reg.AddKey(k)
			g.keyEvent("replaced", k.Version, newest)
		}
	}
	gone := make([]uint8, 0, len(old))
	for v := range old {
		gone = append(gone, v)
	}
	slices.Sort(gone)
	for _, v := range gone {
		g.reg.RetireKey(v)
		g.keyEvent("retired", v, newest)
	}
	g.keys = f
	g.keyStamp = stamp
	g.events.fire()
	return nil
}

func (g *Gateway) keyEvent(what string, v, newest uint8) {
	g.log.Info("master key "+what, "version", v, "newest", newest)
	g.audit.submit(store.AuditRecord{Time: g.now(), Kind: KindKey, Outcome: OutcomeOK, Reason: what,
		Detail: fmt.Sprintf("key version %d %s; newest is %d", v, what, newest)})
}
