package coap

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/tagauth/tagauth/internal/memnet"
)

// memnet's endpoints are PacketConns, though memnet does not import coap.
var _ PacketConn = (*memnet.Conn)(nil)

// servePacket runs s on an endpoint of nw at addr until the test ends.
func servePacket(t testing.TB, s *Server, nw *memnet.Network, addr string) {
	t.Helper()
	conn := nw.MustListen(addr)
	done := make(chan error, 1)
	go func() { done <- s.ServePacket(conn) }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("ServePacket returned %v after the conn closed, want nil", err)
		}
	})
}

// memClient returns a client whose exchanges run from endpoints of nw at ip.
func memClient(nw *memnet.Network, ip string) *Client {
	at := netip.AddrPortFrom(netip.MustParseAddr(ip), 0)
	return &Client{Listen: func(context.Context) (PacketConn, error) {
		c, err := nw.Listen(at)
		if err != nil {
			return nil, err
		}
		return c, nil
	}}
}

// The server and the client run over the in-memory network as over UDP:
// answers, retransmission cache, reused client endpoints, and the
// handler sees the sender's address.
func TestOverMemnet(t *testing.T) {
	for _, batch := range []int{1, 8} {
		nw := new(memnet.Network)
		var calls atomic.Int64
		var from atomic.Value
		mux := echoMux(&calls)
		mux.Handle("/from", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
			from.Store(req.From)
			return Changed, dst
		}))
		srv := &Server{Handler: mux, Workers: 2, Batch: batch}
		servePacket(t, srv, nw, "10.0.0.1:5683")
		c := memClient(nw, "10.0.0.2")
		for i := range 3 {
			code, resp, err := c.Post(t.Context(), "10.0.0.1:5683", "/tagauth/verify", []byte{byte(i)})
			if err != nil || code != Changed || !bytes.Equal(resp, []byte{'o', 'k', ':', byte(i)}) {
				t.Fatalf("batch %d, post %d: %s %q %v", batch, i, code, resp, err)
			}
		}
		if _, _, err := c.Post(t.Context(), "10.0.0.1:5683", "/from", nil); err != nil {
			t.Fatal(err)
		}
		if got := from.Load().(netip.AddrPort); got.Addr() != netip.MustParseAddr("10.0.0.2") {
			t.Errorf("handler saw the request from %s, want 10.0.0.2", got)
		}
		if code, _, err := c.Post(t.Context(), "10.0.0.1:5683", "/nowhere", nil); err != nil || code != NotFound {
			t.Errorf("unknown path: %s %v, want 4.04", code, err)
		}
		if n := calls.Load(); n != 3 {
			t.Errorf("handler ran %d times, want 3", n)
		}
		// Counted before the answer left, which the client has read
		// through memnet's channels: no wait needed. (Responses is
		// counted after the send, so it may still lag.)
		if got := srv.Stats.Received.Load(); got != 5 {
			t.Errorf("server received %d datagrams, want 5", got)
		}
		c.CloseIdle()
	}
}

// A retransmitted CON over the in-memory network is answered from the
// cache, as over UDP.
func TestOverMemnetRetransmission(t *testing.T) {
	nw := new(memnet.Network)
	var calls atomic.Int64
	srv := &Server{Handler: echoMux(&calls), Workers: 1}
	servePacket(t, srv, nw, "10.0.0.1:5683")
	peer := nw.MustListen("10.0.0.9:40000")
	d := post(t, 77, "/tagauth/verify", []byte("x"))
	to := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:5683")}
	buf := make([]byte, 256)
	var answers [2][]byte
	for i := range answers {
		if _, err := peer.WriteBatch([][]byte{d}, to); err != nil {
			t.Fatal(err)
		}
		sizes, from := make([]int, 1), make([]netip.AddrPort, 1)
		if _, err := peer.ReadBatch([][]byte{buf}, sizes, from); err != nil {
			t.Fatal(err)
		}
		answers[i] = bytes.Clone(buf[:sizes[0]])
	}
	if !bytes.Equal(answers[0], answers[1]) || calls.Load() != 1 || srv.Stats.Duplicates.Load() != 1 {
		t.Errorf("answers %x and %x, %d calls, %d duplicates; want one call answered twice alike", answers[0], answers[1], calls.Load(), srv.Stats.Duplicates.Load())
	}
}

// A client whose server is not there times out by its schedule, and a
// cancelled context ends the wait.
func TestOverMemnetNoServer(t *testing.T) {
	nw := new(memnet.Network)
	c := memClient(nw, "10.0.0.2")
	c.ACKTimeout, c.MaxRetransmit = 1, 1
	if _, _, err := c.Post(t.Context(), "10.0.0.1:5683", "/x", nil); !errors.Is(err, ErrTimeout) {
		t.Errorf("post to nobody: %v, want ErrTimeout", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := memClient(nw, "10.0.0.2").Post(ctx, "10.0.0.1:5683", "/x", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("post with a cancelled context: %v, want context.Canceled", err)
	}
	if _, _, err := c.Post(t.Context(), "nowhere:5683", "/x", nil); err == nil {
		t.Error("a host name went through an in-memory client")
	}
}
