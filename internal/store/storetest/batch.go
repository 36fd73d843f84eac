package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tagauth/tagauth/internal/store"
)

// RunBatch runs the contract of store.DeviceBatcher (bulk provisioning)
// against a backend; open is as for Run, and its stores must implement
// the interface.
func RunBatch(t *testing.T, open func(t *testing.T) store.Store) {
	h := func(f func(t *testing.T, s store.Store, b store.DeviceBatcher)) func(t *testing.T) {
		return func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			b, ok := s.(store.DeviceBatcher)
			if !ok {
				t.Fatalf("%T does not implement store.DeviceBatcher", s)
			}
			f(t, s, b)
		}
	}
	t.Run("Create", h(testBatchCreate))
	t.Run("AllOrNone", h(testBatchAllOrNone))
	t.Run("Namespace", h(testBatchNamespace))
	t.Run("Large", h(testBatchLarge))
	t.Run("Concurrent", h(testBatchConcurrent))
}

// rowErr checks that err names row index and wraps want.
func rowErr(t *testing.T, what string, err error, index int, want error) {
	t.Helper()
	mustErr(t, what, err, want)
	var re *store.RowError
	if !errors.As(err, &re) || re.Index != index {
		t.Fatalf("%s: %v does not name device %d of the batch", what, err, index+1)
	}
}

func testBatchCreate(t *testing.T, s store.Store, b store.DeviceBatcher) {
	ctx := context.Background()
	f, err := s.Listen(ctx)
	mustOK(t, "Listen", err)
	defer f.Close()
	mustOK(t, "empty batch", b.CreateDevices(ctx, nil, hardened))
	// Ids with the bytes a file name or a CSV cell would trip on.
	ds := []store.Device{
		{ID: "z/../x", KV: 2, Group: "plant a", Created: at(1)},
		{ID: "a,\"b\"\n", KV: 2, Created: at(1)},
		{ID: "ü-\u202e", KV: 2, Group: "g", Created: at(1)},
	}
	mustOK(t, "CreateDevices", b.CreateDevices(ctx, ds, hardened))
	want := slices.Clone(ds)
	slices.SortFunc(want, func(a, b store.Device) int { return strings.Compare(a.ID, b.ID) })
	checkDevices(t, s, want...)
	var changes []store.Change
	for _, d := range ds {
		changes = append(changes, store.Change{Kind: store.ChangeDevice, ID: d.ID})
	}
	got := nextChanges(t, f, changes...)
	if len(got) != len(ds) {
		t.Fatalf("changes %v, want one per device %v", got, changes)
	}
	// The devices are as CreateDevice's: taken for good.
	mustErr(t, "CreateDevice of a batch's device", s.CreateDevice(ctx, store.Device{ID: ds[1].ID, KV: 1}, hardened), store.ErrExists)
}

func testBatchAllOrNone(t *testing.T, s store.Store, b store.DeviceBatcher) {
	ctx := context.Background()
	mustOK(t, "CreateDevice", s.CreateDevice(ctx, store.Device{ID: "old", KV: 1, Created: at(0)}, hardened))
	mustOK(t, "RevokeDevice", s.RevokeDevice(ctx, "old", at(1)))
	old := store.Device{ID: "old", KV: 1, Created: at(0), Revoked: true, RevokedAt: at(1)}
	dev := func(id string) store.Device { return store.Device{ID: id, KV: 1, Created: at(2)} }

	rowErr(t, "a revoked id in the batch", b.CreateDevices(ctx, []store.Device{dev("n1"), dev("n2"), dev("old")}, hardened), 2, store.ErrExists)
	rowErr(t, "an id twice in the batch", b.CreateDevices(ctx, []store.Device{dev("n1"), dev("n2"), dev("n1")}, hardened), 2, store.ErrExists)
	rowErr(t, "an empty id", b.CreateDevices(ctx, []store.Device{dev("n1"), dev("")}, hardened), 1, store.ErrInvalid)
	rowErr(t, "a NUL byte", b.CreateDevices(ctx, []store.Device{dev("n\x00")}, hardened), 0, store.ErrInvalid)
	g := dev("n3")
	g.Group = store.AllGroups
	rowErr(t, "group *", b.CreateDevices(ctx, []store.Device{dev("n1"), g}, hardened), 1, store.ErrInvalid)
	kv0 := dev("n4")
	kv0.KV = 0
	rowErr(t, "key version 0", b.CreateDevices(ctx, []store.Device{kv0}, hardened), 0, store.ErrInvalid)
	checkDevices(t, s, old)

	// A refused batch leaves nothing behind: the same rows, fixed, go in.
	mustOK(t, "the batch without the bad row", b.CreateDevices(ctx, []store.Device{dev("n1"), dev("n2")}, hardened))
	checkDevices(t, s, dev("n1"), dev("n2"), old)
	rowErr(t, "the same batch again", b.CreateDevices(ctx, []store.Device{dev("n0"), dev("n2")}, hardened), 1, store.ErrExists)
	checkDevices(t, s, dev("n1"), dev("n2"), old)
}

