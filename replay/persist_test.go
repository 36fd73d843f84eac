package replay_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// TestSnapshotCarriesEntriesAcrossRestart: a key seen by one process is
// still a replay for the next one after a clean shutdown.
func TestSnapshotCarriesEntriesAcrossRestart(t *testing.T) {
	ctx := context.Background()
	a := replay.New(64)
	var live, expired protocol.ReplayKey
	live[1], expired[1] = 1, 2
	if ok, _ := a.Insert(ctx, live, 20_000, 1_000); !ok {
		t.Fatal("first insert refused")
	}
	if ok, _ := a.Insert(ctx, expired, 1_500, 1_000); !ok {
		t.Fatal("first insert refused")
	}
	var buf bytes.Buffer
	if err := a.Save(&buf, 2_000); err != nil {
		t.Fatal(err)
	}
	b := replay.New(64)
	if err := b.Restore(bytes.NewReader(buf.Bytes()), 2_000); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Insert(ctx, live, 20_000, 2_001); ok || err != nil {
		t.Fatalf("restored key inserted again: fresh=%v err=%v", ok, err)
	}
	if b.Len() != 1 {
		t.Fatalf("restored %d entries, want only the live one", b.Len())
	}
	// Every truncation of the snapshot is refused as a whole or restores
	// whole records only; never a panic.
	for n := 0; n < buf.Len(); n++ {
		c := replay.New(64)
		err := c.Restore(bytes.NewReader(buf.Bytes()[:n]), 2_000)
		if err == nil && n != len("tagauth-replay-1\n") && n < buf.Len() {
			t.Fatalf("truncated snapshot of %d bytes accepted", n)
		}
	}
}

func TestFence(t *testing.T) {
	c := replay.New(64)
	c.Fence(30_000)
	var k protocol.ReplayKey
	if ok, err := c.Insert(context.Background(), k, 30_000, 10_000); ok || !errors.Is(err, replay.ErrFenced) || !errors.Is(err, protocol.ErrBusy) {
		t.Fatalf("fenced key: fresh=%v err=%v; want ErrFenced (busy)", ok, err)
	}
	if ok, err := c.Insert(context.Background(), k, 30_001, 10_000); !ok || err != nil {
		t.Fatalf("key after the fence: fresh=%v err=%v", ok, err)
	}
}
