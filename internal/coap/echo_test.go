package coap

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestResponseEcho checks that a handler can give its response an Echo
// option, that the option does not leak into the next response of the same
// worker, and that a request's Echo and Source options reach the handler.
func TestResponseEcho(t *testing.T) {
	mux := NewMux()
	mux.Handle("/challenge", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		req.SetResponseEcho([]byte("fresh-echo"))
		return Unauthorized, dst
	}))
	mux.Handle("/plain", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		dst = append(dst, req.Echo...)
		dst = append(dst, '|')
		return Changed, append(dst, req.Source...)
	}))
	// One worker, so that both requests use the same Request.
	addr := serve(t, &Server{Handler: mux, Workers: 1})
	c := dial(t, addr)

	r := decode(t, exchange(t, c, post(t, 1, "/challenge", []byte("a request larger than its answer"))))
	echo, err := r.Options.GetBytes(OptionEcho)
	if Code(r.Code) != Unauthorized || err != nil || string(echo) != "fresh-echo" || len(r.Payload) != 0 {
		t.Fatalf("challenge answered %v with Echo %q (%v), payload %q; want 4.01 with Echo \"fresh-echo\" and no payload", Code(r.Code), echo, err, r.Payload)
	}
	r = decode(t, exchange(t, c, post(t, 2, "/plain", nil,
		message.Option{ID: OptionEcho, Value: []byte("e1")}, message.Option{ID: OptionSource, Value: []byte{127, 0, 0, 9}})))
	if _, err := r.Options.GetBytes(OptionEcho); err == nil {
		t.Errorf("a response whose handler set no Echo carries one: %v", r.String())
	}
	if want := "e1|\x7f\x00\x00\x09"; Code(r.Code) != Changed || string(r.Payload) != want {
		t.Errorf("handler saw %q, want %q", r.Payload, want)
	}
	// A retransmission of the challenge gets the same cached answer.
	r = decode(t, exchange(t, c, post(t, 1, "/challenge", []byte("a request larger than its answer"))))
	if echo, _ := r.Options.GetBytes(OptionEcho); string(echo) != "fresh-echo" {
		t.Errorf("cached challenge lost its Echo: %v", r.String())
	}
}

// TestClientRepeatsWithEcho runs the client against the real server: a
// 4.01 with Echo makes it repeat the request once with that value.
func TestClientRepeatsWithEcho(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Echo of each request
	var sources [][]byte
	secret := []byte("v1")
	mux := NewMux()
	mux.Handle("/login", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		mu.Lock()
		seen = append(seen, string(req.Echo))
		sources = append(sources, bytes.Clone(req.Source))
		mu.Unlock()
		if !bytes.Equal(req.Echo, secret) {
			req.SetResponseEcho(secret)
			return Unauthorized, dst
		}
		return Changed, append(dst, "welcome"...)
	}))
	mux.Handle("/always", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		mu.Lock()
		seen = append(seen, string(req.Echo))
		mu.Unlock()
		req.SetResponseEcho([]byte("never enough"))
		return Unauthorized, dst
	}))
	mux.Handle("/refuse", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		mu.Lock()
		seen = append(seen, string(req.Echo))
		mu.Unlock()
		return Unauthorized, append(dst, "no"...)
	}))
	addr := serve(t, &Server{Handler: mux})
	cl := &Client{}
	reset := func() []string {
		mu.Lock()
		defer mu.Unlock()
		s := seen
		seen = nil
		return s
	}

	src := []message.Option{{ID: OptionSource, Value: []byte{10, 0, 0, 1}}}
	code, resp, err := cl.PostOptions(context.Background(), addr, "/login", []byte("m1"), src)
	if err != nil || code != Changed || string(resp) != "welcome" {
		t.Fatalf("Post: %v %q %v, want 2.04 welcome", code, resp, err)
	}
	if s := reset(); len(s) != 2 || s[0] != "" || s[1] != "v1" {
		t.Errorf("server saw Echo values %q, want [\"\" \"v1\"]", s)
	}
	mu.Lock()
	for i, s := range sources {
		if !bytes.Equal(s, []byte{10, 0, 0, 1}) {
			t.Errorf("request %d lost its Source option: %x", i, s)
		}
	}
	mu.Unlock()

	// Once only: a server that keeps asking gets its 4.01 back.
	code, _, err = cl.Post(context.Background(), addr, "/always", []byte("m1"))
	if err != nil || code != Unauthorized {
		t.Fatalf("Post to a server that always asks: %v %v, want 4.01", code, err)
	}
	if s := reset(); len(s) != 2 {
		t.Errorf("server saw %d requests, want 2 (one repetition)", len(s))
	}

	// A 4.01 without Echo is an answer, not a challenge.
	code, resp, err = cl.Post(context.Background(), addr, "/refuse", []byte("m1"))
	if err != nil || code != Unauthorized || string(resp) != "no" {
		t.Fatalf("Post: %v %q %v", code, resp, err)
	}
	if s := reset(); len(s) != 1 {
		t.Errorf("server saw %d requests, want 1", len(s))
	}
}

// TestEchoChallengeSmallerThanRequest: answering an unverified source must
// not amplify, so the challenge is smaller than the request it answers.
func TestEchoChallengeSmallerThanRequest(t *testing.T) {
	mux := NewMux()
	mux.Handle("/tagauth/login", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		req.SetResponseEcho(make([]byte, 9))
		return Unauthorized, dst
	}))
	addr := serve(t, &Server{Handler: mux})
	c := dial(t, addr)
	// The shortest m1 is well over 40 bytes; this request is 40.
	req := datagram(t, message.Confirmable, codes.POST, 7, []byte{1, 2, 3, 4, 5, 6, 7, 8}, "/tagauth/login", make([]byte, 16))
	reply := exchange(t, c, req)
	if len(reply) >= len(req) {
		t.Errorf("challenge of %d bytes answers a request of %d", len(reply), len(req))
	}
}

// TestEchoResponseAllocs: answering with an Echo option, or without one
// after a response that had it, allocates nothing in the steady state
// (NON requests, so that the response cache is not involved).
func TestEchoResponseAllocs(t *testing.T) {
	echo := []byte("123456789")
	mux := NewMux()
	mux.Handle("/challenge", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		req.SetResponseEcho(echo)
		return Unauthorized, dst
	}))
	mux.Handle("/plain", verifyLike)
	s := &Server{Handler: mux}
	w := s.newWorker(context.Background())
	from := netip.MustParseAddrPort("192.0.2.1:5683")
	ch := datagram(t, message.NonConfirmable, codes.POST, 1, []byte{1}, "/challenge", make([]byte, 40))
	pl := datagram(t, message.NonConfirmable, codes.POST, 2, []byte{2}, "/plain", make([]byte, 40))
	round := func() {
		if r := decode(t, w.handle(ch, from)); Code(r.Code) != Unauthorized {
			t.Fatal("challenge not answered 4.01")
		}
		r := w.handle(pl, from)
		if r == nil || bytes.Contains(r, echo) {
			t.Fatal("plain response missing or carrying the Echo value")
		}
	}
	round()
	allocs := testing.AllocsPerRun(100, func() {
		w.handle(ch, from)
		w.handle(pl, from)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per challenge and plain response, want 0", allocs)
	}
}
