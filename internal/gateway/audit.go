package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Audit record kinds and outcomes.
const (
	KindVerify    = "verify"
	KindEnrol     = "enrol"
	KindProvision = "provision"
	KindRevoke    = "revoke"
	KindPolicy    = "policy"
	KindKey       = "key"

	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
	OutcomeError   = "error"
)

// Audit writer sizing: the queue bounds memory when the store is slow,
// a batch bounds one transaction.
const (
	auditQueue    = 8192
	auditMaxBatch = 1024
	auditRetries  = 3
	// auditLinger is how long the writer waits for more records after
	// the first of a batch. At a moderate rate it turns one store
	// transaction (and fsync) per verify into one per auditLinger; under
	// load a batch fills up before then and the submitter that sees it
	// full kicks the writer. Records reach the JSON log and the store at
	// most this much later; sync still flushes at once.
	auditLinger = 20 * time.Millisecond
	// auditNames bounds the writer's cache of sanitized identities.
	auditNames = 1 << 14
)

// reasonOf names the precise cause of a refusal, for the audit record.
func reasonOf(err error) string {
	if r := protocol.ReasonOf(err); r != nil {
		return r.Name()
	}
	var c protocol.Code
	if errors.As(err, &c) {
		return c.String()
	}
	return "internal error"
}

// auditWriter appends records to the store in batches from one goroutine
// and writes each as a JSON line. With a journal (auditjournal.go), every
// record kept is first appended to it, and reaches the writer's queue from
// there; without one (tests, or a gateway without a data directory of its
// own), records go straight to the queue. Enqueueing blocks when the queue
// is full, so a slow store slows callers down instead of losing records.
type auditWriter struct {
	st    store.Store
	out   io.Writer
	log   *slog.Logger
	ch    chan auditItem
	kick  chan struct{} // a batch is waiting in ch (see notify)
	flush chan chan struct{}
	quit  chan struct{}
	done  chan struct{}

	// j is the journal (nil: none); jst is the store's journal marks
	// (nil: the store keeps none, and a replay may store a record twice).
	j   *auditlog.Journal
	jst store.AuditJournaled

	// Owned by the writer goroutine: the JSON lines of a batch, the
	// sanitized identities seen lately (see submitVerify), and records
	// the store refused, retried before anything newer (see retryHeld).
	buf      []byte
	names    map[string]string
	held     []store.AuditRecord
	heldMark uint64

	// mu guards closed; submit holds it for reading while it sends, so
	// close waits for every send in progress before it stops the writer.
	mu     sync.RWMutex
	closed bool

	health  auditHealth
	sampler refusalSampler
	m       auditMetrics
	now     func() time.Time
	bg      sync.WaitGroup // the pruner
	// fault, when set (tests: export_test.go), fails journal appends
	// with its error, as a full disk would.
	fault atomic.Pointer[func() error]
	// stored, when set, is called after records reached the store.
	stored func()

	// Durable commits of a replica's verify records (startCommits).
	commits     chan commitReq
	commitsQuit chan struct{}
	commitsDone chan struct{}
}

func newAuditWriter(st store.Store, out io.Writer, log *slog.Logger) *auditWriter {
	return newAuditWriterOpts(st, out, log, auditOptions{})
}

func newAuditWriterOpts(st store.Store, out io.Writer, log *slog.Logger, o auditOptions) *auditWriter {
	if o.now == nil {
		o.now = time.Now
	}
	w := &auditWriter{
		st:     st,
		out:    out,
		log:    log,
		names:  make(map[string]string),
		ch:     make(chan auditItem, auditQueue),
		kick:   make(chan struct{}, 1),
		flush:  make(chan chan struct{}),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		m:      newAuditMetrics(),
		now:    o.now,
		stored: o.stored,
	}
	w.health.init(log, &w.m)
	w.sampler.init(o.sampleEvery, &w.m)
	go w.loop()
	return w
}

// errAuditDown is what a record that must be kept gets while audit
// records cannot be written: the login is answered busy, the admin action
// refused.
var errAuditDown = errors.New("audit records cannot be written now")

// enqueue hands an item to the writer goroutine, blocking while the queue
// is full.
func (w *auditWriter) enqueue(it auditItem) {
	w.ch <- it
	w.notify()
}

