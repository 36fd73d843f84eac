package bolt

import (
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/tagauth/tagauth/internal/store"
)

// The change feed of the embedded store is in process: the store is
// written by its own process only (the file is locked), so every change a
// reader must see goes through the methods below, which announce it once
// committed.

// feedBuffer is how many changes a feed holds for a slow reader; one that
// falls further behind gets a ChangeReset instead of the changes it lost.
const feedBuffer = 1024

// hub fans committed changes out to the open feeds.
type hub struct {
	mu     sync.Mutex
	feeds  map[*feed]struct{}
	closed bool
}

// publish hands changes to every open feed, after their commit.
func (h *hub) publish(cs ...store.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for f := range h.feeds {
		for _, c := range cs {
			select {
			case f.ch <- c:
			default:
				f.lost.Store(true)
			}
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for f := range h.feeds {
		close(f.gone)
	}
	clear(h.feeds)
}

// feed is one reader's store.Feed.
type feed struct {
	h    *hub
	ch   chan store.Change
	gone chan struct{} // closed when the store closes
	lost atomic.Bool   // changes were dropped: a reset is due
	once sync.Once
}

// Shared implements store.Store: the file is this process's alone.
func (s *Store) Shared() bool { return false }

// Listen implements store.Store.
func (s *Store) Listen(ctx context.Context) (store.Feed, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := &feed{h: &s.hub, ch: make(chan store.Change, feedBuffer), gone: make(chan struct{})}
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	if s.hub.closed {
		return nil, fmt.Errorf("store %s is closed", s.path)
	}
	if s.hub.feeds == nil {
		s.hub.feeds = map[*feed]struct{}{}
	}
	s.hub.feeds[f] = struct{}{}
	return f, nil
}

var errFeedClosed = errors.New("bolt: change feed closed")

// Next implements store.Feed. A reader that fell more than feedBuffer
// changes behind gets a ChangeReset before anything else: under a steady
// stream of writes its buffer is never empty, so a reset kept until then
// might never come. Delivering it early is safe: the snapshot the reader
// takes for it is read after the changes were dropped, and the changes
// still buffered only repeat what that snapshot holds.
func (f *feed) Next(ctx context.Context) (store.Change, error) {
	if f.lost.Swap(false) {
		return store.Change{Kind: store.ChangeReset}, nil
	}
	select {
	case c := <-f.ch:
		return c, nil
	case <-f.gone:
		return store.Change{}, errFeedClosed
	case <-ctx.Done():
		return store.Change{}, store.ErrFeedTimeout
	}
}

// Ping implements store.Feed.
func (f *feed) Ping(context.Context) error {
	select {
	case <-f.gone:
		return errFeedClosed
	default:
		return nil
	}
}

// Close implements store.Feed.
func (f *feed) Close() {
	f.once.Do(func() {
		f.h.mu.Lock()
		delete(f.h.feeds, f)
		f.h.mu.Unlock()
	})
}

// Current implements store.Store.
func (s *Store) Current(ctx context.Context, changes []store.Change) (store.State, error) {
	var st store.State
	seen := map[store.Change]bool{}
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		keys := false
		for _, c := range changes {
			if seen[c] {
				continue
			}
			seen[c] = true
			switch c.Kind {
			case store.ChangeUser:
				v := tx.Bucket(bucketUsers).Get([]byte(c.ID))
				if v == nil {
					st.GoneUsers = append(st.GoneUsers, c.ID)
					continue
				}
				var r userRec
				if err := s.decode("user", []byte(c.ID), v, &r); err != nil {
					return err
				}
				st.Users = append(st.Users, store.User{ID: c.ID, KV: r.KV, Created: r.Created, Revoked: r.Revoked, RevokedAt: r.RevokedAt})
			case store.ChangeDevice:
				v := tx.Bucket(bucketDevices).Get([]byte(c.ID))
				if v == nil {
					st.GoneDevices = append(st.GoneDevices, c.ID)
					continue
				}
				var r deviceRec
				if err := s.decode("device", []byte(c.ID), v, &r); err != nil {
					return err
				}
				st.Devices = append(st.Devices, store.Device{ID: c.ID, KV: r.KV, Group: r.Group, Created: r.Created, Revoked: r.Revoked, RevokedAt: r.RevokedAt})
			case store.ChangeGrant:
				g := store.Grant{User: c.ID, Group: c.Group}
				if tx.Bucket(bucketGrants).Get(grantKey(g)) == nil {
					st.GoneGrants = append(st.GoneGrants, g)
				} else {
					st.Grants = append(st.Grants, g)
				}
			case store.ChangeKey:
				keys = true
			}
		}
		if keys {
			var err error
			st.Keys, err = s.readKeys(tx)
			return err
		}
		return nil
	})
	if err != nil {
		return store.State{}, err
	}
	return st, nil
}

