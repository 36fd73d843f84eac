package lockout

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultMaxKeys bounds a Memory store when NewMemory is given no bound.
const DefaultMaxKeys = 100_000

// MaxTracked is the most failure times a Memory store keeps per key: Fail
// counts saturate there, so a Policy.MaxFailures above it never locks.
const MaxTracked = 256

// ErrFull is returned by a Memory store's Fail and Lock when every slot
// holds a lock in force: it never forgets a lock to make room.
var ErrFull = errors.New("lockout: table full of locked identities")

// Memory is a Store held in one process: failures and locks are lost when
// the process stops, and gateway replicas do not see each other's. Use a
// shared Store (internal/redisstate) for replicas.
//
// It holds at most its bound of keys. When full, it first drops keys with
// neither a lock in force nor a failure inside the window last given to
// Fail; then keys without a lock (an evicted key's failure count starts
// again from zero). Locks are never dropped before they expire or are
// unlocked.
type Memory struct {
	mu      sync.RWMutex
	max     int
	entries map[string]*entry
	// known holds each user's familiar sources, at most max users: when
	// full, users whose sources all expired go first, then any one (who
	// then starts as if new: familiarity is an optimisation of
	// availability, never needed for safety).
	known map[string][]familiar
	// seen is the latest time a caller passed in, which Lock (given no
	// now) uses to tell locks in force when it must make room.
	seen time.Time
}

type familiar struct {
	src   string // Source key
	until time.Time
}

type entry struct {
	fails  []time.Time   // ascending; at most MaxTracked
	window time.Duration // the window of the last Fail
	until  time.Time     // lock end; zero when not locked
}

// NewMemory returns an empty in-memory Store holding at most maxKeys keys
// (DefaultMaxKeys when maxKeys <= 0).
func NewMemory(maxKeys int) *Memory {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Memory{max: maxKeys, entries: make(map[string]*entry), known: make(map[string][]familiar)}
}

var _ Store = (*Memory)(nil)

// get returns key's entry, making room for a new one if needed.
func (m *Memory) get(key string, now time.Time) (*entry, error) {
	if now.After(m.seen) {
		m.seen = now
	}
	if e := m.entries[key]; e != nil {
		return e, nil
	}
	if len(m.entries) >= m.max {
		m.evict(now)
		if len(m.entries) >= m.max {
			return nil, ErrFull
		}
	}
	e := &entry{}
	m.entries[key] = e
	return e, nil
}

// evict frees at least one slot if any key lacks a lock in force: first
// every key that has expired, then (if none had) one unlocked key.
func (m *Memory) evict(now time.Time) {
	var spare string
	found := false
	for k, e := range m.entries {
		if e.locked(now) {
			continue
		}
		if len(e.fails) == 0 || !e.fails[len(e.fails)-1].After(now.Add(-e.window)) {
			delete(m.entries, k)
			continue
		}
		if !found {
			spare, found = k, true
		}
	}
	if len(m.entries) >= m.max && found {
		delete(m.entries, spare)
	}
}

func (e *entry) locked(now time.Time) bool { return now.Before(e.until) }

// Fail implements Store.
func (m *Memory) Fail(_ context.Context, key string, now time.Time, window time.Duration) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.get(key, now)
	if err != nil {
		return 0, err
	}
	cut := now.Add(-window)
	i := 0
	for i < len(e.fails) && !e.fails[i].After(cut) {
		i++
	}
	e.fails = append(e.fails[:0], e.fails[i:]...)
	if len(e.fails) == MaxTracked {
		e.fails = append(e.fails[:0], e.fails[1:]...)
	}
	// Keep the slice sorted even if clocks of callers disagree a little.
	at, _ := slices.BinarySearchFunc(e.fails, now, func(a, b time.Time) int { return a.Compare(b) })
	e.fails = slices.Insert(e.fails, at, now)
	e.window = window
	return len(e.fails), nil
}

// Lock implements Store.
func (m *Memory) Lock(_ context.Context, key string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.get(key, m.seen)
	if err != nil {
		return err
	}
	e.until = until
	return nil
}

// LockedUntil implements Store.
func (m *Memory) LockedUntil(_ context.Context, key string, now time.Time) (time.Time, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.lockedUntil(m.entries[key], now)
}

// LockedUntilBytes is LockedUntil for a key held as bytes. It allocates
// nothing: the gateway calls it on every successful verify.
func (m *Memory) LockedUntilBytes(key []byte, now time.Time) (time.Time, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.lockedUntil(m.entries[string(key)], now)
}

func (m *Memory) lockedUntil(e *entry, now time.Time) (time.Time, bool, error) {
	if e == nil || !e.locked(now) {
		return time.Time{}, false, nil
	}
	return e.until, true, nil
}

