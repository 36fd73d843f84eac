package adminsvc

import (
	"context"
	"errors"
	"fmt"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Provision provisions a device under the newest master key and returns
// its credential file, which holds the device's secret tag: the caller
// clears it once sent, and nothing keeps it.
func (s *Service) Provision(ctx context.Context, source string, req adminapi.DeviceRequest) ([]byte, error) {
	d := store.Device{ID: req.ID, Group: req.Group, KV: 1, Created: s.now()}
	if err := store.CheckDevice(&d); err != nil {
		return nil, failWith(Invalid, err, "device: %v", err)
	}
	s.c.Mu.Lock()
	defer s.c.Mu.Unlock()
	if err := s.taken(true, req.ID); err != nil {
		return nil, err
	}
	mk := s.c.Keys.Newest()
	cred, err := protocol.ProvisionDevice(s.c.Profile, req.ID, mk)
	clear(mk.Key[:])
	if err != nil {
		return nil, failWith(Invalid, err, "device: %v", err)
	}
	defer clear(cred.Tag[:])
	d.KV = mk.Version
	if s.c.Profile == protocol.Classic {
		d.KV = protocol.ClassicKeyVersion
	}
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.auditReady(); err != nil {
		return nil, err
	}
	if err := s.c.Store.CreateDevice(ctx, d, s.c.Profile); err != nil {
		return nil, s.storeError("provisioning device", err)
	}
	s.c.Applied(ctx, Change{Op: AddDevice, ID: d.ID, Group: d.Group})
	if err := s.audited(ctx, store.AuditRecord{Time: s.now(), Kind: adminapi.KindProvision, Outcome: adminapi.OutcomeOK, Device: d.ID,
		Source: source, KVDevice: d.KV, Detail: groupDetail(d.Group)}, "the device was provisioned"); err != nil {
		return nil, err
	}
	ep := s.c.Endpoints()
	b, err := credfile.Marshal(credfile.Credential{DeviceCredential: cred, Gateway: ep.CoAP,
		AdminURL: ep.AdminURL, Fingerprint: ep.Fingerprint})
	if err != nil {
		return nil, failWith(Internal, err, "encoding the credential failed: %v", err)
	}
	return b, nil
}

func groupDetail(group string) string {
	if group == "" {
		return "no group"
	}
	return "group " + group
}

// RevokeUser marks a user revoked in the store and then in the registry,
// before it returns: the next verify refuses the user.
func (s *Service) RevokeUser(ctx context.Context, source, id string) (adminapi.Revoked, error) {
	return s.revoke(ctx, source, id, false)
}

// RevokeDevice is RevokeUser for a device.
func (s *Service) RevokeDevice(ctx context.Context, source, id string) (adminapi.Revoked, error) {
	return s.revoke(ctx, source, id, true)
}

func (s *Service) revoke(ctx context.Context, source, id string, device bool) (adminapi.Revoked, error) {
	what, op := "user", RevokeUser
	if device {
		what, op = "device", RevokeDevice
	}
	if err := store.CheckID(id); err != nil {
		return adminapi.Revoked{}, failWith(Invalid, err, "%s: %v", what, err)
	}
	s.c.Mu.Lock()
	defer s.c.Mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	at := s.now()
	if err := s.auditReady(); err != nil {
		return adminapi.Revoked{}, err
	}
	var err error
	if device {
		err = s.c.Store.RevokeDevice(ctx, id, at)
	} else {
		err = s.c.Store.RevokeUser(ctx, id, at)
	}
	if errors.Is(err, store.ErrNotFound) {
		return adminapi.Revoked{}, failWith(NotFound, err, "no %s %q", what, id)
	}
	if err != nil {
		return adminapi.Revoked{}, s.storeError("revoking "+what, err)
	}
	s.c.Applied(ctx, Change{Op: op, ID: id})
	rec := store.AuditRecord{Time: at, Kind: adminapi.KindRevoke, Outcome: adminapi.OutcomeOK, Reason: what + " revoked by admin", Source: source}
	if device {
		rec.Device = id
	} else {
		rec.User = id
	}
	if err := s.audited(ctx, rec, "the "+what+" was revoked"); err != nil {
		return adminapi.Revoked{}, err
	}
	return adminapi.Revoked{ID: id, RevokedAt: at.UTC()}, nil
}

// Grant lets a user log in to every device of a group ("*": all).
func (s *Service) Grant(ctx context.Context, source string, g adminapi.Grant) error {
	return s.policy(ctx, source, g, true)
}

// Ungrant removes a grant.
func (s *Service) Ungrant(ctx context.Context, source string, g adminapi.Grant) error {
	return s.policy(ctx, source, g, false)
}

func (s *Service) policy(ctx context.Context, source string, g adminapi.Grant, grant bool) error {
	sg := store.Grant{User: g.User, Group: g.Group}
	if err := store.CheckGrant(&sg); err != nil {
		return failWith(Invalid, err, "grant: %v", err)
	}
	s.c.Mu.Lock()
	defer s.c.Mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.auditReady(); err != nil {
		return err
	}
	what, op := "granted", Grant
	var err error
	if grant {
		err = s.c.Store.Grant(ctx, sg)
	} else {
		what, op = "ungranted", Ungrant
		err = s.c.Store.Ungrant(ctx, sg)
	}
	if errors.Is(err, store.ErrNotFound) {
		return failWith(NotFound, err, "%s", fmt.Sprintf("no grant of group %q to user %q", sg.Group, sg.User))
	}
	if err != nil {
		return s.storeError("policy", err)
	}
	s.c.Applied(ctx, Change{Op: op, ID: sg.User, Group: sg.Group})
	return s.audited(ctx, store.AuditRecord{Time: s.now(), Kind: adminapi.KindPolicy, Outcome: adminapi.OutcomeOK, Reason: what,
		User: sg.User, Source: source, Detail: "group " + sg.Group}, "the policy was changed")
}
