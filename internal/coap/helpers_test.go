package coap

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// serve starts s on a fresh loopback socket and returns its address. The
// cleanup closes the socket and checks that Serve returned nil.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	return serveConn(t, s).LocalAddr().String()
}

// serveConn is serve, returning the server's socket.
func serveConn(t testing.TB, s *Server) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after the socket closed, want nil", err)
		}
	})
	return conn
}

// counting returns a handler that counts its calls and answers 2.04 with
// "ok:" and the request payload.
func counting(calls *atomic.Int64) Handler {
	return HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		calls.Add(1)
		dst = append(dst, "ok:"...)
		return Changed, append(dst, req.Payload...)
	})
}

func echoMux(calls *atomic.Int64) *Mux {
	m := NewMux()
	m.Handle("/tagauth/verify", counting(calls))
	return m
}

// datagram encodes a message for tests; opts are added to the path options.
func datagram(t testing.TB, typ message.Type, code codes.Code, mid uint16, token []byte, path string, payload []byte, opts ...message.Option) []byte {
	t.Helper()
	o := make(message.Options, 0, 16)
	if path != "" {
		var err error
		o, _, err = o.SetPath(make([]byte, len(path)), path)
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range opts {
		o = o.Add(x)
	}
	b, err := encodeMessage(&message.Message{Token: token, Options: o, Code: code, Payload: payload, MessageID: int32(mid), Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t testing.TB, mid uint16, path string, payload []byte, opts ...message.Option) []byte {
	t.Helper()
	return datagram(t, message.Confirmable, codes.POST, mid, []byte{1, 2, 3, 4}, path, payload, opts...)
}

// dial returns a UDP socket connected to addr for raw exchanges.
func dial(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// exchange sends d on c and returns the raw reply.
func exchange(t testing.TB, c *net.UDPConn, d []byte) []byte {
	t.Helper()
	if _, err := c.Write(d); err != nil {
		t.Fatal(err)
	}
	return read(t, c)
}

func read(t testing.TB, c *net.UDPConn) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return buf[:n]
}

func decode(t testing.TB, b []byte) message.Message {
	t.Helper()
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(b, &m); err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	return m
}

// silent returns a socket that reads and never answers, and a channel that
// receives every datagram it reads.
func silent(t testing.TB) (string, <-chan []byte) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			buf := make([]byte, 2048)
			n, err := conn.Read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				select {
				case got <- buf[:n]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return conn.LocalAddr().String(), got
}
