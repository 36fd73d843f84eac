package adminsvc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Bulk provisioning: every row of a batch is checked before any device is
// created, the store creates them all or none (store.DeviceBatcher), and
// each device gets its own audit record, as a single Provision writes it
// (with the batch's size in Detail), so that "who provisioned device X"
// has one answer whichever way it was provisioned.

// maxProblems is how many bad rows a refusal names; it says how many
// more there are.
const maxProblems = 20

// ProvisionBatch provisions every device of rows under the newest master
// key, or none: a refusal names the line of every bad row it found (up
// to maxProblems): an invalid id or group, an id twice in the batch, an
// id already provisioned (revoked ids stay taken) or, under classic, a
// user's. The result holds each device's credential file, in the rows'
// order; the caller clears it once sent (BatchResult.Clear).
func (s *Service) ProvisionBatch(ctx context.Context, source string, rows []adminapi.DeviceRow) (adminapi.BatchResult, error) {
	switch {
	case len(rows) == 0:
		return adminapi.BatchResult{}, fail(Invalid, "no devices in the batch")
	case len(rows) > adminapi.MaxBatchRows:
		return adminapi.BatchResult{}, fail(Invalid, "%d devices: a batch holds at most %d (split the file; each part is provisioned all or none)", len(rows), adminapi.MaxBatchRows)
	}
	batcher, ok := s.c.Store.(store.DeviceBatcher)
	if !ok {
		return adminapi.BatchResult{}, fail(Internal, "this gateway's store cannot provision a batch in one transaction: provision the devices one by one")
	}
	ds := make([]store.Device, len(rows))
	var p problems
	seen := make(map[string]int, len(rows))
	wellFormed := make([]bool, len(rows))
	now := s.now()
	for i, r := range rows {
		ds[i] = store.Device{ID: r.ID, Group: r.Group, KV: 1, Created: now}
		if err := store.CheckID(r.ID); err != nil {
			p.add(r.Line, Invalid, "id: %s", invalidText(err))
			continue
		}
		if err := store.CheckGroup(r.Group, false); err != nil {
			p.add(r.Line, Invalid, "%s", invalidText(err))
			continue
		}
		if first, dup := seen[r.ID]; dup {
			p.add(r.Line, Invalid, "device %q is also on line %d", r.ID, rows[first].Line)
			continue
		}
		seen[r.ID] = i
		wellFormed[i] = true
	}
	s.c.Mu.Lock()
	defer s.c.Mu.Unlock()
	for i, r := range rows {
		if !wellFormed[i] {
			continue
		}
		if err := s.taken(true, r.ID); err != nil {
			p.add(r.Line, Conflict, "%s", err.Error())
		}
	}
	if err := p.err(len(rows)); err != nil {
		return adminapi.BatchResult{}, err
	}

	mk := s.c.Keys.Newest()
	creds := make([]protocol.DeviceCredential, len(rows))
	defer func() {
		for i := range creds {
			clear(creds[i].Tag[:])
		}
	}()
	for i, r := range rows {
		cred, err := protocol.ProvisionDevice(s.c.Profile, r.ID, mk)
		if err != nil {
			clear(mk.Key[:])
			return adminapi.BatchResult{}, failWith(Invalid, err, "line %d: device: %v; nothing was provisioned", r.Line, err)
		}
		creds[i] = cred
		ds[i].KV = mk.Version
		if s.c.Profile == protocol.Classic {
			ds[i].KV = protocol.ClassicKeyVersion
		}
	}
	clear(mk.Key[:])

	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.auditReady(); err != nil {
		return adminapi.BatchResult{}, err
	}
	if err := batcher.CreateDevices(ctx, ds, s.c.Profile); err != nil {
		var re *store.RowError
		if errors.As(err, &re) && re.Index >= 0 && re.Index < len(rows) {
			e := s.storeError(fmt.Sprintf("line %d: device %q", rows[re.Index].Line, re.ID), re.Err)
			e.Msg += "; nothing was provisioned"
			return adminapi.BatchResult{}, e
		}
		return adminapi.BatchResult{}, s.storeError("provisioning the batch (nothing was provisioned)", err)
	}
	for _, d := range ds {
		s.c.Applied(ctx, Change{Op: AddDevice, ID: d.ID, Group: d.Group})
	}
	if err := s.auditBatch(ctx, source, ds); err != nil {
		return adminapi.BatchResult{}, err
	}

	ep := s.c.Endpoints()
	out := adminapi.BatchResult{Devices: make([]adminapi.BatchDevice, len(rows))}
	for i, r := range rows {
		b, err := credfile.Marshal(credfile.Credential{DeviceCredential: creds[i], Gateway: ep.CoAP,
			AdminURL: ep.AdminURL, Fingerprint: ep.Fingerprint})
		if err != nil {
			out.Clear()
			return adminapi.BatchResult{}, failWith(Internal, err, "encoding the credential of line %d failed: %v (the devices are provisioned: revoke them)", r.Line, err)
		}
		out.Devices[i] = adminapi.BatchDevice{Line: r.Line, ID: r.ID, File: adminapi.CredentialFileName(r.ID), KV: ds[i].KV, Credential: b}
	}
	return out, nil
}

