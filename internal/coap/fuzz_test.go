package coap

import (
	"bytes"
	"context"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// FuzzServerDatagram feeds arbitrary datagrams to the server's per-datagram
// function. Besides never panicking, it checks that every reply decodes,
// that an ACK or RST answers the request's message ID, that a 2.04 echoes
// the request's token and payload, and that a CON sent again from the same
// endpoint gets the byte-identical reply without running the handler again.
func FuzzServerDatagram(f *testing.F) {
	f.Add(post(f, 1, "/echo", []byte("payload")))
	f.Add(post(f, 2, "/echo", nil, message.Option{ID: message.ContentFormat, Value: []byte{42}}))
	f.Add(datagram(f, message.NonConfirmable, codes.POST, 3, []byte{1, 2, 3, 4, 5, 6, 7, 8}, "/echo", []byte("x")))
	f.Add(datagram(f, message.Confirmable, codes.GET, 4, nil, "/echo", nil))
	f.Add(post(f, 5, "/nope", nil, message.Option{ID: message.Block1, Value: []byte{8}}))
	f.Add(post(f, 6, "/echo", bytes.Repeat([]byte{0xaa}, 300)))
	f.Add([]byte{0x40, 0x00, 0x12, 0x34})
	f.Add([]byte{0x60, 0x00, 0x12, 0x34})
	f.Add([]byte{0x40, 0x02, 0x00, 0x01, 0xbd})
	f.Add([]byte{0x44, 0x02, 0x00, 0x01, 1, 2, 3, 4, 0xb4, 'e', 'c', 'h', 'o', 0xff, 'z'})

	var calls atomic.Int64
	mux := NewMux()
	mux.Handle("/echo", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		calls.Add(1)
		return Changed, append(dst, req.Payload...)
	}))
	s := &Server{Handler: mux, MaxDatagram: 256, CacheSize: 1024}
	w := s.newWorker(context.Background())
	var port atomic.Uint32

	f.Fuzz(func(t *testing.T, d []byte) {
		// A fresh endpoint per input, so that no earlier input's cached
		// answer is taken for this one's.
		from := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.7"), uint16(port.Add(1)))
		in := bytes.Clone(d)
		reply := bytes.Clone(w.handle(in, from))
		if !bytes.Equal(in, d) {
			t.Fatal("handle modified the datagram")
		}
		if reply == nil {
			return
		}
		var req, resp message.Message
		req.Options = make(message.Options, 0, 64)
		resp.Options = make(message.Options, 0, 64)
		if _, err := coder.DefaultCoder.Decode(reply, &resp); err != nil {
			t.Fatalf("reply %x does not decode: %v", reply, err)
		}
		if len(d) < 4 {
			t.Fatalf("reply %x to a %d-byte datagram", reply, len(d))
		}
		mid := int32(d[2])<<8 | int32(d[3])
		if (resp.Type == message.Acknowledgement || resp.Type == message.Reset) && resp.MessageID != mid {
			t.Fatalf("reply %v answers message ID %d, request had %d", resp.String(), resp.MessageID, mid)
		}
		if Code(resp.Code) == Changed {
			if _, err := coder.DefaultCoder.Decode(d, &req); err != nil {
				t.Fatalf("2.04 to an undecodable request: %v", err)
			}
			if !bytes.Equal(resp.Token, req.Token) || !bytes.Equal(resp.Payload, req.Payload) {
				t.Fatalf("2.04 %v does not echo request %v", resp.String(), req.String())
			}
		}
		if d[0]&0x30 == 0 { // CON
			before := calls.Load()
			again := w.handle(in, from)
			if !bytes.Equal(again, reply) {
				t.Fatalf("retransmission answered %x, first answer %x", again, reply)
			}
			if calls.Load() != before {
				t.Fatal("retransmission ran the handler")
			}
		}
	})
}

// FuzzClientReply feeds arbitrary datagrams to the client's decoder of
// server replies: it never panics, and whatever it accepts as the answer
// to a request really belongs to it (its message ID or token) and carries
// a response code.
func FuzzClientReply(f *testing.F) {
	token := []byte{1, 2, 3, 4, 5, 6}
	const mid = 0x1234
	for _, m := range []message.Message{
		{Type: message.Acknowledgement, MessageID: mid, Code: codes.Changed, Token: token, Payload: []byte{2, 3}},
		{Type: message.Acknowledgement, MessageID: mid, Code: codes.Empty},
		{Type: message.Reset, MessageID: mid, Code: codes.Empty},
		{Type: message.Confirmable, MessageID: 7, Code: codes.Unauthorized, Token: token, Payload: []byte{2, 0x7f, 5}},
		{Type: message.NonConfirmable, MessageID: 8, Code: codes.Changed, Token: token},
	} {
		if b, err := encodeMessage(&m); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, datagram []byte) {
		resp := message.Message{Options: make(message.Options, 0, 64)}
		switch classify(datagram, &resp, mid, token) {
		case gotResponse, gotSeparateCON:
			if !Code(resp.Code).isResponse() || !bytes.Equal(resp.Token, token) {
				t.Fatalf("accepted %v code %v token %x as the answer", resp.Type, resp.Code, resp.Token)
			}
		case gotEmptyACK, gotReset:
			if resp.MessageID != mid {
				t.Fatalf("%v for message ID %d taken for ours", resp.Type, resp.MessageID)
			}
		}
	})
}
