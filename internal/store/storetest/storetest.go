// Package storetest is the contract suite that every store.Store backend
// passes, in the spirit of smallstep's nosql dbtest: a backend's own test
// calls Run with a function that opens an empty store, and the suite checks
// every rule of the store package documentation against it.
//
// Subtests run one after another (never in parallel), so open may hand out
// stores that share one database server, as long as each one it returns is
// empty (a fresh schema, or truncated tables).
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// Option configures Run.
type Option func(*config)

type config struct {
	reopen func(t *testing.T, s store.Store) store.Store
}

// WithReopen enables the persistence tests for backends that keep data
// across a close: reopen closes s and opens the same store again (the same
// file, the same database schema), returning the new handle.
func WithReopen(reopen func(t *testing.T, s store.Store) store.Store) Option {
	return func(c *config) { c.reopen = reopen }
}

// Run runs the contract suite. open must return a new, empty store each
// time it is called; the suite closes the stores it opens (Close may be
// called more than once).
func Run(t *testing.T, open func(t *testing.T) store.Store, opts ...Option) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	h := func(f func(t *testing.T, s store.Store)) func(t *testing.T) {
		return func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			f(t, s)
		}
	}
	t.Run("CreateUser", h(testCreateUser))
	t.Run("CreateDevice", h(testCreateDevice))
	t.Run("InvalidRecords", h(testInvalid))
	t.Run("NamespaceClassic", h(testNamespaceClassic))
	t.Run("NamespaceHardened", h(testNamespaceHardened))
	t.Run("RevokeUser", h(testRevokeUser))
	t.Run("RevokeDevice", h(testRevokeDevice))
	t.Run("Grants", h(testGrants))
	t.Run("EnrolCodes", h(testEnrolCodes))
	t.Run("EnrolCodeExpiry", h(testEnrolCodeExpiry))
	t.Run("EnrolCodeConcurrentTake", h(testEnrolCodeConcurrent))
	t.Run("ConcurrentCreate", h(testConcurrentCreate))
	t.Run("AuditRoundTrip", h(testAuditRoundTrip))
	t.Run("AuditFilters", h(testAuditFilters))
	t.Run("AuditPaging", h(testAuditPaging))
	t.Run("AuditLimits", h(testAuditLimits))
	t.Run("AuditConcurrentAppend", h(testAuditConcurrent))
	t.Run("AuditCount", h(testAuditCount))
	t.Run("AuditPrune", h(testAuditPrune))
	t.Run("AuditJournalMark", h(testAuditJournalMark))
	t.Run("Snapshot", h(testSnapshot))
	t.Run("ChangeFeed", h(testChangeFeed))
	t.Run("KeyPublication", h(testKeyPublication))
	t.Run("CanceledContext", h(testCanceled))
	t.Run("Close", h(testClose))
	if c.reopen != nil {
		t.Run("Persistence", func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			testPersistence(t, s, c.reopen)
		})
	} else {
		t.Run("Persistence", func(t *testing.T) { t.Skip("backend gave no reopen hook") })
	}
}

// base is a time with microsecond precision, which every backend keeps.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

var (
	classic  = protocol.Classic
	hardened = protocol.Hardened
)

func snap(t *testing.T, s store.Store) store.Snapshot {
	t.Helper()
	sn, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return sn
}

func mustErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func userEq(a, b store.User) bool {
	return a.ID == b.ID && a.KV == b.KV && a.Created.Equal(b.Created) &&
		a.Revoked == b.Revoked && a.RevokedAt.Equal(b.RevokedAt)
}

func deviceEq(a, b store.Device) bool {
	return a.ID == b.ID && a.KV == b.KV && a.Group == b.Group && a.Created.Equal(b.Created) &&
		a.Revoked == b.Revoked && a.RevokedAt.Equal(b.RevokedAt)
}

func auditEq(a, b store.AuditRecord) bool {
	ta, tb := a.Time, b.Time
	a.Time, b.Time = time.Time{}, time.Time{}
	return ta.Equal(tb) && a == b
}

func checkUsers(t *testing.T, s store.Store, want ...store.User) {
	t.Helper()
	got := snap(t, s).Users
	if !slices.EqualFunc(got, want, userEq) {
		t.Fatalf("users:\n got %+v\nwant %+v", got, want)
	}
}

func checkDevices(t *testing.T, s store.Store, want ...store.Device) {
	t.Helper()
	got := snap(t, s).Devices
	if !slices.EqualFunc(got, want, deviceEq) {
		t.Fatalf("devices:\n got %+v\nwant %+v", got, want)
	}
}

func checkGrants(t *testing.T, s store.Store, want ...store.Grant) {
	t.Helper()
	got := snap(t, s).Grants
	if !slices.Equal(got, want) {
		t.Fatalf("grants:\n got %+v\nwant %+v", got, want)
	}
}

func testCreateUser(t *testing.T, s store.Store) {
	ctx := context.Background()
	alice := store.User{ID: "alice", KV: 3, Created: at(0)}
	mustOK(t, "CreateUser alice", s.CreateUser(ctx, alice, hardened))
	checkUsers(t, s, alice)

	dup := store.User{ID: "alice", KV: 4, Created: at(5)}
	mustErr(t, "CreateUser alice again", s.CreateUser(ctx, dup, hardened), store.ErrExists)
	mustErr(t, "CreateUser alice again (classic)", s.CreateUser(ctx, dup, classic), store.ErrExists)
	checkUsers(t, s, alice) // the failed create changed nothing

	// Times are kept to the microsecond: finer parts are dropped.
	bob := store.User{ID: "bob", KV: 1, Created: at(1).Add(789 * time.Nanosecond)}
	mustOK(t, "CreateUser bob", s.CreateUser(ctx, bob, classic))
	bob.Created = at(1)
	// A 64-byte UTF-8 id is the longest allowed.
	long := store.User{ID: strings.Repeat("é", 32), KV: 255, Created: at(2).In(time.FixedZone("X", 3600))}
	mustOK(t, "CreateUser 64-byte id", s.CreateUser(ctx, long, hardened))
	checkUsers(t, s, alice, bob, long)
	if got := snap(t, s).Devices; len(got) != 0 {
		t.Fatalf("creating users made devices: %+v", got)
	}
}

func testCreateDevice(t *testing.T, s store.Store) {
	ctx := context.Background()
	d7 := store.Device{ID: "sensor-7", KV: 2, Group: "plant-a", Created: at(0)}
	mustOK(t, "CreateDevice", s.CreateDevice(ctx, d7, hardened))
	nogroup := store.Device{ID: "pump-1", KV: 1, Created: at(1)}
	mustOK(t, "CreateDevice without group", s.CreateDevice(ctx, nogroup, classic))
	checkDevices(t, s, nogroup, d7)

	dup := store.Device{ID: "sensor-7", KV: 2, Group: "plant-b", Created: at(3)}
	mustErr(t, "CreateDevice again", s.CreateDevice(ctx, dup, hardened), store.ErrExists)
	checkDevices(t, s, nogroup, d7)
	if got := snap(t, s).Users; len(got) != 0 {
		t.Fatalf("creating devices made users: %+v", got)
	}
}

