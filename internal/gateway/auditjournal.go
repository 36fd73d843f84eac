package gateway

import (
	"bytes"
	"context"
	"fmt"
	"github.com/tagauth/tagauth/internal/adminapi"
	"log/slog"
	"math"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// The audit trail's defences (docs/OPERATIONS.md#audit):
//
//   - Durability: every record that must be kept (a login, an admin
//     action, a lockout) is appended to the audit journal
//     (internal/auditlog) before its answer leaves: the records of a CoAP
//     receive batch with one write (auditBatch, the CoAP server's
//     Committer), an admin action's with one write and the fsync policy's
//     flush. The store writer copies the journal into the store; at start
//     what the store lacks is replayed (openJournal).
//   - Flooding: refusals, which anyone can cause, are counted
//     (tagauth_gateway_audit_refusals_total) and sampled
//     (refusalSampler): at most one record per kind and reason per
//     sampling interval, carrying the number of refusals it stands for.
//   - Retention: records older than Config.AuditKeep are pruned.
//   - Failing closed: while records cannot be written (auditHealth), a
//     login is answered busy and an admin action refused with 503; one log
//     line says so when it starts and one when it ends.

// JournalDirName is the audit journal's directory in the data directory.
const JournalDirName = "audit-journal"

// Defaults of the audit settings.
const (
	// DefaultAuditSampleEvery is the sampling interval of refusal
	// records.
	DefaultAuditSampleEvery = 10 * time.Second
	// DefaultAuditKeep is the retention the command line sets by default
	// (Config.AuditKeep zero keeps records forever).
	DefaultAuditKeep = 90 * 24 * time.Hour
	// auditPruneEvery is how often old records are pruned, and
	// auditPruneBatch how many one prune transaction deletes at most.
	auditPruneEvery = time.Hour
	auditPruneBatch = 5000
)

// auditOptions are the writer's settings from Config.
type auditOptions struct {
	sampleEvery time.Duration
	now         func() time.Time
	stored      func() // called after records reached the store
}

// openAudit starts the audit writer with its journal (replaying what a
// crash left), its metrics, the CoAP server's commit hook and retention.
func (g *Gateway) openAudit() error {
	w := newAuditWriterOpts(auditStore{g.store, g.metrics}, g.cfg.AuditOut, g.log,
		auditOptions{sampleEvery: g.cfg.AuditSampleEvery, now: g.now, stored: g.events.fire})
	g.audit = w
	if g.bk != nil {
		w.startCommits(g.bk.st) // replicas: durable commits of verify records
	}
	g.metrics.reg.MustRegister(w.m.collectors()...)
	if err := w.openJournal(journalDir(g.cfg.DataDir), g.cfg.AuditSync); err != nil {
		return fmt.Errorf("gateway: audit journal: %w", err)
	}
	g.coap.srv.Commit = w.commitHook
	w.startPruning(g.cfg.AuditKeep, &w.bg)
	return nil
}

// baseStore is the store behind the metrics wrapper, for the optional
// interfaces (store.AuditJournaled, store.AuditPruner).
func baseStore(st store.Store) store.Store {
	if a, ok := st.(auditStore); ok {
		return a.Store
	}
	return st
}

// openJournal opens the audit journal in dir, stores the records the
// store does not have yet (a crash came between their write and their
// store commit), and from then on keeps every record through it. Call it
// before the first record.
func (w *auditWriter) openJournal(dir string, pol auditlog.Sync) error {
	j, recovered, damaged, err := auditlog.Open(dir, pol)
	if err != nil {
		return err
	}
	for _, d := range damaged {
		// Normal after a crash: the last write was cut short, and its
		// answers never left.
		w.log.Warn("audit journal: torn frame dropped (expected after a crash or power loss)", "where", d)
	}
	jst, _ := baseStore(w.st).(store.AuditJournaled)
	if jst == nil {
		w.log.Warn("the store keeps no audit journal marks: records replayed after a crash may be stored twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mark := uint64(0)
	if jst != nil {
		if mark, err = jst.AuditJournalMark(ctx, j.ID()); err != nil {
			j.Close()
			return fmt.Errorf("reading the audit journal mark from the store: %w", err)
		}
	}
	n := 0
	var recs []store.AuditRecord
	last := mark
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		var err error
		if jst != nil {
			err = jst.AppendAuditJournaled(ctx, j.ID(), last, recs...)
		} else {
			err = w.st.AppendAudit(ctx, recs...)
		}
		if err != nil {
			return err
		}
		buf := w.buf[:0]
		for i := range recs {
			buf = auditjson.AppendLine(buf, &recs[i])
		}
		w.out.Write(buf)
		n += len(recs)
		recs = recs[:0]
		return nil
	}
	for _, e := range recovered {
		if e.Seq <= mark {
			continue
		}
		recs = append(recs, e.Rec)
		last = e.Seq
		if len(recs) == auditMaxBatch {
			if err := flush(); err != nil {
				break
			}
		}
	}
	if err := flush(); err != nil {
		j.Close()
		return fmt.Errorf("storing %d audit records from the journal %s (they were kept before a crash; free space or fix the store, then start again): %w",
			len(recs), dir, err)
	}
	if n > 0 {
		w.log.Warn("audit records recovered from the journal into the store (the gateway stopped without storing them)", "records", n)
		w.m.replayed.Add(float64(n))
	}
	if err := j.Resume(last); err != nil {
		j.Close()
		return err
	}
	if err := j.Ingested(last); err != nil {
		w.log.Warn("cannot delete audit journal segments the store holds", "err", err)
	}
	j.SetOnAppend(w.enqueueChunk)
	w.j, w.jst = j, jst
	return nil
}

// enqueueChunk is the journal's hook: the frames just appended go to the
// writer, in the order of their sequence numbers (the journal's lock is
// held). The copy is the one allocation per batch; decoding waits for the
// writer goroutine, off the CoAP path.
func (w *auditWriter) enqueueChunk(frames []byte, _, last uint64) {
	w.enqueue(auditItem{chunk: bytes.Clone(frames), last: last})
}

// auditBatchKey finds a CoAP worker's auditBatch in its context.
type auditBatchKey struct{}

// auditBatch is one CoAP worker's Committer: the verify records of its
// receive batch, appended to the journal with one write before the
// batch's answers leave.
type auditBatch struct {
	w         *auditWriter
	b         auditlog.Batch
	need      []busyAnswer // successes of the last batch, by Request.Index
	committed bool
}

type busyAnswer struct {
	index int
	p     protocol.Profile
}

// commitHook is Server.Commit for the gateway's CoAP server.
func (w *auditWriter) commitHook(ctx context.Context) (context.Context, coap.Committer) {
	ab := &auditBatch{w: w}
	return context.WithValue(ctx, auditBatchKey{}, ab), ab
}

func (ab *auditBatch) add(r *store.AuditRecord, user, device []byte, from netip.AddrPort, slot int, p protocol.Profile) {
	if ab.committed {
		ab.need, ab.committed = ab.need[:0], false
	}
	addVerify(&ab.b, r, user, device, from)
	ab.need = append(ab.need, busyAnswer{index: slot, p: p})
}

// Commit implements coap.Committer.
func (ab *auditBatch) Commit() error {
	if ab.committed {
		ab.need = ab.need[:0] // a batch without successes
	}
	ab.committed = true
	if ab.b.Len() == 0 {
		return nil
	}
	defer ab.b.Reset()
	w := ab.w
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errAuditDown
	}
	return w.appendJournal(&ab.b)
}

// Replace implements coap.Committer: a login whose record could not be
// written is answered busy, never with m3.
func (ab *auditBatch) Replace(index int, dst []byte) (coap.Code, []byte, bool) {
	for _, n := range ab.need {
		if n.index == index {
			return coapbind.Code(protocol.ErrBusy), protocol.AppendError(dst, n.p, protocol.ErrBusy), true
		}
	}
	return 0, nil, false
}

// Why audit records cannot be written (auditHealth's mask).
const (
	downJournal uint32 = 1 << iota
	downStore
)

// auditHealth is whether audit records can be written. The hot path reads
// one atomic; a change of state takes the lock and logs one line.
type auditHealth struct {
	mask  atomic.Uint32
	mu    sync.Mutex
	since time.Time
	log   *slog.Logger
	m     *auditMetrics
}

func (h *auditHealth) init(log *slog.Logger, m *auditMetrics) { h.log, h.m = log, m }

func (h *auditHealth) down() bool      { return h.mask.Load() != 0 }
func (h *auditHealth) storeDown() bool { return h.mask.Load()&downStore != 0 }

// status is the audit trail's health for GET /v1/status.
func (h *auditHealth) status() adminapi.PartHealth {
	mask := h.mask.Load()
	h.mu.Lock()
	since := h.since
	h.mu.Unlock()
	st := adminapi.PartHealth{Kind: "journal", OK: mask == 0, Since: since}
	switch {
	case mask&downJournal != 0:
		st.Error = "the audit journal cannot be written (disk full or failing?): successful logins are answered busy, admin actions refused"
	case mask&downStore != 0:
		st.Error = "audit records cannot be stored: successful logins are answered busy, admin actions refused"
	}
	return st
}

func (h *auditHealth) set(what uint32, err error) {
	if h.mask.Load()&what != 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.mask.Load()
	if old&what != 0 {
		return
	}
	h.mask.Store(old | what)
	if old != 0 {
		return // already failing: said once
	}
	h.since = time.Now()
	h.m.failing.Set(1)
	part := "journal"
	if what == downStore {
		part = "store"
	}
	h.log.Error("audit records cannot be written: successful logins are answered busy and admin actions refused (503) until they can; "+
		"this is logged once, tagauth_gateway_audit_failing stays 1 meanwhile", "part", part, "err", err)
}

func (h *auditHealth) clear(what uint32) {
	if h.mask.Load()&what == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.mask.Load()
	if old&what == 0 {
		return
	}
	h.mask.Store(old &^ what)
	if old&^what != 0 {
		return
	}
	h.m.failing.Set(0)
	h.log.Warn("audit records are written again: logins and admin actions are served", "failed_for", time.Since(h.since).Round(time.Millisecond).String())
}

// auditMetrics are the audit trail's metrics (see docs/OPERATIONS.md).
type auditMetrics struct {
	failing        prometheus.Gauge
	errors         *prometheus.CounterVec
	refusals       *prometheus.CounterVec
	samples        prometheus.Counter
	samplesDropped prometheus.Counter
	refusedKeep    prometheus.Counter
	pruned         prometheus.Counter
	replayed       prometheus.Counter
}

func newAuditMetrics() auditMetrics {
	return auditMetrics{
		failing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tagauth_gateway_audit_failing",
			Help: "1 while audit records cannot be written (logins answered busy, admin actions refused), else 0."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tagauth_gateway_audit_errors_total",
			Help: "Failed audit writes, by part: journal (append) or store (append to the store)."}, []string{"part"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tagauth_gateway_audit_refusals_total",
			Help: "Refusals seen by the audit trail, by kind and reason (aggregated: see tagauth_gateway_audit_refusal_records_total)."}, []string{"kind", "reason"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{Name: "tagauth_gateway_audit_refusal_records_total",
			Help: "Audit records written for refusals: samples, each carrying the number of refusals it stands for."}),
		samplesDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "tagauth_gateway_audit_refusal_records_dropped_total",
			Help: "Refusal sample records dropped because the audit queue was full."}),
		refusedKeep: prometheus.NewCounter(prometheus.CounterOpts{Name: "tagauth_gateway_audit_unrecorded_total",
			Help: "Records that had to be kept but could not be written: their logins were answered busy, their admin actions refused."}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "tagauth_gateway_audit_pruned_total",
			Help: "Audit records deleted by retention (audit keep)."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "tagauth_gateway_audit_replayed_total",
			Help: "Audit records stored from the journal at start (kept before a crash, not yet in the store)."}),
	}
}

