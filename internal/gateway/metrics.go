package gateway

import (
	"context"
	"crypto/sha256"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Metrics.
//
// The gateway keeps its Prometheus metrics in a registry of its own (two
// gateways in one process, as in tests, do not collide) and serves them at
// GET /metrics on the admin port, behind the admin token or the
// read-only Config.MetricsToken.
//
// Every verify outcome has a fixed index (verifyKinds): the counters of
// tagauth_gateway_verify_total are resolved once at start, and the
// per-minute ring the console charts is an array, so the hot path does an
// atomic add per counter and never formats a label.

// verifyKind is one (outcome, code, reason) of a verify.
type verifyKind struct {
	outcome, code, reason string
}

// The gateway's verify outcomes: success, every reason protocol.Gateway
// reports, the refusals of limits.go, and catch-alls.
var (
	gatewayReasons = []*protocol.Reason{
		protocol.ReasonWrongProfile, protocol.ReasonBadMessage, protocol.ReasonStaleT1, protocol.ReasonStaleT2,
		protocol.ReasonLoginReplay, protocol.ReasonCacheFull, protocol.ReasonBusyStore, protocol.ReasonUnknownUser,
		protocol.ReasonRevokedUser, protocol.ReasonUnknownDevice, protocol.ReasonRevokedDevice,
		protocol.ReasonUnknownKeyVersion, protocol.ReasonPolicyDenied, protocol.ReasonBadE, protocol.ReasonBadI,
	}
	extraReasons = []verifyKind{
		{OutcomeRefused, protocol.ErrRejected.String(), ReasonLocked},
		{OutcomeRefused, protocol.ErrRejected.String(), ReasonLockedUnfamiliar},
		{OutcomeRefused, protocol.ErrBusy.String(), ReasonLimitedSource},
		{OutcomeRefused, protocol.ErrBusy.String(), ReasonLimitedDevice},
		{OutcomeRefused, protocol.ErrBusy.String(), ReasonLockoutDown},
		{OutcomeRefused, protocol.ErrBusy.String(), ReasonAuditDown},
	}
)

// kindOK is the index of a successful verify; kindOther that of a reason
// this table does not know (none today).
const kindOK = 0

type kindTable struct {
	kinds    []verifyKind
	byReason map[*protocol.Reason]int
	byExtra  map[string]int
	byCode   [256]int // code-only errors; 0 means use kindOther
	other    int
}

var kinds = func() *kindTable {
	t := &kindTable{byReason: map[*protocol.Reason]int{}, byExtra: map[string]int{}}
	t.kinds = append(t.kinds, verifyKind{OutcomeOK, "ok", ""})
	outcome := func(c protocol.Code) string {
		if c == protocol.ErrInternal {
			return OutcomeError
		}
		return OutcomeRefused
	}
	for _, r := range gatewayReasons {
		c := protocol.CodeOf(r)
		t.byReason[r] = len(t.kinds)
		t.kinds = append(t.kinds, verifyKind{outcome(c), c.String(), r.Name()})
	}
	for _, k := range extraReasons {
		t.byExtra[k.reason] = len(t.kinds)
		t.kinds = append(t.kinds, k)
	}
	for c := protocol.ErrMalformed; c <= protocol.ErrInternal; c++ {
		t.byCode[c] = len(t.kinds)
		reason := c.String()
		if c == protocol.ErrInternal {
			reason = "internal error" // what reasonOf says of an error without a code
		}
		t.kinds = append(t.kinds, verifyKind{outcome(c), c.String(), reason})
	}
	t.other = len(t.kinds)
	t.kinds = append(t.kinds, verifyKind{OutcomeRefused, "other", "other"})
	return t
}()

// index is the kind of a verify that ended with err (nil: success) and
// the reason override why.
func (t *kindTable) index(err error, why string) int {
	if err == nil {
		return kindOK
	}
	if why != "" {
		if i, ok := t.byExtra[why]; ok {
			return i
		}
		return t.other
	}
	if r := protocol.ReasonOf(err); r != nil {
		if i, ok := t.byReason[r]; ok {
			return i
		}
		return t.other
	}
	if i := t.byCode[protocol.CodeOf(err)]; i != 0 {
		return i
	}
	return t.other
}

// gwMetrics are one gateway's metrics.
type gwMetrics struct {
	reg      *prometheus.Registry
	handler  http.Handler
	verify   []prometheus.Counter // by kinds index
	latency  prometheus.Histogram
	kvVec    *prometheus.CounterVec
	kv       [2][256]atomic.Pointer[counterBox]
	storeErr *prometheus.CounterVec
	lockouts prometheus.Counter
	unlocks  prometheus.Counter
	minutes  minuteRing

	metricsTokenHash [sha256.Size]byte
	hasMetricsToken  bool
}

type counterBox struct{ c prometheus.Counter }

// latencyBuckets span a verify from the fast path (tens of microseconds)
// to a slow shared store.
var latencyBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1}

