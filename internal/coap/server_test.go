package coap

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/tagauth/tagauth/internal/testenv"
)

func TestRoundTrip(t *testing.T) {
	var calls atomic.Int64
	seenc := make(chan Request, 10)
	mux := NewMux()
	mux.Handle("tagauth/verify", HandlerFunc(func(ctx context.Context, req *Request, dst []byte) (Code, []byte) {
		calls.Add(1)
		seenc <- Request{Path: req.Path, Payload: bytes.Clone(req.Payload), From: req.From}
		return Changed, append(append(dst, "m3:"...), req.Payload...)
	}))
	s := &Server{Handler: mux}
	addr := serve(t, s)

	code, resp, err := new(Client).Post(context.Background(), addr, "/tagauth/verify", []byte("m2 bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if code != Changed || string(resp) != "m3:m2 bytes" {
		t.Fatalf("got %v %q, want 2.04 %q", code, resp, "m3:m2 bytes")
	}
	seen := <-seenc
	if seen.Path != "/tagauth/verify" || string(seen.Payload) != "m2 bytes" {
		t.Errorf("handler saw path %q payload %q", seen.Path, seen.Payload)
	}
	if seen.From.Addr() != netip.MustParseAddr("127.0.0.1") || seen.From.Port() == 0 {
		t.Errorf("handler saw From %v, want 127.0.0.1:port", seen.From)
	}
	testenv.Eventually(t, "one response counted", func() bool { return s.Stats.Responses.Load() == 1 })
	if r, c := s.Stats.Received.Load(), calls.Load(); r != 1 || c != 1 {
		t.Errorf("Received %d, handler calls %d; want 1, 1", r, c)
	}
}

// TestResponseFormat checks the framing of spec section 11 byte by byte:
// piggybacked ACK for CON, NON for NON, the request's token, Content-Format
// 42 on a payload and none on an empty one.
func TestResponseFormat(t *testing.T) {
	mux := NewMux()
	mux.Handle("/p", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		return Changed, append(dst, req.Payload...)
	}))
	addr := serve(t, &Server{Handler: mux})
	c := dial(t, addr)
	token := []byte{9, 8, 7, 6, 5, 4, 3, 2}

	for i, tc := range []struct {
		name    string
		typ     message.Type
		payload []byte
		want    message.Type
	}{
		{"CON with payload", message.Confirmable, []byte("xyz"), message.Acknowledgement},
		{"CON empty", message.Confirmable, nil, message.Acknowledgement},
		{"NON with payload", message.NonConfirmable, []byte("xyz"), message.NonConfirmable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mid := int32(0x1230 + i) // a new exchange each
			r := decode(t, exchange(t, c, datagram(t, tc.typ, codes.POST, uint16(mid), token, "/p", tc.payload)))
			if r.Type != tc.want || Code(r.Code) != Changed || !bytes.Equal(r.Token, token) || !bytes.Equal(r.Payload, tc.payload) {
				t.Fatalf("reply %v, want type %v code 2.04 token %x payload %q", r.String(), tc.want, token, tc.payload)
			}
			if tc.want == message.Acknowledgement && r.MessageID != mid {
				t.Errorf("ACK message ID %#x, want the request's %#x", r.MessageID, mid)
			}
			cf, err := r.Options.ContentFormat()
			switch {
			case len(tc.payload) > 0 && (err != nil || cf != message.AppOctets):
				t.Errorf("Content-Format %v (%v), want 42", cf, err)
			case len(tc.payload) == 0 && err == nil:
				t.Errorf("Content-Format %v on an empty payload", cf)
			}
		})
	}
}