// submit queues a record that must be kept (a success, a lockout, an
// aggregated refusal). With a journal it is appended there first (one
// write); if that fails, the record still goes to the store through the
// queue. It blocks while the queue is full. After close it drops the
// record with a log line (only an admin request that outlived the
// shutdown grace period can get there).
func (w *auditWriter) submit(r store.AuditRecord) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.log.Warn("audit record after shutdown not stored", "kind", r.Kind, "outcome", r.Outcome, "reason", r.Reason)
		return
	}
	if w.j != nil {
		var b auditlog.Batch
		b.Add(&r)
		if w.appendJournal(&b) == nil {
			return // the journal's hook queued it
		}
	}
	w.enqueue(auditItem{rec: r})
}

// record keeps the record of an admin action before the action is
// answered: appended to the journal (and flushed, per the fsync policy),
// or, without a journal, queued. It fails while audit records cannot be
// written; the caller then answers 503.
func (w *auditWriter) record(r store.AuditRecord) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errors.New("audit writer stopped")
	}
	if w.j == nil {
		if w.health.storeDown() {
			return errAuditDown
		}
		w.enqueue(auditItem{rec: r})
		return nil
	}
	var b auditlog.Batch
	b.Add(&r)
	return w.appendJournal(&b)
}

// recordAll is record for the records of one admin action that writes
// many (bulk provisioning): one journal append, hence one sync under
// --audit-fsync always instead of one per record.
func (w *auditWriter) recordAll(rs []store.AuditRecord) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errors.New("audit writer stopped")
	}
	if w.j == nil {
		if w.health.storeDown() {
			return errAuditDown
		}
		for _, r := range rs {
			w.enqueue(auditItem{rec: r})
		}
		return nil
	}
	var b auditlog.Batch
	for i := range rs {
		b.Add(&rs[i])
	}
	return w.appendJournal(&b)
}

// ready says whether records can be written now (nil), so that an admin
// action that could not be recorded is refused before it takes effect.
func (w *auditWriter) ready() error {
	if w.health.down() {
		return errAuditDown
	}
	return nil
}

// appendJournal appends a batch to the journal; the journal's hook queues
// it for the store. While the store refuses records (their queue would
// only grow) it refuses at once with errAuditDown.
func (w *auditWriter) appendJournal(b *auditlog.Batch) error {
	if w.health.storeDown() {
		w.m.refusedKeep.Add(float64(b.Len()))
		return errAuditDown
	}
	if f := w.fault.Load(); f != nil {
		if err := (*f)(); err != nil {
			return w.journalFailed(b, err)
		}
	}
	if _, _, err := w.j.Append(b); err != nil {
		return w.journalFailed(b, err)
	}
	w.health.clear(downJournal)
	return nil
}

func (w *auditWriter) journalFailed(b *auditlog.Batch, err error) error {
	w.m.errors.WithLabelValues("journal").Inc()
	w.m.refusedKeep.Add(float64(b.Len()))
	w.health.set(downJournal, err)
	return fmt.Errorf("%w: %v", errAuditDown, err)
}

// refused takes a refusal record through the sampler: refusals are
// aggregated, never stored one per request (see refusalSampler).
func (w *auditWriter) refused(r store.AuditRecord) {
	it := auditItem{rec: r}
	if w.sampler.take(&it, r.Time) {
		w.submit(it.rec)
	}
}

