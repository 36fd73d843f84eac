package coap

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// TestListenUDPReusePort binds two sockets to one port and serves each
// with its own server: 32 peers all get answers on the one address, and on
// Linux the kernel spreads them over both sockets.
func TestListenUDPReusePort(t *testing.T) {
	conns, err := ListenUDP("udp", "127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	wantSockets := 1
	if runtime.GOOS == "linux" {
		wantSockets = 2
	}
	if len(conns) != wantSockets {
		t.Fatalf("%d sockets, want %d", len(conns), wantSockets)
	}
	addr := conns[0].LocalAddr().String()
	calls := make([]atomic.Int64, len(conns))
	for i, c := range conns {
		if c.LocalAddr().String() != addr {
			t.Fatalf("socket %d bound to %s, socket 0 to %s", i, c.LocalAddr(), addr)
		}
		s := &Server{Handler: echoMux(&calls[i]), Batch: 8}
		done := make(chan error, 1)
		go func() { done <- s.Serve(c) }()
		t.Cleanup(func() {
			c.Close()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	for i := range 32 {
		want := fmt.Sprint("peer ", i)
		code, resp, err := new(Client).Post(context.Background(), addr, "/tagauth/verify", []byte(want))
		if err != nil || code != Changed || string(resp) != "ok:"+want {
			t.Fatalf("peer %d: %v %q %v", i, code, resp, err)
		}
	}
	for i := range calls {
		if calls[i].Load() == 0 {
			t.Errorf("socket %d got none of 32 peers: the port is not shared", i)
		}
	}
}

// TestListenUDPOne: n <= 1 binds one plain socket, and a taken port is
// reported.
func TestListenUDPOne(t *testing.T) {
	conns, err := ListenUDP("udp", "127.0.0.1:0", 0)
	if err != nil || len(conns) != 1 {
		t.Fatalf("ListenUDP(n=0) = %d sockets, %v", len(conns), err)
	}
	defer conns[0].Close()
	// The first socket has no SO_REUSEPORT, so nobody may join it.
	if extra, err := ListenUDP("udp", conns[0].LocalAddr().String(), 2); err == nil {
		for _, c := range extra {
			c.Close()
		}
		t.Fatal("bound a port already taken without SO_REUSEPORT")
	}
	if _, err := ListenUDP("tcp", "127.0.0.1:0", 1); err == nil {
		t.Fatal("ListenUDP accepted tcp")
	}
}

// TestClientTraffic: Traffic counts the datagrams and bytes of a Post.
func TestClientTraffic(t *testing.T) {
	var calls atomic.Int64
	addr := serve(t, &Server{Handler: echoMux(&calls)})
	tr := new(Traffic)
	c := &Client{Traffic: tr}
	if _, _, err := c.Post(context.Background(), addr, "/tagauth/verify", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	// Request: 4 header + 4..8 token + Uri-Path options (1+7, 1+6) +
	// Content-Format (2) + marker + 5 payload bytes; response, with the
	// same token: 4 + token + Content-Format (2) + marker + 8 ("ok:12345").
	if tr.SentDatagrams.Load() != 1 || tr.ReceivedDatagrams.Load() != 1 {
		t.Fatalf("datagrams sent %d received %d, want 1 and 1", tr.SentDatagrams.Load(), tr.ReceivedDatagrams.Load())
	}
	sent, recv := tr.SentBytes.Load(), tr.ReceivedBytes.Load()
	if sent < 31 || sent > 35 || recv != sent-12 {
		t.Errorf("sent %d and received %d bytes, want 31 to 35 and 12 fewer", sent, recv)
	}
}
