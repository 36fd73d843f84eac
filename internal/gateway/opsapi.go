package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/tagauth/tagauth/internal/gateway/console"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/lockout"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// The operator's admin API beyond issue 3's: metrics, lockout, keys,
// per-minute statistics, the newest-first audit query, and the web
// console, which drives all of these (and the rest of the admin API) in
// process, so that the console can do nothing the CLI cannot.
//
//	GET  /metrics                       Prometheus text format (admin or metrics token)
//	POST /v1/users/{id}/unlock          -> Unlocked (id escaped with adminapi.PathSegment)
//	POST /v1/users/unlock {"id": ID}    -> Unlocked (any id, "/" included)
//	GET  /v1/locks                      -> LockList
//	GET  /v1/keys                       -> KeyList
//	POST /v1/keys/rotate                -> KeyChange
//	POST /v1/keys/{version}/retire      -> KeyChange
//	GET  /v1/stats                      -> Stats (this replica's last hour)
//	GET  /v1/audit?order=desc&before=N  newest first (AuditPage.Next is then the before= of the next page)
//	GET  /console/                      the web console

// Unlocked is the answer of POST /v1/users/{id}/unlock.
type Unlocked struct {
	ID        string `json:"id"`
	WasLocked bool   `json:"was_locked"`
}

// LockInfo is one lock: of a user's logins from one source (Scope
// "source", Source its address, /64 or name), from every source not
// familiar to the user (Scope "unfamiliar sources"), or, stored by an
// older version, from everywhere ("all sources").
type LockInfo struct {
	User   string    `json:"user"`
	Scope  string    `json:"scope"`
	Source string    `json:"source,omitempty"`
	Until  time.Time `json:"until"`
}

// LockList is the answer of GET /v1/locks.
type LockList struct {
	Policy string     `json:"policy"`
	Locks  []LockInfo `json:"locks"`
}

// KeyInfo is one master-key version in GET /v1/keys. Users and Devices
// count the identities issued under it, revoked ones excluded.
type KeyInfo struct {
	Version uint8     `json:"version"`
	Created time.Time `json:"created"`
	Newest  bool      `json:"newest"`
	Users   int       `json:"users"`
	Devices int       `json:"devices"`
}

// KeyList is the answer of GET /v1/keys.
type KeyList struct {
	Profile string    `json:"profile"`
	Keys    []KeyInfo `json:"keys"`
}

// KeyChange is the answer of the rotate and retire calls.
type KeyChange struct {
	Version uint8 `json:"version"`
	Newest  uint8 `json:"newest"`
	// HeldBy, in a forced retire, is who was still under the version.
	HeldBy *KeyHolders `json:"held_by,omitempty"`
}

// StatsMinute is one minute of verifies.
type StatsMinute struct {
	Start   time.Time `json:"start"`
	OK      uint64    `json:"ok"`
	Refused uint64    `json:"refused"`
	Error   uint64    `json:"error"`
}

// ReasonCount is how often a verify outcome happened.
type ReasonCount struct {
	Outcome string `json:"outcome"`
	Code    string `json:"code"`
	Reason  string `json:"reason"`
	Count   uint64 `json:"count"`
}

// Stats is the answer of GET /v1/stats: this replica's verifies per
// minute over the last hour (oldest first) and the refusals of that hour
// by reason, most frequent first.
type Stats struct {
	Now     time.Time     `json:"now"`
	Minutes []StatsMinute `json:"minutes"`
	Reasons []ReasonCount `json:"reasons"`
}

// consoleMount is the console the admin mux serves under /console/.
type consoleMount = *console.Console

// openOps prepares lockout, rate limits, metrics and the console. Open
// calls it before binding the admin port.
func (g *Gateway) openOps() error {
	g.guard = newGuard(&g.cfg)
	g.guard.tokens = newTokenGuard(g.log.With("part", "admin"))
	g.metrics = newMetrics(g)
	c, err := console.New(console.Config{
		CheckToken: g.checkConsoleToken,
		Logger:     g.log.With("part", "console"),
		Now:        g.now,
		Profile:    g.profile.String(),
	})
	if err != nil {
		return fmt.Errorf("gateway: console: %w", err)
	}
	g.console = c
	return nil
}

// opsRoutes adds the routes of this file to the admin mux.
func (g *Gateway) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /metrics", g.serveMetrics)
	mux.Handle("POST /v1/users/{id}/unlock", g.auth(g.handleUnlock))
	mux.Handle("POST /v1/users/unlock", g.auth(g.handleUnlock)) // {"id": ...}: every id (adminapi.IDRequest)
	mux.Handle("GET /v1/locks", g.auth(g.handleLocks))
	mux.Handle("GET /v1/keys", g.auth(g.handleKeys))
	mux.Handle("POST /v1/keys/rotate", g.auth(g.handleRotate))
	mux.Handle("POST /v1/keys/{version}/retire", g.auth(g.handleRetire))
	mux.Handle("GET /v1/stats", g.auth(g.handleStats))
	g.console.SetAPI(mux)
	mux.Handle("/console/", g.console)
	mux.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	mux.Handle("GET /{$}", http.RedirectHandler("/console/", http.StatusFound))
}