func TestRetransmissionAnsweredFromCache(t *testing.T) {
	var calls atomic.Int64
	s := &Server{Handler: echoMux(&calls)}
	addr := serve(t, s)
	c := dial(t, addr)

	d := post(t, 77, "/tagauth/verify", []byte("first"))
	r1 := exchange(t, c, d)
	r2 := exchange(t, c, d)
	if !bytes.Equal(r1, r2) {
		t.Fatalf("retransmission answered %x, first answer was %x", r2, r1)
	}
	// Same message ID, different payload: still the same exchange.
	r3 := exchange(t, c, post(t, 77, "/tagauth/verify", []byte("second")))
	if !bytes.Equal(r1, r3) {
		t.Fatalf("same message ID answered %x, want the cached %x", r3, r1)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times for one exchange", n)
	}
	if n := s.Stats.Duplicates.Load(); n != 2 {
		t.Errorf("Duplicates = %d, want 2", n)
	}

	// A new message ID, or the same one from another endpoint, is a new
	// request.
	exchange(t, c, post(t, 78, "/tagauth/verify", []byte("first")))
	exchange(t, dial(t, addr), d)
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want 3", n)
	}
	// NON requests are not deduplicated.
	non := datagram(t, message.NonConfirmable, codes.POST, 79, []byte{1}, "/tagauth/verify", nil)
	exchange(t, c, non)
	exchange(t, c, non)
	if n := calls.Load(); n != 5 {
		t.Fatalf("handler ran %d times, want 5", n)
	}
}

func TestDuplicateWhileInFlightDropped(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	mux := NewMux()
	mux.Handle("/slow", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		return Changed, append(dst, "done"...)
	}))
	s := &Server{Handler: mux, Workers: 2}
	addr := serve(t, s)
	c := dial(t, addr)
	d := post(t, 5, "/slow", nil)

	if _, err := c.Write(d); err != nil {
		t.Fatal(err)
	}
	<-entered
	if _, err := c.Write(d); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the duplicate counted", func() bool { return s.Stats.Duplicates.Load() == 1 })
	close(release)
	first := read(t, c)
	again := exchange(t, c, d) // a later retransmission gets the cached answer
	if !bytes.Equal(first, again) || string(decode(t, first).Payload) != "done" {
		t.Fatalf("answers %x and %x", first, again)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
	testenv.Eventually(t, "two responses sent", func() bool { return s.Stats.Responses.Load() == 2 })
	if n := s.Stats.Duplicates.Load(); n != 2 {
		t.Errorf("Duplicates = %d, want 2", n)
	}
}

func TestCacheExpiresAfterExchangeLifetime(t *testing.T) {
	var calls atomic.Int64
	var clock atomic.Int64
	s := &Server{Handler: echoMux(&calls), ExchangeLifetime: time.Minute}
	s.now = func() time.Duration { return time.Duration(clock.Load()) }
	c := dial(t, serve(t, s))
	d := post(t, 9, "/tagauth/verify", nil)

	exchange(t, c, d)
	clock.Store(int64(time.Minute)) // at the lifetime: still the same exchange
	exchange(t, c, d)
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times within the lifetime", n)
	}
	clock.Store(int64(time.Minute + 1))
	exchange(t, c, d)
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want the expired ID treated as new", n)
	}
}