func (m *auditMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.failing, m.errors, m.refusals, m.samples, m.samplesDropped, m.refusedKeep, m.pruned, m.replayed}
}

// Refusal sampling. A refusal's key is its kind and reason, both from
// fixed sets today; the table is bounded anyway (maxSampleKeys, then one
// overflow key per kind... in one overflow key), since a reason could one
// day carry text an attacker chooses.
const (
	maxSampleKeys  = 256
	overflowReason = "other (sample table full)"
)

type sampleKey struct{ kind, reason string }

type sampleSlot struct {
	last    time.Time // when the slot last wrote a record
	pending uint32    // refusals since, not written
	sample  auditItem // the latest of them
	counter prometheus.Counter
}

// refusalSampler turns refusals into at most one record per key per
// interval: the first refusal after a quiet interval is written at once
// (Count: itself and those held since), later ones are counted and the
// latest kept, written with their count when the interval ends (due).
type refusalSampler struct {
	every time.Duration
	m     *auditMetrics
	mu    sync.Mutex
	slots map[sampleKey]*sampleSlot
}

func (s *refusalSampler) init(every time.Duration, m *auditMetrics) {
	if every == 0 {
		every = DefaultAuditSampleEvery
	}
	s.every, s.m, s.slots = every, m, make(map[sampleKey]*sampleSlot)
}