// Unlock implements Store.
func (m *Memory) Unlock(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, key)
	return nil
}

// Locked implements Store. The list is sorted by key.
func (m *Memory) Locked(_ context.Context, now time.Time) ([]Lock, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Lock
	for k, e := range m.entries {
		if e.locked(now) {
			out = append(out, Lock{Key: k, Until: e.until})
		}
	}
	slices.SortFunc(out, func(a, b Lock) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// maxKey is the longest key: an id, the NUL, a source key.
const maxKey = 64 + 1 + 2 + MaxSourceName

// appendKey appends user, NUL and suffix.
func appendKey(dst, user, suffix []byte) []byte {
	dst = append(dst, user...)
	dst = append(dst, 0)
	return append(dst, suffix...)
}

// Status implements Store. It allocates nothing.
func (m *Memory) Status(_ context.Context, user []byte, src Source, now time.Time) (Status, error) {
	var sb [2 + MaxSourceName]byte
	source := src.AppendKey(sb[:0])
	var buf [maxKey]byte
	m.mu.RLock()
	defer m.mu.RUnlock()
	var st Status
	if e := m.entries[string(appendKey(buf[:0], user, source))]; e != nil && e.locked(now) {
		st.SourceUntil = e.until
	}
	if e := m.entries[string(appendKey(buf[:0], user, []byte(unfamiliarTag)))]; e != nil && e.locked(now) {
		st.UnfamiliarUntil = e.until
	}
	for _, f := range m.known[string(user)] {
		if f.src == string(source) && now.Before(f.until) {
			st.Familiar = true
		}
	}
	return st, nil
}

// Succeed implements Store. Once the source is familiar it allocates
// nothing.
func (m *Memory) Succeed(_ context.Context, user []byte, src Source, now time.Time, f Familiarity) error {
	var sb [2 + MaxSourceName]byte
	source := src.AppendKey(sb[:0])
	var buf [maxKey]byte
	key := appendKey(buf[:0], user, source)
	if m.succeedNoop(user, source, key, now, f) {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.After(m.seen) {
		m.seen = now
	}
	if e := m.entries[string(key)]; e != nil {
		if e.locked(now) {
			e.fails = e.fails[:0]
		} else {
			delete(m.entries, string(key))
		}
	}
	if len(source) == 0 || source[0] == kindUnverified || f.Max <= 0 {
		return nil
	}
	until := now.Add(f.For)
	fs, ok := m.known[string(user)]
	for i := range fs {
		if fs[i].src == string(source) {
			fs[i].until = until
			return nil
		}
	}
	if !ok && len(m.known) >= m.max {
		m.evictKnown(now)
	}
	fs = slices.DeleteFunc(fs, func(x familiar) bool { return !now.Before(x.until) })
	if len(fs) >= f.Max {
		// Drop the one that ends first: the least recent.
		i := 0
		for j := range fs {
			if fs[j].until.Before(fs[i].until) {
				i = j
			}
		}
		fs = slices.Delete(fs, i, i+1)
		fs = fs[:min(len(fs), f.Max-1)]
	}
	m.known[string(user)] = append(fs, familiar{src: string(source), until: until})
	return nil
}

// succeedNoop tells, under the read lock only, whether a success would
// change nothing worth a write: the source has no failures and is familiar
// for nearly f.For still (renewals are spaced by renewEvery), so that the
// logins of many CoAP workers do not queue for the write lock.
func (m *Memory) succeedNoop(user, source, key []byte, now time.Time, f Familiarity) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if _, ok := m.entries[string(key)]; ok {
		return false
	}
	if len(source) == 0 || source[0] == kindUnverified || f.Max <= 0 {
		return true
	}
	for _, x := range m.known[string(user)] {
		if x.src == string(source) {
			return x.until.After(now.Add(f.For - renewEvery))
		}
	}
	return false
}

// renewEvery is how often a familiar source's end moves with its logins.
const renewEvery = time.Minute

// evictKnown makes room in known: users with no source left first, else
// one user.
func (m *Memory) evictKnown(now time.Time) {
	for u, fs := range m.known {
		if !slices.ContainsFunc(fs, func(x familiar) bool { return now.Before(x.until) }) {
			delete(m.known, u)
		}
	}
	if len(m.known) >= m.max {
		for u := range m.known {
			delete(m.known, u)
			break
		}
	}
}

// UnlockUser implements Store.
func (m *Memory) UnlockUser(_ context.Context, user string, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := false
	for k, e := range m.entries {
		if UserOf(k) == user {
			was = was || e.locked(now)
			delete(m.entries, k)
		}
	}
	return was, nil
}
