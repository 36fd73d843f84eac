package device

import (
	"net/netip"
	"slices"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

// pendingLogin is one login between m1 and its end: waiting for the
// gateway (login nil), then, hardened, waiting for m5 until expires.
// Fields other than the pointer identity are guarded by Agent.mu.
type pendingLogin struct {
	addr    netip.Addr
	user    string // as claimed in m1
	login   *protocol.DeviceLogin
	expires time.Time // meaningful once login is set
}

// session is an established channel and the user it authenticated.
type session struct {
	s    *protocol.Session
	user string
}

// errTableFull says which table refused a login; it is logged, never sent.
type errTableFull string

func (e errTableFull) Error() string { return string(e) + " table full" }

// reserve records a login that is about to be relayed, or refuses it when
// the tables are full. Expired entries are swept first so that a burst of
// old state does not refuse a fresh login.
func (a *Agent) reserve(addr netip.Addr, user string) (*pendingLogin, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.nPending >= a.cfg.MaxSessions || len(a.sessions) >= a.cfg.MaxSessions {
		a.sweepLocked(a.cfg.Now())
	}
	switch {
	case a.nPending >= a.cfg.MaxSessions:
		return nil, errTableFull("pending login")
	case len(a.sessions) >= a.cfg.MaxSessions:
		return nil, errTableFull("session")
	case len(a.pending[addr]) >= MaxPendingPerAddress:
		return nil, errTableFull("per-address pending login")
	}
	p := &pendingLogin{addr: addr, user: user}
	a.pending[addr] = append(a.pending[addr], p)
	a.nPending++
	return p, nil
}

// await marks p as waiting for m5 until dT from now, found by its sid
// (spec section 11). It reports false, and abandons l, when p is no longer
// in the table because the agent is stopping, or, with odds of 2^-64, when
// another pending login has the same sid.
func (a *Agent) await(p *pendingLogin, l *protocol.DeviceLogin) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, taken := a.bySID[l.SID()]
	if taken || !slices.Contains(a.pending[p.addr], p) {
		l.Close()
		return false
	}
	p.login = l
	p.expires = a.cfg.Now().Add(a.cfg.Window)
	a.bySID[l.SID()] = p
	// A user (the gateway vouched for it) who leaves more logins
	// unconfirmed than its bound loses its own oldest, never another
	// user's: the newest is the one the user is waiting for.
	w := append(a.userWait[p.user], p)
	a.userWait[p.user] = w
	if len(w) > a.cfg.MaxPendingPerUser {
		a.dropLocked(w[0])
		a.metrics.evicted.WithLabelValues("pending").Inc()
	}
	return true
}

// drop removes p from the pending table and abandons its login.
func (a *Agent) drop(p *pendingLogin) {
	a.mu.Lock()
	a.dropLocked(p)
	a.mu.Unlock()
}

func (a *Agent) dropLocked(p *pendingLogin) {
	list := a.pending[p.addr]
	i := slices.Index(list, p)
	if i < 0 {
		return
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(a.pending, p.addr)
	} else {
		a.pending[p.addr] = list
	}
	a.nPending--
	if p.login != nil {
		removeFrom(a.userWait, p.user, p)
		if a.bySID[p.login.SID()] == p {
			delete(a.bySID, p.login.SID())
		}
		p.login.Close()
	}
}

// removeFrom removes x from m[key], deleting the key when nothing is left.
func removeFrom[T comparable](m map[string][]T, key string, x T) {
	list := m[key]
	if i := slices.Index(list, x); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(m, key)
	} else {
		m[key] = list
	}
}

// awaiting returns the login waiting for m5 whose session will have sid,
// or nil.
func (a *Agent) awaiting(sid [protocol.SIDSize]byte) *pendingLogin {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bySID[sid]
}

// establish moves a login's session into the session table (dropping p
// from the pending table when p is not nil). It fails when the table is
// full or, with odds of 2^-64 per pair, the sid is taken; the session is
// then closed.
func (a *Agent) establish(p *pendingLogin, s *protocol.Session, user string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p != nil {
		a.dropLocked(p)
	}
	// A user at its bound makes room with its own oldest session (see
	// Config.MaxSessionsPerUser), before the table's bound is checked,
	// so that one user can never fill the table for everyone else.
	if own := a.userSess[user]; len(own) >= a.cfg.MaxSessionsPerUser {
		a.closeSessionLocked(own[0])
		a.metrics.evicted.WithLabelValues("session").Inc()
	}
	if len(a.sessions) >= a.cfg.MaxSessions {
		a.sweepLocked(a.cfg.Now())
	}
	sid := s.SID()
	if len(a.sessions) >= a.cfg.MaxSessions {
		s.Close()
		return errTableFull("session")
	}
	if _, taken := a.sessions[sid]; taken {
		s.Close()
		return errTableFull("session (sid collision)")
	}
	ns := &session{s: s, user: user}
	a.sessions[sid] = ns
	a.userSess[user] = append(a.userSess[user], ns)
	return nil
}

// closeSessionLocked removes s from the tables and closes it.
func (a *Agent) closeSessionLocked(s *session) {
	if sid := s.s.SID(); a.sessions[sid] == s {
		delete(a.sessions, sid)
	}
	removeFrom(a.userSess, s.user, s)
	s.s.Close()
}

// lookup returns the session with sid, or nil.
func (a *Agent) lookup(sid [protocol.SIDSize]byte) *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions[sid]
}

// end closes and removes a session.
func (a *Agent) end(sid [protocol.SIDSize]byte, s *session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sessions[sid] == s {
		delete(a.sessions, sid)
	}
	removeFrom(a.userSess, s.user, s)
	s.s.Close()
}

// sweep drops expired pending logins and closes expired sessions.
func (a *Agent) sweep() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepLocked(a.cfg.Now())
}

func (a *Agent) sweepLocked(now time.Time) {
	for _, list := range a.pending {
		for _, p := range slices.Clone(list) {
			// A login still waiting for the gateway belongs to its
			// handler, which removes it within GatewayTimeout.
			if p.login != nil && now.After(p.expires) {
				a.dropLocked(p)
			}
		}
	}
	for _, s := range a.sessions {
		if s.s.Expired() {
			a.closeSessionLocked(s)
		}
	}
}

// closeAll ends every login and session when the agent stops.
func (a *Agent) closeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, list := range a.pending {
		for _, p := range list {
			if p.login != nil {
				p.login.Close()
			}
		}
	}
	clear(a.pending)
	clear(a.userWait)
	clear(a.userSess)
	clear(a.bySID)
	a.nPending = 0
	for sid, s := range a.sessions {
		s.s.Close()
		delete(a.sessions, sid)
	}
}
