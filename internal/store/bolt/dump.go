package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	bbolt "go.etcd.io/bbolt"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Dump, load and online backup (store/dump.go). The embedded store keeps
// no key versions of its own (its gateway's key file is the only record),
// so Dump gives none and Load takes none: internal/dump fills them from
// and checks them against the key file.

var (
	_ store.Dumper          = (*Store)(nil)
	_ store.Loader          = (*Store)(nil)
	_ store.FileSnapshotter = (*Store)(nil)
)

// Dump implements store.Dumper in one read transaction.
func (s *Store) Dump(ctx context.Context, audit bool, sink store.DumpSink) error {
	return s.view(ctx, func(tx *bbolt.Tx) error {
		err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var r userRec
			if err := s.decode("user", k, v, &r); err != nil {
				return err
			}
			return sink.User(store.User{ID: string(k), KV: r.KV, Created: r.Created, Revoked: r.Revoked, RevokedAt: r.RevokedAt})
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			var r deviceRec
			if err := s.decode("device", k, v, &r); err != nil {
				return err
			}
			return sink.Device(store.Device{ID: string(k), KV: r.KV, Group: r.Group, Created: r.Created, Revoked: r.Revoked, RevokedAt: r.RevokedAt})
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketGrants).ForEach(func(k, _ []byte) error {
			user, group, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return corrupt(s.path, fmt.Errorf("grant key %q", k))
			}
			return sink.Grant(store.Grant{User: string(user), Group: string(group)})
		})
		if err != nil || !audit {
			return err
		}
		n := 0
		return tx.Bucket(bucketAudit).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return corrupt(s.path, fmt.Errorf("audit key %x", k))
			}
			seq := binary.BigEndian.Uint64(k)
			rr, err := readRun(v)
			if err != nil {
				return corrupt(s.path, fmt.Errorf("audit record %d: %v", seq, err))
			}
			for ; rr.count > 0; seq++ {
				if n++; n%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				rec, err := rr.next()
				if err != nil {
					return corrupt(s.path, fmt.Errorf("audit record %d: %v", seq, err))
				}
				if err := sink.Audit(seq, rec); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// loadBatch is how many audit records Load encodes into one batch of
// runs.
const loadBatch = 512

// Load implements store.Loader in one write transaction: bbolt keeps
// every page it writes in memory until the commit, so a load takes about
// the size of the loaded store in memory.
func (s *Store) Load(ctx context.Context, set *store.LoadSet) error {
	if err := store.CheckProfile(set.Profile); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketUsers, bucketDevices, bucketGrants, bucketCodes, bucketAudit} {
			if k, _ := tx.Bucket(name).Cursor().First(); k != nil {
				return fmt.Errorf("%w: store %s holds %s: load only into a new store", store.ErrNotEmpty, s.path, name)
			}
		}
		users, devices := tx.Bucket(bucketUsers), tx.Bucket(bucketDevices)
		for _, u := range set.Users {
			if err := store.CheckLoadedUser(&u); err != nil {
				return err
			}
			if users.Get([]byte(u.ID)) != nil {
				return fmt.Errorf("%w: user %q twice", store.ErrExists, u.ID)
			}
			err := put(users, []byte(u.ID), userRec{KV: u.KV, Created: norm(u.Created), Revoked: u.Revoked, RevokedAt: norm(u.RevokedAt)})
			if err != nil {
				return err
			}
		}
		for _, d := range set.Devices {
			if err := store.CheckLoadedDevice(&d); err != nil {
				return err
			}
			switch {
			case devices.Get([]byte(d.ID)) != nil:
				return fmt.Errorf("%w: device %q twice", store.ErrExists, d.ID)
			case set.Profile == protocol.Classic && users.Get([]byte(d.ID)) != nil:
				return fmt.Errorf("%w: device %q is also a user", store.ErrNamespace, d.ID)
			}
			err := put(devices, []byte(d.ID), deviceRec{KV: d.KV, Group: d.Group, Created: norm(d.Created), Revoked: d.Revoked, RevokedAt: norm(d.RevokedAt)})
			if err != nil {
				return err
			}
		}
		grants := tx.Bucket(bucketGrants)
		for _, g := range set.Grants {
			if err := store.CheckGrant(&g); err != nil {
				return err
			}
			if err := grants.Put(grantKey(g), []byte{}); err != nil {
				return err
			}
		}
		if set.NextAudit == nil {
			return nil
		}
		return s.loadAudit(ctx, tx.Bucket(bucketAudit), set.NextAudit)
	})
}

// loadAudit appends the records next gives as AppendAudit does, in
// batches whose encoders stay referenced until the commit (bbolt keeps
// the value slices of a transaction until then).
func (s *Store) loadAudit(ctx context.Context, b *bbolt.Bucket, next func() (store.AuditRecord, error)) error {
	b.FillPercent = 1
	batch := make([]store.AuditRecord, 0, loadBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		e := new(auditEncoder)
		if err := e.encode(batch); err != nil {
			return err
		}
		last := b.Sequence()
		if uint64(len(batch)) > math.MaxUint64-last {
			return fmt.Errorf("audit sequence numbers exhausted at %d", last)
		}
		for _, r := range e.runs {
			if err := b.Put(seqKey(last+1), e.buf[r.start:r.end:r.end]); err != nil {
				return err
			}
			last += uint64(r.count)
		}
		batch = batch[:0]
		return b.SetSequence(last)
	}
	for {
		r, err := next()
		if errors.Is(err, io.EOF) {
			return flush()
		}
		if err != nil {
			return err
		}
		if batch = append(batch, r); len(batch) == loadBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// WriteSnapshot implements store.FileSnapshotter with bbolt's Tx.WriteTo:
// a read transaction sees one committed state, and writers go on
// committing beside it (bbolt keeps the pages it reads until it ends).
func (s *Store) WriteSnapshot(ctx context.Context, size func(int64) error, w io.Writer) error {
	return s.view(ctx, func(tx *bbolt.Tx) error {
		if err := size(tx.Size()); err != nil {
			return err
		}
		_, err := tx.WriteTo(w)
		return err
	})
}