// notify kicks a lingering writer once a whole batch is queued. While it
// lingers the writer does not receive from ch, so that a submit is a plain
// buffered send: waking the writer for every record cost more than the
// record itself under load.
func (w *auditWriter) notify() {
	if len(w.ch) >= auditMaxBatch {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// auditItem is a queued record. A verify record leaves its identities and
// source as raw bytes (raw.set), which the writer goroutine turns into
// strings: the verify path then allocates nothing for its audit record,
// and the writer, which sees the same few identities again and again,
// sanitizes each once (see name). An item from the journal holds a copy
// of appended frames instead (chunk), the last numbered last.
type auditItem struct {
	rec   store.AuditRecord
	raw   rawNames
	chunk []byte
	last  uint64
}

type rawNames struct {
	set          bool
	user, device rawID
	from         netip.AddrPort
}

// maxSanitized is where auditjson.SanitizeID cuts an identity.
const maxSanitized = protocol.MaxIDLen

// rawID is an identity as claimed on the wire, cut at maxSanitized bytes.
type rawID struct {
	n   uint8
	cut bool
	b   [maxSanitized]byte
}

// String is the identity sanitized, as the writer's name gives it.
func (r *rawID) String() string {
	if r.cut {
		return auditjson.SanitizeID(r.b[:r.n]) + "..."
	}
	return auditjson.SanitizeID(r.b[:r.n])
}

func (r *rawID) set(b []byte) {
	r.cut = len(b) > maxSanitized
	r.n = uint8(copy(r.b[:], b))
}

// submitVerify handles a verify's record, whose User, Device and Source
// are still to be filled from the claimed identities and the sender's
// address (user and device may alias the request: they are copied). A
// refusal goes to the sampler. A success is kept: in the CoAP worker's
// batch when ctx has one (auditBatch, committed before the batch's
// answers leave), else appended to the journal now. It returns an error
// when the success cannot be recorded: the login must then be answered
// busy.
func (w *auditWriter) submitVerify(ctx context.Context, r store.AuditRecord, user, device []byte, from netip.AddrPort, slot int, p protocol.Profile) error {
	if r.Outcome != OutcomeOK {
		// The identities are copied even when the refusal is only
		// counted: it may be the sample written when the interval ends.
		it := auditItem{rec: r, raw: rawNames{set: true, from: from}}
		it.raw.user.set(user)
		it.raw.device.set(device)
		if w.sampler.take(&it, r.Time) {
			fillVerifyNames(&it.rec, user, device, from)
			w.submit(it.rec)
		}
		return nil
	}
	if ab, ok := ctx.Value(auditBatchKey{}).(*auditBatch); ok && ab.w == w {
		if w.health.storeDown() {
			return errAuditDown
		}
		ab.add(&r, user, device, from, slot, p)
		return nil
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.log.Warn("audit record after shutdown not stored", "kind", r.Kind, "outcome", r.Outcome, "reason", r.Reason)
		return errAuditDown
	}
	if w.j != nil {
		var b auditlog.Batch
		addVerify(&b, &r, user, device, from)
		return w.appendJournal(&b)
	}
	it := auditItem{rec: r, raw: rawNames{set: true, from: from}}
	it.raw.user.set(user)
	it.raw.device.set(device)
	w.enqueue(it)
	return nil
}

// addVerify adds a verify record to a journal batch without making
// strings for identities that need no sanitizing (every registered one).
func addVerify(b *auditlog.Batch, r *store.AuditRecord, user, device []byte, from netip.AddrPort) {
	b.AddRaw(r, safeID(user), safeID(device), from)
}

// safeID is id as SanitizeID would make it, without allocating when it is
// already printable and short enough.
func safeID(id []byte) []byte {
	if auditjson.Safe(id) {
		return id
	}
	return []byte(auditjson.SanitizeID(id))
}

// fillVerifyNames fills a verify record's identities and source at once,
// for callers that need the record complete now.
func fillVerifyNames(r *store.AuditRecord, user, device []byte, from netip.AddrPort) {
	r.User, r.Device, r.Source = auditjson.SanitizeID(user), auditjson.SanitizeID(device), from.String()
}

// name returns the sanitized form of a claimed identity, from the cache
// when it was seen before (the lookup does not allocate).
func (w *auditWriter) name(id *rawID) string {
	b := id.b[:id.n]
	if id.cut {
		return auditjson.SanitizeID(b) + "..." // the cut input was longer: say so
	}
	if s, ok := w.names[string(b)]; ok {
		return s
	}
	if len(w.names) >= auditNames {
		clear(w.names) // bounded: a flood of made-up identities only costs misses
	}
	s := auditjson.SanitizeID(b)
	w.names[string(b)] = s
	return s
}

// intern returns a string for b from the writer's cache (the same one
// name uses: a journal's identities are already sanitized, and sanitizing
// a printable identity leaves it as it is).
func (w *auditWriter) intern(b []byte) string {
	if s, ok := w.names[string(b)]; ok {
		return s
	}
	if len(w.names) >= auditNames {
		clear(w.names)
	}
	s := string(b)
	w.names[s] = s
	return s
}

// resolve turns the raw names of a batch's verify records into strings.
// The sources of the whole batch share one allocation.
func (w *auditWriter) resolve(batch []auditItem) {
	var text []byte
	for i := range batch {
		if it := &batch[i]; it.raw.set {
			text = it.raw.from.AppendTo(text)
		}
	}
	all := string(text)
	for i := range batch {
		it := &batch[i]
		if !it.raw.set {
			continue
		}
		it.rec.User, it.rec.Device = w.name(&it.raw.user), w.name(&it.raw.device)
		n := len(it.raw.from.AppendTo(text[:0]))
		it.rec.Source, all = all[:n], all[n:]
		it.raw.set = false
	}
}

// sync waits until every record submitted before the call is in the store
// (or has failed to get there), so that a query sees it.
func (w *auditWriter) sync(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case w.flush <- reply:
	case <-w.done:
		return errors.New("audit writer stopped")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stores what is queued and stops the writer, then closes the
// journal.
func (w *auditWriter) close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	if w.commits != nil {
		close(w.commitsQuit)
		<-w.commitsDone
	}
	close(w.quit)
	<-w.done
	w.bg.Wait()
	if w.j != nil {
		return w.j.Close()
	}
	return nil
}

// auditRetryEvery is how often the writer retries records the store
// refused.
const auditRetryEvery = time.Second

func (w *auditWriter) loop() {
	defer close(w.done)
	batch := make([]auditItem, 0, auditMaxBatch)
	recs := make([]store.AuditRecord, 0, auditMaxBatch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	retry := time.NewTicker(auditRetryEvery)
	defer retry.Stop()
	samples := time.NewTicker(max(w.sampler.every, time.Second))
	defer samples.Stop()
	for {
		if len(w.held) > 0 {
			// The store refused records: retry them before storing
			// anything newer. Newer records still reach the JSON log and
			// join them, up to auditMaxHeld; then the queue waits (and
			// callers are refused while the store is down anyway).
			in := w.ch
			if len(w.held) >= auditMaxHeld {
				in = nil
			}
			select {
			case it := <-in:
				batch = w.drain(append(batch[:0], it), auditMaxBatch)
				recs, mark := w.prepare(batch, recs)
				w.held = append(w.held, recs...)
				w.heldMark = max(w.heldMark, mark)
				clear(recs)
			case <-retry.C:
				w.retryHeld()
			case reply := <-w.flush:
				if w.retryHeld() {
					recs = w.drainAll(batch, recs)
				}
				close(reply)
			case <-w.quit:
				if w.retryHeld() {
					w.drainAll(batch, recs)
				}
				w.giveUp()
				return
			}
			continue
		}
		select {
		case it := <-w.ch:
			batch = w.drain(append(batch[:0], it), auditMaxBatch)
			var reply chan struct{}
			quit := false
			if len(batch) < auditMaxBatch {
				batch, reply, quit = w.gather(batch, linger)
			}
			recs = w.write(batch, recs)
			if reply != nil {
				recs = w.drainAll(batch, recs)
				close(reply)
			}
			if quit {
				w.drainAll(batch, recs)
				w.giveUp()
				return
			}
		case reply := <-w.flush:
			recs = w.drainAll(batch, recs)
			close(reply)
		case <-samples.C:
			recs = w.writeSamples(recs)
		case <-w.quit:
			w.drainAll(batch, recs)
			w.giveUp()
			return
		}
	}
}

// submitSample queues an aggregated refusal from outside the writer
// goroutine (which writes its own with writeSamples).
func (w *auditWriter) submitSample(it auditItem) {
	if it.raw.set {
		it.rec.User, it.rec.Device, it.rec.Source = it.raw.user.String(), it.raw.device.String(), it.raw.from.String()
	}
	w.submit(it.rec)
}

// writeSamples writes the refusal samples due now, from the writer
// goroutine: not through the journal (a sample is not a record that must
// survive a crash, and the writer must never wait on its own queue).
func (w *auditWriter) writeSamples(recs []store.AuditRecord) []store.AuditRecord {
	var items []auditItem
	w.sampler.due(w.now(), func(it auditItem) { items = append(items, it) })
	if len(items) == 0 {
		return recs
	}
	if len(w.held) > 0 {
		r, mark := w.prepare(items, recs)
		w.held = append(w.held, r...)
		w.heldMark = max(w.heldMark, mark)
		clear(r)
		return r
	}
	return w.write(items, recs)
}

// gather waits up to auditLinger for the batch to fill, then takes what
// is queued. It returns early when a submitter finds a batch queued
// (kick), when sync asks for a flush (reply, to be closed once everything
// queued is written) or at shutdown (quit).
func (w *auditWriter) gather(batch []auditItem, linger *time.Timer) (_ []auditItem, reply chan struct{}, quit bool) {
	linger.Reset(auditLinger)
	defer linger.Stop()
	for len(batch) < auditMaxBatch {
		select {
		case <-w.kick:
			batch = w.drain(batch, auditMaxBatch)
		case <-linger.C:
			return w.drain(batch, auditMaxBatch), nil, false
		case reply := <-w.flush:
			return w.drain(batch, auditMaxBatch), reply, false
		case <-w.quit:
			return batch, nil, true
		}
	}
	return batch, nil, false
}

// drain adds queued records to batch, without waiting, up to max.
func (w *auditWriter) drain(batch []auditItem, max int) []auditItem {
	for len(batch) < max {
		select {
		case it := <-w.ch:
			batch = append(batch, it)
		default:
			return batch
		}
	}
	return batch
}

// drainAll writes everything queued now, unless the store refuses.
func (w *auditWriter) drainAll(batch []auditItem, recs []store.AuditRecord) []store.AuditRecord {
	for len(w.held) == 0 {
		batch = w.drain(batch[:0], auditMaxBatch)
		if len(batch) == 0 {
			return recs
		}
		recs = w.write(batch, recs)
	}
	return recs
}

// write logs each record and appends the batch to the store, retrying a
// failed append a few times. If the store still refuses, the records are
// held (retryHeld) and audit is down: logins are answered busy until the
// store takes them.
func (w *auditWriter) write(batch []auditItem, recs []store.AuditRecord) []store.AuditRecord {
	recs, mark := w.prepare(batch, recs)
	delay := 100 * time.Millisecond
	for try := 1; ; try++ {
		err := w.store(recs, mark)
		if err == nil {
			break
		}
		if try == auditRetries {
			w.held = append(w.held[:0], recs...)
			w.heldMark = mark
			w.health.set(downStore, err)
			break
		}
		w.log.Warn("storing audit records failed, retrying", "records", len(recs), "err", err)
		time.Sleep(delay)
		delay *= 2
	}
	clear(recs) // drop the strings until the next batch
	return recs
}

// auditMaxHeld bounds the records kept in memory while the store refuses
// them (they are in the journal too).
const auditMaxHeld = 1 << 16

// prepare turns a batch into records (decoding journal frames, filling
// raw names) and writes their JSON lines, in one write. mark is the
// highest journal sequence number among them.
func (w *auditWriter) prepare(batch []auditItem, recs []store.AuditRecord) (_ []store.AuditRecord, mark uint64) {
	w.resolve(batch)
	recs = recs[:0]
	w.buf = w.buf[:0]
	for i := range batch {
		it := &batch[i]
		if it.chunk != nil {
			// Frames this process wrote a moment ago: they decode.
			_, err := auditlog.ScanInterned(it.chunk, w.intern, func(e auditlog.Entry) { recs = append(recs, e.Rec) })
			if err != nil {
				w.log.Error("audit journal frames do not decode (a bug): some records are only in the journal", "err", err)
			}
			mark = max(mark, it.last)
			it.chunk = nil
			continue
		}
		recs = append(recs, it.rec)
	}
	for i := range recs {
		w.buf = auditjson.AppendLine(w.buf, &recs[i])
	}
	if _, err := w.out.Write(w.buf); err != nil {
		w.log.Error("cannot write audit log lines (the records still go to the store)", "records", len(recs), "err", err)
	}
	if cap(w.buf) > 1<<20 {
		w.buf = nil // an unusually large batch: do not keep its memory
	}
	return recs, mark
}

// store appends recs, with the journal mark when they came from the
// journal, and lets the journal delete what the store now holds.
func (w *auditWriter) store(recs []store.AuditRecord, mark uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if mark > 0 && w.jst != nil {
		err = w.jst.AppendAuditJournaled(ctx, w.j.ID(), mark, recs...)
	} else if len(recs) > 0 {
		err = w.st.AppendAudit(ctx, recs...)
	}
	if err != nil {
		w.m.errors.WithLabelValues("store").Inc()
		return err
	}
	w.health.clear(downStore)
	if mark > 0 {
		if err := w.j.Ingested(mark); err != nil {
			w.log.Warn("cannot delete audit journal segments the store holds", "err", err)
		}
	}
	if w.stored != nil {
		w.stored()
	}
	return nil
}

// retryHeld tries once more to store the records the store refused. It
// reports whether they are stored.
func (w *auditWriter) retryHeld() bool {
	if err := w.store(w.held, w.heldMark); err != nil {
		w.health.set(downStore, err)
		return false
	}
	clear(w.held)
	w.held, w.heldMark = w.held[:0], 0
	return true
}

// giveUp reports, at shutdown, records the store never took.
func (w *auditWriter) giveUp() {
	if len(w.held) == 0 {
		return
	}
	where := "they are in the audit log output only"
	if w.heldMark > 0 {
		where = "they are in the audit journal and go to the store at the next start"
	}
	w.log.Error("audit records not stored at shutdown: "+where, "records", len(w.held))
}

// Durable commits. On a replica a successful verify is admitted only once
// its record is in the shared store (pipeline.go, keep): a replica killed
// at any moment has then let no login through unrecorded. Records that
// arrive while a commit runs wait for the next one, so one commit serves
// every verify in flight. The JSON line is written once the commit holds,
// with the same encoder as every other record (auditjson.AppendLine).

// Commit limits of the verify audit records.
const (
	commitBatch   = 512
	commitTimeout = 2 * time.Second
)

type commitReq struct {
	rec  store.AuditRecord
	done chan error
}

var errCommitterClosed = errors.New("gateway is shutting down")

// startCommits starts the group commit of records to st, for commit. Call
// it before the first commit; close stops it.
func (w *auditWriter) startCommits(st store.Store) {
	w.commits = make(chan commitReq, commitBatch)
	w.commitsQuit = make(chan struct{})
	w.commitsDone = make(chan struct{})
	go w.commitLoop(st)
}

// commit stores rec (and writes its JSON line) before it returns nil.
func (w *auditWriter) commit(rec store.AuditRecord) error {
	req := commitReq{rec: rec, done: make(chan error, 1)}
	select {
	case w.commits <- req:
	case <-w.commitsDone:
		return errCommitterClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-w.commitsDone:
		// The loop answers everything it took before it ends.
		select {
		case err := <-req.done:
			return err
		default:
			return errCommitterClosed
		}
	}
}

func (w *auditWriter) commitLoop(st store.Store) {
	defer close(w.commitsDone)
	batch := make([]commitReq, 0, commitBatch)
	recs := make([]store.AuditRecord, 0, commitBatch)
	var line []byte
	for {
		select {
		case r := <-w.commits:
			batch = append(batch[:0], r)
		case <-w.commitsQuit:
			// Answer what is queued, then stop.
			for {
				select {
				case r := <-w.commits:
					r.done <- errCommitterClosed
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < commitBatch {
			select {
			case r := <-w.commits:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		recs = recs[:0]
		for i := range batch {
			recs = append(recs, batch[i].rec)
		}
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		err := st.AppendAudit(ctx, recs...)
		cancel()
		if err == nil {
			line = line[:0]
			for i := range recs {
				line = auditjson.AppendLine(line, &recs[i])
			}
			if _, werr := w.out.Write(line); werr != nil {
				w.log.Warn("audit lines not written", "records", len(recs), "err", werr)
			}
			if w.stored != nil {
				w.stored()
			}
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}
