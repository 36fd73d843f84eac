package gateway

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/protocol"
)

// cancelAfterRevoke is the embedded store whose RevokeUser commits and
// then sees its caller go away (the HTTP client disconnecting).
type cancelAfterRevoke struct {
	*bolt.Store
	cancel func()
}

func (s cancelAfterRevoke) RevokeUser(ctx context.Context, id string, at time.Time) error {
	err := s.Store.RevokeUser(ctx, id, at)
	s.cancel()
	return err
}

// TestApplyAdminOutlivesItsCaller: an admin write the store committed
// reaches the registry even when its caller goes away right after the
// commit (an HTTP client disconnecting), so that the audit record saying
// "revoked" never stands beside a registry that still admits the user.
func TestApplyAdminOutlivesItsCaller(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(context.Background(), store.User{ID: "alice", KV: 1, Created: time.Now()}, protocol.Hardened); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := Open(Config{DataDir: t.TempDir(), Profile: protocol.Hardened, CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		AuditSampleEvery: -1, InsecureTestKDF: true, Store: cancelAfterRevoke{st, cancel}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.reg.UserState("alice") != protocol.Active {
		t.Fatal("alice not active at start")
	}
	if _, err := g.Admin().RevokeUser(ctx, "test", "alice"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if got := g.reg.UserState("alice"); got != protocol.Revoked {
		t.Errorf("the store committed the revocation; the registry the verify path reads says %v", got)
	}
}