func testInvalid(t *testing.T, s store.Store) {
	ctx := context.Background()
	badIDs := []string{"", strings.Repeat("a", protocol.MaxIDLen+1), "a\x00b", "\xff\xfe"}
	for _, id := range badIDs {
		mustErr(t, fmt.Sprintf("CreateUser(%q)", id), s.CreateUser(ctx, store.User{ID: id, KV: 1}, hardened), store.ErrInvalid)
		mustErr(t, fmt.Sprintf("CreateDevice(%q)", id), s.CreateDevice(ctx, store.Device{ID: id, KV: 1}, hardened), store.ErrInvalid)
		mustErr(t, fmt.Sprintf("Grant(user %q)", id), s.Grant(ctx, store.Grant{User: id, Group: "g"}), store.ErrInvalid)
		if id != "" {
			mustErr(t, fmt.Sprintf("CreateDevice(group %q)", id), s.CreateDevice(ctx, store.Device{ID: "d", KV: 1, Group: id}, hardened), store.ErrInvalid)
			mustErr(t, fmt.Sprintf("Grant(group %q)", id), s.Grant(ctx, store.Grant{User: "u", Group: id}), store.ErrInvalid)
		}
		mustErr(t, fmt.Sprintf("PutEnrolCode(user %q)", id), s.PutEnrolCode(ctx, sha256.Sum256([]byte("c"+id)), id, at(60)), store.ErrInvalid)
	}
	mustErr(t, "Grant with empty group", s.Grant(ctx, store.Grant{User: "u"}), store.ErrInvalid)
	mustErr(t, "CreateDevice in group *", s.CreateDevice(ctx, store.Device{ID: "d", KV: 1, Group: store.AllGroups}, hardened), store.ErrInvalid)
	mustErr(t, "CreateUser kv 0", s.CreateUser(ctx, store.User{ID: "u", KV: 0}, hardened), store.ErrInvalid)
	mustErr(t, "CreateDevice kv 0", s.CreateDevice(ctx, store.Device{ID: "d", KV: 0}, hardened), store.ErrInvalid)
	mustErr(t, "CreateUser revoked", s.CreateUser(ctx, store.User{ID: "u", KV: 1, Revoked: true, RevokedAt: at(0)}, hardened), store.ErrInvalid)
	mustErr(t, "CreateDevice revoked", s.CreateDevice(ctx, store.Device{ID: "d", KV: 1, Revoked: true}, hardened), store.ErrInvalid)
	mustErr(t, "CreateUser profile 0x07", s.CreateUser(ctx, store.User{ID: "u", KV: 1}, protocol.Profile(7)), store.ErrInvalid)
	mustErr(t, "CreateDevice profile 0", s.CreateDevice(ctx, store.Device{ID: "d", KV: 1}, protocol.Profile(0)), store.ErrInvalid)

	sn := snap(t, s)
	if len(sn.Users)+len(sn.Devices)+len(sn.Grants) != 0 {
		t.Fatalf("invalid records changed the store: %+v", sn)
	}
	if _, err := s.TakeEnrolCode(ctx, sha256.Sum256([]byte("c")), at(0)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("an invalid PutEnrolCode stored a code: Take gave %v", err)
	}
}

func testNamespaceClassic(t *testing.T, s store.Store) {
	ctx := context.Background()
	dev := store.Device{ID: "x", KV: 1, Group: "g", Created: at(0)}
	mustOK(t, "CreateDevice x", s.CreateDevice(ctx, dev, classic))
	mustErr(t, "classic CreateUser x with device x", s.CreateUser(ctx, store.User{ID: "x", KV: 1, Created: at(1)}, classic), store.ErrNamespace)

	usr := store.User{ID: "y", KV: 1, Created: at(2)}
	mustOK(t, "CreateUser y", s.CreateUser(ctx, usr, classic))
	mustErr(t, "classic CreateDevice y with user y", s.CreateDevice(ctx, store.Device{ID: "y", KV: 1, Created: at(3)}, classic), store.ErrNamespace)

	// A revoked identity still holds its id: the revoked device's tag
	// would still equal the new user's tag.
	rev := store.Device{ID: "z", KV: 1, Created: at(4)}
	mustOK(t, "CreateDevice z", s.CreateDevice(ctx, rev, classic))
	mustOK(t, "RevokeDevice z", s.RevokeDevice(ctx, "z", at(5)))
	mustErr(t, "classic CreateUser z with revoked device z", s.CreateUser(ctx, store.User{ID: "z", KV: 1}, classic), store.ErrNamespace)
	ru := store.User{ID: "w", KV: 1, Created: at(6)}
	mustOK(t, "CreateUser w", s.CreateUser(ctx, ru, classic))
	mustOK(t, "RevokeUser w", s.RevokeUser(ctx, "w", at(7)))
	mustErr(t, "classic CreateDevice w with revoked user w", s.CreateDevice(ctx, store.Device{ID: "w", KV: 1}, classic), store.ErrNamespace)

	rev.Revoked, rev.RevokedAt = true, at(5)
	ru.Revoked, ru.RevokedAt = true, at(7)
	checkUsers(t, s, ru, usr)
	checkDevices(t, s, dev, rev)
}

func testNamespaceHardened(t *testing.T, s store.Store) {
	ctx := context.Background()
	dev := store.Device{ID: "x", KV: 1, Group: "g", Created: at(0)}
	usr := store.User{ID: "x", KV: 2, Created: at(1)}
	mustOK(t, "CreateDevice x", s.CreateDevice(ctx, dev, hardened))
	mustOK(t, "hardened CreateUser x with device x", s.CreateUser(ctx, usr, hardened))
	usr2 := store.User{ID: "y", KV: 1, Created: at(2)}
	dev2 := store.Device{ID: "y", KV: 1, Created: at(3)}
	mustOK(t, "CreateUser y", s.CreateUser(ctx, usr2, hardened))
	mustOK(t, "hardened CreateDevice y with user y", s.CreateDevice(ctx, dev2, hardened))
	checkUsers(t, s, usr, usr2)
	checkDevices(t, s, dev, dev2)

	// Revocation is per kind: revoking user x leaves device x active.
	mustOK(t, "RevokeUser x", s.RevokeUser(ctx, "x", at(4)))
	usr.Revoked, usr.RevokedAt = true, at(4)
	checkUsers(t, s, usr, usr2)
	checkDevices(t, s, dev, dev2)
}