// take counts the refusal it and reports whether to write it now, with
// its Count set.
func (s *refusalSampler) take(it *auditItem, now time.Time) bool {
	k := sampleKey{it.rec.Kind, it.rec.Reason}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slots[k]
	if sl == nil && len(s.slots) >= maxSampleKeys {
		k.reason = overflowReason
		sl = s.slots[k]
	}
	if sl == nil {
		sl = &sampleSlot{counter: s.m.refusals.WithLabelValues(k.kind, k.reason)}
		s.slots[k] = sl
	}
	sl.counter.Inc()
	if s.every < 0 {
		return true // sampling off: every refusal is written
	}
	if !sl.last.IsZero() && now.Sub(sl.last) < s.every && !now.Before(sl.last) {
		if sl.pending < math.MaxUint32 {
			sl.pending++
		}
		sl.sample = *it
		if k.reason == overflowReason {
			sl.sample.rec.Reason = overflowReason
		}
		return false
	}
	it.rec.Count = countOf(uint64(sl.pending) + 1)
	if k.reason == overflowReason {
		it.rec.Reason = overflowReason
	}
	sl.last, sl.pending, sl.sample = now, 0, auditItem{}
	s.m.samples.Inc()
	return true
}

// due writes, through emit, the held refusals of every key whose interval
// has ended, and forgets keys quiet for ten intervals.
func (s *refusalSampler) due(now time.Time, emit func(auditItem)) {
	var out []auditItem
	s.mu.Lock()
	for k, sl := range s.slots {
		ended := now.Sub(sl.last) >= s.every || now.Before(sl.last)
		switch {
		case sl.pending > 0 && ended:
			it := sl.sample
			it.rec.Count = countOf(uint64(sl.pending))
			out = append(out, it)
			sl.last, sl.pending, sl.sample = now, 0, auditItem{}
			s.m.samples.Inc()
		case sl.pending == 0 && now.Sub(sl.last) >= 10*s.every:
			delete(s.slots, k)
		}
	}
	s.mu.Unlock()
	for _, it := range out {
		emit(it)
	}
}

