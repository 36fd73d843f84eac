package bolt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/store"
)

// TestFeedOverflowResets: a reader that falls more than feedBuffer changes
// behind gets one ChangeReset (reload everything) first, even while writes
// keep its buffer full, then what was kept, instead of blocking the
// writers; a closed store ends its feeds.
func TestFeedOverflowResets(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f, err := s.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const extra = 3
	for i := range feedBuffer + extra {
		if err := s.Grant(ctx, store.Grant{User: "alice", Group: fmt.Sprint("g", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := f.Next(ctx); err != nil || c.Kind != store.ChangeReset {
		t.Fatalf("first read of a reader %d behind: %+v, %v; want a reset", extra, c, err)
	}
	for i := range feedBuffer {
		c, err := f.Next(ctx)
		if err != nil || c.Kind != store.ChangeGrant || c.Group != fmt.Sprint("g", i) {
			t.Fatalf("change %d: %+v, %v", i, c, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := f.Next(short); !errors.Is(err, store.ErrFeedTimeout) {
		t.Fatalf("after the reset: %v, want nothing more", err)
	}
	s.Close()
	if _, err := f.Next(ctx); err == nil || errors.Is(err, store.ErrFeedTimeout) {
		t.Fatalf("Next on a closed store: %v, want the feed gone", err)
	}
	if err := f.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed store succeeded")
	}
	if _, err := s.Listen(ctx); err == nil {
		t.Fatal("Listen on a closed store succeeded")
	}
}