func testRevokeUser(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustErr(t, "RevokeUser unknown", s.RevokeUser(ctx, "nobody", at(0)), store.ErrNotFound)
	a := store.User{ID: "alice", KV: 1, Created: at(0)}
	b := store.User{ID: "bob", KV: 1, Created: at(0)}
	mustOK(t, "CreateUser", s.CreateUser(ctx, a, hardened))
	mustOK(t, "CreateUser", s.CreateUser(ctx, b, hardened))
	mustErr(t, "RevokeUser of a device id", s.RevokeUser(ctx, "sensor", at(0)), store.ErrNotFound)
	mustOK(t, "RevokeUser alice", s.RevokeUser(ctx, "alice", at(10)))
	a.Revoked, a.RevokedAt = true, at(10)
	checkUsers(t, s, a, b)
	// Revoking again keeps the first time.
	mustOK(t, "RevokeUser alice again", s.RevokeUser(ctx, "alice", at(20)))
	checkUsers(t, s, a, b)
	// A revoked id is never registered again.
	mustErr(t, "CreateUser revoked alice", s.CreateUser(ctx, store.User{ID: "alice", KV: 1}, hardened), store.ErrExists)
	checkUsers(t, s, a, b)
}

func testRevokeDevice(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustErr(t, "RevokeDevice unknown", s.RevokeDevice(ctx, "nothing", at(0)), store.ErrNotFound)
	d := store.Device{ID: "d1", KV: 1, Group: "g", Created: at(0)}
	e := store.Device{ID: "d2", KV: 1, Group: "g", Created: at(0)}
	mustOK(t, "CreateDevice", s.CreateDevice(ctx, d, hardened))
	mustOK(t, "CreateDevice", s.CreateDevice(ctx, e, hardened))
	mustOK(t, "CreateUser u", s.CreateUser(ctx, store.User{ID: "u", KV: 1}, hardened))
	mustErr(t, "RevokeDevice of a user id", s.RevokeDevice(ctx, "u", at(0)), store.ErrNotFound)
	mustOK(t, "RevokeDevice d2", s.RevokeDevice(ctx, "d2", at(10)))
	e.Revoked, e.RevokedAt = true, at(10)
	checkDevices(t, s, d, e)
	mustOK(t, "RevokeDevice d2 again", s.RevokeDevice(ctx, "d2", at(30)))
	checkDevices(t, s, d, e)
	mustErr(t, "CreateDevice revoked d2", s.CreateDevice(ctx, store.Device{ID: "d2", KV: 1}, hardened), store.ErrExists)
	checkDevices(t, s, d, e)
}

func testGrants(t *testing.T, s store.Store) {
	ctx := context.Background()
	checkGrants(t, s)
	mustErr(t, "Ungrant on empty store", s.Ungrant(ctx, store.Grant{User: "alice", Group: "a"}), store.ErrNotFound)
	// Grants need neither the user nor the group to exist yet.
	for _, g := range []store.Grant{
		{User: "bob", Group: "plant-b"},
		{User: "alice", Group: "plant-b"},
		{User: "alice", Group: "plant-a"},
		{User: "carol", Group: store.AllGroups},
	} {
		mustOK(t, fmt.Sprintf("Grant %+v", g), s.Grant(ctx, g))
	}
	// Granting twice is not an error and lists the grant once.
	mustOK(t, "Grant again", s.Grant(ctx, store.Grant{User: "alice", Group: "plant-a"}))
	checkGrants(t, s,
		store.Grant{User: "alice", Group: "plant-a"},
		store.Grant{User: "alice", Group: "plant-b"},
		store.Grant{User: "bob", Group: "plant-b"},
		store.Grant{User: "carol", Group: store.AllGroups},
	)
	// Removing one grant leaves the user's other grants and other users'
	// grants of the same group.
	mustOK(t, "Ungrant alice plant-b", s.Ungrant(ctx, store.Grant{User: "alice", Group: "plant-b"}))
	mustErr(t, "Ungrant alice plant-b again", s.Ungrant(ctx, store.Grant{User: "alice", Group: "plant-b"}), store.ErrNotFound)
	mustErr(t, "Ungrant alice * (not granted)", s.Ungrant(ctx, store.Grant{User: "alice", Group: store.AllGroups}), store.ErrNotFound)
	checkGrants(t, s,
		store.Grant{User: "alice", Group: "plant-a"},
		store.Grant{User: "bob", Group: "plant-b"},
		store.Grant{User: "carol", Group: store.AllGroups},
	)
	// User and group are not confused by concatenation.
	mustOK(t, "Grant ab/c", s.Grant(ctx, store.Grant{User: "ab", Group: "c"}))
	mustErr(t, "Ungrant a/bc", s.Ungrant(ctx, store.Grant{User: "a", Group: "bc"}), store.ErrNotFound)
	mustOK(t, "Ungrant carol *", s.Ungrant(ctx, store.Grant{User: "carol", Group: store.AllGroups}))
	checkGrants(t, s,
		store.Grant{User: "ab", Group: "c"},
		store.Grant{User: "alice", Group: "plant-a"},
		store.Grant{User: "bob", Group: "plant-b"},
	)
}

func code(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func testEnrolCodes(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.TakeEnrolCode(ctx, code("never"), at(0)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("Take of an unknown code: %v, want ErrCodeInvalid", err)
	}
	mustOK(t, "PutEnrolCode", s.PutEnrolCode(ctx, code("one"), "alice", at(900)))
	mustOK(t, "PutEnrolCode", s.PutEnrolCode(ctx, code("two"), "bob", at(900)))
	// A second code for the same user is fine (the operator lost the first).
	mustOK(t, "PutEnrolCode", s.PutEnrolCode(ctx, code("three"), "alice", at(900)))
	mustErr(t, "PutEnrolCode duplicate hash", s.PutEnrolCode(ctx, code("one"), "mallory", at(9000)), store.ErrExists)

	user, err := s.TakeEnrolCode(ctx, code("one"), at(1))
	if err != nil || user != "alice" {
		t.Fatalf("Take one: %q, %v; want alice", user, err)
	}
	if _, err := s.TakeEnrolCode(ctx, code("one"), at(2)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("second Take of one code: %v, want ErrCodeInvalid", err)
	}
	user, err = s.TakeEnrolCode(ctx, code("two"), at(3))
	if err != nil || user != "bob" {
		t.Fatalf("Take two: %q, %v; want bob", user, err)
	}
	user, err = s.TakeEnrolCode(ctx, code("three"), at(4))
	if err != nil || user != "alice" {
		t.Fatalf("Take three: %q, %v; want alice", user, err)
	}
	// Codes are not identities.
	if sn := snap(t, s); len(sn.Users) != 0 {
		t.Fatalf("enrolment codes made users: %+v", sn.Users)
	}
}

func testEnrolCodeExpiry(t *testing.T, s store.Store) {
	ctx := context.Background()
	exp := at(900)
	mustOK(t, "PutEnrolCode a", s.PutEnrolCode(ctx, code("a"), "alice", exp))
	mustOK(t, "PutEnrolCode b", s.PutEnrolCode(ctx, code("b"), "bob", exp))
	mustOK(t, "PutEnrolCode c", s.PutEnrolCode(ctx, code("c"), "carol", exp))
	user, err := s.TakeEnrolCode(ctx, code("c"), exp.Add(-time.Microsecond))
	if err != nil || user != "carol" {
		t.Fatalf("Take just before expiry: %q, %v; want carol", user, err)
	}
	// At its expiry time a code is expired.
	if _, err := s.TakeEnrolCode(ctx, code("a"), exp); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("Take at expiry: %v, want ErrCodeInvalid", err)
	}
	if _, err := s.TakeEnrolCode(ctx, code("b"), exp.Add(time.Hour)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("Take after expiry: %v, want ErrCodeInvalid", err)
	}
	// A take that finds a code expired consumes it: a later take with an
	// earlier clock (another replica's) does not revive it.
	if _, err := s.TakeEnrolCode(ctx, code("a"), at(0)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("Take of a code found expired before, with an earlier clock: %v, want ErrCodeInvalid", err)
	}
	// Expiry of one code does not touch a code still valid.
	mustOK(t, "PutEnrolCode d", s.PutEnrolCode(ctx, code("d"), "dave", at(2000)))
	if _, err := s.TakeEnrolCode(ctx, code("b"), at(1000)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("Take of b again: %v, want ErrCodeInvalid", err)
	}
	user, err = s.TakeEnrolCode(ctx, code("d"), at(1001))
	if err != nil || user != "dave" {
		t.Fatalf("Take d: %q, %v; want dave", user, err)
	}
}

func testEnrolCodeConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 16
	for round := range 5 {
		c := code(fmt.Sprint("race", round))
		mustOK(t, "PutEnrolCode", s.PutEnrolCode(ctx, c, "alice", at(900)))
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			wins     int
			others   []error
			start    = make(chan struct{})
			wrongUsr string
		)
		for range n {
			wg.Go(func() {
				<-start
				u, err := s.TakeEnrolCode(ctx, c, at(1))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
					if u != "alice" {
						wrongUsr = u
					}
				case !errors.Is(err, store.ErrCodeInvalid):
					others = append(others, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if wins != 1 || len(others) != 0 || wrongUsr != "" {
			t.Fatalf("round %d: %d concurrent takes: %d won (want exactly 1), other errors %v, wrong user %q",
				round, n, wins, others, wrongUsr)
		}
	}
}

func testConcurrentCreate(t *testing.T, s store.Store) {
	ctx := context.Background()
	race := func(fs ...func() error) (ok int, errs []error) {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			start = make(chan struct{})
		)
		for _, f := range fs {
			wg.Go(func() {
				<-start
				err := f()
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					ok++
				} else {
					errs = append(errs, err)
				}
			})
		}
		close(start)
		wg.Wait()
		return ok, errs
	}
	var fs []func() error
	for i := range 8 {
		fs = append(fs, func() error {
			return s.CreateUser(ctx, store.User{ID: "dup", KV: uint8(i + 1), Created: at(i)}, hardened)
		})
	}
	ok, errs := race(fs...)
	if ok != 1 {
		t.Fatalf("8 concurrent CreateUser of one id: %d succeeded, want 1", ok)
	}
	for _, err := range errs {
		mustErr(t, "losing CreateUser", err, store.ErrExists)
	}
	if n := len(snap(t, s).Users); n != 1 {
		t.Fatalf("%d users after the race, want 1", n)
	}

	// Classic: a user and a device with one id, created at once: one wins.
	for i := range 5 {
		id := fmt.Sprint("same-", i)
		ok, errs := race(
			func() error { return s.CreateUser(ctx, store.User{ID: id, KV: 1}, classic) },
			func() error { return s.CreateDevice(ctx, store.Device{ID: id, KV: 1}, classic) },
		)
		if ok != 1 || len(errs) != 1 || !errors.Is(errs[0], store.ErrNamespace) {
			t.Fatalf("classic user and device %q at once: %d succeeded, errors %v; want 1 and ErrNamespace", id, ok, errs)
		}
	}
	sn := snap(t, s)
	if len(sn.Users)+len(sn.Devices) != 1+5 {
		t.Fatalf("after the namespace races: %d users, %d devices; want 6 in all", len(sn.Users), len(sn.Devices))
	}
}

func sampleAudit() []store.AuditRecord {
	return []store.AuditRecord{
		{Time: at(0), Kind: "enrol", Outcome: "ok", User: "alice", Source: "192.0.2.1:4000", KVUser: 1},
		{Time: at(1), Kind: "provision", Outcome: "ok", Device: "sensor-7", Detail: "group plant-a", KVDevice: 1},
		{Time: at(2), Kind: "verify", Outcome: "ok", User: "alice", Device: "sensor-7", Source: "[2001:db8::1]:5683", KVUser: 1, KVDevice: 1, LatencyUS: 412},
		{Time: at(3), Kind: "verify", Outcome: "refused", Reason: "bad E_i", User: "alice", Device: "sensor-9", KVUser: 1, KVDevice: 2, LatencyUS: 380, Count: 37},
		{Time: at(4), Kind: "revoke", Outcome: "ok", User: "alice", Detail: "user revoked by admin"},
		{Time: at(5), Kind: "verify", Outcome: "refused", Reason: "revoked user", User: "alice", Device: "sensor-7", LatencyUS: 95},
		{Time: at(6), Kind: "verify", Outcome: "ok", User: "bob", Device: "sensor-7", LatencyUS: 401},
		{Time: at(7), Kind: "policy", Outcome: "ok", User: "bob", Detail: "grant plant-a"},
		{Time: at(8), Kind: "key", Outcome: "ok", Detail: "rotated to version 2"},
		{Time: at(9), Kind: "verify", Outcome: "error", Reason: "registry unavailable", User: "bob", Device: "pump-1"},
	}
}

func query(t *testing.T, s store.Store, f store.AuditFilter) ([]store.AuditRecord, []uint64) {
	t.Helper()
	recs, seqs, err := s.QueryAudit(context.Background(), f)
	if err != nil {
		t.Fatalf("QueryAudit(%+v): %v", f, err)
	}
	if len(recs) != len(seqs) {
		t.Fatalf("QueryAudit(%+v): %d records, %d sequence numbers", f, len(recs), len(seqs))
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("QueryAudit(%+v): sequence numbers not increasing: %v", f, seqs)
		}
	}
	if len(seqs) > 0 && seqs[0] == 0 {
		t.Fatalf("QueryAudit(%+v): sequence number 0", f)
	}
	return recs, seqs
}

