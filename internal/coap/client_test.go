package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/tagauth/tagauth/internal/testenv"
)

// fast retransmits after 50 ms so that the tests are quick; the schedule is
// the RFC's, scaled down, with more tries (a 19 s window) so that a loaded
// test machine does not turn a slow answer into a failure.
var fast = &Client{ACKTimeout: 50 * time.Millisecond, MaxRetransmit: 7}

func TestClientTimeout(t *testing.T) {
	addr, got := silent(t)
	c := &Client{ACKTimeout: 5 * time.Millisecond, MaxRetransmit: 2}
	_, _, err := c.Post(context.Background(), addr, "/tagauth/verify", []byte("m2"))
	want := fmt.Sprintf("coap: no answer from %s after 3 tries (timeout)", addr)
	if err == nil || err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("error does not wrap ErrTimeout")
	}
	// Every try is the same message: a retransmission, not a new request.
	first := <-got
	for range 2 {
		if d := <-got; !bytes.Equal(d, first) {
			t.Fatalf("retransmission %x differs from the first try %x", d, first)
		}
	}
	m := decode(t, first)
	if m.Type != message.Confirmable || m.Code != codes.POST || len(m.Token) < 4 || len(m.Token) > 8 {
		t.Fatalf("request %v, want a CON POST with a 4 to 8 byte token", m.String())
	}
	path, _ := m.Options.Path()
	if cf, err := m.Options.ContentFormat(); path != "/tagauth/verify" || err != nil || cf != message.AppOctets || string(m.Payload) != "m2" {
		t.Fatalf("request %v, want /tagauth/verify, Content-Format 42, payload m2", m.String())
	}
}

func TestClientContext(t *testing.T) {
	addr, got := silent(t)
	c := &Client{ACKTimeout: time.Hour} // only ctx can end the wait

	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-got; cancel() }()
	_, _, err := c.Post(ctx, addr, "/x", nil)
	if !errors.Is(err, context.Canceled) || err.Error() != fmt.Sprintf("coap: no answer from %s after 1 try (context canceled)", addr) {
		t.Fatalf("cancelled Post returned %v", err)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, _, err = c.Post(ctx, addr, "/x", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Post past its deadline returned %v", err)
	}

	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, _, err = c.Post(done, addr, "/x", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Post with a done context returned %v", err)
	}
}

func TestClientPortUnreachable(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := conn.LocalAddr().String()
	conn.Close()
	c := &Client{ACKTimeout: time.Hour}
	_, _, err = c.Post(context.Background(), addr, "/x", nil)
	if !errors.Is(err, syscall.ECONNREFUSED) || err.Error() != fmt.Sprintf("coap: no answer from %s after 1 try (connection refused)", addr) {
		t.Fatalf("Post to a closed port returned %v", err)
	}
}

func TestClientBadAddress(t *testing.T) {
	if _, _, err := fast.Post(context.Background(), "no-port", "/x", nil); err == nil {
		t.Fatal("Post to an address without a port succeeded")
	}
	long := "/" + string(bytes.Repeat([]byte("a"), 256))
	if _, _, err := fast.Post(context.Background(), "127.0.0.1:9", long, nil); err == nil {
		t.Fatal("Post with a 256-byte path segment succeeded")
	}
}

// dropFirstReply relays datagrams between one client and server, dropping
// the first reply, as a lossy link would.
func dropFirstReply(t *testing.T, server string) string {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back := dial(t, server)
	var client atomic.Pointer[netip.AddrPort]
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			client.Store(&from)
			back.Write(buf[:n])
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 65536)
		for dropped := false; ; dropped = true {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			if dropped {
				front.WriteToUDPAddrPort(buf[:n], *client.Load())
			}
		}
	}()
	t.Cleanup(func() { front.Close(); back.Close(); <-done; <-done })
	return front.LocalAddr().String()
}

func TestLostResponseRecoveredByRetransmission(t *testing.T) {
	var calls atomic.Int64
	s := &Server{Handler: echoMux(&calls)}
	addr := dropFirstReply(t, serve(t, s))

	code, resp, err := fast.Post(context.Background(), addr, "/tagauth/verify", []byte("m2"))
	if err != nil || code != Changed || string(resp) != "ok:m2" {
		t.Fatalf("Post = %v %q %v", code, resp, err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times; the retransmission must be answered from the cache", n)
	}
	if n := s.Stats.Duplicates.Load(); n < 1 {
		t.Errorf("Duplicates = %d, want at least 1", n)
	}
}

// fakeServer answers the first request it reads with script, which gets the
// decoded request and a function to send a message back.
func fakeServer(t *testing.T, script func(req message.Message, send func(message.Message), recv func() message.Message)) string {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var from netip.AddrPort
		buf := make([]byte, 65536)
		recv := func() message.Message {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, f, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Errorf("fake server: %v", err)
				return message.Message{}
			}
			from = f
			m := message.Message{Options: make(message.Options, 0, 16)}
			if _, err := coder.DefaultCoder.Decode(bytes.Clone(buf[:n]), &m); err != nil {
				t.Errorf("fake server: %v", err)
			}
			return m
		}
		send := func(m message.Message) {
			b, err := encodeMessage(&m)
			if err != nil {
				t.Errorf("fake server: %v", err)
				return
			}
			conn.WriteToUDPAddrPort(b, from)
		}
		script(recv(), send, recv)
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return conn.LocalAddr().String()
}

