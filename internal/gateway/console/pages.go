package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
)

// fail shows an admin service refusal on the page the operator comes
// back to. Its message is written for operators and shown as is.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, back string, err error) {
	var ae *adminsvc.Error
	if errors.As(err, &ae) {
		c.addFlash(s, true, "%s", ae.Msg)
	} else {
		c.log.Error("console call failed", "err", err)
		c.addFlash(s, true, "The gateway failed: %v", err)
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// loadError renders a page that could not read what it shows.
func (c *Console) loadError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	c.render(w, r, s, http.StatusBadGateway, "error", "Error", "Reading from the gateway failed: "+err.Error())
}

// overview is the landing page: counts, verifies per minute, refusals by
// reason, the newest audit records.
func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	st := c.admin.Stats()
	users, err := c.admin.Users(ctx)
	var (
		devices adminapi.DeviceList
		locks   adminapi.LockList
		keys    adminapi.KeyList
		recent  adminapi.AuditPage
	)
	if err == nil {
		devices, err = c.admin.Devices(ctx)
	}
	if err == nil {
		locks, err = c.admin.Locks(ctx)
	}
	if err == nil {
		keys, err = c.admin.Keys(ctx)
	}
	if err == nil {
		recent, err = c.admin.Audit(ctx, adminapi.AuditQuery{Newest: true, Limit: 8})
	}
	if err != nil {
		c.loadError(w, r, s, err)
		return
	}
	type count struct{ Active, Revoked int }
	var u, d count
	for _, x := range users.Users {
		if x.Revoked {
			u.Revoked++
		} else {
			u.Active++
		}
	}
	for _, x := range devices.Devices {
		if x.Revoked {
			d.Revoked++
		} else {
			d.Active++
		}
	}
	var ok, refused, errs uint64
	for _, m := range st.Minutes {
		ok, refused, errs = ok+m.OK, refused+m.Refused, errs+m.Error
	}
	newest := uint8(0)
	for _, k := range keys.Keys {
		if k.Newest {
			newest = k.Version
		}
	}
	c.render(w, r, s, http.StatusOK, "overview", "Overview", struct {
		Users, Devices        count
		Locked                int
		Policy                string
		Keys                  int
		Newest                uint8
		OK, Refused, Errors   uint64
		Chart                 chart
		Reasons               []adminapi.ReasonCount
		Recent                []adminapi.AuditEntry
		Now                   time.Time
		LockedUsers           []adminapi.LockInfo
		HasRefusals, HasLocks bool
	}{u, d, len(locks.Locks), locks.Policy, len(keys.Keys), newest, ok, refused, errs,
		newChart(st.Minutes), st.Reasons, recent.Records, st.Now, locks.Locks, len(st.Reasons) > 0, len(locks.Locks) > 0})
}

func (c *Console) users(w http.ResponseWriter, r *http.Request, s *session) {
	users, err := c.admin.Users(r.Context())
	var locks adminapi.LockList
	if err == nil {
		locks, err = c.admin.Locks(r.Context())
	}
	if err != nil {
		c.loadError(w, r, s, err)
		return
	}
	held := map[string][]string{}
	for _, l := range locks.Locks {
		held[l.User] = append(held[l.User], lockWhat(l)+" until "+l.Until.UTC().Format("2006-01-02 15:04:05Z"))
	}
	type row struct {
		adminapi.UserInfo
		Locked bool
		Locks  []string
	}
	rows := make([]row, len(users.Users))
	for i, u := range users.Users {
		rows[i] = row{u, len(held[u.ID]) > 0, held[u.ID]}
	}
	c.render(w, r, s, http.StatusOK, "users", "Users", struct {
		Users  []row
		Policy string
	}{rows, locks.Policy})
}

func (c *Console) enrolCode(w http.ResponseWriter, r *http.Request, s *session) {
	user := strings.TrimSpace(r.PostForm.Get("user"))
	ttl, err := time.ParseDuration(r.PostForm.Get("ttl"))
	if err != nil {
		ttl = 15 * time.Minute
	}
	code, err := c.admin.EnrolCode(r.Context(), r.RemoteAddr, adminapi.EnrolCodeRequest{User: user, TTLs: int(ttl / time.Second)})
	if err != nil {
		c.fail(w, r, s, "/console/users", err)
		return
	}
	// Shown once: this answer is not cached (Cache-Control: no-store) and
	// the code is kept nowhere.
	c.render(w, r, s, http.StatusOK, "code", "Enrolment code", struct {
		User, Code string
		Expires    time.Time
	}{user, code.Code, code.Expires})
}