func testBatchNamespace(t *testing.T, s store.Store, b store.DeviceBatcher) {
	ctx := context.Background()
	mustOK(t, "CreateUser", s.CreateUser(ctx, store.User{ID: "alice", KV: 1, Created: at(0)}, classic))
	ds := []store.Device{{ID: "d1", KV: 1, Created: at(1)}, {ID: "alice", KV: 1, Created: at(1)}}
	rowErr(t, "classic: a user's id", b.CreateDevices(ctx, ds, classic), 1, store.ErrNamespace)
	checkDevices(t, s)
	mustOK(t, "hardened: a user's id", b.CreateDevices(ctx, ds, hardened))
	checkDevices(t, s, ds[1], ds[0])
}

func testBatchLarge(t *testing.T, s store.Store, b store.DeviceBatcher) {
	ctx := context.Background()
	const n = 5000
	ds := make([]store.Device, n)
	for i := range ds {
		ds[i] = store.Device{ID: fmt.Sprintf("dev-%05d", i), KV: 1, Group: fmt.Sprint("g", i%7), Created: at(i)}
	}
	bad := slices.Clone(ds)
	bad[n-1].ID = bad[0].ID
	rowErr(t, "the last of 5000 a duplicate", b.CreateDevices(ctx, bad, classic), n-1, store.ErrExists)
	checkDevices(t, s)
	mustOK(t, "CreateDevices(5000)", b.CreateDevices(ctx, ds, classic))
	checkDevices(t, s, ds...)
}

// testBatchConcurrent races a batch against single creates of one of its
// ids: either the batch wins whole, or the single create does and the
// batch creates nothing.
func testBatchConcurrent(t *testing.T, s store.Store, b store.DeviceBatcher) {
	ctx := context.Background()
	for round := range 6 {
		var ds []store.Device
		for i := range 50 {
			ds = append(ds, store.Device{ID: fmt.Sprintf("r%d-%02d", round, i), KV: 1, Created: at(round)})
		}
		contested := ds[25].ID
		var (
			wg               sync.WaitGroup
			batchErr, oneErr error
			start            = make(chan struct{})
		)
		wg.Go(func() { <-start; batchErr = b.CreateDevices(ctx, ds, classic) })
		wg.Go(func() {
			<-start
			if round%2 == 0 {
				oneErr = s.CreateDevice(ctx, store.Device{ID: contested, KV: 1, Created: at(round)}, classic)
			} else {
				oneErr = s.CreateUser(ctx, store.User{ID: contested, KV: 1, Created: at(round)}, classic)
			}
		})
		close(start)
		wg.Wait()
		want := store.ErrExists
		if round%2 == 1 {
			want = store.ErrNamespace
		}
		n := 0
		for _, d := range snap(t, s).Devices {
			if strings.HasPrefix(d.ID, fmt.Sprintf("r%d-", round)) {
				n++
			}
		}
		switch {
		case batchErr == nil && oneErr != nil:
			mustErr(t, "the single create that lost", oneErr, want)
			if n != len(ds) {
				t.Fatalf("round %d: the batch won but %d of its %d devices are in the store", round, n, len(ds))
			}
		case batchErr != nil && oneErr == nil:
			rowErr(t, "the batch that lost", batchErr, 25, want)
			if wantN := 1 - round%2; n != wantN {
				t.Fatalf("round %d: the batch lost but %d devices of the round are in the store, want %d", round, n, wantN)
			}
		default:
			t.Fatalf("round %d: batch %v, single create %v: want exactly one to succeed", round, batchErr, oneErr)
		}
	}
}
