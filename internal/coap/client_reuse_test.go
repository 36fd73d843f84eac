package coap

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestClientReusesSocket: consecutive Posts to one server come from one
// source port with consecutive message IDs (never a reused ID), while a
// nil Client still opens a socket per call.
func TestClientReusesSocket(t *testing.T) {
	var mu sync.Mutex
	var froms []netip.AddrPort
	mux := NewMux()
	mux.Handle("/p", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		mu.Lock()
		froms = append(froms, req.From)
		mu.Unlock()
		return Changed, append(dst, req.Payload...)
	}))
	s := &Server{Handler: mux}
	addr := serve(t, s)
	c := new(Client)
	defer c.CloseIdle()
	for i := range 5 {
		code, resp, err := c.Post(context.Background(), addr, "/p", []byte{byte(i)})
		if err != nil || code != Changed || len(resp) != 1 || resp[0] != byte(i) {
			t.Fatalf("post %d: %v %v %v", i, code, resp, err)
		}
	}
	var nilClient *Client
	if _, _, err := nilClient.Post(context.Background(), addr, "/p", []byte{9}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := nilClient.Post(context.Background(), addr, "/p", []byte{9}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < 5; i++ {
		if froms[i] != froms[0] {
			t.Fatalf("post %d from %v, post 0 from %v: the socket was not reused", i, froms[i], froms[0])
		}
	}
	if froms[5] == froms[6] || froms[5] == froms[0] {
		t.Errorf("a nil Client reused a socket: %v %v", froms[5], froms[6])
	}
	// 7 requests, no retransmission: none may have been taken for one.
	if d := s.Stats.Duplicates.Load(); d != 0 {
		t.Errorf("%d requests answered as retransmissions: a message ID was reused", d)
	}
}

// TestClientDropsFailedSocket: the socket of a Post that gave up is not
// kept, so its late answer cannot meet a later exchange, and later Posts
// get their own answers.
func TestClientDropsFailedSocket(t *testing.T) {
	hold := make(chan struct{})
	mux := NewMux()
	mux.Handle("/p", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		if string(req.Payload) == "late" {
			<-hold // answered only once the client has given up
		}
		return Changed, append(dst, req.Payload...)
	}))
	// One worker: the late answer is sent before any later request is
	// read, so the Posts below come after it without waiting for it.
	addr := serve(t, &Server{Handler: mux, Workers: 1})
	c := &Client{ACKTimeout: 30 * time.Millisecond, MaxRetransmit: 1}
	defer c.CloseIdle()
	if _, _, err := c.Post(context.Background(), addr, "/p", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Post(context.Background(), addr, "/p", []byte("late")); err == nil {
		t.Fatal("a late answer was waited for")
	}
	c.mu.Lock()
	kept := len(c.idle[addr])
	c.mu.Unlock()
	if kept != 0 {
		t.Fatalf("%d sockets kept after a failed Post, want 0", kept)
	}
	close(hold)
	for i := range 3 {
		code, resp, err := c.Post(context.Background(), addr, "/p", []byte("fresh"))
		if err != nil || code != Changed || string(resp) != "fresh" {
			t.Fatalf("post %d after a late answer: %v %q %v", i, code, resp, err)
		}
	}
}

// TestClientSocketRetired: a kept socket is retired after socketUses
// exchanges, so that its message IDs never wrap around.
func TestClientSocketRetired(t *testing.T) {
	var calls atomicCounter
	mux := NewMux()
	mux.Handle("/p", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		calls.add(req.From)
		return Changed, dst
	}))
	addr := serve(t, &Server{Handler: mux})
	c := new(Client)
	defer c.CloseIdle()
	if _, _, err := c.Post(context.Background(), addr, "/p", nil); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.idle[addr][0].uses = socketUses - 1
	c.mu.Unlock()
	for range 2 {
		if _, _, err := c.Post(context.Background(), addr, "/p", nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.distinct(); n != 2 {
		t.Fatalf("requests came from %d sockets, want 2 (the first retired after its last ID)", n)
	}
}

type atomicCounter struct {
	mu    sync.Mutex
	froms map[netip.AddrPort]int
}

func (a *atomicCounter) add(p netip.AddrPort) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.froms == nil {
		a.froms = map[netip.AddrPort]int{}
	}
	a.froms[p]++
}

func (a *atomicCounter) distinct() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.froms)
}