// confirm renders a confirmation page for a destructive action.
func (c *Console) confirm(w http.ResponseWriter, r *http.Request, s *session, title, question, action, field, value, back string) {
	if value == "" {
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	c.render(w, r, s, http.StatusOK, "confirm", title, struct {
		Question, Action, Field, Value, Back, Button string
	}{question, action, field, value, back, title})
}

func (c *Console) confirmRevokeUser(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.URL.Query().Get("id")
	c.confirm(w, r, s, "Revoke user", fmt.Sprintf("Revoke user %q? Their card is refused from the next login on, and the id stays taken.", id),
		"/console/users/revoke", "id", id, "/console/users")
}

func (c *Console) revokeUser(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PostForm.Get("id")
	if _, err := c.admin.RevokeUser(r.Context(), r.RemoteAddr, id); err != nil {
		c.fail(w, r, s, "/console/users", err)
		return
	}
	c.addFlash(s, false, "Revoked user %s.", showID(id))
	http.Redirect(w, r, "/console/users", http.StatusSeeOther)
}

func (c *Console) unlockUser(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PostForm.Get("id")
	out, err := c.admin.Unlock(r.Context(), r.RemoteAddr, id)
	if err != nil {
		c.fail(w, r, s, "/console/users", err)
		return
	}
	if out.WasLocked {
		c.addFlash(s, false, "Unlocked user %s: every lock and failure count of theirs is cleared.", showID(id))
	} else {
		c.addFlash(s, false, "User %s was not locked; their failure counts are cleared.", showID(id))
	}
	http.Redirect(w, r, "/console/users", http.StatusSeeOther)
}

func (c *Console) devices(w http.ResponseWriter, r *http.Request, s *session) {
	devices, err := c.admin.Devices(r.Context())
	var grants adminapi.GrantList
	if err == nil {
		grants, err = c.admin.Grants(r.Context())
	}
	if err != nil {
		c.loadError(w, r, s, err)
		return
	}
	c.render(w, r, s, http.StatusOK, "devices", "Devices", struct {
		Devices []adminapi.DeviceInfo
		Groups  []groupRow
	}{devices.Devices, groupsOf(devices.Devices, grants.Grants)})
}

// groupRow is one device group: its active devices and the users granted
// it (directly or through "*").
type groupRow struct {
	Group   string
	Devices int
	Users   []string
}

func groupsOf(devices []adminapi.DeviceInfo, grants []adminapi.Grant) []groupRow {
	n := map[string]int{}
	for _, d := range devices {
		if !d.Revoked && d.Group != "" {
			n[d.Group]++
		}
	}
	for _, g := range grants {
		if g.Group != "*" {
			n[g.Group] += 0
		}
	}
	var rows []groupRow
	for grp, count := range n {
		row := groupRow{Group: grp, Devices: count}
		for _, g := range grants {
			if g.Group == grp || g.Group == "*" {
				row.Users = append(row.Users, g.User)
			}
		}
		slices.Sort(row.Users)
		row.Users = slices.Compact(row.Users)
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b groupRow) int { return strings.Compare(a.Group, b.Group) })
	return rows
}

func (c *Console) provision(w http.ResponseWriter, r *http.Request, s *session) {
	id := strings.TrimSpace(r.PostForm.Get("id"))
	group := strings.TrimSpace(r.PostForm.Get("group"))
	cred, err := c.admin.Provision(r.Context(), r.RemoteAddr, adminapi.DeviceRequest{ID: id, Group: group})
	if err != nil {
		c.fail(w, r, s, "/console/devices", err)
		return
	}
	nonce := randomHex(16)
	now := c.now()
	c.mu.Lock()
	for k, p := range s.pending {
		if now.After(p.expires) {
			clear(p.data)
			delete(s.pending, k)
		}
	}
	s.pending[nonce] = &pendingCred{device: id, data: cred, expires: now.Add(CredentialTTL)}
	c.mu.Unlock()
	c.render(w, r, s, http.StatusOK, "credential", "Device provisioned", struct {
		Device, Group, Nonce string
		Expires              time.Time
	}{id, group, nonce, now.Add(CredentialTTL)})
}