// Key versions live in the meta bucket, one value per version.
var keyVersionPrefix = []byte("keyversion:")

type keyRec struct {
	Fingerprint []byte    `json:"fp"`
	Created     time.Time `json:"created"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
}

func keyVersionKey(v uint8) []byte { return append(bytes.Clone(keyVersionPrefix), v) }

func (s *Store) readKeys(tx *bbolt.Tx) ([]store.KeyVersion, error) {
	var ks []store.KeyVersion
	c := tx.Bucket(bucketMeta).Cursor()
	for k, v := c.Seek(keyVersionPrefix); k != nil && bytes.HasPrefix(k, keyVersionPrefix); k, v = c.Next() {
		var r keyRec
		if err := s.decode("key version", k, v, &r); err != nil {
			return nil, err
		}
		if len(k) != len(keyVersionPrefix)+1 || len(r.Fingerprint) != 32 || k[len(k)-1] == 0 {
			return nil, corrupt(s.path, fmt.Errorf("key version record %q", k))
		}
		kv := store.KeyVersion{Version: k[len(k)-1], Created: r.Created, Retired: !r.RetiredAt.IsZero(), RetiredAt: r.RetiredAt}
		copy(kv.Fingerprint[:], r.Fingerprint)
		ks = append(ks, kv)
	}
	return ks, nil
}

// KeyVersions implements store.Store.
func (s *Store) KeyVersions(ctx context.Context) ([]store.KeyVersion, error) {
	var ks []store.KeyVersion
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		var err error
		ks, err = s.readKeys(tx)
		return err
	})
	return ks, err
}

// PublishKeys implements store.Store.
func (s *Store) PublishKeys(ctx context.Context, live []store.KeyVersion, retire []uint8, at time.Time) ([]store.KeyVersion, error) {
	var (
		all     []store.KeyVersion
		changed []store.Change
	)
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		changed = changed[:0]
		var err error
		if all, err = s.readKeys(tx); err != nil {
			return err
		}
		rec := map[uint8]store.KeyVersion{}
		for _, k := range all {
			rec[k.Version] = k
		}
		var conflicts []uint8
		for _, k := range live {
			if r, ok := rec[k.Version]; ok && !hmac.Equal(r.Fingerprint[:], k.Fingerprint[:]) {
				conflicts = append(conflicts, k.Version)
			}
		}
		if len(conflicts) > 0 {
			return fmt.Errorf("%w: versions %v", store.ErrKeyConflict, conflicts)
		}
		meta := tx.Bucket(bucketMeta)
		for _, k := range live {
			if k.Version == 0 {
				return fmt.Errorf("%w: key version 0", store.ErrInvalid)
			}
			if _, ok := rec[k.Version]; ok {
				continue
			}
			r := keyRec{Fingerprint: k.Fingerprint[:], Created: norm(k.Created)}
			rec[k.Version] = store.KeyVersion{Version: k.Version, Fingerprint: k.Fingerprint, Created: r.Created}
			if err := put(meta, keyVersionKey(k.Version), r); err != nil {
				return err
			}
			changed = append(changed, store.Change{Kind: store.ChangeKey, Version: k.Version})
		}
		for _, v := range retire {
			r, ok := rec[v]
			if !ok || r.Retired {
				continue
			}
			if err := put(meta, keyVersionKey(v), keyRec{Fingerprint: r.Fingerprint[:], Created: r.Created, RetiredAt: norm(at)}); err != nil {
				return err
			}
			changed = append(changed, store.Change{Kind: store.ChangeKey, Version: v})
		}
		all, err = s.readKeys(tx)
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrKeyConflict) {
			return all, err
		}
		return nil, err
	}
	s.hub.publish(changed...)
	return all, nil
}

// updateAnnounce is update that announces c once fn's update committed.
func (s *Store) updateAnnounce(ctx context.Context, c store.Change, fn func(tx *bbolt.Tx) error) error {
	if err := s.update(ctx, fn); err != nil {
		return err
	}
	s.hub.publish(c)
	return nil
}
