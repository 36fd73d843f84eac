package adminsvc

import (
	"cmp"
	"context"
	"github.com/tagauth/tagauth/internal/buildinfo"
	"slices"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

func timePtr(t time.Time, ok bool) *time.Time {
	if !ok {
		return nil
	}
	t = t.UTC()
	return &t
}

// Users lists every user, revoked ones included.
func (s *Service) Users(ctx context.Context) (adminapi.UserList, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return adminapi.UserList{}, err
	}
	out := adminapi.UserList{Users: make([]adminapi.UserInfo, len(snap.Users))}
	for i, u := range snap.Users {
		out.Users[i] = adminapi.UserInfo{ID: u.ID, KV: u.KV, Created: u.Created.UTC(), Revoked: u.Revoked, RevokedAt: timePtr(u.RevokedAt, u.Revoked)}
	}
	return out, nil
}

// Devices lists every device, revoked ones included.
func (s *Service) Devices(ctx context.Context) (adminapi.DeviceList, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return adminapi.DeviceList{}, err
	}
	out := adminapi.DeviceList{Devices: make([]adminapi.DeviceInfo, len(snap.Devices))}
	for i, d := range snap.Devices {
		out.Devices[i] = adminapi.DeviceInfo{ID: d.ID, KV: d.KV, Group: d.Group, Created: d.Created.UTC(), Revoked: d.Revoked, RevokedAt: timePtr(d.RevokedAt, d.Revoked)}
	}
	return out, nil
}

// Grants lists the policy's grants.
func (s *Service) Grants(ctx context.Context) (adminapi.GrantList, error) {
	snap, err := s.snapshot(ctx)
	if err != nil {
		return adminapi.GrantList{}, err
	}
	out := adminapi.GrantList{Grants: make([]adminapi.Grant, len(snap.Grants))}
	for i, gr := range snap.Grants {
		out.Grants[i] = adminapi.Grant{User: gr.User, Group: gr.Group}
	}
	return out, nil
}

// Entry is an audit record as the admin API shows it.
func Entry(seq uint64, rec store.AuditRecord) adminapi.AuditEntry {
	return adminapi.AuditEntry{Seq: seq, Time: rec.Time.UTC(), Kind: rec.Kind, Outcome: rec.Outcome, Reason: rec.Reason,
		User: rec.User, Device: rec.Device, Source: rec.Source, KVUser: rec.KVUser, KVDevice: rec.KVDevice,
		LatencyUS: rec.LatencyUS, Detail: rec.Detail, Count: rec.Count}
}

// Audit answers an audit query, oldest first or (q.Newest) newest first.
// It first waits for the records already submitted to reach the store, so
// an operator sees the verify that just happened.
func (s *Service) Audit(ctx context.Context, q adminapi.AuditQuery) (adminapi.AuditPage, error) {
	switch {
	case q.Newest && q.After != 0:
		return adminapi.AuditPage{}, fail(Invalid, "after= pages oldest-first queries; with order=desc use before=")
	case !q.Newest && q.Before != 0:
		return adminapi.AuditPage{}, fail(Invalid, "before= pages order=desc; oldest-first pages use after=")
	case q.Limit < 0:
		return adminapi.AuditPage{}, fail(Invalid, "limit must be a number from 1 to %d", store.MaxAuditLimit)
	}
	f := store.AuditFilter{Kind: q.Kind, User: q.User, Device: q.Device, Outcome: q.Outcome,
		Since: q.Since, Until: q.Until, After: q.After, Limit: q.Limit}
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.c.Audit.Sync(ctx); err != nil {
		s.c.Log.Warn("audit query without waiting for pending records", "err", err)
	}
	var recs []store.AuditRecord
	var seqs []uint64
	var err error
	if q.Newest {
		recs, seqs, err = auditNewest(ctx, s.c.Store, f, q.Before)
	} else {
		recs, seqs, err = s.c.Store.QueryAudit(ctx, f)
	}
	if err != nil {
		return adminapi.AuditPage{}, s.storeError("audit query", err)
	}
	page := adminapi.AuditPage{Records: make([]adminapi.AuditEntry, len(recs)), Next: f.After}
	for i, rec := range recs {
		page.Records[i] = Entry(seqs[i], rec)
		page.Next = seqs[i]
	}
	return page, nil
}

// Unlock lifts every lock of a user's and clears their failure counts.
func (s *Service) Unlock(ctx context.Context, source, id string) (adminapi.Unlocked, error) {
	if err := store.CheckID(id); err != nil {
		return adminapi.Unlocked{}, failWith(Invalid, err, "user: %v", err)
	}
	if s.c.Names.UserState(id) == protocol.Unknown {
		return adminapi.Unlocked{}, failWith(NotFound, store.ErrNotFound, "no user %q", id)
	}
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	was, err := s.c.Locks.UnlockUser(ctx, id, s.now())
	if err != nil {
		s.c.StoreError("lockout")
		s.c.Log.Error("lockout store failed", "op", "unlock", "err", err)
		return adminapi.Unlocked{}, failWith(Internal, err, "unlock: the lockout store failed (see the gateway log)")
	}
	s.c.Unlocked()
	detail := "was not locked; failures cleared"
	if was {
		detail = "lock lifted; failures cleared"
	}
	s.c.Audit.Submit(ByCaller(ctx, store.AuditRecord{Time: s.now(), Kind: adminapi.KindLockout, Outcome: adminapi.OutcomeOK, Reason: "unlocked by admin",
		User: id, Source: source, Detail: detail}))
	return adminapi.Unlocked{ID: id, WasLocked: was}, nil
}

// Locks lists the locks in force and the policy.
func (s *Service) Locks(ctx context.Context) (adminapi.LockList, error) {
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	locks, err := s.c.Locks.Locked(ctx, s.now())
	if err != nil {
		s.c.StoreError("lockout")
		return adminapi.LockList{}, failWith(Internal, err, "locks: the lockout store failed (see the gateway log)")
	}
	out := adminapi.LockList{Policy: s.c.LockPolicy, Locks: make([]adminapi.LockInfo, 0, len(locks))}
	for _, l := range locks {
		user, scope, src, ok := lockout.ParseKey(l.Key)
		if !ok {
			continue
		}
		li := adminapi.LockInfo{User: user, Scope: scope.String(), Until: l.Until.UTC()}
		if scope == lockout.ScopeSource {
			li.Source = src.String()
		}
		out.Locks = append(out.Locks, li)
	}
	return out, nil
}

// Stats is this replica's last hour of verifies, its refusals sorted most
// frequent first.
func (s *Service) Stats() adminapi.Stats {
	st := s.c.Stats(s.now())
	slices.SortFunc(st.Reasons, func(a, b adminapi.ReasonCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Reason, b.Reason))
	})
	return st
}

// Status is the health of this replica and its backends: OK only when
// every part is.
func (s *Service) Status(context.Context) (adminapi.Status, error) {
	st := s.c.Health()
	st.Profile, st.Build = s.c.Profile.String(), buildinfo.Read()
	st.OK = st.Store.OK && st.Replay.OK && st.Audit.OK
	return st, nil
}
