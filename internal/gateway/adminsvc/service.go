// Package adminsvc is the gateway's admin service: enrolment, provisioning,
// revocation, policy, master keys, lockout and the queries an operator
// makes, with the rules each obeys and the audit record each writes. It
// knows no transport: the HTTPS admin API (internal/gateway) and the web
// console (internal/gateway/console) are thin adapters over it, so the
// two can do exactly the same things with the same checks.
//
// The service holds no state of its own. The store is the authority on
// identities (it enforces the classic profile's one namespace in the same
// transaction as the write); the service asks the gateway's registry
// first only to refuse early, before a one-time code is drawn or used up,
// and says why in one place (taken). After each write it tells the
// gateway (Config.Applied), which brings its registry in line.
package adminsvc

import (
	"context"
	"errors"
	"fmt"
	"github.com/tagauth/tagauth/internal/buildinfo"
	"log/slog"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// CallBudget bounds the store work of one admin call.
const CallBudget = 20 * time.Second

// Auditor keeps the audit records of admin actions.
type Auditor interface {
	// Ready returns nil when a record can be kept now: an action is not
	// taken when its record could not be.
	Ready() error
	// Record keeps the record of an action that took effect, before it
	// is answered.
	Record(store.AuditRecord) error
	// Refused notes a refusal; refusals may be sampled.
	Refused(store.AuditRecord)
	// Submit queues a record without waiting for it to be kept.
	Submit(store.AuditRecord)
	// Sync waits until the records submitted so far reach the store.
	Sync(ctx context.Context) error
}

// Names is the gateway's view of the identities it serves (its registry),
// read to refuse early; the store decides.
type Names interface {
	UserState(id string) protocol.IdentityState
	DeviceState(id string) protocol.IdentityState
}

// KeyVersion is one live master-key version, without its key.
type KeyVersion struct {
	Version uint8
	Created time.Time
}

// Keyring is the gateway's master keys.
type Keyring interface {
	// Newest is the key new cards and credentials are issued under; the
	// caller clears it.
	Newest() protocol.MasterKey
	// Versions are the live versions, oldest first.
	Versions() []KeyVersion
	// Rotate adds a version, Retire removes one; both take effect (and
	// are audited) before they return.
	// ctx carries the caller, whom the change's audit records name.
	Rotate(ctx context.Context, now time.Time) (uint8, error)
	Retire(ctx context.Context, version uint8) error
}

// Locks is the lockout store's part the operator uses (lockout.Store has
// it).
type Locks interface {
	UnlockUser(ctx context.Context, user string, now time.Time) (bool, error)
	Locked(ctx context.Context, now time.Time) ([]lockout.Lock, error)
}

// Op is the kind of an admin write, for Config.Applied.
type Op int

// Admin writes.
const (
	AddUser Op = iota + 1
	AddDevice
	RevokeUser
	RevokeDevice
	Grant
	Ungrant
)

// Change is one admin write that the store accepted.
type Change struct {
	Op    Op
	ID    string // the user or device
	Group string // the device's group, or the grant's
}

// Endpoints are where clients reach the gateway, for /v1/info and the
// credential files of devices.
type Endpoints struct {
	CoAP, AdminURL, Fingerprint string
}

// Config is the service's dependencies. Every field is required unless it
// says otherwise.
type Config struct {
	Profile protocol.Profile
	Store   store.Store
	Audit   Auditor
	Names   Names
	Keys    Keyring
	Locks   Locks
	// LockPolicy describes the lockout policy ("lockout disabled" when
	// off), for GET /v1/locks.
	LockPolicy string
	// Applied brings the gateway's registry in line with a write the
	// store accepted, before the write is answered. The service holds
	// Mu while it runs.
	Applied func(ctx context.Context, c Change)
	// Mu serializes admin writes with the gateway's other registry
	// updates, so that the store and the registry see them in one order.
	Mu sync.Locker
	// Stats is this replica's last hour of verifies.
	Stats func(now time.Time) adminapi.Stats
	// Health is this replica's parts' health (store, replay cache,
	// audit); Status fills in the rest.
	Health func() adminapi.Status
	// Endpoints is read at each call: the addresses are known once the
	// gateway listens.
	Endpoints func() Endpoints
	// Proto issues cards (its Now, Rand and Window).
	Proto protocol.Config
	// KDFFloor is the least Argon2id cost of a hardened card;
	// InsecureTestKDF lifts it (tests, load generators).
	KDFFloor        protocol.KDFParams
	InsecureTestKDF bool
	// SanitizeID makes an identity off the wire safe to log.
	SanitizeID func([]byte) string
	// StoreError counts a store failure by operation; Unlocked counts
	// an unlock. Optional.
	StoreError func(op string)
	Unlocked   func()
	// Now is the clock; default time.Now. Log defaults to discarding.
	Now func() time.Time
	Log *slog.Logger
}

// Service is the admin service. Its methods are safe for concurrent use.
// source, where a method takes it, is the caller's address for the audit
// record (the operator's, or the enrolling user's).
type Service struct {
	c Config
}

// New returns the service over cfg's dependencies.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Audit == nil || cfg.Names == nil || cfg.Keys == nil || cfg.Locks == nil ||
		cfg.Applied == nil || cfg.Mu == nil || cfg.Stats == nil || cfg.Health == nil || cfg.Endpoints == nil || cfg.SanitizeID == nil {
		return nil, errors.New("adminsvc: a required dependency is missing")
	}
	if !cfg.Profile.Valid() {
		return nil, fmt.Errorf("adminsvc: unknown profile %v", cfg.Profile)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StoreError == nil {
		cfg.StoreError = func(string) {}
	}
	if cfg.Unlocked == nil {
		cfg.Unlocked = func() {}
	}
	return &Service{c: cfg}, nil
}

func (s *Service) now() time.Time { return s.c.Now() }

// storeError is a store failure as the operator is told it: what was
// attempted, and the cause in words.
func (s *Service) storeError(what string, err error) *Error {
	switch {
	case errors.Is(err, store.ErrFull):
		return failWith(Full, err, "%s: the gateway's disk is full; nothing was changed (free space on the gateway host and retry)", what)
	case errors.Is(err, store.ErrExists):
		return failWith(Conflict, err, "%s: the identity is already taken (revoked identities stay taken)", what)
	case errors.Is(err, store.ErrNamespace):
		return failWith(Conflict, err, "%s: classic profile: user and device identities share one namespace and this id is taken by the other kind", what)
	case errors.Is(err, store.ErrNotFound):
		return failWith(NotFound, err, "%s: not found", what)
	case errors.Is(err, store.ErrInvalid):
		return failWith(Invalid, err, "%s: %s", what, err.Error())
	case errors.Is(err, store.ErrCodeInvalid):
		return failWith(CodeRejected, err, "%s: enrolment code is unknown, used or expired: ask the operator for a new one", what)
	}
	s.c.StoreError("admin")
	s.c.Log.Error("store failure", "op", what, "err", err)
	return failWith(Internal, err, "%s: the gateway's store failed (see the gateway log)", what)
}

// auditReady refuses an action whose record could not be kept.
func (s *Service) auditReady() error {
	if err := s.c.Audit.Ready(); err != nil {
		return failWith(Unavailable, err, "audit records cannot be written now (the gateway log says why): nothing was done; retry once the disk or store is fixed")
	}
	return nil
}

// audited keeps the record of an action that took effect, naming the
// token of ctx's caller (tokens.go); done says what took effect, for the
// refusal when the record cannot be kept.
func (s *Service) audited(ctx context.Context, rec store.AuditRecord, done string) error {
	if err := s.c.Audit.Record(ByCaller(ctx, rec)); err != nil {
		return failWith(Unavailable, err, "%s, but its audit record could not be written (%v): the action stands; fix the disk or store", done, err)
	}
	return nil
}

// taken says why id cannot be given to a new user (or device): the one
// place that words the "revoked ids stay taken" rule and the classic
// profile's one namespace. The store enforces both again when it writes.
func (s *Service) taken(device bool, id string) error {
	self, other := s.c.Names.UserState, s.c.Names.DeviceState
	if device {
		self, other = other, self
	}
	switch {
	case self(id) != protocol.Unknown && device:
		return failWith(Conflict, store.ErrExists, "device %q is already provisioned (revoked ids stay taken): choose another id", id)
	case self(id) != protocol.Unknown:
		return failWith(Conflict, store.ErrExists, "user %q is already registered (revoked ids stay taken): choose another id", id)
	case s.c.Profile == protocol.Classic && other(id) != protocol.Unknown && device:
		return failWith(Conflict, store.ErrNamespace, "classic profile: %q is a user id, and user and device ids share one namespace: choose another id", id)
	case s.c.Profile == protocol.Classic && other(id) != protocol.Unknown:
		return failWith(Conflict, store.ErrNamespace, "classic profile: %q is a device id, and user and device ids share one namespace: choose another id", id)
	}
	return nil
}

// Info is what anyone may learn of the gateway: profile, spec version,
// live key versions, addresses.
func (s *Service) Info() adminapi.Info {
	ks := s.c.Keys.Versions()
	kvs := make([]int, len(ks))
	for i, k := range ks {
		kvs[i] = int(k.Version)
	}
	ep := s.c.Endpoints()
	return adminapi.Info{Profile: s.c.Profile.String(), SpecVersion: protocol.SpecVersion,
		KeyVersions: kvs, Fingerprint: ep.Fingerprint, CoAP: ep.CoAP, Build: buildinfo.Read()}
}