func testAuditRoundTrip(t *testing.T, s store.Store) {
	ctx := context.Background()
	if recs, _ := query(t, s, store.AuditFilter{}); len(recs) != 0 {
		t.Fatalf("empty store has audit records: %+v", recs)
	}
	mustOK(t, "AppendAudit of nothing", s.AppendAudit(ctx))
	want := sampleAudit()
	mustOK(t, "AppendAudit", s.AppendAudit(ctx, want[:4]...))
	mustOK(t, "AppendAudit", s.AppendAudit(ctx, want[4:]...))
	recs, seqs := query(t, s, store.AuditFilter{})
	if !slices.EqualFunc(recs, want, auditEq) {
		t.Fatalf("audit round trip:\n got %+v\nwant %+v", recs, want)
	}
	// Sequence numbers keep growing across appends.
	mustOK(t, "AppendAudit", s.AppendAudit(ctx, store.AuditRecord{Time: at(10), Kind: "key", Outcome: "ok"}))
	_, seqs2 := query(t, s, store.AuditFilter{})
	if len(seqs2) != len(seqs)+1 || seqs2[len(seqs)] <= seqs[len(seqs)-1] || !slices.Equal(seqs, seqs2[:len(seqs)]) {
		t.Fatalf("sequence numbers after one more append: %v, before %v", seqs2, seqs)
	}
	// Records are stored as given, time truncated to the microsecond.
	odd := store.AuditRecord{Time: at(11).Add(999 * time.Nanosecond), Kind: "verify", Outcome: "refused",
		User: "a\"b\n", Device: "é", Reason: "x", LatencyUS: -1, Detail: strings.Repeat("d", 2000)}
	mustOK(t, "AppendAudit odd", s.AppendAudit(ctx, odd))
	recs, _ = query(t, s, store.AuditFilter{After: seqs2[len(seqs2)-1]})
	odd.Time = at(11)
	if len(recs) != 1 || !auditEq(recs[0], odd) {
		t.Fatalf("odd record round trip: got %+v, want %+v", recs, odd)
	}
}

func testAuditFilters(t *testing.T, s store.Store) {
	all := sampleAudit()
	mustOK(t, "AppendAudit", s.AppendAudit(context.Background(), all...))
	_, allSeqs := query(t, s, store.AuditFilter{})
	pick := func(idx ...int) []store.AuditRecord {
		var out []store.AuditRecord
		for _, i := range idx {
			out = append(out, all[i])
		}
		return out
	}
	cases := []struct {
		name string
		f    store.AuditFilter
		want []store.AuditRecord
	}{
		{"kind", store.AuditFilter{Kind: "verify"}, pick(2, 3, 5, 6, 9)},
		{"user", store.AuditFilter{User: "alice"}, pick(0, 2, 3, 4, 5)},
		{"device", store.AuditFilter{Device: "sensor-7"}, pick(1, 2, 5, 6)},
		{"outcome", store.AuditFilter{Outcome: "refused"}, pick(3, 5)},
		{"since (inclusive)", store.AuditFilter{Since: at(7)}, pick(7, 8, 9)},
		{"until (exclusive)", store.AuditFilter{Until: at(2)}, pick(0, 1)},
		{"since and until", store.AuditFilter{Since: at(3), Until: at(6)}, pick(3, 4, 5)},
		{"kind and user", store.AuditFilter{Kind: "verify", User: "bob"}, pick(6, 9)},
		{"kind, user, device, outcome", store.AuditFilter{Kind: "verify", User: "alice", Device: "sensor-7", Outcome: "refused"}, pick(5)},
		{"user and time", store.AuditFilter{User: "alice", Since: at(3), Until: at(5)}, pick(3, 4)},
		{"after", store.AuditFilter{After: allSeqs[6]}, pick(7, 8, 9)},
		{"after and kind", store.AuditFilter{After: allSeqs[3], Kind: "verify"}, pick(5, 6, 9)},
		{"limit", store.AuditFilter{Kind: "verify", Limit: 2}, pick(2, 3)},
		{"no match", store.AuditFilter{User: "nobody"}, nil},
		{"empty time range", store.AuditFilter{Since: at(5), Until: at(5)}, nil},
		{"prefix is not a match", store.AuditFilter{User: "ali"}, nil},
		{"after the last", store.AuditFilter{After: allSeqs[len(allSeqs)-1]}, nil},
	}
	for _, c := range cases {
		recs, seqs := query(t, s, c.f)
		if !slices.EqualFunc(recs, c.want, auditEq) {
			t.Errorf("%s: filter %+v\n got %+v\nwant %+v", c.name, c.f, recs, c.want)
		}
		// Each record comes with its own sequence number.
		for i, seq := range seqs {
			j := slices.Index(allSeqs, seq)
			if j < 0 || !auditEq(all[j], recs[i]) {
				t.Errorf("%s: record %d has sequence number %d which belongs to another record", c.name, i, seq)
			}
		}
	}
}

func testAuditPaging(t *testing.T, s store.Store) {
	ctx := context.Background()
	var all []store.AuditRecord
	for i := range 23 {
		kind := "verify"
		if i%3 == 0 {
			kind = "enrol"
		}
		all = append(all, store.AuditRecord{Time: at(i), Kind: kind, Outcome: "ok", User: fmt.Sprint("u", i)})
	}
	mustOK(t, "AppendAudit", s.AppendAudit(ctx, all...))
	for _, kind := range []string{"", "verify"} {
		var want []store.AuditRecord
		for _, r := range all {
			if kind == "" || r.Kind == kind {
				want = append(want, r)
			}
		}
		for _, limit := range []int{1, 4, 5, 23, 100} {
			var got []store.AuditRecord
			var after uint64
			pages := 0
			for {
				recs, seqs := query(t, s, store.AuditFilter{Kind: kind, After: after, Limit: limit})
				if len(recs) > limit {
					t.Fatalf("limit %d: page of %d", limit, len(recs))
				}
				if len(recs) == 0 {
					break
				}
				pages++
				if pages > len(all)+1 {
					t.Fatalf("limit %d: paging does not end", limit)
				}
				got = append(got, recs...)
				after = seqs[len(seqs)-1]
			}
			if !slices.EqualFunc(got, want, auditEq) {
				t.Fatalf("kind %q, limit %d: pages joined:\n got %+v\nwant %+v", kind, limit, got, want)
			}
			if wantPages := (len(want) + limit - 1) / limit; pages != wantPages {
				t.Fatalf("kind %q, limit %d: %d pages, want %d", kind, limit, pages, wantPages)
			}
		}
	}
}

func testAuditLimits(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := store.MaxAuditLimit + 5
	recs := make([]store.AuditRecord, n)
	for i := range recs {
		recs[i] = store.AuditRecord{Time: at(i), Kind: "verify", Outcome: "ok", User: "u"}
	}
	mustOK(t, "AppendAudit", s.AppendAudit(ctx, recs...))
	for _, c := range []struct{ limit, want int }{
		{0, store.DefaultAuditLimit},
		{-1, store.DefaultAuditLimit},
		{7, 7},
		{store.MaxAuditLimit + 1, store.MaxAuditLimit},
		{1 << 30, store.MaxAuditLimit},
	} {
		got, _ := query(t, s, store.AuditFilter{Limit: c.limit})
		if len(got) != c.want {
			t.Errorf("Limit %d: %d records, want %d", c.limit, len(got), c.want)
		}
		if len(got) > 0 && !got[0].Time.Equal(at(0)) {
			t.Errorf("Limit %d: first record at %v, want the oldest", c.limit, got[0].Time)
		}
	}
}

func testAuditConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				errs <- s.AppendAudit(ctx, store.AuditRecord{Time: at(i), Kind: "verify", Outcome: "ok", User: fmt.Sprint("w", w), LatencyUS: int64(i)})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		mustOK(t, "concurrent AppendAudit", err)
	}
	recs, seqs := query(t, s, store.AuditFilter{Limit: store.MaxAuditLimit})
	if len(recs) != writers*each {
		t.Fatalf("%d records after %d concurrent appends", len(recs), writers*each)
	}
	// Each writer's records are in its own order (query checked that the
	// sequence numbers are strictly increasing, hence unique).
	next := map[string]int64{}
	for _, r := range recs {
		if r.LatencyUS != next[r.User] {
			t.Fatalf("writer %s: record %d out of order (seqs %v)", r.User, r.LatencyUS, seqs)
		}
		next[r.User]++
	}
}

func populate(t *testing.T, s store.Store) store.Snapshot {
	t.Helper()
	ctx := context.Background()
	want := store.Snapshot{
		Users: []store.User{
			{ID: "Zed", KV: 1, Created: at(3)},
			{ID: "alice", KV: 2, Created: at(1), Revoked: true, RevokedAt: at(9)},
			{ID: "bob", KV: 1, Created: at(2)},
			{ID: "sensor-7", KV: 2, Created: at(4)},
		},
		Devices: []store.Device{
			{ID: "pump-1", KV: 1, Group: "plant-b", Created: at(5)},
			{ID: "sensor-7", KV: 2, Group: "plant-a", Created: at(6)},
			{ID: "sensor-8", KV: 1, Created: at(7), Revoked: true, RevokedAt: at(8)},
		},
		Grants: []store.Grant{
			{User: "Zed", Group: store.AllGroups},
			{User: "alice", Group: "plant-a"},
			{User: "bob", Group: "plant-a"},
			{User: "bob", Group: "plant-b"},
		},
	}
	// Insert in an order unlike the sorted one.
	for _, i := range []int{2, 0, 3, 1} {
		u := want.Users[i]
		u.Revoked, u.RevokedAt = false, time.Time{}
		mustOK(t, "CreateUser", s.CreateUser(ctx, u, hardened))
	}
	for _, i := range []int{1, 2, 0} {
		d := want.Devices[i]
		d.Revoked, d.RevokedAt = false, time.Time{}
		mustOK(t, "CreateDevice", s.CreateDevice(ctx, d, hardened))
	}
	for _, i := range []int{3, 1, 0, 2} {
		mustOK(t, "Grant", s.Grant(ctx, want.Grants[i]))
	}
	mustOK(t, "RevokeUser", s.RevokeUser(ctx, "alice", at(9)))
	mustOK(t, "RevokeDevice", s.RevokeDevice(ctx, "sensor-8", at(8)))
	return want
}

func checkSnapshot(t *testing.T, s store.Store, want store.Snapshot) {
	t.Helper()
	got := snap(t, s)
	if !slices.EqualFunc(got.Users, want.Users, userEq) ||
		!slices.EqualFunc(got.Devices, want.Devices, deviceEq) ||
		!slices.Equal(got.Grants, want.Grants) {
		t.Fatalf("snapshot:\n got %+v\nwant %+v", got, want)
	}
}

func testSnapshot(t *testing.T, s store.Store) {
	sn := snap(t, s)
	if len(sn.Users)+len(sn.Devices)+len(sn.Grants) != 0 {
		t.Fatalf("new store is not empty: %+v", sn)
	}
	want := populate(t, s)
	checkSnapshot(t, s, want)
	// A snapshot is a copy: changing the store afterwards leaves it alone,
	// and changing it leaves the store alone.
	sn = snap(t, s)
	mustOK(t, "CreateUser", s.CreateUser(context.Background(), store.User{ID: "later", KV: 1}, hardened))
	mustOK(t, "Grant", s.Grant(context.Background(), store.Grant{User: "later", Group: "g"}))
	if !slices.EqualFunc(sn.Users, want.Users, userEq) || !slices.Equal(sn.Grants, want.Grants) {
		t.Fatalf("an earlier snapshot changed with the store: %+v", sn)
	}
	sn.Users[0].ID = "changed"
	sn.Devices[0].Revoked = true
	want.Users = append(want.Users, store.User{ID: "later", KV: 1})
	slices.SortFunc(want.Users, func(a, b store.User) int { return strings.Compare(a.ID, b.ID) })
	want.Grants = append(want.Grants, store.Grant{User: "later", Group: "g"})
	checkSnapshot(t, s, want)
}

func testCanceled(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.CreateUser(ctx, store.User{ID: "alice", KV: 1}, hardened); err == nil {
		t.Fatal("CreateUser with a canceled context succeeded")
	}
	if err := s.AppendAudit(ctx, store.AuditRecord{Kind: "verify"}); err == nil {
		t.Fatal("AppendAudit with a canceled context succeeded")
	}
	if err := s.PutEnrolCode(ctx, code("x"), "alice", at(60)); err == nil {
		t.Fatal("PutEnrolCode with a canceled context succeeded")
	}
	sn := snap(t, s)
	recs, _ := query(t, s, store.AuditFilter{})
	if len(sn.Users) != 0 || len(recs) != 0 {
		t.Fatalf("calls with a canceled context changed the store: %+v, %+v", sn, recs)
	}
	if _, err := s.TakeEnrolCode(context.Background(), code("x"), at(0)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("PutEnrolCode with a canceled context stored the code: Take gave %v", err)
	}
}

func testClose(t *testing.T, s store.Store) {
	mustOK(t, "CreateUser", s.CreateUser(context.Background(), store.User{ID: "alice", KV: 1}, hardened))
	mustOK(t, "Close", s.Close())
	mustOK(t, "second Close", s.Close())
	if err := s.CreateUser(context.Background(), store.User{ID: "bob", KV: 1}, hardened); err == nil {
		t.Fatal("CreateUser after Close succeeded")
	}
	if _, err := s.Snapshot(context.Background()); err == nil {
		t.Fatal("Snapshot after Close succeeded")
	}
}