func reply(req message.Message, typ message.Type, mid int32, token []byte, code codes.Code, payload string) message.Message {
	return message.Message{Type: typ, MessageID: mid, Token: token, Code: code, Payload: []byte(payload)}
}

func TestClientSeparateResponse(t *testing.T) {
	for _, typ := range []message.Type{message.Confirmable, message.NonConfirmable} {
		t.Run(typ.String(), func(t *testing.T) {
			var acked atomic.Bool
			addr := fakeServer(t, func(req message.Message, send func(message.Message), recv func() message.Message) {
				send(reply(req, message.Acknowledgement, req.MessageID, nil, codes.Empty, ""))
				send(reply(req, typ, 4242, req.Token, codes.Changed, "later"))
				if typ != message.Confirmable {
					return
				}
				for range 10 { // skip retransmissions of the request
					if m := recv(); m.Type == message.Acknowledgement {
						acked.Store(m.MessageID == 4242 && m.Code == codes.Empty && len(m.Token) == 0)
						return
					}
				}
			})
			code, resp, err := fast.Post(context.Background(), addr, "/x", nil)
			if err != nil || code != Changed || string(resp) != "later" {
				t.Fatalf("Post = %v %q %v", code, resp, err)
			}
			if typ == message.Confirmable {
				testenv.Eventually(t, "the client ACKs the separate response", acked.Load)
			}
		})
	}
}

func TestClientIgnoresStrayDatagrams(t *testing.T) {
	addr := fakeServer(t, func(req message.Message, send func(message.Message), _ func() message.Message) {
		send(reply(req, message.Acknowledgement, req.MessageID+1, req.Token, codes.Changed, "wrong message ID"))
		send(reply(req, message.Acknowledgement, req.MessageID, []byte("other"), codes.Changed, "wrong token"))
		send(reply(req, message.NonConfirmable, 1, []byte("other"), codes.Changed, "not ours"))
		send(reply(req, message.Acknowledgement, req.MessageID, req.Token, codes.Changed, "right"))
	})
	code, resp, err := fast.Post(context.Background(), addr, "/x", nil)
	if err != nil || code != Changed || string(resp) != "right" {
		t.Fatalf("Post = %v %q %v", code, resp, err)
	}
}

func TestClientErrorCodeIsNotAnError(t *testing.T) {
	addr := fakeServer(t, func(req message.Message, send func(message.Message), _ func() message.Message) {
		send(reply(req, message.Acknowledgement, req.MessageID, req.Token, codes.Unauthorized, "\x7f"))
	})
	code, resp, err := fast.Post(context.Background(), addr, "/x", nil)
	if err != nil || code != Unauthorized || string(resp) != "\x7f" {
		t.Fatalf("Post = %v %q %v, want 4.01 and the error payload", code, resp, err)
	}
}

func TestClientReset(t *testing.T) {
	addr := fakeServer(t, func(req message.Message, send func(message.Message), _ func() message.Message) {
		send(reply(req, message.Reset, req.MessageID, nil, codes.Empty, ""))
	})
	_, _, err := fast.Post(context.Background(), addr, "/x", nil)
	if !errors.Is(err, ErrReset) {
		t.Fatalf("Post = %v, want ErrReset", err)
	}
}

func TestClientEmptyACKWithoutResponse(t *testing.T) {
	addr := fakeServer(t, func(req message.Message, send func(message.Message), _ func() message.Message) {
		send(reply(req, message.Acknowledgement, req.MessageID, nil, codes.Empty, ""))
	})
	c := &Client{ACKTimeout: 100 * time.Millisecond, MaxRetransmit: 2}
	_, _, err := c.Post(context.Background(), addr, "/x", nil)
	if !errors.Is(err, ErrTimeout) || err.Error() != fmt.Sprintf("coap: %s acknowledged the request but sent no response (timeout)", addr) {
		t.Fatalf("Post = %v", err)
	}
}

func TestNilClientUsesDefaults(t *testing.T) {
	var calls atomic.Int64
	addr := serve(t, &Server{Handler: echoMux(&calls)})
	var c *Client
	if code, resp, err := c.Post(context.Background(), addr, "tagauth/verify", []byte("a")); err != nil || code != Changed || string(resp) != "ok:a" {
		t.Fatalf("Post = %v %q %v", code, resp, err)
	}
}