// downloadCredential sends a provisioned device's credential file, once.
func (c *Console) downloadCredential(w http.ResponseWriter, r *http.Request, s *session) {
	nonce := r.PostForm.Get("nonce")
	c.mu.Lock()
	p := s.pending[nonce]
	delete(s.pending, nonce)
	c.mu.Unlock()
	if p == nil || c.now().After(p.expires) {
		if p != nil {
			clear(p.data)
		}
		c.addFlash(s, true, "That credential was already downloaded or has expired; it is not kept. Revoke the device and provision another id if the file was lost.")
		http.Redirect(w, r, "/console/devices", http.StatusSeeOther)
		return
	}
	defer clear(p.data)
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, p.device)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.cred.json"`)
	if p.zip {
		w.Header().Set("Content-Type", "application/zip")
		w.Header().Set("Content-Disposition", `attachment; filename="tagauth-credentials-`+name+`.zip"`)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(p.data)))
	w.Write(p.data)
	c.log.Info("device credential downloaded", "device", p.device, "source", r.RemoteAddr)
}

func (c *Console) confirmRevokeDevice(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.URL.Query().Get("id")
	c.confirm(w, r, s, "Revoke device", fmt.Sprintf("Revoke device %q? Logins to it are refused from the next one on, and the id stays taken.", id),
		"/console/devices/revoke", "id", id, "/console/devices")
}

func (c *Console) revokeDevice(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PostForm.Get("id")
	if _, err := c.admin.RevokeDevice(r.Context(), r.RemoteAddr, id); err != nil {
		c.fail(w, r, s, "/console/devices", err)
		return
	}
	c.addFlash(s, false, "Revoked device %s.", showID(id))
	http.Redirect(w, r, "/console/devices", http.StatusSeeOther)
}

func (c *Console) policy(w http.ResponseWriter, r *http.Request, s *session) {
	grants, err := c.admin.Grants(r.Context())
	var devices adminapi.DeviceList
	if err == nil {
		devices, err = c.admin.Devices(r.Context())
	}
	if err != nil {
		c.loadError(w, r, s, err)
		return
	}
	c.render(w, r, s, http.StatusOK, "policy", "Policy", struct {
		Grants []adminapi.Grant
		Groups []groupRow
	}{grants.Grants, groupsOf(devices.Devices, grants.Grants)})
}

func (c *Console) grant(w http.ResponseWriter, r *http.Request, s *session) {
	c.changeGrant(w, r, s, true)
}
func (c *Console) ungrant(w http.ResponseWriter, r *http.Request, s *session) {
	c.changeGrant(w, r, s, false)
}

func (c *Console) changeGrant(w http.ResponseWriter, r *http.Request, s *session, add bool) {
	g := adminapi.Grant{User: strings.TrimSpace(r.PostForm.Get("user")), Group: strings.TrimSpace(r.PostForm.Get("group"))}
	change := c.admin.Grant
	if !add {
		change = c.admin.Ungrant
	}
	if err := change(r.Context(), r.RemoteAddr, g); err != nil {
		c.fail(w, r, s, "/console/policy", err)
		return
	}
	if add {
		c.addFlash(s, false, "User %s may now log in to the devices of group %s.", showID(g.User), showID(g.Group))
	} else {
		c.addFlash(s, false, "Removed the grant of group %s to user %s.", showID(g.Group), showID(g.User))
	}
	http.Redirect(w, r, "/console/policy", http.StatusSeeOther)
}

func (c *Console) keys(w http.ResponseWriter, r *http.Request, s *session) {
	keys, err := c.admin.Keys(r.Context())
	if err != nil {
		c.loadError(w, r, s, err)
		return
	}
	c.render(w, r, s, http.StatusOK, "keys", "Master keys", struct {
		adminapi.KeyList
		Classic bool
	}{keys, keys.Profile == "classic"})
}

func (c *Console) rotateKey(w http.ResponseWriter, r *http.Request, s *session) {
	out, err := c.admin.RotateKey(r.Context())
	if err != nil {
		c.fail(w, r, s, "/console/keys", err)
		return
	}
	c.addFlash(s, false, "Added master key version %d: new cards and device credentials use it; older ones keep working until you retire their version.", out.Version)
	http.Redirect(w, r, "/console/keys", http.StatusSeeOther)
}

