package gateway

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// The admin service's wiring: the small adapters through which
// internal/gateway/adminsvc reaches the gateway's audit writer, master
// keys, registry and statistics.

// openAdmin makes the admin service. The adapters read the gateway's
// parts when called, so the audit writer and the addresses, which exist
// only later in Open, are in place by the first request.
func (g *Gateway) openAdmin() error {
	policy := g.guard.policy.Describe()
	if g.guard.off {
		policy = "lockout disabled"
	}
	svc, err := adminsvc.New(adminsvc.Config{
		Profile:    g.profile,
		Store:      g.store,
		Audit:      adminAudit{g},
		Names:      g.reg,
		Keys:       adminKeys{g},
		Locks:      adminLocks{g.guard},
		LockPolicy: policy,
		Applied:    g.applyAdmin,
		Mu:         &g.adminMu,
		Stats:      g.stats,
		Endpoints: func() adminsvc.Endpoints {
			return adminsvc.Endpoints{CoAP: g.coapPublic, AdminURL: g.adminURL, Fingerprint: g.fingerprint}
		},
		Proto:           g.pcfg,
		KDFFloor:        g.cfg.KDFFloor,
		InsecureTestKDF: g.cfg.InsecureTestKDF,
		SanitizeID:      auditjson.SanitizeID,
		StoreError:      func(op string) { g.metrics.storeError(op) },
		Unlocked:        func() { g.metrics.unlocks.Inc() },
		Now:             g.now,
		Log:             g.log,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	g.admin = svc
	return nil
}

// Admin returns the gateway's admin service, for in-process callers.
func (g *Gateway) Admin() *adminsvc.Service { return g.admin }

// applyAdmin brings the registry in line with an admin write the store
// accepted, before the write is answered, by the one path every registry
// update takes: the entity the write names is read back from the store
// and applied (applyLocked, as the change feed does in notify.go and
// regsync.go). The feed's own notice of the write comes later and finds
// it applied. The service holds adminMu, which applyLocked wants. When
// the registry cannot follow (a row changed by hand), it is reloaded.
func (g *Gateway) applyAdmin(ctx context.Context, c adminsvc.Change) {
	sc := store.Change{ID: c.ID}
	switch c.Op {
	case adminsvc.AddUser, adminsvc.RevokeUser:
		sc.Kind = store.ChangeUser
	case adminsvc.AddDevice, adminsvc.RevokeDevice:
		sc.Kind = store.ChangeDevice
	case adminsvc.Grant, adminsvc.Ungrant:
		sc.Kind, sc.Group = store.ChangeGrant, c.Group
	}
	reload, err := g.applyLocked(ctx, []store.Change{sc})
	if err != nil || reload {
		g.log.Error("registry disagrees with the store; reloading", "err", err)
		g.reloadRegistry(ctx)
	}
	g.events.fire()
}

// reloadRegistry refills the registry from the store, for the rare case
// where the two disagree.
func (g *Gateway) reloadRegistry(ctx context.Context) {
	snap, err := g.store.Snapshot(ctx)
	if err == nil {
		err = loadSnapshot(g.reg, snap)
	}
	if err != nil {
		g.log.Error("reloading the registry from the store failed", "err", err)
	}
}

// adminAudit is the audit writer as the admin service sees it. A record
// that cannot be kept counts as a refusal to keep one.
type adminAudit struct{ g *Gateway }

func (a adminAudit) Ready() error {
	err := a.g.audit.ready()
	if err != nil {
		a.g.audit.m.refusedKeep.Inc()
	}
	return err
}

func (a adminAudit) Record(rec store.AuditRecord) error {
	err := a.g.audit.record(rec)
	if err != nil {
		a.g.audit.m.refusedKeep.Inc()
	}
	return err
}

func (a adminAudit) Refused(rec store.AuditRecord)  { a.g.audit.refused(rec) }
func (a adminAudit) Submit(rec store.AuditRecord)   { a.g.audit.submit(rec) }
func (a adminAudit) Sync(ctx context.Context) error { return a.g.audit.sync(ctx) }

// adminLocks is the lockout as the admin service sees it.
type adminLocks struct{ gd *guard }

func (l adminLocks) UnlockUser(ctx context.Context, user string, now time.Time) (bool, error) {
	return l.gd.unlock(ctx, user, now)
}

func (l adminLocks) Locked(ctx context.Context, now time.Time) ([]lockout.Lock, error) {
	return l.gd.store.Locked(ctx, now)
}

// adminKeys is the key file as the admin service sees it.
type adminKeys struct{ g *Gateway }

func (k adminKeys) Newest() protocol.MasterKey { return k.g.newestKey() }

func (k adminKeys) Versions() []adminsvc.KeyVersion {
	k.g.keysMu.Lock()
	defer k.g.keysMu.Unlock()
	out := make([]adminsvc.KeyVersion, len(k.g.keys.Keys))
	for i, key := range k.g.keys.Keys {
		out[i] = adminsvc.KeyVersion{Version: key.Version, Created: key.Created}
	}
	return out
}

func (k adminKeys) Rotate(now time.Time) (uint8, error) {
	return k.g.changeKeys(func(f *keyfile.File) (uint8, error) {
		key, err := f.Rotate(rand.Reader, now)
		return key.Version, err
	})
}

func (k adminKeys) Retire(v uint8) error {
	_, err := k.g.changeKeys(func(f *keyfile.File) (uint8, error) { return v, f.Retire(v) })
	return err
}

// changeKeys edits the key file (re-read first, so that an edit made with
// "tagauth gateway keys" meanwhile is kept) and reloads it, which audits
// the change.
func (g *Gateway) changeKeys(edit func(f *keyfile.File) (uint8, error)) (uint8, error) {
	g.keysMu.Lock()
	f, err := keyfile.Load(g.keyPath)
	var v uint8
	if err == nil {
		v, err = edit(f)
	}
	if err == nil {
		err = f.Save(g.keyPath)
	}
	g.keysMu.Unlock()
	if err != nil {
		return 0, err
	}
	return v, g.ReloadKeys()
}

// stats is this replica's verifies per minute over the last hour, and
// its refusals of that hour by reason (unsorted: the service sorts).
func (g *Gateway) stats(now time.Time) adminapi.Stats {
	starts, counts := g.metrics.minutes.snapshot(now)
	out := adminapi.Stats{Now: now.UTC(), Minutes: make([]adminapi.StatsMinute, len(starts))}
	var total [maxKinds]uint64
	for i, c := range counts {
		m := adminapi.StatsMinute{Start: starts[i]}
		for k, n := range c[:len(kinds.kinds)] {
			total[k] += n
			switch kinds.kinds[k].outcome {
			case OutcomeOK:
				m.OK += n
			case OutcomeError:
				m.Error += n
			default:
				m.Refused += n
			}
		}
		out.Minutes[i] = m
	}
	for k, n := range total[:len(kinds.kinds)] {
		if k == kindOK || n == 0 {
			continue
		}
		vk := kinds.kinds[k]
		out.Reasons = append(out.Reasons, adminapi.ReasonCount{Outcome: vk.outcome, Code: vk.code, Reason: vk.reason, Count: n})
	}
	return out
}

// newestVersion is the master-key version new cards and credentials use.
func (g *Gateway) newestVersion() uint8 {
	g.keysMu.Lock()
	defer g.keysMu.Unlock()
	return g.keys.Newest().Version
}
