// Package adminsvctest builds an admin service for tests without sockets:
// a bbolt store in a test's temporary directory, an in-memory registry
// that the service's Applied hook keeps in line, and in-memory audit,
// keys and lockout.
package adminsvctest

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
)

// Audit keeps the records it is given; a non-nil Down makes it refuse.
type Audit struct {
	mu      sync.Mutex
	down    error
	kept    []store.AuditRecord
	refused []store.AuditRecord
}

// SetDown makes the audit refuse with err (nil: accept again).
func (a *Audit) SetDown(err error) { a.mu.Lock(); a.down = err; a.mu.Unlock() }

// Ready implements adminsvc.Auditor.
func (a *Audit) Ready() error { a.mu.Lock(); defer a.mu.Unlock(); return a.down }

// Record implements adminsvc.Auditor.
func (a *Audit) Record(r store.AuditRecord) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down != nil {
		return a.down
	}
	a.kept = append(a.kept, r)
	return nil
}

// Refused implements adminsvc.Auditor.
func (a *Audit) Refused(r store.AuditRecord) {
	a.mu.Lock()
	a.refused = append(a.refused, r)
	a.mu.Unlock()
}

// Submit implements adminsvc.Auditor.
func (a *Audit) Submit(r store.AuditRecord) { a.mu.Lock(); a.kept = append(a.kept, r); a.mu.Unlock() }

// Sync implements adminsvc.Auditor.
func (a *Audit) Sync(context.Context) error { return nil }

// Kept are the records kept so far, oldest first.
func (a *Audit) Kept() []store.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.kept)
}

// RefusedRecords are the refusals noted so far, oldest first.
func (a *Audit) RefusedRecords() []store.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.refused)
}

// Last is the newest record kept.
func (a *Audit) Last() store.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.kept) == 0 {
		return store.AuditRecord{}
	}
	return a.kept[len(a.kept)-1]
}

// Keys is a key file in memory.
type Keys struct {
	mu   sync.Mutex
	keys []protocol.MasterKey
	at   time.Time
}

func newKey(v uint8) protocol.MasterKey {
	mk := protocol.MasterKey{Version: v}
	rand.Read(mk.Key[:])
	return mk
}

// Newest implements adminsvc.Keyring.
func (k *Keys) Newest() protocol.MasterKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[len(k.keys)-1]
}

// Versions implements adminsvc.Keyring.
func (k *Keys) Versions() []adminsvc.KeyVersion {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]adminsvc.KeyVersion, len(k.keys))
	for i, mk := range k.keys {
		out[i] = adminsvc.KeyVersion{Version: mk.Version, Created: k.at}
	}
	return out
}

// Rotate implements adminsvc.Keyring.
func (k *Keys) Rotate(context.Context, time.Time) (uint8, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := k.keys[len(k.keys)-1].Version + 1
	k.keys = append(k.keys, newKey(v))
	return v, nil
}

// Retire implements adminsvc.Keyring.
func (k *Keys) Retire(_ context.Context, v uint8) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) == 1 {
		return errors.New("the last key cannot be retired")
	}
	k.keys = slices.DeleteFunc(k.keys, func(mk protocol.MasterKey) bool { return mk.Version == v })
	return nil
}

// Fingerprint is the fingerprint the service's credentials name.
var Fingerprint = strings.Repeat("ab", 32)

// Harness is a service and its parts.
type Harness struct {
	Svc   *adminsvc.Service
	Store store.Store
	Reg   *registry.Memory
	Audit *Audit
	Keys  *Keys
	Locks *lockout.Memory
	// Now is the service's clock.
	Now time.Time

	mu      sync.Mutex
	applied []adminsvc.Change
	lag     bool
}

// SetLag makes the Applied hook leave the registry behind the store, as a
// replica's is until its change feed catches up.
func (h *Harness) SetLag(lag bool) { h.mu.Lock(); h.lag = lag; h.mu.Unlock() }

// Applied are the changes the service reported, oldest first.
func (h *Harness) Applied() []adminsvc.Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.applied)
}

func (h *Harness) apply(_ context.Context, c adminsvc.Change) {
	h.mu.Lock()
	h.applied = append(h.applied, c)
	lag := h.lag
	h.mu.Unlock()
	if lag {
		return
	}
	switch c.Op {
	case adminsvc.AddUser:
		h.Reg.AddUser(c.ID)
	case adminsvc.AddDevice:
		h.Reg.AddDeviceInGroup(c.ID, c.Group)
	case adminsvc.RevokeUser:
		h.Reg.RevokeUser(c.ID)
	case adminsvc.RevokeDevice:
		h.Reg.RevokeDevice(c.ID)
	case adminsvc.Grant:
		h.Reg.Grant(c.ID, c.Group)
	case adminsvc.Ungrant:
		h.Reg.Ungrant(c.ID, c.Group)
	}
}

// New returns a harness serving profile p. Enrolment takes cheap KDF
// parameters (InsecureTestKDF).
func New(t testing.TB, p protocol.Profile) *Harness {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &Harness{Store: st, Reg: registry.NewMemory(p, false), Audit: &Audit{},
		Keys:  &Keys{keys: []protocol.MasterKey{newKey(1)}, at: time.Unix(1_700_000_000, 0).UTC()},
		Locks: lockout.NewMemory(0), Now: time.Now().UTC().Truncate(time.Second)}
	h.Svc, err = adminsvc.New(adminsvc.Config{
		Profile: p, Store: st, Audit: h.Audit, Names: h.Reg, Keys: h.Keys, Locks: h.Locks,
		LockPolicy: "test policy",
		Applied:    h.apply,
		Mu:         &sync.Mutex{},
		Stats:      func(now time.Time) adminapi.Stats { return adminapi.Stats{Now: now} },
		Health: func() adminapi.Status {
			ok := adminapi.PartHealth{OK: true}
			return adminapi.Status{Store: ok, Replay: ok, Audit: ok}
		},
		Endpoints: func() adminsvc.Endpoints {
			return adminsvc.Endpoints{CoAP: "127.0.0.1:5683", AdminURL: "https://127.0.0.1:8443", Fingerprint: Fingerprint}
		},
		Proto:           protocol.Config{Now: time.Now, Rand: rand.Reader},
		InsecureTestKDF: true,
		SanitizeID:      func(b []byte) string { return strings.ToValidUTF8(string(b), "?") },
		Now:             func() time.Time { return h.Now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}
