package memnet

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func send(t *testing.T, c *Conn, to netip.AddrPort, b string) {
	t.Helper()
	if _, err := c.WriteBatch([][]byte{[]byte(b)}, []netip.AddrPort{to}); err != nil {
		t.Fatal(err)
	}
}

func TestDeliverBatchAndDrop(t *testing.T) {
	nw := &Network{Queue: 2}
	a, b := nw.MustListen("10.0.0.1:1"), nw.MustListen("10.0.0.2:2")
	for _, s := range []string{"one", "two", "three"} {
		send(t, a, b.LocalAddrPort(), s)
	}
	send(t, a, netip.MustParseAddrPort("10.0.0.3:3"), "nobody")
	if got := nw.Dropped.Load(); got != 2 {
		t.Errorf("dropped %d, want 2 (a full queue, an unknown address)", got)
	}
	bufs := [][]byte{make([]byte, 8), make([]byte, 8), make([]byte, 8)}
	sizes, from := make([]int, 3), make([]netip.AddrPort, 3)
	n, err := b.ReadBatch(bufs, sizes, from)
	if err != nil || n != 2 || string(bufs[0][:sizes[0]]) != "one" || string(bufs[1][:sizes[1]]) != "two" || from[0] != a.LocalAddrPort() {
		t.Fatalf("read %d %v: %q %q from %v", n, err, bufs[0][:sizes[0]], bufs[1][:sizes[1]], from[0])
	}
	if _, err := nw.Listen(b.LocalAddrPort()); err == nil {
		t.Error("two endpoints share an address")
	}
	c, err := nw.Listen(netip.AddrPort{})
	if err != nil || c.LocalAddrPort().Port() == 0 || !c.LocalAddrPort().Addr().IsLoopback() {
		t.Errorf("listen on any: %v %v", c.LocalAddrPort(), err)
	}
}

func TestDeadlineAndClose(t *testing.T) {
	nw := new(Network)
	a := nw.MustListen(":0")
	bufs, sizes, from := [][]byte{make([]byte, 8)}, make([]int, 1), make([]netip.AddrPort, 1)
	if err := a.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReadBatch(bufs, sizes, from); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
	var ne net.Error
	if _, err := a.ReadBatch(bufs, sizes, from); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("deadline error %v is not a net.Error timeout", err)
	}
	// A deadline moved into the past ends a read, whether it was waiting
	// already or starts after the move.
	if err := a.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := a.ReadBatch(bufs, sizes, from); done <- err }()
	_ = a.SetReadDeadline(time.Unix(1, 0))
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read when the deadline moved: %v", err)
	}
	_ = a.SetReadDeadline(time.Time{})
	go func() { _, err := a.ReadBatch(bufs, sizes, from); done <- err }()
	a.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on a closed conn: %v", err)
	}
	if _, err := a.WriteBatch([][]byte{{1}}, []netip.AddrPort{a.LocalAddrPort()}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on a closed conn: %v", err)
	}
	if err := a.Close(); err == nil {
		t.Error("second close succeeded")
	}
	// The address is free again.
	if _, err := nw.Listen(a.LocalAddrPort()); err != nil {
		t.Error(err)
	}
}
