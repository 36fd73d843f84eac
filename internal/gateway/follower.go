package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// The registry's follower: the in-memory registry the verify path reads is
// kept in line with the store by one path, the store's change feed
// (store.Feed), whose every notice names an entity that is read back from
// the store and applied (applyLocked). A single gateway follows its
// embedded store's in-process feed (followLocal); a replica the shared
// store's (followChanges), with fail-closed health and key publication;
// the admin service applies its own writes through applyLocked too
// (applyAdmin), before they are answered.
//
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

// follower owns the registry's updates: the feeds, the admin lock under
// which every update is applied, and the waits of writers for them.
type follower struct {
	store store.Store
	reg   *registry.Memory
	bk    *backends // replicas: shared store and state; nil on a single gateway
	keys  *keyring  // key versions published to and banned by the shared store
	log   *slog.Logger
	now   func() time.Time

	// adminMu serializes registry updates (the feed's and the admin
	// service's writes), so that the store and the registry see them in
	// the same order.
	adminMu sync.Mutex
	events  *events       // the gateway's state changes (waits.go)
	waiters changeWaiters // writers waiting for the registry (waits.go)
	// localFeed is a private store's change feed, which Run follows
	// (followLocal); nil on a replica.
	localFeed store.Feed
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

// run follows the store's change feed until ctx ends: the shared store's,
// and Redis's health, on a replica; the embedded store's on a single
// gateway. Run starts it.
func (f *follower) run(ctx context.Context) {
	if f.bk == nil {
		if f.localFeed != nil {
			f.followLocal(ctx)
		}
		return
	}
	done := make(chan struct{})
	if f.bk.redis != nil {
		go func() {
			defer close(done)
			f.watchRedis(ctx)
		}()
	} else {
		close(done)
	}
	backoff := feedBackoffMin
	for ctx.Err() == nil {
		start := time.Now()
		err := f.followChanges(ctx)
		if ctx.Err() != nil {
			break
		}
		f.setFeedHealth(err)
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
func (f *follower) followChanges(ctx context.Context) error {
	b := f.bk
	feed := b.feed
	b.feed = nil
	if feed == nil {
		c, cancel := context.WithTimeout(ctx, feedOpTimeout)
		l, err := b.st.Listen(c)
		cancel()
		if err != nil {
			return err
		}
		feed = l
		c, cancel = context.WithTimeout(ctx, feedOpTimeout)
		err = f.reloadShared(c)
		cancel()
		if err != nil {
			feed.Close()
			return err
		}
		f.setFeedHealth(nil)
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
			if err := f.feedIdle(ctx, feed, &lastPing); err != nil {
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
		err = f.applyChanges(c, batch)
		cancel()
		if err != nil {
			return fmt.Errorf("applying changes: %w", err)
		}
		f.waiters.applied(batch)
	}
}

// feedIdle is the feed's housekeeping between notifications: publish a
// key file change (a map comparison when there is none), and ping the
// connection once per heartbeat.
func (f *follower) feedIdle(ctx context.Context, feed store.Feed, lastPing *time.Time) error {
	c, cancel := context.WithTimeout(ctx, feedPing)
	defer cancel()
	if err := f.keys.sync(c, false); err != nil {
		return err
	}
	if time.Since(*lastPing) < feedHeartbeat {
		return nil
	}
	*lastPing = time.Now()
	return feed.Ping(c)
}

// reloadShared refills the registry from a snapshot and the key versions.
func (f *follower) reloadShared(ctx context.Context) error {
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	snap, err := f.store.Snapshot(ctx)
	if err != nil {
		return err
	}
	if err := loadSnapshot(f.reg, snap); err != nil {
		return fmt.Errorf("the shared store's registry is inconsistent: %w", err)
	}
	f.bk.reloads.Add(1)
	defer f.events.fire()
	defer f.waiters.applied([]store.Change{{Kind: store.ChangeReset}})
	return f.keys.sync(ctx, false)
}

// applyChanges brings the registry in line with the current state of the
// entities the changes name. Identities are only ever created and revoked
// through the store's API; anything else (a row deleted or a table
// truncated by hand) is handled by a full reload.
func (f *follower) applyChanges(ctx context.Context, changes []store.Change) error {
	f.bk.changes.Add(uint64(len(changes)))
	defer f.events.fire()
	for _, c := range changes {
		if c.Kind == store.ChangeReset {
			f.log.Info("shared store reset: reloading the registry")
			return f.reloadShared(ctx)
		}
	}
	f.adminMu.Lock()
	reload, err := f.applyLocked(ctx, changes)
	f.adminMu.Unlock()
	if err != nil {
		return err
	}
	if reload {
		f.log.Info("shared store changed by hand: reloading the registry")
		return f.reloadShared(ctx)
	}
	return nil
}

func (f *follower) applyLocked(ctx context.Context, changes []store.Change) (reload bool, err error) {
	st, err := f.store.Current(ctx, changes)
	if err != nil {
		return false, err
	}
	reg := f.reg
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
	if st.Keys != nil && f.bk != nil {
		f.keys.ban(st.Keys)
	}
	return false, nil
}

// applyAdmin brings the registry in line with an admin write the store
// accepted, before the write is answered, by the one path every registry
// update takes: the entity the write names is read back from the store
// and applied (applyLocked, as the change feed does). The feed's own
// notice of the write comes later and finds it applied. The service holds
// adminMu, which applyLocked wants. When the registry cannot follow (a
// row changed by hand), it is reloaded.
func (f *follower) applyAdmin(ctx context.Context, c adminsvc.Change) {
	// The write is committed: a client that went away must not leave the
	// registry behind the store (and its audit record saying it is done).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), feedOpTimeout)
	defer cancel()
	sc := store.Change{ID: c.ID}
	switch c.Op {
	case adminsvc.AddUser, adminsvc.RevokeUser:
		sc.Kind = store.ChangeUser
	case adminsvc.AddDevice, adminsvc.RevokeDevice:
		sc.Kind = store.ChangeDevice
	case adminsvc.Grant, adminsvc.Ungrant:
		sc.Kind, sc.Group = store.ChangeGrant, c.Group
	}
	reload, err := f.applyLocked(ctx, []store.Change{sc})
	switch {
	case err != nil:
		f.log.Error("reading an admin write back from the store failed; reloading the registry", "err", err)
		f.reloadRegistry(ctx)
	case reload:
		f.log.Error("registry disagrees with the store; reloading it")
		f.reloadRegistry(ctx)
	}
	f.events.fire()
}

// reloadRegistry refills the registry from the store, for the rare case
// where the two disagree.
func (f *follower) reloadRegistry(ctx context.Context) {
	snap, err := f.store.Snapshot(ctx)
	if err == nil {
		err = loadSnapshot(f.reg, snap)
	}
	if err != nil {
		f.log.Error("reloading the registry from the store failed", "err", err)
	}
}

// watchRedis pings Redis (through the quarantine probe) every second, so
// that its health recovers without traffic and a Redis that restarted
// empty is noticed even when nobody logs in.
func (f *follower) watchRedis(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		f.checkQuarantine(c)
		cancel()
	}
}

func (f *follower) checkQuarantine(ctx context.Context) {
	defer f.events.fire()
	until, in, err := f.bk.redis.Quarantine(ctx, f.now())
	switch {
	case err != nil:
	case in:
		f.bk.quarantine.Store(until.UnixMilli())
	default:
		f.bk.quarantine.Store(0)
	}
}

// load starts following the store's changes and fills a new registry
// from it with the keys in use. A private store's feed is opened before
// the registry is read, so that no change falls between; a replica's is
// opened by openShared, which reloads the registry.
func (f *follower) load(profile protocol.Profile, allowAll bool) (*registry.Memory, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if f.bk == nil {
		feed, err := f.store.Listen(ctx)
		if err != nil {
			return nil, fmt.Errorf("gateway: following the store's changes: %w", err)
		}
		f.localFeed = feed
	}
	snap, err := f.store.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("gateway: reading the registry from the store: %w", err)
	}
	reg := registry.NewMemory(profile, allowAll)
	if err := loadSnapshot(reg, snap); err != nil {
		return nil, fmt.Errorf("gateway: the store's registry is inconsistent: %w", err)
	}
	for _, k := range f.keys.masterKeys() {
		reg.AddKey(k)
	}
	f.reg = reg
	f.log.Info("registry loaded", "users", len(snap.Users), "devices", len(snap.Devices), "grants", len(snap.Grants))
	return reg, nil
}

// loadSnapshot replaces the registry's identities and policy with a store
// snapshot.
func loadSnapshot(reg *registry.Memory, snap store.Snapshot) error {
	users := make([]registry.Entry, len(snap.Users))
	for i, u := range snap.Users {
		users[i] = registry.Entry{ID: u.ID, Revoked: u.Revoked}
	}
	devices := make([]registry.Entry, len(snap.Devices))
	for i, d := range snap.Devices {
		devices[i] = registry.Entry{ID: d.ID, Revoked: d.Revoked, Group: d.Group}
	}
	grants := make([]registry.GrantEntry, len(snap.Grants))
	for i, gr := range snap.Grants {
		grants[i] = registry.GrantEntry{User: gr.User, Group: gr.Group}
	}
	return reg.Load(users, devices, grants)
}

// followLocal applies the changes of a private store's feed until ctx
// ends. The feed is in process: it fails only when the store closes.
func (f *follower) followLocal(ctx context.Context) {
	feed := f.localFeed
	defer feed.Close()
	for {
		c, err := feed.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Error("store change feed ended: the registry no longer follows the store", "err", err)
			}
			return
		}
		batch := []store.Change{c}
		for len(batch) < feedMaxBatch {
			more, ok := nextReady(feed)
			if !ok {
				break
			}
			batch = append(batch, more)
		}
		c2, cancel := context.WithTimeout(ctx, feedOpTimeout)
		err = f.applyLocal(c2, batch)
		cancel()
		// A batch that could not be applied is not dropped: the registry
		// is reloaded whole, until that works, and only then are the
		// writers waiting on the batch told it is in (a revocation must
		// not be lost to one failed read).
		for backoff := feedRetryMin; err != nil; backoff = min(2*backoff, feedRetryMax) {
			f.log.Error("applying the store's changes to the registry failed; reloading it", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			batch = []store.Change{{Kind: store.ChangeReset}}
			c2, cancel := context.WithTimeout(ctx, feedOpTimeout)
			err = f.applyLocal(c2, batch)
			cancel()
		}
		f.waiters.applied(batch)
		f.events.fire()
	}
}

// The waits between reloads of a registry that could not apply its
// store's changes.
const (
	feedRetryMin = 100 * time.Millisecond
	feedRetryMax = 5 * time.Second
)

// nextReady is the feed's next change if one is waiting.
func nextReady(f store.Feed) (store.Change, bool) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := f.Next(ctx)
	return c, err == nil
}

