package gateway

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

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
		Applied:    g.follow.applyAdmin,
		Mu:         &g.follow.adminMu,
		Stats:      g.metrics.stats,
		Health:     g.health, // backends.go
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

// RecordAll implements adminsvc.BatchAuditor.
func (a adminAudit) RecordAll(recs []store.AuditRecord) error {
	err := a.g.audit.recordAll(recs)
	if err != nil {
		a.g.audit.m.refusedKeep.Add(float64(len(recs)))
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

func (k adminKeys) Newest() protocol.MasterKey { return k.g.keys.newest() }

func (k adminKeys) Versions() []adminsvc.KeyVersion { return k.g.keys.created() }

func (k adminKeys) Rotate(ctx context.Context, now time.Time) (uint8, error) {
	return k.g.keys.change(ctx, func(f *keyfile.File) (uint8, error) {
		key, err := f.Rotate(rand.Reader, now)
		return key.Version, err
	})
}

func (k adminKeys) Retire(ctx context.Context, v uint8) error {
	_, err := k.g.keys.change(ctx, func(f *keyfile.File) (uint8, error) { return v, f.Retire(v) })
	return err
}