func (c *Console) confirmRetireKey(w http.ResponseWriter, r *http.Request, s *session) {
	v := r.URL.Query().Get("version")
	c.confirm(w, r, s, "Retire key", fmt.Sprintf("Retire master key version %s? Every card and device credential issued under it is refused from the next login on: re-enrol or re-provision them first.", v),
		"/console/keys/retire", "version", v, "/console/keys")
}

func (c *Console) retireKey(w http.ResponseWriter, r *http.Request, s *session) {
	v := r.PostForm.Get("version")
	n, err := strconv.ParseUint(v, 10, 8)
	if err != nil || n == 0 {
		c.fail(w, r, s, "/console/keys", &adminsvc.Error{Kind: adminsvc.Invalid, Msg: "version must be a number from 1 to 255"})
		return
	}
	if _, err := c.admin.RetireKey(r.Context(), uint8(n), false); err != nil {
		c.fail(w, r, s, "/console/keys", err)
		return
	}
	c.addFlash(s, false, "Retired master key version %s.", v)
	http.Redirect(w, r, "/console/keys", http.StatusSeeOther)
}

// auditForm is the audit page's filter form as submitted.
type auditForm struct {
	Kind, User, Device, Outcome, Since, Until string
	Limit                                     int
}

// Audit filter choices.
var (
	auditKinds    = []string{"verify", "enrol", "provision", "revoke", "policy", "key", "lockout", adminapi.KindToken}
	auditOutcomes = []string{"ok", "refused", "error", "locked"}
)

func (c *Console) audit(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	f := auditForm{Kind: q.Get("kind"), User: q.Get("user"), Device: q.Get("device"), Outcome: q.Get("outcome"),
		Since: q.Get("since"), Until: q.Get("until"), Limit: 50}
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n >= 1 && n <= 1000 {
		f.Limit = n
	}
	aq := adminapi.AuditQuery{Newest: true, Limit: f.Limit, Kind: f.Kind, User: f.User, Device: f.Device, Outcome: f.Outcome}
	var problems []string
	for _, w := range []struct {
		v   string
		dst *time.Time
	}{{f.Since, &aq.Since}, {f.Until, &aq.Until}} {
		if w.v == "" {
			continue
		}
		t, err := parseWhen(w.v, c.now())
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		*w.dst = t.UTC().Truncate(time.Second) // to the second, as the API's RFC 3339 times
	}
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil || n == 0 {
			problems = append(problems, "before must be a sequence number (the next of the previous page)")
		}
		aq.Before = n
	}
	var p adminapi.AuditPage
	if len(problems) == 0 {
		var err error
		if p, err = c.admin.Audit(r.Context(), aq); err != nil {
			problems = append(problems, err.Error())
		}
	}
	// The link to the next (older) page keeps the filters.
	older := ""
	if len(p.Records) == f.Limit && p.Next > 1 {
		nq := url.Values{}
		for k, v := range q {
			if k != "before" {
				nq[k] = v
			}
		}
		nq.Set("before", strconv.FormatUint(p.Next, 10))
		older = "/console/audit?" + nq.Encode()
	}
	slices.Sort(problems)
	c.render(w, r, s, http.StatusOK, "audit", "Audit log", struct {
		Form            auditForm
		Kinds, Outcomes []string
		Records         []adminapi.AuditEntry
		Older           string
		Paged           bool
		Problems        []string
	}{f, auditKinds, auditOutcomes, p.Records, older, q.Get("before") != "", problems})
}

// parseWhen reads an RFC 3339 time, a date-time without zone (UTC, as
// an HTML datetime-local field sends it) or a duration ago ("1h").
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a time (2025-01-02T15:04:05Z, UTC) nor a duration ago (such as 1h)", s)
}

// lockWhat says which logins a lock refuses, for operators.
func lockWhat(l adminapi.LockInfo) string {
	switch {
	case l.Source != "":
		return "locked from source " + showID(l.Source)
	case l.Scope == "unfamiliar sources":
		return "locked from unfamiliar sources"
	}
	return "locked"
}