// applyLocal is applyChanges for a private store: no key publication, no
// freshness to keep.
func (f *follower) applyLocal(ctx context.Context, changes []store.Change) error {
	reload := false
	for _, c := range changes {
		reload = reload || c.Kind == store.ChangeReset
	}
	f.adminMu.Lock()
	defer f.adminMu.Unlock()
	if !reload {
		var err error
		if reload, err = f.applyLocked(ctx, changes); err != nil {
			return err
		}
	}
	if !reload {
		return nil
	}
	snap, err := f.store.Snapshot(ctx)
	if err != nil {
		return err
	}
	return loadSnapshot(f.reg, snap)
}

// openShared makes the registry follow the shared store: it checks the
// key file against the other replicas', starts listening for changes and
// reloads the registry, so the gateway is fresh when Open returns. It runs
// after the store was read.
func (f *follower) openShared(customReplay bool) error {
	if f.bk == nil {
		return nil
	}
	b := f.bk
	b.shared = &sharedRegistry{mem: f.reg}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.keys.sync(ctx, true); err != nil {
		return err
	}
	feed, err := b.st.Listen(ctx)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	b.feed = feed
	if err := f.reloadShared(ctx); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	f.setFeedHealth(nil)
	if b.redis != nil {
		f.checkQuarantine(ctx)
	}
	f.log.Info("replica: registry follows the shared store", "replay", replayKind(f.bk, customReplay))
	return nil
}