func TestMalformedAndOversizedCounted(t *testing.T) {
	var calls atomic.Int64
	s := &Server{Handler: echoMux(&calls), MaxDatagram: 300}
	addr := serve(t, s)
	c := dial(t, addr)

	valid := post(t, 1, "/tagauth/verify", []byte("x"))
	malformed := [][]byte{
		{},                       // empty datagram
		{0x40, 0x02, 0x00},       // truncated header
		{0x00, 0x02, 0x00, 0x01}, // version 0
		{0x80, 0x02, 0x00, 0x01}, // version 2
		{0x49, 0x02, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9}, // token length 9
		{0x44, 0x02, 0x00, 0x01, 1, 2},                      // token cut short
		{0x40, 0x02, 0x00, 0x01, 0xbd},                      // option delta extension missing
		{0x40, 0x02, 0x00, 0x01, 0xb5, 'a'},                 // option value cut short
		{0x40, 0x02, 0x00, 0x01, 0xff},                      // payload marker, no payload
		{0x40, 0x02, 0x00, 0x01, 0xf0},                      // reserved option delta 15
		{0x40, 0x00, 0x00, 0x01, 0xff, 'x'},                 // empty message with bytes
		{0x50, 0x00, 0x00, 0x01},                            // empty NON
		{0x40, 0x22, 0x00, 0x01},                            // reserved code class 1
		{0x40, 0xe2, 0x00, 0x01},                            // reserved code class 7
	}
	for _, d := range malformed {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	// Oversized: a CON learns why, a NON is dropped.
	big := make([]byte, 400)
	r := decode(t, exchange(t, c, post(t, 2, "/tagauth/verify", big)))
	size1, err := r.Options.GetUint32(message.Size1)
	if Code(r.Code) != RequestEntityTooLarge || r.MessageID != 2 || !bytes.Equal(r.Token, []byte{1, 2, 3, 4}) || err != nil || size1 != 300 {
		t.Fatalf("oversized CON answered %v (Size1 %d, %v), want 4.13 with Size1 300", r.String(), size1, err)
	}
	if _, err := c.Write(datagram(t, message.NonConfirmable, codes.POST, 3, nil, "/tagauth/verify", big)); err != nil {
		t.Fatal(err)
	}

	// The server is still up.
	if r := decode(t, exchange(t, c, valid)); Code(r.Code) != Changed || string(r.Payload) != "ok:x" {
		t.Fatalf("valid request after bad ones answered %v", r.String())
	}
	testenv.Eventually(t, "all datagrams counted", func() bool {
		return s.Stats.Received.Load() == uint64(len(malformed))+3
	})
	if got := s.Stats.Malformed.Load(); got != uint64(len(malformed)) {
		t.Errorf("Malformed = %d, want %d", got, len(malformed))
	}
	if got := s.Stats.Oversized.Load(); got != 2 {
		t.Errorf("Oversized = %d, want 2", got)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want only for the valid request", n)
	}
}

func TestResponseCodes(t *testing.T) {
	var calls atomic.Int64
	mux := echoMux(&calls)
	mux.Handle("/panic", HandlerFunc(func(context.Context, *Request, []byte) (Code, []byte) { panic("boom") }))
	mux.Handle("/bad-code", HandlerFunc(func(_ context.Context, _ *Request, dst []byte) (Code, []byte) { return methodPOST, dst }))
	mux.Handle("/refuse", HandlerFunc(func(_ context.Context, _ *Request, dst []byte) (Code, []byte) {
		return Unauthorized, append(dst, 0x7f) // a refusal, as coapbind.Code(rejected) answers
	}))
	addr := serve(t, &Server{Handler: mux})
	c := dial(t, addr)
	u := func(id message.OptionID, v ...byte) message.Option { return message.Option{ID: id, Value: v} }

	for i, tc := range []struct {
		name string
		d    []byte
		want Code
	}{
		{"POST", post(t, 0, "/tagauth/verify", []byte("m2")), Changed},
		{"unknown path", post(t, 0, "/tagauth/nope", nil), NotFound},
		{"prefix of a path", post(t, 0, "/tagauth", nil), NotFound},
		{"no path", post(t, 0, "", nil), NotFound},
		{"query", post(t, 0, "/tagauth/verify", nil, u(message.URIQuery, 'a')), NotFound},
		{"GET", datagram(t, message.Confirmable, codes.GET, 0, nil, "/tagauth/verify", nil), MethodNotAllowed},
		{"PUT", datagram(t, message.Confirmable, codes.PUT, 0, nil, "/tagauth/verify", nil), MethodNotAllowed},
		{"slash inside a segment", post(t, 0, "", nil, u(message.URIPath, []byte("tagauth/verify")...)), BadRequest},
		{"Uri-Host and Uri-Port accepted", post(t, 0, "/tagauth/verify", nil, u(message.URIHost, 'g', 'w'), u(message.URIPort, 0x16, 0x33)), Changed},
		{"Content-Format 42", post(t, 0, "/tagauth/verify", nil, u(message.ContentFormat, 42)), Changed},
		{"Content-Format json", post(t, 0, "/tagauth/verify", nil, u(message.ContentFormat, 50)), unsupportedContentFormat},
		{"Accept 42", post(t, 0, "/tagauth/verify", nil, u(message.Accept, 42)), Changed},
		{"Accept json", post(t, 0, "/tagauth/verify", nil, u(message.Accept, 50)), notAcceptable},
		{"Accept twice", post(t, 0, "/tagauth/verify", nil, u(message.Accept, 42), u(message.Accept, 42)), badOption},
		{"Block1 (unsupported critical)", post(t, 0, "/tagauth/verify", nil, u(message.Block1, 0x08)), badOption},
		{"unknown critical option 9", post(t, 0, "/tagauth/verify", nil, u(9, 1)), badOption},
		{"Uri-Port too long", post(t, 0, "/tagauth/verify", nil, u(message.URIPort, 1, 2, 3)), badOption},
		{"unknown elective option 2048", post(t, 0, "/tagauth/verify", nil, u(2048, 1)), Changed},
		{"handler panics", post(t, 0, "/panic", nil), InternalServerError},
		{"handler returns a request code", post(t, 0, "/bad-code", nil), InternalServerError},
		{"protocol refusal", post(t, 0, "/refuse", nil), Unauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.d[2], tc.d[3] = 0, byte(i) // a fresh message ID each
			r := decode(t, exchange(t, c, tc.d))
			if Code(r.Code) != tc.want || r.Type != message.Acknowledgement || r.MessageID != int32(i) {
				t.Fatalf("answered %v, want a %v ACK", r.String(), tc.want)
			}
		})
	}
	if n := calls.Load(); n != 5 {
		t.Errorf("echo handler ran %d times, want 5 (only for the accepted requests)", n)
	}
}

