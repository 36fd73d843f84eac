package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Change propagation on a replica (see backends.go).
//
// One goroutine follows the shared store's change feed: it waits for
// notifications, and every heartbeat (a second without one) pings the
// connection, so that a silent network failure is noticed within about two
// seconds and a closed connection at once. Between notifications it also
// looks at the key file every 100 ms and publishes a rotation or
// retirement made on this host. When the feed fails, the
// registry is marked stale (verifies answer busy) and the goroutine
// reconnects with backoff; once LISTENing again it reloads the whole
// registry, then marks it fresh. Changes committed while it was away are
// in that reload; changes committed after the LISTEN arrive as
// notifications. Each notification names an entity, whose current state is
// read back and applied, under the admin lock so that the admin API's own
// writes to the registry never interleave with it.

// events wakes whoever waits for the gateway's state to move: the
// registry applied changes, a backend's health or quarantine was looked
// at, key versions were synced or the key file reloaded, audit records
// were stored. Tests wait on it (export_test.go) instead of polling.
type events struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next fire. Take it before looking
// at the state, so that a change in between is not missed.
func (e *events) wait() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch == nil {
		e.ch = make(chan struct{})
	}
	return e.ch
}

// fire wakes the waiters. It costs a lock when nobody waits.
func (e *events) fire() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch != nil {
		close(e.ch)
		e.ch = nil
	}
}

// Change-feed timing.
const (
	feedHeartbeat  = time.Second
	keySyncEvery   = 100 * time.Millisecond
	feedPing       = time.Second
	feedDrain      = 2 * time.Millisecond
	feedMaxBatch   = 256
	feedBackoffMin = 100 * time.Millisecond
	feedBackoffMax = 2 * time.Second
	feedOpTimeout  = 10 * time.Second
)

// watchShared follows the change feed and watches Redis until ctx ends.
// Run starts it; it returns at once on a single gateway.
func (g *Gateway) watchShared(ctx context.Context) {
	if g.bk == nil {
		if g.localFeed != nil {
			g.followLocal(ctx) // regsync.go
		}
		return
	}
	done := make(chan struct{})
	if g.bk.redis != nil {
		go func() {
			defer close(done)
			g.watchRedis(ctx)
		}()
	} else {
		close(done)
	}
	backoff := feedBackoffMin
	for ctx.Err() == nil {
		start := time.Now()
		err := g.followChanges(ctx)
		if ctx.Err() != nil {
			break
		}
		g.setFeedHealth(err)
		if time.Since(start) > 10*time.Second {
			backoff = feedBackoffMin
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, feedBackoffMax)
	}
	<-done
}

// followChanges serves one connection of the feed: the one Open made, or a
// new one. It returns the error that ended it.
func (g *Gateway) followChanges(ctx context.Context) error {
	b := g.bk
	feed := b.feed
	b.feed = nil
	if feed == nil {
		c, cancel := context.WithTimeout(ctx, feedOpTimeout)
		f, err := b.st.Listen(c)
		cancel()
		if err != nil {
			return err
		}
		feed = f
		c, cancel = context.WithTimeout(ctx, feedOpTimeout)
		err = g.reloadShared(c)
		cancel()
		if err != nil {
			feed.Close()
			return err
		}
		g.setFeedHealth(nil)
	}
	defer feed.Close()
	lastPing := time.Now()
	for {
		c, cancel := context.WithTimeout(ctx, keySyncEvery)
		ch, err := feed.Next(c)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, store.ErrFeedTimeout):
			if err := g.feedIdle(ctx, feed, &lastPing); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		batch := []store.Change{ch}
		for len(batch) < feedMaxBatch {
			c, cancel := context.WithTimeout(ctx, feedDrain)
			ch, err := feed.Next(c)
			cancel()
			if errors.Is(err, store.ErrFeedTimeout) {
				break
			}
			if err != nil {
				return err
			}
			batch = append(batch, ch)
		}
		c, cancel = context.WithTimeout(ctx, feedOpTimeout)
		err = g.applyChanges(c, batch)
		cancel()
		if err != nil {
			return fmt.Errorf("applying changes: %w", err)
		}
		g.waiters.applied(batch) // regsync.go
	}
}

