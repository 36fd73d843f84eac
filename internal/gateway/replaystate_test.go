package gateway

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// TestReplayCacheSurvivesRestart: a login seen before a clean restart is
// still a replay after it; after a crash (the running marker left behind)
// logins that the lost cache might have seen are refused as busy.
func TestReplayCacheSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	now := time.UnixMilli(1_760_000_000_000)
	open := func() *Gateway {
		t.Helper()
		g, err := Open(Config{DataDir: dir, CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			AdminToken: "0123456789abcdef0123456789abcdef", AuditOut: io.Discard, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	ctx := context.Background()
	ms := uint64(now.UnixMilli())
	w := uint64(protocol.DefaultWindow / time.Millisecond)
	var seen protocol.ReplayKey
	seen[1] = 7

	g := open()
	if ok, err := g.memReplay.Insert(ctx, seen, ms+w, ms); !ok || err != nil {
		t.Fatalf("first insert: %v %v", ok, err)
	}
	g.Close()

	now = now.Add(time.Second)
	g = open()
	if ok, err := g.memReplay.Insert(ctx, seen, ms+w, ms+1000); ok || err != nil {
		t.Fatalf("after a clean restart the seen login is fresh again: ok=%v err=%v", ok, err)
	}
	// A crash: the process dies without Close, so the marker stays. Here
	// the store is closed by hand to free its lock, leaving the marker.
	g.store.Close()
	g.memReplay = nil
	if _, err := os.Stat(filepath.Join(dir, runningFile)); err != nil {
		t.Fatal("no running marker while the gateway runs")
	}
	g.coap.close()
	g.adminLn.Close()
	g.audit.close()

	now = now.Add(time.Second)
	g = open()
	defer g.Close()
	var fresh protocol.ReplayKey
	fresh[1] = 8
	t1 := uint64(now.UnixMilli())
	if ok, err := g.memReplay.Insert(ctx, fresh, t1+w, t1); ok || !errors.Is(err, replay.ErrFenced) {
		t.Fatalf("after a crash, a login from the restart's window was not fenced: ok=%v err=%v", ok, err)
	}
	later := t1 + w + 1
	if ok, err := g.memReplay.Insert(ctx, fresh, later+w, later); !ok || err != nil {
		t.Fatalf("one window after the crash, logins are refused still: ok=%v err=%v", ok, err)
	}
}