// verifyRegistry is the registry protocol.Gateway reads: the in-memory
// one, behind the freshness guard on a replica.
func (f *follower) verifyRegistry() protocol.Registry {
	if f.bk != nil {
		return f.bk.shared
	}
	return f.reg
}

// setFeedHealth records the change feed's state: err nil means up and the
// registry reloaded. It logs each change of state once.
func (f *follower) setFeedHealth(err error) {
	defer f.events.fire()
	b := f.bk
	b.health.mu.Lock()
	defer b.health.mu.Unlock()
	switch {
	case err == nil && !b.health.ok:
		b.health.ok, b.health.since, b.health.lastErr = true, f.now(), ""
		b.shared.fresh.Store(true)
		if b.reloads.Load() > 1 {
			f.log.Info("PostgreSQL change feed back and registry reloaded: verifies are served again")
		}
	case err != nil:
		why := "PostgreSQL change feed down: " + err.Error()
		b.shared.reason.Store(&why)
		b.shared.fresh.Store(false)
		if b.health.ok || b.health.since.IsZero() {
			b.health.ok, b.health.since = false, f.now()
			f.log.Error("PostgreSQL change feed lost: every verify answers busy until it is back and the registry is reloaded", "err", err)
		}
		b.health.lastErr = err.Error()
	}
}