func newMetrics(g *Gateway) *gwMetrics {
	m := &gwMetrics{reg: prometheus.NewRegistry()}
	if g.cfg.MetricsToken != "" {
		m.metricsTokenHash, m.hasMetricsToken = sha256.Sum256([]byte(g.cfg.MetricsToken)), true
	}
	f := promauto{m.reg}
	verify := f.counterVec("tagauth_gateway_verify_total",
		"Verify requests on /tagauth/verify by outcome, wire code and precise reason (never a user or device id).",
		"outcome", "code", "reason")
	for _, k := range kinds.kinds {
		m.verify = append(m.verify, verify.WithLabelValues(k.outcome, k.code, k.reason))
	}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tagauth_gateway_verify_duration_seconds",
		Help: "Time to answer a verify request, from its arrival at the handler to its answer.", Buckets: latencyBuckets})
	m.reg.MustRegister(m.latency)
	m.kvVec = f.counterVec("tagauth_gateway_verify_key_version_total",
		"Successful verifies by the master-key version of the user's card and of the device's credential: a retired version must be at zero first.",
		"role", "kv")
	m.storeErr = f.counterVec("tagauth_gateway_store_errors_total",
		"Failures of the registry store (op=admin, audit) and of the lockout store (op=lockout).", "op")
	for _, op := range []string{"admin", "audit", "lockout"} {
		m.storeErr.WithLabelValues(op)
	}
	m.lockouts = f.counter("tagauth_gateway_lockouts_total", "Locks set by too many failed logins (of one source, or of a user's unfamiliar sources).")
	m.unlocks = f.counter("tagauth_gateway_unlocks_total", "Users unlocked by an operator.")

	f.gauge("tagauth_gateway_replay_cache_entries", "Entries in the in-memory replay cache, expired ones not yet dropped included (absent with a shared cache: see its own metrics).", func() float64 {
		if l, ok := g.replayCache.(interface{ Len() int }); ok {
			return float64(l.Len())
		}
		return math.NaN()
	})
	f.gauge("tagauth_gateway_key_versions", "Master-key versions in use (live in the key file).", func() float64 {
		return float64(len(g.KeyVersions()))
	})
	f.gauge("tagauth_gateway_key_newest_version", "Master-key version new cards and credentials are issued under.", func() float64 {
		return float64(g.keys.newest().Version)
	})
	f.gauge("tagauth_gateway_audit_queue_depth", "Audit records waiting for the store writer; at capacity verifies wait.", func() float64 {
		if g.audit == nil {
			return 0
		}
		return float64(g.audit.depth())
	})
	f.counterFunc("tagauth_gateway_admin_token_failures_total", "Admin API, console and metrics requests with a missing or wrong token.",
		func() float64 { return float64(g.guard.tokens.failures.Load()) })
	f.counterFunc("tagauth_gateway_admin_token_throttled_total", "Admin requests refused unchecked (429) because their source had too many wrong tokens.",
		func() float64 { return float64(g.guard.tokens.throttled.Load()) })
	f.counterFunc("tagauth_gateway_admin_conns_refused_total", "Admin connections closed at once: over the total or the per-source limit.", func() float64 {
		if g.guard.conns == nil {
			return 0
		}
		return float64(g.guard.conns.refused.Load())
	})
	f.gauge("tagauth_gateway_admin_conns", "Admin connections open now.", func() float64 {
		if g.guard.conns == nil {
			return 0
		}
		return float64(g.guard.conns.opened())
	})
	f.gauge("tagauth_gateway_locked_users", "Locks in force now: of a user's logins from one source, or from every source unfamiliar to the user.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		l, err := g.guard.store.Locked(ctx, g.now())
		if err != nil {
			m.storeError("lockout")
			return math.NaN()
		}
		return float64(len(l))
	})
	stat := func(name, help string, v func() uint64) {
		f.counterFunc("tagauth_gateway_coap_"+name+"_total", help, func() float64 {
			if g.coap == nil || g.coap.srv == nil {
				return 0
			}
			return float64(v())
		})
	}
	st := func() *coap.Stats { return &g.coap.srv.Stats }
	stat("received", "CoAP datagrams read.", func() uint64 { return st().Received.Load() })
	stat("malformed", "CoAP datagrams that are not CoAP messages, dropped.", func() uint64 { return st().Malformed.Load() })
	stat("oversized", "CoAP datagrams over the size limit.", func() uint64 { return st().Oversized.Load() })
	stat("duplicates", "Retransmitted CONs answered from the response cache.", func() uint64 { return st().Duplicates.Load() })
	stat("responses", "CoAP datagrams sent.", func() uint64 { return st().Responses.Load() })
	stat("dropped", "Well-formed CoAP datagrams that got no answer.", func() uint64 { return st().Dropped.Load() })
	info := f.gaugeVec("tagauth_gateway_info", "Always 1; the label says the profile served.", "profile")
	info.WithLabelValues(g.profile.String()).Set(1)

	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: promLog{g}, Registry: m.reg})
	return m
}

