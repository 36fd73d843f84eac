package gateway

import (
	"context"
	"fmt"
	"sync"

	"github.com/tagauth/tagauth/internal/store"
)

// Waiting for the registry.
//
// The registry follows the store's change feed (follower.go). A writer
// that must not answer before the registry has its write brackets the
// write with ExpectChange and Wait; the admin service's writes are applied
// at once by applyAdmin, through the same read-back of the entity
// (applyLocked). Tests wait on the gateway's events (below), which each
// part fires when its state moves.

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
func (g *Gateway) ExpectChange(c store.Change) *ChangeWait { return g.follow.waiters.expect(c) }

// expect registers a wait for c; see Gateway.ExpectChange.
func (ws *changeWaiters) expect(c store.Change) *ChangeWait {
	w := &ChangeWait{c: c, done: make(chan struct{}), ws: ws}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = map[*ChangeWait]struct{}{}
	}
	ws.m[w] = struct{}{}
	return w
}

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
