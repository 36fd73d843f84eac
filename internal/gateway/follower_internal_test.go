package gateway

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
)

// failCurrentOnce is the embedded store whose Current fails once (a read
// error, a timeout).
type failCurrentOnce struct {
	*bolt.Store
	armed *atomic.Bool
}

func (s failCurrentOnce) Current(ctx context.Context, c []store.Change) (store.State, error) {
	if s.armed.Swap(false) {
		return store.State{}, errors.New("injected read failure")
	}
	return s.Store.Current(ctx, c)
}

// TestFollowLocalRetriesAFailedApply: when the registry cannot apply a
// change of its store's feed (a failed read), the change is not dropped:
// the registry is reloaded, and a writer waiting on the change is told it
// is in only once it is.
func TestFollowLocalRetriesAFailedApply(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	if err := st.CreateUser(bg, store.User{ID: "alice", KV: 1, Created: time.Now()}, protocol.Hardened); err != nil {
		t.Fatal(err)
	}
	armed := new(atomic.Bool)
	g, err := Open(Config{DataDir: t.TempDir(), Profile: protocol.Hardened, CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		AuditSampleEvery: -1, InsecureTestKDF: true, Store: failCurrentOnce{st, armed}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()

	armed.Store(true)
	w := g.ExpectChange(store.Change{Kind: store.ChangeUser, ID: "alice"})
	if err := st.RevokeUser(bg, "alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(bg, 5*time.Second)
	defer wcancel()
	if err := w.Wait(wctx); err != nil {
		t.Fatalf("waiting for the revocation: %v", err)
	}
	if got := g.reg.UserState("alice"); got != protocol.Revoked {
		t.Errorf("the wait for the revocation returned; the registry the verify path reads says %v", got)
	}
	if armed.Load() {
		t.Error("the injected read failure never happened: the test tested nothing")
	}
}