func countOf(n uint64) uint32 {
	switch {
	case n <= 1:
		return 0
	case n > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(n)
}

// startPruning deletes records older than keep now and every
// auditPruneEvery, until the writer stops.
func (w *auditWriter) startPruning(keep time.Duration, wg *sync.WaitGroup) {
	if keep <= 0 {
		return
	}
	p, ok := baseStore(w.st).(store.AuditPruner)
	if !ok {
		w.log.Warn("the store cannot prune audit records: audit keep is not applied")
		return
	}
	wg.Go(func() {
		t := time.NewTicker(auditPruneEvery)
		defer t.Stop()
		for {
			w.prune(p, keep)
			select {
			case <-t.C:
			case <-w.quit:
				return
			}
		}
	})
}

// prune deletes records older than keep, in transactions of
// auditPruneBatch records. It returns how many it deleted.
func (w *auditWriter) prune(p store.AuditPruner, keep time.Duration) int {
	before := w.now().Add(-keep)
	total := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		n, err := p.PruneAudit(ctx, before, auditPruneBatch)
		cancel()
		total += n
		w.m.pruned.Add(float64(n))
		if err != nil {
			w.log.Warn("pruning old audit records failed (retried in an hour)", "err", err)
			break
		}
		if n == 0 {
			break
		}
		select {
		case <-w.quit:
			return total
		default:
		}
	}
	if total > 0 {
		w.log.Info("old audit records pruned", "records", total, "before", before.UTC().Format(time.RFC3339))
	}
	return total
}

// journalDir is the audit journal's directory for a data directory.
func journalDir(data string) string { return filepath.Join(data, JournalDirName) }