// feedIdle is the feed's housekeeping between notifications: publish a
// key file change (a map comparison when there is none), and ping the
// connection once per heartbeat.
func (g *Gateway) feedIdle(ctx context.Context, feed store.Feed, lastPing *time.Time) error {
	c, cancel := context.WithTimeout(ctx, feedPing)
	defer cancel()
	if err := g.syncKeys(c, false); err != nil {
		return err
	}
	if time.Since(*lastPing) < feedHeartbeat {
		return nil
	}
	*lastPing = time.Now()
	return feed.Ping(c)
}

// reloadShared refills the registry from a snapshot and the key versions.
func (g *Gateway) reloadShared(ctx context.Context) error {
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	snap, err := g.store.Snapshot(ctx)
	if err != nil {
		return err
	}
	if err := loadSnapshot(g.reg, snap); err != nil {
		return fmt.Errorf("the shared store's registry is inconsistent: %w", err)
	}
	g.bk.reloads.Add(1)
	defer g.events.fire()
	defer g.waiters.applied([]store.Change{{Kind: store.ChangeReset}})
	return g.syncKeys(ctx, false)
}

// applyChanges brings the registry in line with the current state of the
// entities the changes name. Identities are only ever created and revoked
// through the store's API; anything else (a row deleted or a table
// truncated by hand) is handled by a full reload.
func (g *Gateway) applyChanges(ctx context.Context, changes []store.Change) error {
	g.bk.changes.Add(uint64(len(changes)))
	defer g.events.fire()
	for _, c := range changes {
		if c.Kind == store.ChangeReset {
			g.log.Info("shared store reset: reloading the registry")
			return g.reloadShared(ctx)
		}
	}
	g.adminMu.Lock()
	reload, err := g.applyLocked(ctx, changes)
	g.adminMu.Unlock()
	if err != nil {
		return err
	}
	if reload {
		g.log.Info("shared store changed by hand: reloading the registry")
		return g.reloadShared(ctx)
	}
	return nil
}

func (g *Gateway) applyLocked(ctx context.Context, changes []store.Change) (reload bool, err error) {
	st, err := g.store.Current(ctx, changes)
	if err != nil {
		return false, err
	}
	reg := g.reg
	for _, u := range st.Users {
		if reg.UserState(u.ID) == protocol.Unknown {
			if err := reg.AddUser(u.ID); err != nil {
				return true, nil
			}
		}
		if u.Revoked && reg.UserState(u.ID) != protocol.Revoked {
			reg.RevokeUser(u.ID)
		}
		if !u.Revoked && reg.UserState(u.ID) == protocol.Revoked {
			return true, nil
		}
	}
	for _, d := range st.Devices {
		if reg.DeviceState(d.ID) == protocol.Unknown {
			if err := reg.AddDeviceInGroup(d.ID, d.Group); err != nil {
				return true, nil
			}
		}
		if d.Revoked && reg.DeviceState(d.ID) != protocol.Revoked {
			reg.RevokeDevice(d.ID)
		}
		if !d.Revoked && reg.DeviceState(d.ID) == protocol.Revoked {
			return true, nil
		}
	}
	for _, id := range st.GoneUsers {
		if reg.UserState(id) != protocol.Unknown {
			return true, nil
		}
	}
	for _, id := range st.GoneDevices {
		if reg.DeviceState(id) != protocol.Unknown {
			return true, nil
		}
	}
	for _, gr := range st.Grants {
		reg.Grant(gr.User, gr.Group)
	}
	for _, gr := range st.GoneGrants {
		reg.Ungrant(gr.User, gr.Group)
	}
	if st.Keys != nil && g.bk != nil {
		g.banKeys(st.Keys)
	}
	return false, nil
}