func testPersistence(t *testing.T, s store.Store, reopen func(t *testing.T, s store.Store) store.Store) {
	ctx := context.Background()
	want := populate(t, s)
	audit := sampleAudit()
	mustOK(t, "AppendAudit", s.AppendAudit(ctx, audit...))
	_, seqs := query(t, s, store.AuditFilter{})
	mustOK(t, "PutEnrolCode", s.PutEnrolCode(ctx, code("kept"), "dave", at(900)))
	mustOK(t, "PutEnrolCode", s.PutEnrolCode(ctx, code("used"), "erin", at(900)))
	if _, err := s.TakeEnrolCode(ctx, code("used"), at(1)); err != nil {
		t.Fatalf("Take used: %v", err)
	}

	s = reopen(t, s)
	t.Cleanup(func() { s.Close() })
	checkSnapshot(t, s, want)
	recs, seqs2 := query(t, s, store.AuditFilter{})
	if !slices.EqualFunc(recs, audit, auditEq) || !slices.Equal(seqs, seqs2) {
		t.Fatalf("audit after reopen:\n got %+v %v\nwant %+v %v", recs, seqs2, audit, seqs)
	}
	if _, err := s.TakeEnrolCode(ctx, code("used"), at(2)); !errors.Is(err, store.ErrCodeInvalid) {
		t.Fatalf("a used code came back after reopen: %v", err)
	}
	if u, err := s.TakeEnrolCode(ctx, code("kept"), at(2)); err != nil || u != "dave" {
		t.Fatalf("Take kept after reopen: %q, %v; want dave", u, err)
	}
	// The rules still hold, and sequence numbers do not restart.
	mustErr(t, "CreateUser bob after reopen", s.CreateUser(ctx, store.User{ID: "bob", KV: 1}, hardened), store.ErrExists)
	mustErr(t, "classic CreateUser pump-1 after reopen", s.CreateUser(ctx, store.User{ID: "pump-1", KV: 1}, classic), store.ErrNamespace)
	mustOK(t, "AppendAudit after reopen", s.AppendAudit(ctx, store.AuditRecord{Time: at(20), Kind: "key", Outcome: "ok"}))
	_, seqs3 := query(t, s, store.AuditFilter{After: seqs[len(seqs)-1]})
	if len(seqs3) != 1 {
		t.Fatalf("after reopen a new record got a sequence number <= an old one: %v (old %v)", seqs3, seqs)
	}
}

// A record's Count comes back as written, one (1) as 0.
func testAuditCount(t *testing.T, s store.Store) {
	ctx := context.Background()
	in := []store.AuditRecord{
		{Time: at(0), Kind: "verify", Outcome: "refused", Reason: "bad E_i", Count: 1},
		{Time: at(1), Kind: "verify", Outcome: "refused", Reason: "bad E_i", Count: 2},
		{Time: at(2), Kind: "verify", Outcome: "refused", Reason: "bad E_i", Count: 1<<32 - 1},
		{Time: at(3), Kind: "verify", Outcome: "ok"},
	}
	mustOK(t, "AppendAudit", s.AppendAudit(ctx, in...))
	recs, _ := query(t, s, store.AuditFilter{})
	want := []uint32{0, 2, 1<<32 - 1, 0}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if r.Count != want[i] || r.Events() != max(uint64(want[i]), 1) {
			t.Errorf("record %d: Count %d, want %d", i, r.Count, want[i])
		}
	}
}

// PruneAudit deletes the oldest records before its bound, in steps of
// about limit, never one at or after the bound, and the sequence numbers
// of what is left do not change.
func testAuditPrune(t *testing.T, s store.Store) {
	p, ok := s.(store.AuditPruner)
	if !ok {
		t.Skip("backend does not implement store.AuditPruner")
	}
	ctx := context.Background()
	var all []store.AuditRecord
	for b := range 20 { // 20 appends of 10 records: 200 records at(0..199)
		var batch []store.AuditRecord
		for i := range 10 {
			batch = append(batch, store.AuditRecord{Time: at(b*10 + i), Kind: "verify", Outcome: "ok", User: fmt.Sprint("u", b*10+i)})
		}
		mustOK(t, "AppendAudit", s.AppendAudit(ctx, batch...))
		all = append(all, batch...)
	}
	n, err := p.PruneAudit(ctx, time.Time{}, 100)
	mustOK(t, "PruneAudit with no bound", err)
	if n != 0 {
		t.Fatalf("PruneAudit with no bound deleted %d", n)
	}
	total := 0
	for range 100 {
		n, err := p.PruneAudit(ctx, at(150), 20)
		mustOK(t, "PruneAudit", err)
		if n == 0 {
			break
		}
		if n > 20+10 {
			t.Fatalf("PruneAudit(limit 20) deleted %d", n)
		}
		total += n
	}
	if total != 150 {
		t.Fatalf("PruneAudit deleted %d records before at(150), want 150", total)
	}
	recs, seqs := query(t, s, store.AuditFilter{Limit: store.MaxAuditLimit})
	if len(recs) != 50 {
		t.Fatalf("%d records left, want 50", len(recs))
	}
	for i := range recs {
		if !auditEq(recs[i], all[150+i]) || seqs[i] != seqs[0]+uint64(i) {
			t.Fatalf("record %d left: %+v (seq %d), want %+v", i, recs[i], seqs[i], all[150+i])
		}
	}
	mustOK(t, "AppendAudit after pruning", s.AppendAudit(ctx, store.AuditRecord{Time: at(300), Kind: "key", Outcome: "ok"}))
	recs, seqs2 := query(t, s, store.AuditFilter{After: seqs[len(seqs)-1]})
	if len(recs) != 1 || seqs2[0] <= seqs[len(seqs)-1] {
		t.Fatalf("record after pruning: %+v %v", recs, seqs2)
	}
}

// A journal mark is set with the records it covers and never goes back;
// marks of different journals are apart.
func testAuditJournalMark(t *testing.T, s store.Store) {
	j, ok := s.(store.AuditJournaled)
	if !ok {
		t.Skip("backend does not implement store.AuditJournaled")
	}
	ctx := context.Background()
	mark := func(id string, want uint64) {
		t.Helper()
		got, err := j.AuditJournalMark(ctx, id)
		mustOK(t, "AuditJournalMark", err)
		if got != want {
			t.Fatalf("mark of %q: %d, want %d", id, got, want)
		}
	}
	mark("a", 0)
	rec := store.AuditRecord{Time: at(0), Kind: "verify", Outcome: "ok"}
	mustOK(t, "AppendAuditJournaled", j.AppendAuditJournaled(ctx, "a", 7, rec, rec))
	mark("a", 7)
	mark("b", 0)
	mustOK(t, "AppendAuditJournaled", j.AppendAuditJournaled(ctx, "a", 3, rec))
	mark("a", 7)
	mustOK(t, "AppendAuditJournaled", j.AppendAuditJournaled(ctx, "b", 1<<62+5, rec))
	mark("b", 1<<62+5)
	mark("a", 7)
	if recs, _ := query(t, s, store.AuditFilter{}); len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
}

// nextChanges reads the feed until want has gone by in order (other
// changes may come between: a backend may announce one write twice), and
// returns every change read.
func nextChanges(t *testing.T, f store.Feed, want ...store.Change) []store.Change {
	t.Helper()
	var got []store.Change
	for i := 0; i < len(want); {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := f.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("after %v: waiting for %v: %v", got, want[i], err)
		}
		if c.Kind == store.ChangeReset {
			t.Fatalf("after %v: a reset instead of %v", got, want[i])
		}
		got = append(got, c)
		if c == want[i] {
			i++
		}
	}
	return got
}