func TestPingAndIgnoredMessages(t *testing.T) {
	var calls atomic.Int64
	s := &Server{Handler: echoMux(&calls)}
	c := dial(t, serve(t, s))

	ignored := [][]byte{
		{0x60, 0x00, 0x00, 0x07}, // empty ACK
		{0x70, 0x00, 0x00, 0x07}, // RST
		datagram(t, message.Acknowledgement, codes.Changed, 8, []byte{1}, "", []byte("x")),
		datagram(t, message.Confirmable, codes.Changed, 9, []byte{1}, "", []byte("x")), // a response sent to a server
	}
	for _, d := range ignored {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	r := decode(t, exchange(t, c, []byte{0x40, 0x00, 0xbe, 0xef}))
	if r.Type != message.Reset || r.MessageID != 0xbeef || r.Code != codes.Empty || len(r.Token) != 0 {
		t.Fatalf("ping answered %v, want RST 0xbeef", r.String())
	}
	testenv.Eventually(t, "ignored messages counted", func() bool { return s.Stats.Dropped.Load() == uint64(len(ignored)) })
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
	if n := s.Stats.Malformed.Load(); n != 0 {
		t.Errorf("Malformed = %d, want 0", n)
	}
}

func TestServeErrors(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := new(Server).Serve(conn); err == nil {
		t.Error("Serve without a handler returned nil")
	}
	if err := (&Server{Handler: NewMux()}).Serve(nil); err == nil {
		t.Error("Serve on a nil socket returned nil")
	}
}

func TestMuxHandlePanics(t *testing.T) {
	m := NewMux()
	m.Handle("/a", NewMux())
	for name, f := range map[string]func(){
		"duplicate":   func() { m.Handle("a", NewMux()) },
		"nil handler": func() { m.Handle("/b", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}