// watchRedis pings Redis (through the quarantine probe) every second, so
// that its health recovers without traffic and a Redis that restarted
// empty is noticed even when nobody logs in.
func (g *Gateway) watchRedis(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		g.checkQuarantine(c)
		cancel()
	}
}

func (g *Gateway) checkQuarantine(ctx context.Context) {
	defer g.events.fire()
	until, in, err := g.bk.redis.Quarantine(ctx, g.now())
	switch {
	case err != nil:
	case in:
		g.bk.quarantine.Store(until.UnixMilli())
	default:
		g.bk.quarantine.Store(0)
	}
}

// keySync is what syncKeys remembers between runs.
type keySync struct {
	published map[uint8][32]byte // local versions last published
	retired   []uint8            // retirements last published
	missing   map[uint8]bool     // versions others use that this file lacks, warned of
	conflict  map[uint8]bool     // versions warned of as conflicting
	recorded  []store.KeyVersion
}

// localKeys lists the key file's versions and their fingerprints, and the
// versions the file retired: those below its newest that it lacks (a key
// file only ever gains version max+1, so a gap is a retirement).
func (g *Gateway) localKeys() (map[uint8][32]byte, []uint8, []store.KeyVersion) {
	g.keysMu.Lock()
	f := g.keys
	g.keysMu.Unlock()
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

// syncKeys publishes the key file's versions and retirements to the shared
// store when they changed (always when force), and refuses the versions
// that are retired anywhere or whose key differs from the one recorded.
// At start (force) a differing key is an error: the replica must not run
// with another key file than the others.
func (g *Gateway) syncKeys(ctx context.Context, force bool) error {
	b := g.bk
	live, gone, kvs := g.localKeys()
	if !force && b.keys.recorded != nil && mapsEqual(live, b.keys.published) && slices.Equal(gone, b.keys.retired) {
		return nil
	}
	all, err := b.st.PublishKeys(ctx, kvs, gone, g.now())
	if err != nil && !errors.Is(err, store.ErrKeyConflict) {
		return fmt.Errorf("gateway: publishing key versions: %w", err)
	}
	if errors.Is(err, store.ErrKeyConflict) && force {
		return fmt.Errorf("gateway: key file %s does not match the other replicas' (%v, recorded in the shared store): every replica needs the same key file; copy keys.json from a running replica into this data directory", g.keyPath, err)
	}
	b.keys.published, b.keys.retired = live, gone
	g.banKeys(all)
	return nil
}

// banKeys refuses, on this replica, the key versions that are retired in
// the shared store or whose recorded key differs from the local one, and
// warns once of versions the others use that the local key file lacks.
func (g *Gateway) banKeys(all []store.KeyVersion) {
	b := g.bk
	live, _, _ := g.localKeys()
	var banned [256]bool
	if b.keys.missing == nil {
		b.keys.missing, b.keys.conflict = map[uint8]bool{}, map[uint8]bool{}
	}
	for _, k := range all {
		fp, have := live[k.Version]
		switch {
		case k.Retired:
			banned[k.Version] = true
		case have && fp != k.Fingerprint:
			banned[k.Version] = true
			if !b.keys.conflict[k.Version] {
				b.keys.conflict[k.Version] = true
				g.log.Error("key file disagrees with the other replicas: logins under this version are refused here; copy keys.json from a running replica",
					"version", k.Version, "path", g.keyPath)
			}
		case !have && !b.keys.missing[k.Version]:
			b.keys.missing[k.Version] = true
			g.log.Warn("other replicas use a master-key version this key file lacks: logins under it are refused here until you copy keys.json from a replica that has it",
				"version", k.Version, "path", g.keyPath)
		}
	}
	b.keys.recorded = all
	b.shared.banned.Store(&banned)
	g.events.fire()
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
