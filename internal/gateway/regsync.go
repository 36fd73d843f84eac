package gateway

import (
	"context"
	"fmt"
	"sync"

	"github.com/tagauth/tagauth/internal/store"
)

// Registry updates from the store's change feed.
//
// Every gateway follows its store's change feed (store.Feed): a replica
// the shared store's (notify.go, with fail-closed health and key
// publication), a single gateway the in-process feed of its embedded
// store (followLocal). A writer that must not answer before the registry
// has its write brackets the write with ExpectChange and Wait; the admin
// service's writes are applied at once by applyAdmin, through the same
// read-back of the entity (applyLocked).

// ChangeWait is a pending wait for one change to reach the registry; see
// Gateway.ExpectChange.
type ChangeWait struct {
	c    store.Change
	done chan struct{}
	ws   *changeWaiters
}

// Wait returns once the registry has applied the change (or reloaded from
// the store after it was made), or with ctx's error. On a replica whose
// change feed is down it waits until the feed is back.
func (w *ChangeWait) Wait(ctx context.Context) error {
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.Cancel()
		return fmt.Errorf("gateway: waiting for the registry to apply a %v change: %w", w.c.Kind, ctx.Err())
	}
}

// Cancel gives the wait up (the write failed, say). Calling it after Wait
// returned is harmless.
func (w *ChangeWait) Cancel() {
	w.ws.mu.Lock()
	delete(w.ws.m, w)
	w.ws.mu.Unlock()
}

// changeWaiters are the pending ChangeWaits of one gateway.
type changeWaiters struct {
	mu sync.Mutex
	m  map[*ChangeWait]struct{}
}

// applied releases the waits for the changes of a batch the registry has
// applied; a reset (a full reload) releases every wait.
func (ws *changeWaiters) applied(batch []store.Change) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for w := range ws.m {
		for _, c := range batch {
			if c == w.c || c.Kind == store.ChangeReset {
				close(w.done)
				delete(ws.m, w)
				break
			}
		}
	}
}

// ExpectChange is the wait of an in-process writer that writes the store
// directly (not through the admin service, whose writes applyAdmin
// applies at once): call it before the store write that makes c, then
// Wait after the write succeeded (or Cancel when it failed), so that the
// writer goes on only once the registry the verify path reads has it. c names the entity as the feed
// does: store.Change{Kind: store.ChangeUser, ID: id} for a created or
// revoked user, ChangeDevice likewise, ChangeGrant with ID the user and
// Group the group.
func (g *Gateway) ExpectChange(c store.Change) *ChangeWait {
	w := &ChangeWait{c: c, done: make(chan struct{}), ws: &g.waiters}
	g.waiters.mu.Lock()
	defer g.waiters.mu.Unlock()
	if g.waiters.m == nil {
		g.waiters.m = map[*ChangeWait]struct{}{}
	}
	g.waiters.m[w] = struct{}{}
	return w
}

// openLocalFeed starts listening to a private store's feed, before the
// registry is read from it (openStore), so that no change falls between.
func (g *Gateway) openLocalFeed(ctx context.Context) error {
	if g.bk != nil {
		return nil // a replica's feed is opened by openShared
	}
	f, err := g.store.Listen(ctx)
	if err != nil {
		return fmt.Errorf("gateway: following the store's changes: %w", err)
	}
	g.localFeed = f
	return nil
}

// followLocal applies the changes of a private store's feed until ctx
// ends. The feed is in process: it fails only when the store closes.
func (g *Gateway) followLocal(ctx context.Context) {
	f := g.localFeed
	defer f.Close()
	for {
		c, err := f.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Error("store change feed ended: the registry no longer follows the store", "err", err)
			}
			return
		}
		batch := []store.Change{c}
		for len(batch) < feedMaxBatch {
			more, ok := nextReady(f)
			if !ok {
				break
			}
			batch = append(batch, more)
		}
		c2, cancel := context.WithTimeout(ctx, feedOpTimeout)
		err = g.applyLocal(c2, batch)
		cancel()
		if err != nil {
			g.log.Error("applying the store's changes to the registry", "err", err)
		}
		g.waiters.applied(batch)
		g.events.fire()
	}
}

// nextReady is the feed's next change if one is waiting.
func nextReady(f store.Feed) (store.Change, bool) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := f.Next(ctx)
	return c, err == nil
}

// applyLocal is applyChanges for a private store: no key publication, no
// freshness to keep.
func (g *Gateway) applyLocal(ctx context.Context, changes []store.Change) error {
	reload := false
	for _, c := range changes {
		reload = reload || c.Kind == store.ChangeReset
	}
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	if !reload {
		var err error
		if reload, err = g.applyLocked(ctx, changes); err != nil {
			return err
		}
	}
	if !reload {
		return nil
	}
	snap, err := g.store.Snapshot(ctx)
	if err != nil {
		return err
	}
	return loadSnapshot(g.reg, snap)
}
