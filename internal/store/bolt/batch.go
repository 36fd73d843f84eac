package bolt

import (
	"context"

	bbolt "go.etcd.io/bbolt"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

var _ store.DeviceBatcher = (*Store)(nil)

// CreateDevices implements store.DeviceBatcher in one write transaction:
// bbolt rolls the whole of it back when any device is refused. The feed
// gets one change per device once the transaction committed; a reader
// that cannot hold them all gets a reset (changes.go), which reloads.
func (s *Store) CreateDevices(ctx context.Context, ds []store.Device, p protocol.Profile) error {
	if err := store.CheckProfile(p); err != nil {
		return err
	}
	if err := store.CheckDevices(ds); err != nil {
		return err
	}
	if len(ds) == 0 {
		return nil
	}
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		for i, d := range ds {
			// A large batch is written in one transaction; a caller
			// that gave up should not wait for the rest of it.
			if i%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			err := create(tx, bucketDevices, bucketUsers, "device", "user", d.ID, p,
				deviceRec{KV: d.KV, Group: d.Group, Created: norm(d.Created)})
			if err != nil {
				return &store.RowError{Index: i, ID: d.ID, Err: err}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	cs := make([]store.Change, len(ds))
	for i, d := range ds {
		cs[i] = store.Change{Kind: store.ChangeDevice, ID: d.ID}
	}
	s.hub.publish(cs...)
	return nil
}