// BatchAuditor is an Auditor that can keep the records of one action in
// one step (the gateway's journal: one append, one sync); the service
// uses it when its Auditor has it.
type BatchAuditor interface {
	// RecordAll is Record for many records, all or none.
	RecordAll([]store.AuditRecord) error
}

// auditBatch keeps one record per device of a batch.
func (s *Service) auditBatch(ctx context.Context, source string, ds []store.Device) error {
	done := fmt.Sprintf("the %d devices were provisioned", len(ds))
	batch := fmt.Sprintf(" (batch of %d)", len(ds))
	recs := make([]store.AuditRecord, len(ds))
	now := s.now()
	for i, d := range ds {
		recs[i] = ByCaller(ctx, store.AuditRecord{Time: now, Kind: adminapi.KindProvision, Outcome: adminapi.OutcomeOK, Device: d.ID,
			Source: source, KVDevice: d.KV, Detail: groupDetail(d.Group) + batch})
	}
	if ba, ok := s.c.Audit.(BatchAuditor); ok {
		if err := ba.RecordAll(recs); err != nil {
			return failWith(Unavailable, err, "%s, but their audit records could not be written (%v): the devices stand but their credentials are not given out; revoke them, fix the disk or store, and provision other ids", done, err)
		}
		return nil
	}
	for _, r := range recs {
		if err := s.c.Audit.Record(r); err != nil {
			return failWith(Unavailable, err, "%s, but their audit records could not be written (%v): the devices stand but their credentials are not given out; revoke them, fix the disk or store, and provision other ids", done, err)
		}
	}
	return nil
}

// invalidText is a validation error without the store's prefix, for a
// line of a refusal.
func invalidText(err error) string {
	return strings.ReplaceAll(err.Error(), store.ErrInvalid.Error()+": ", "")
}

// problems are the bad rows of a batch, for one refusal.
type problems struct {
	rows     []problem
	conflict bool // a row's id is taken
	invalid  bool // a row is malformed
}

type problem struct {
	line int
	text string
}

func (p *problems) add(line int, k Kind, format string, args ...any) {
	if k == Conflict {
		p.conflict = true
	} else {
		p.invalid = true
	}
	p.rows = append(p.rows, problem{line, fmt.Sprintf(format, args...)})
}

// err is the refusal, naming the first maxProblems bad rows in the
// file's order, or nil when no row was bad. It is a Conflict when every
// bad row is well formed but taken (a re-run), Invalid otherwise.
func (p *problems) err(rows int) error {
	n := len(p.rows)
	if n == 0 {
		return nil
	}
	slices.SortStableFunc(p.rows, func(a, b problem) int { return cmp.Compare(a.line, b.line) })
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d rows refused, nothing was provisioned:", n, rows)
	for _, r := range p.rows[:min(n, maxProblems)] {
		fmt.Fprintf(&b, "\n  line %d: %s", r.line, r.text)
	}
	if n > maxProblems {
		fmt.Fprintf(&b, "\n  ... and %d more", n-maxProblems)
	}
	k := Invalid
	if p.conflict && !p.invalid {
		k = Conflict
	}
	return fail(k, "%s", b.String())
}