// observe counts one verify. kvUser and kvDevice count only on success.
func (m *gwMetrics) observe(err error, why string, kvUser, kvDevice uint8, elapsed time.Duration, now time.Time) {
	i := kinds.index(err, why)
	m.verify[i].Inc()
	m.latency.Observe(elapsed.Seconds())
	m.minutes.add(now, i)
	if err == nil {
		m.kvCounter(0, kvUser).Inc()
		m.kvCounter(1, kvDevice).Inc()
	}
}

// limitedOne counts a rate-limited request, which never reaches observe.
func (m *gwMetrics) limitedOne(reason string, now time.Time) {
	i := kinds.byExtra[reason]
	m.verify[i].Inc()
	m.minutes.add(now, i)
}

// depth is the number of audit records queued for the store.
func (w *auditWriter) depth() int { return len(w.ch) }

// auditStore counts the audit writer's store failures in the metrics; the
// writer itself logs and retries them.
type auditStore struct {
	store.Store
	m *gwMetrics
}

func (s auditStore) AppendAudit(ctx context.Context, recs ...store.AuditRecord) error {
	err := s.Store.AppendAudit(ctx, recs...)
	if err != nil {
		s.m.storeError("audit")
	}
	return err
}

func (m *gwMetrics) kvCounter(role int, kv uint8) prometheus.Counter {
	if b := m.kv[role][kv].Load(); b != nil {
		return b.c
	}
	name := "user"
	if role == 1 {
		name = "device"
	}
	b := &counterBox{m.kvVec.WithLabelValues(name, strconv.Itoa(int(kv)))}
	m.kv[role][kv].CompareAndSwap(nil, b)
	return m.kv[role][kv].Load().c
}

func (m *gwMetrics) storeError(op string) { m.storeErr.WithLabelValues(op).Inc() }

