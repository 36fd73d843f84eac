package gateway

import (
	"context"
	"net/netip"
	"time"

	"github.com/tagauth/tagauth/internal/store"
)

// SetAuditFault makes the gateway's audit journal appends fail with the
// error fault returns (nil: they succeed), as a full disk does.
func SetAuditFault(g *Gateway, fault func() error) { g.audit.fault.Store(&fault) }

// PruneAuditNow applies the audit retention keep once, at the gateway's
// clock, and returns how many records it deleted.
func PruneAuditNow(g *Gateway, keep time.Duration) int {
	p := baseStore(g.audit.st).(store.AuditPruner)
	return g.audit.prune(p, keep)
}

// FlushAuditSamples writes the refusal samples due at the gateway's
// clock, and waits until they are stored.
func FlushAuditSamples(g *Gateway) error {
	g.audit.sampler.due(g.now(), g.audit.submitSample)
	return g.audit.sync(context.Background())
}

// StateChanged returns a channel closed at the gateway's next state
// change: registry changes applied, backend health or quarantine looked
// at, key versions synced or the key file reloaded, audit records
// stored. Take it before looking at the state.
func StateChanged(g *Gateway) <-chan struct{} { return g.events.wait() }

// AdminConnsChanged returns a channel closed when the admin listener next
// refuses a connection over its limits or sees one close. Take it before
// looking at AdminConns.
func AdminConnsChanged(g *Gateway) <-chan struct{} { return g.guard.conns.changed.wait() }

// AdminConns returns the number of admin connections open from addr's
// source (its IPv6 /64) and the number refused so far by the limits.
func AdminConns(g *Gateway, addr netip.Addr) (open int, refused uint64) {
	return g.guard.conns.openedFrom(addr), g.guard.conns.refused.Load()
}