func testChangeFeed(t *testing.T, s store.Store) {
	ctx := context.Background()
	f, err := s.Listen(ctx)
	mustOK(t, "Listen", err)
	defer f.Close()
	mustOK(t, "Ping", f.Ping(ctx))
	mustOK(t, "CreateUser", s.CreateUser(ctx, store.User{ID: "alice", KV: 1, Created: at(0)}, protocol.Hardened))
	// A write that fails commits nothing and announces nothing.
	mustErr(t, "CreateUser again", s.CreateUser(ctx, store.User{ID: "alice", KV: 1, Created: at(0)}, protocol.Hardened), store.ErrExists)
	mustOK(t, "CreateDevice", s.CreateDevice(ctx, store.Device{ID: "d1", KV: 1, Group: "g", Created: at(1)}, protocol.Hardened))
	mustOK(t, "Grant", s.Grant(ctx, store.Grant{User: "alice", Group: "g"}))
	mustOK(t, "RevokeUser", s.RevokeUser(ctx, "alice", at(2)))
	mustOK(t, "Ungrant", s.Ungrant(ctx, store.Grant{User: "alice", Group: "g"}))
	fp := store.KeyFingerprint(protocol.MasterKey{Version: 1})
	_, err = s.PublishKeys(ctx, []store.KeyVersion{{Version: 1, Fingerprint: fp, Created: at(3)}}, nil, at(3))
	mustOK(t, "PublishKeys", err)
	user := store.Change{Kind: store.ChangeUser, ID: "alice"}
	device := store.Change{Kind: store.ChangeDevice, ID: "d1"}
	grant := store.Change{Kind: store.ChangeGrant, ID: "alice", Group: "g"}
	key := store.Change{Kind: store.ChangeKey, Version: 1}
	got := nextChanges(t, f, user, device, grant, user, grant, key)
	for i, c := range got[:len(got)-1] {
		if c == user && got[i+1] == user {
			t.Fatalf("changes %v: the refused CreateUser was announced", got)
		}
	}

	// Nothing more: Next waits, and says so with ErrFeedTimeout.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	c, err := f.Next(short)
	cancel()
	if !errors.Is(err, store.ErrFeedTimeout) {
		t.Fatalf("Next with nothing to read: %v, %v; want ErrFeedTimeout", c, err)
	}
	mustOK(t, "Ping", f.Ping(ctx))

	st, err := s.Current(ctx, append(got, store.Change{Kind: store.ChangeUser, ID: "nobody"}, store.Change{Kind: store.ChangeDevice, ID: "nothing"}))
	mustOK(t, "Current", err)
	if len(st.Users) != 1 || !userEq(st.Users[0], store.User{ID: "alice", KV: 1, Created: at(0), Revoked: true, RevokedAt: at(2)}) {
		t.Errorf("Current users: %+v", st.Users)
	}
	if len(st.Devices) != 1 || !deviceEq(st.Devices[0], store.Device{ID: "d1", KV: 1, Group: "g", Created: at(1)}) {
		t.Errorf("Current devices: %+v", st.Devices)
	}
	if len(st.Grants) != 0 || len(st.GoneGrants) != 1 || st.GoneGrants[0] != (store.Grant{User: "alice", Group: "g"}) {
		t.Errorf("Current grants: %+v, gone %+v", st.Grants, st.GoneGrants)
	}
	if len(st.GoneUsers) != 1 || st.GoneUsers[0] != "nobody" || len(st.GoneDevices) != 1 || st.GoneDevices[0] != "nothing" {
		t.Errorf("Current gone: users %v devices %v", st.GoneUsers, st.GoneDevices)
	}
	if len(st.Keys) != 1 || st.Keys[0].Version != 1 || st.Keys[0].Fingerprint != fp {
		t.Errorf("Current keys: %+v", st.Keys)
	}
	// A change that names no key reads no keys.
	st, err = s.Current(ctx, []store.Change{user})
	mustOK(t, "Current", err)
	if st.Keys != nil {
		t.Errorf("Current of a user read keys: %+v", st.Keys)
	}

	// A closed feed hears nothing more; another feed still does.
	f.Close()
	f2, err := s.Listen(ctx)
	mustOK(t, "Listen", err)
	defer f2.Close()
	mustOK(t, "Grant", s.Grant(ctx, store.Grant{User: "alice", Group: "h"}))
	nextChanges(t, f2, store.Change{Kind: store.ChangeGrant, ID: "alice", Group: "h"})
}

func testKeyPublication(t *testing.T, s store.Store) {
	ctx := context.Background()
	ks, err := s.KeyVersions(ctx)
	mustOK(t, "KeyVersions", err)
	if len(ks) != 0 {
		t.Fatalf("a new store has key versions %+v", ks)
	}
	fp1 := store.KeyFingerprint(protocol.MasterKey{Version: 1, Key: [32]byte{1}})
	fp2 := store.KeyFingerprint(protocol.MasterKey{Version: 2, Key: [32]byte{2}})
	if fp1 == fp2 || fp1 != store.KeyFingerprint(protocol.MasterKey{Version: 1, Key: [32]byte{1}}) {
		t.Fatal("KeyFingerprint is not a function of the key and version")
	}
	v1 := store.KeyVersion{Version: 1, Fingerprint: fp1, Created: at(0)}
	v2 := store.KeyVersion{Version: 2, Fingerprint: fp2, Created: at(10)}
	all, err := s.PublishKeys(ctx, []store.KeyVersion{v1, v2}, nil, at(10))
	mustOK(t, "PublishKeys", err)
	check := func(what string, got []store.KeyVersion, want ...store.KeyVersion) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %+v, want %+v", what, got, want)
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Version != w.Version || g.Fingerprint != w.Fingerprint || !g.Created.Equal(w.Created) || g.Retired != w.Retired || !g.RetiredAt.Equal(w.RetiredAt) {
				t.Fatalf("%s: version %d is %+v, want %+v", what, w.Version, g, w)
			}
		}
	}
	check("PublishKeys", all, v1, v2)
	ks, err = s.KeyVersions(ctx)
	mustOK(t, "KeyVersions", err)
	check("KeyVersions", ks, v1, v2)

	// Another key under a recorded version changes nothing at all, not
	// even the retirement asked for in the same call.
	other := store.KeyVersion{Version: 1, Fingerprint: fp2, Created: at(20)}
	_, err = s.PublishKeys(ctx, []store.KeyVersion{other, {Version: 3, Fingerprint: fp1, Created: at(20)}}, []uint8{2}, at(20))
	mustErr(t, "PublishKeys with another key", err, store.ErrKeyConflict)
	ks, err = s.KeyVersions(ctx)
	mustOK(t, "KeyVersions", err)
	check("after a conflict", ks, v1, v2)

	// Publishing again is idempotent; a retirement keeps its first time.
	all, err = s.PublishKeys(ctx, []store.KeyVersion{v2}, []uint8{1}, at(30))
	mustOK(t, "PublishKeys retiring 1", err)
	r1 := v1
	r1.Retired, r1.RetiredAt = true, at(30)
	check("retired", all, r1, v2)
	all, err = s.PublishKeys(ctx, []store.KeyVersion{v2}, []uint8{1}, at(40))
	mustOK(t, "PublishKeys retiring 1 again", err)
	check("retired twice", all, r1, v2)
}
