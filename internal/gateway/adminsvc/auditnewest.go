package adminsvc

import (
	"context"
	"slices"

	"github.com/tagauth/tagauth/internal/store"
)

// auditNewest returns the newest records matching f with a sequence number
// below before (0: no bound), newest first. The store pages oldest first
// only, so it finds the newest sequence number by search (about 2 log2 N
// one-record queries) and then reads windows backwards from there, each
// four times wider than the last, until it has a page or reaches the start.
func auditNewest(ctx context.Context, st store.Store, f store.AuditFilter, before uint64) ([]store.AuditRecord, []uint64, error) {
	limit := f.PageSize()
	top, err := auditTop(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	if before > 0 {
		top = min(top, before-1)
	}
	var recs []store.AuditRecord
	var seqs []uint64
	upper, span := top, uint64(2*limit)
	for upper > 0 && len(recs) < limit {
		lo := upper - min(span, upper)
		r, s, err := auditWindow(ctx, st, f, lo, upper, limit-len(recs))
		if err != nil {
			return nil, nil, err
		}
		recs, seqs = append(r, recs...), append(s, seqs...)
		upper, span = lo, span*4
	}
	slices.Reverse(recs)
	slices.Reverse(seqs)
	return recs, seqs, nil
}

// auditWindow returns the newest keep records matching f with sequence
// numbers in (lo, hi], oldest first.
func auditWindow(ctx context.Context, st store.Store, f store.AuditFilter, lo, hi uint64, keep int) ([]store.AuditRecord, []uint64, error) {
	var recs []store.AuditRecord
	var seqs []uint64
	f.After, f.Limit = lo, store.MaxAuditLimit
	for {
		r, s, err := st.QueryAudit(ctx, f)
		if err != nil {
			return nil, nil, err
		}
		done := len(r) < f.PageSize()
		for i := range r {
			if s[i] > hi {
				done = true
				break
			}
			recs, seqs = append(recs, r[i]), append(seqs, s[i])
		}
		if len(recs) > keep {
			recs = slices.Delete(recs, 0, len(recs)-keep)
			seqs = slices.Delete(seqs, 0, len(seqs)-keep)
		}
		if done || len(s) == 0 {
			return recs, seqs, nil
		}
		f.After = s[len(s)-1]
	}
}

// auditTop finds the newest sequence number in the store (0 when empty).
func auditTop(ctx context.Context, st store.Store) (uint64, error) {
	next := func(after uint64) (uint64, bool, error) {
		_, s, err := st.QueryAudit(ctx, store.AuditFilter{After: after, Limit: 1})
		if err != nil || len(s) == 0 {
			return 0, false, err
		}
		return s[0], true, nil
	}
	lo, ok, err := next(0) // lo exists
	if err != nil || !ok {
		return 0, err
	}
	// Find hi with nothing after it, doubling the step.
	hi := lo
	for step := uint64(1); ; step *= 2 {
		if hi > ^uint64(0)-step {
			hi = ^uint64(0)
			break
		}
		s, ok, err := next(lo + step - 1)
		if err != nil {
			return 0, err
		}
		if !ok {
			hi = lo + step - 1
			break
		}
		lo = s
	}
	// Invariant: a record at lo, nothing after hi.
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		s, ok, err := next(mid - 1)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = s
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}
