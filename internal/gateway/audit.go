package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

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
	auditQueue    = 4096
	auditMaxBatch = 512
	auditRetries  = 3
)

// maxSanitized caps a sanitized identity, in bytes of input.
const maxSanitized = protocol.MaxIDLen

// SanitizeID turns an identity claimed on the wire into text that is safe
// to log and print: printable UTF-8 is kept as is; anything else (invalid
// UTF-8, control or format characters) becomes "hex:" followed by the hex
// of the bytes. Input longer than protocol.MaxIDLen bytes is cut there and
// marked with a trailing "...".
func SanitizeID(b []byte) string {
	cut := false
	if len(b) > maxSanitized {
		b, cut = b[:maxSanitized], true
	}
	s := ""
	if printable(b) {
		s = string(b)
	} else {
		s = "hex:" + hex.EncodeToString(b)
	}
	if cut {
		s += "..."
	}
	return s
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		// Spaces other than U+0020 and format characters (bidi
		// overrides) can make a log line lie about what it says.
		if !unicode.IsPrint(r) {
			return false
		}
		b = b[n:]
	}
	return true
}

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
// and writes each as a JSON line. submit blocks when the queue is full, so
// a slow store slows callers down instead of losing records.
type auditWriter struct {
	st    store.Store
	out   *slog.Logger
	log   *slog.Logger
	ch    chan store.AuditRecord
	flush chan chan struct{}
	quit  chan struct{}
	done  chan struct{}

	// mu guards closed; submit holds it for reading while it sends, so
	// close waits for every send in progress before it stops the writer.
	mu     sync.RWMutex
	closed bool
}

func newAuditWriter(st store.Store, out io.Writer, log *slog.Logger) *auditWriter {
	w := &auditWriter{
		st:    st,
		out:   slog.New(slog.NewJSONHandler(out, nil)),
		log:   log,
		ch:    make(chan store.AuditRecord, auditQueue),
		flush: make(chan chan struct{}),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go w.loop()
	return w
}

// submit queues a record; it blocks while the queue is full. After close
// it drops the record with a log line (only an admin request that outlived
// the shutdown grace period can get there).
func (w *auditWriter) submit(r store.AuditRecord) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.log.Warn("audit record after shutdown not stored", "kind", r.Kind, "outcome", r.Outcome, "reason", r.Reason)
		return
	}
	w.ch <- r
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

// close stores what is queued and stops the writer.
func (w *auditWriter) close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.quit)
	<-w.done
	return nil
}

func (w *auditWriter) loop() {
	defer close(w.done)
	batch := make([]store.AuditRecord, 0, auditMaxBatch)
	for {
		select {
		case r := <-w.ch:
			batch = append(batch[:0], r)
			batch = w.drain(batch, auditMaxBatch)
			w.write(batch)
		case reply := <-w.flush:
			w.drainAll(batch)
			close(reply)
		case <-w.quit:
			w.drainAll(batch)
			return
		}
	}
}

// drain adds queued records to batch, without waiting, up to max.
func (w *auditWriter) drain(batch []store.AuditRecord, max int) []store.AuditRecord {
	for len(batch) < max {
		select {
		case r := <-w.ch:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// drainAll writes everything queued now.
func (w *auditWriter) drainAll(batch []store.AuditRecord) {
	for {
		batch = w.drain(batch[:0], auditMaxBatch)
		if len(batch) == 0 {
			return
		}
		w.write(batch)
	}
}

// write logs each record and appends the batch to the store, retrying a
// failed append a few times: the records are already in the JSON log, so
// a store that stays down costs the queryable copy, not the record.
func (w *auditWriter) write(batch []store.AuditRecord) {
	for i := range batch {
		logRecord(w.out, &batch[i])
	}
	delay := 100 * time.Millisecond
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := w.st.AppendAudit(ctx, batch...)
		cancel()
		if err == nil {
			return
		}
		if try == auditRetries {
			w.log.Error("audit records not stored (they are in the audit log output)", "records", len(batch), "err", err)
			return
		}
		w.log.Warn("storing audit records failed, retrying", "records", len(batch), "err", err)
		time.Sleep(delay)
		delay *= 2
	}
}

// logRecord writes one audit record as a JSON line. Every field is either
// fixed text or sanitized: JSON escaping does the rest.
func logRecord(l *slog.Logger, r *store.AuditRecord) {
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String("kind", r.Kind), slog.String("outcome", r.Outcome))
	if r.Reason != "" {
		attrs = append(attrs, slog.String("reason", r.Reason))
	}
	if r.User != "" {
		attrs = append(attrs, slog.String("user", r.User))
	}
	if r.Device != "" {
		attrs = append(attrs, slog.String("device", r.Device))
	}
	if r.Source != "" {
		attrs = append(attrs, slog.String("source", r.Source))
	}
	if r.KVUser != 0 {
		attrs = append(attrs, slog.Int("kv_user", int(r.KVUser)))
	}
	if r.KVDevice != 0 {
		attrs = append(attrs, slog.Int("kv_device", int(r.KVDevice)))
	}
	if r.LatencyUS != 0 {
		attrs = append(attrs, slog.Int64("latency_us", r.LatencyUS))
	}
	if r.Detail != "" {
		attrs = append(attrs, slog.String("detail", r.Detail))
	}
	l.LogAttrs(context.Background(), slog.LevelInfo, "audit", attrs...)
}