// stats is this replica's verifies per minute over the last hour, and
// its refusals of that hour by reason (unsorted: the service sorts).
func (m *gwMetrics) stats(now time.Time) adminapi.Stats {
	starts, counts := m.minutes.snapshot(now)
	out := adminapi.Stats{Now: now.UTC(), Minutes: make([]adminapi.StatsMinute, len(starts))}
	var total [maxKinds]uint64
	for i, c := range counts {
		m := adminapi.StatsMinute{Start: starts[i]}
		for k, n := range c[:len(kinds.kinds)] {
			total[k] += n
			switch kinds.kinds[k].outcome {
			case OutcomeOK:
				m.OK += n
			case OutcomeError:
				m.Error += n
			default:
				m.Refused += n
			}
		}
		out.Minutes[i] = m
	}
	for k, n := range total[:len(kinds.kinds)] {
		if k == kindOK || n == 0 {
			continue
		}
		vk := kinds.kinds[k]
		out.Reasons = append(out.Reasons, adminapi.ReasonCount{Outcome: vk.outcome, Code: vk.code, Reason: vk.reason, Count: n})
	}
	return out
}

// serveMetrics is GET /metrics, behind auth: the roles of routeRoles or
// the metrics token.
func (g *Gateway) serveMetrics(w http.ResponseWriter, r *http.Request) {
	g.metrics.handler.ServeHTTP(w, r)
}

// MetricsRegistry is the gateway's Prometheus registry, for embedding
// programs that serve or push metrics their own way.
func (g *Gateway) MetricsRegistry() *prometheus.Registry { return g.metrics.reg }

// promauto registers metrics in one registry.
type promauto struct{ reg *prometheus.Registry }

func (p promauto) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	p.reg.MustRegister(c)
	return c
}

func (p promauto) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	p.reg.MustRegister(c)
	return c
}

func (p promauto) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	c := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	p.reg.MustRegister(c)
	return c
}

func (p promauto) gauge(name, help string, f func() float64) {
	p.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

func (p promauto) counterFunc(name, help string, f func() float64) {
	p.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// promLog sends promhttp's errors to the gateway log.
type promLog struct{ g *Gateway }

func (l promLog) Println(v ...any) {
	l.g.log.Warn("serving metrics failed", "err", strings.TrimSpace(fmtln(v...)))
}

func fmtln(v ...any) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteByte(' ')
		}
		if e, ok := x.(error); ok {
			b.WriteString(e.Error())
		} else if s, ok := x.(string); ok {
			b.WriteString(s)
		}
	}
	return b.String()
}

// minuteRing counts verify kinds per minute for the last hour, for the
// console's overview (GET /v1/stats). Each replica counts its own verifies.
// A slot is reset when a new minute first lands in it; counts racing with
// that reset may be lost, which a chart does not show.
type minuteRing struct {
	mu    sync.Mutex // serializes resets
	slots [ringMinutes]minuteSlot
}

const ringMinutes = 60

type minuteSlot struct {
	minute atomic.Int64 // Unix minute the counts belong to
	counts [maxKinds]atomic.Uint64
}

// maxKinds bounds len(kinds.kinds); init checks it.
const maxKinds = 40

func init() {
	if len(kinds.kinds) > maxKinds {
		panic("gateway: raise maxKinds")
	}
}

func (r *minuteRing) add(now time.Time, kind int) {
	m := now.Unix() / 60
	s := &r.slots[m%ringMinutes]
	if s.minute.Load() != m {
		r.mu.Lock()
		if s.minute.Load() != m {
			for i := range s.counts {
				s.counts[i].Store(0)
			}
			s.minute.Store(m)
		}
		r.mu.Unlock()
	}
	s.counts[kind].Add(1)
}

// snapshot returns the counts of the ringMinutes minutes up to now's,
// oldest first.
func (r *minuteRing) snapshot(now time.Time) (starts []time.Time, counts [][maxKinds]uint64) {
	cur := now.Unix() / 60
	for m := cur - ringMinutes + 1; m <= cur; m++ {
		var c [maxKinds]uint64
		s := &r.slots[m%ringMinutes]
		if s.minute.Load() == m {
			for i := range c {
				c[i] = s.counts[i].Load()
			}
		}
		starts = append(starts, time.Unix(m*60, 0).UTC())
		counts = append(counts, c)
	}
	return starts, counts
}