// checkAdminToken tells whether tok is the admin token, in constant time.
func (g *Gateway) checkAdminToken(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], g.tokenHash[:]) == 1
}

// checkConsoleToken is checkAdminToken for the console's login, behind the
// same per-source backoff as the API's: a positive wait means the token
// was not checked.
func (g *Gateway) checkConsoleToken(r *http.Request, tok string) (bool, time.Duration) {
	return g.tokenCheck(r, tok, g.checkAdminToken)
}

// tokenCheck runs check on a request's token unless its source must wait
// after wrong tokens; it counts the outcome for the backoff.
func (g *Gateway) tokenCheck(r *http.Request, tok string, check func(string) bool) (bool, time.Duration) {
	tg := g.guard.tokens
	src, now := sourceOf(r.RemoteAddr), g.now()
	if wait := tg.wait(src, now); wait > 0 {
		return false, wait
	}
	if !check(tok) {
		tg.failed(src, SanitizeID([]byte(r.URL.Path)), now)
		return false, 0
	}
	// Only the admin token clears the count: the read-only metrics token
	// would otherwise let its holder guess the admin token between
	// scrapes without ever waiting.
	if g.checkAdminToken(tok) {
		tg.succeeded(src)
	}
	return true, 0
}

func (g *Gateway) handleUnlock(w http.ResponseWriter, r *http.Request) {
	id, ok := idOf(w, r)
	if !ok {
		return
	}
	if err := store.CheckID(id); err != nil {
		writeError(w, http.StatusBadRequest, "user: "+err.Error())
		return
	}
	if g.reg.UserState(id) == protocol.Unknown {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user %q", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	was, err := g.guard.unlock(ctx, id, g.now())
	if err != nil {
		g.metrics.storeError("lockout")
		g.log.Error("lockout store failed", "op", "unlock", "err", err)
		writeError(w, http.StatusInternalServerError, "unlock: the lockout store failed (see the gateway log)")
		return
	}
	g.metrics.unlocks.Inc()
	detail := "was not locked; failures cleared"
	if was {
		detail = "lock lifted; failures cleared"
	}
	g.audit.submit(store.AuditRecord{Time: g.now(), Kind: KindLockout, Outcome: OutcomeOK, Reason: "unlocked by admin",
		User: id, Source: r.RemoteAddr, Detail: detail})
	writeJSON(w, http.StatusOK, Unlocked{ID: id, WasLocked: was})
}

func (g *Gateway) handleLocks(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	locks, err := g.guard.store.Locked(ctx, g.now())
	if err != nil {
		g.metrics.storeError("lockout")
		writeError(w, http.StatusInternalServerError, "locks: the lockout store failed (see the gateway log)")
		return
	}
	out := LockList{Policy: g.guard.policy.Describe(), Locks: make([]LockInfo, 0, len(locks))}
	if g.guard.off {
		out.Policy = "lockout disabled"
	}
	for _, l := range locks {
		user, scope, src, ok := lockout.ParseKey(l.Key)
		if !ok {
			continue
		}
		li := LockInfo{User: user, Scope: scope.String(), Until: l.Until.UTC()}
		if scope == lockout.ScopeSource {
			li.Source = src.String()
		}
		out.Locks = append(out.Locks, li)
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) newestVersion() uint8 {
	g.keysMu.Lock()
	defer g.keysMu.Unlock()
	return g.keys.Newest().Version
}

func (g *Gateway) handleKeys(w http.ResponseWriter, r *http.Request) {
	snap, ok := g.snapshot(w, r)
	if !ok {
		return
	}
	users, devices := map[uint8]int{}, map[uint8]int{}
	for _, u := range snap.Users {
		if !u.Revoked {
			users[u.KV]++
		}
	}
	for _, d := range snap.Devices {
		if !d.Revoked {
			devices[d.KV]++
		}
	}
	g.keysMu.Lock()
	newest := g.keys.Newest().Version
	out := KeyList{Profile: g.profile.String(), Keys: make([]KeyInfo, len(g.keys.Keys))}
	for i, k := range g.keys.Keys {
		out.Keys[i] = KeyInfo{Version: k.Version, Created: k.Created.UTC(), Newest: k.Version == newest,
			Users: users[k.Version], Devices: devices[k.Version]}
	}
	g.keysMu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// changeKeys edits the key file (re-read first, so that an edit made with
// "tagauth gateway keys" meanwhile is kept) and reloads it, which audits
// the change.
func (g *Gateway) changeKeys(edit func(f *keyfile.File) (uint8, error)) (KeyChange, error) {
	g.keysMu.Lock()
	f, err := keyfile.Load(g.keyPath)
	var v uint8
	if err == nil {
		v, err = edit(f)
	}
	if err == nil {
		err = f.Save(g.keyPath)
	}
	g.keysMu.Unlock()
	if err != nil {
		return KeyChange{}, err
	}
	if err := g.ReloadKeys(); err != nil {
		return KeyChange{}, err
	}
	return KeyChange{Version: v, Newest: g.newestVersion()}, nil
}

func (g *Gateway) handleRotate(w http.ResponseWriter, _ *http.Request) {
	kc, err := g.changeKeys(func(f *keyfile.File) (uint8, error) {
		k, err := f.Rotate(rand.Reader, g.now())
		return k.Version, err
	})
	if err != nil {
		writeError(w, http.StatusConflict, "rotate: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, kc)
}

func (g *Gateway) handleRetire(w http.ResponseWriter, r *http.Request) {
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 8)
	if err != nil || v == 0 {
		writeError(w, http.StatusBadRequest, "version must be a number from 1 to 255")
		return
	}
	if !slices.Contains(g.KeyVersions(), uint8(v)) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no live master key version %d", v))
		return
	}
	// Who still holds the version (keys.go): refused unless ?force=1.
	snap, ok := g.snapshot(w, r)
	if !ok {
		return
	}
	held := HoldersOf(snap, uint8(v))
	if err := RetireCheck(held, r.URL.Query().Get("force") == "1"); err != nil {
		writeError(w, http.StatusConflict, "retire: "+err.Error())
		return
	}
	kc, err := g.changeKeys(func(f *keyfile.File) (uint8, error) { return uint8(v), f.Retire(uint8(v)) })
	if err != nil {
		writeError(w, http.StatusConflict, "retire: "+err.Error())
		return
	}
	if held.Any() {
		kc.HeldBy = &held
	}
	writeJSON(w, http.StatusOK, kc)
}

func (g *Gateway) handleStats(w http.ResponseWriter, _ *http.Request) {
	now := g.now()
	starts, counts := g.metrics.minutes.snapshot(now)
	out := Stats{Now: now.UTC(), Minutes: make([]StatsMinute, len(starts))}
	var total [maxKinds]uint64
	for i, c := range counts {
		m := StatsMinute{Start: starts[i]}
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
		out.Reasons = append(out.Reasons, ReasonCount{Outcome: vk.outcome, Code: vk.code, Reason: vk.reason, Count: n})
	}
	slices.SortFunc(out.Reasons, func(a, b ReasonCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Reason, b.Reason))
	})
	writeJSON(w, http.StatusOK, out)
}

// handleAuditQuery is GET /v1/audit: oldest first by default (handleAudit),
// newest first with order=desc.
func (g *Gateway) handleAuditQuery(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch q.Get("order") {
	case "", "asc":
		if q.Has("before") {
			writeError(w, http.StatusBadRequest, "before= pages order=desc; oldest-first pages use after=")
			return
		}
		g.handleAudit(w, r)
		return
	case "desc":
	default:
		writeError(w, http.StatusBadRequest, `order must be "asc" (oldest first, the default) or "desc" (newest first)`)
		return
	}
	f, before, msg := parseAuditQuery(q)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminCallBudget)
	defer cancel()
	if err := g.audit.sync(ctx); err != nil {
		g.log.Warn("audit query without waiting for pending records", "err", err)
	}
	recs, seqs, err := auditNewest(ctx, g.store, f, before)
	if err != nil {
		g.storeError(w, "audit query", err)
		return
	}
	page := AuditPage{Records: make([]AuditEntry, len(recs))}
	for i, rec := range recs {
		page.Records[i] = AuditEntry{Seq: seqs[i], Time: rec.Time.UTC(), Kind: rec.Kind, Outcome: rec.Outcome, Reason: rec.Reason,
			User: rec.User, Device: rec.Device, Source: rec.Source, KVUser: rec.KVUser, KVDevice: rec.KVDevice,
			LatencyUS: rec.LatencyUS, Detail: rec.Detail}
		page.Next = seqs[i]
	}
	writeJSON(w, http.StatusOK, page)
}

// parseAuditQuery reads the filters of a newest-first query; msg is a
// client error, or "".
func parseAuditQuery(q url.Values) (f store.AuditFilter, before uint64, msg string) {
	f = store.AuditFilter{Kind: q.Get("kind"), User: q.Get("user"), Device: q.Get("device"), Outcome: q.Get("outcome")}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := q.Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return f, 0, p.name + " must be an RFC 3339 time such as 2025-01-02T15:04:05Z"
			}
			*p.dst = t
		}
	}
	if q.Has("after") {
		return f, 0, "after= pages oldest-first queries; with order=desc use before="
	}
	if s := q.Get("before"); s != "" {
		var err error
		if before, err = strconv.ParseUint(s, 10, 64); err != nil || before == 0 {
			return f, 0, "before must be a sequence number (the next of the previous page)"
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return f, 0, fmt.Sprintf("limit must be a number from 1 to %d", store.MaxAuditLimit)
		}
		f.Limit = n
	}
	return f, before, ""
}

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
