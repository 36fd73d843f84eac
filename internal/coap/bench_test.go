package coap

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
)

// verifyLike answers like the gateway's /tagauth/verify: a fixed-size m3
// appended to the reusable buffer, no work of its own, so that the benchmark
// measures the transport alone.
var verifyLike = HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
	var m3 [120]byte
	copy(m3[:], req.Payload)
	return Changed, append(dst, m3[:]...)
})

// BenchmarkServerHandle measures the server's CPU per datagram without the
// socket: decode, cache, path, handler, encode. "fresh" is a new CON each
// time (a new message ID, and a new source port every 65536), "retransmission"
// a CON answered from the cache. The target is 0 allocs/op.
func BenchmarkServerHandle(b *testing.B) {
	mux := NewMux()
	mux.Handle("/tagauth/verify", verifyLike)
	m2 := bytes.Repeat([]byte{0x5a}, 200) // about an m2
	d := post(b, 0, "/tagauth/verify", m2)
	ip := netip.MustParseAddr("192.0.2.1")

	b.Run("fresh", func(b *testing.B) {
		s := &Server{Handler: mux}
		w := s.newWorker(context.Background())
		var i uint64
		next := func() {
			i++
			binary.BigEndian.PutUint16(d[2:4], uint16(i))
			if w.handle(d, netip.AddrPortFrom(ip, uint16(i>>16))) == nil {
				b.Fatal("no reply")
			}
		}
		// Fill the cache once, so that the loop sees its steady state:
		// every slot holds a response buffer to reuse.
		for range DefaultCacheSize {
			next()
		}
		b.SetBytes(int64(len(d)))
		b.ReportAllocs()
		for b.Loop() {
			next()
		}
	})
	b.Run("retransmission", func(b *testing.B) {
		s := &Server{Handler: mux}
		w := s.newWorker(context.Background())
		from := netip.AddrPortFrom(ip, 5683)
		w.handle(d, from)
		b.SetBytes(int64(len(d)))
		b.ReportAllocs()
		for b.Loop() {
			if w.handle(d, from) == nil {
				b.Fatal("no reply")
			}
		}
		if s.Stats.Duplicates.Load() == 0 {
			b.Fatal("not answered from the cache")
		}
	})
}

// BenchmarkLoopbackRoundTrip measures a request and its response over real
// loopback sockets: "raw" with a bare UDP socket as client (the server's
// cost plus two syscalls each way), "client" through Client.Post, which
// also opens a socket per call.
func BenchmarkLoopbackRoundTrip(b *testing.B) {
	mux := NewMux()
	mux.Handle("/tagauth/verify", verifyLike)
	addr := serve(b, &Server{Handler: mux})
	m2 := bytes.Repeat([]byte{0x5a}, 200)

	b.Run("raw", func(b *testing.B) {
		c := dial(b, addr)
		d := post(b, 0, "/tagauth/verify", m2)
		buf := make([]byte, 2048)
		var mid uint16
		b.ReportAllocs()
		for b.Loop() {
			mid++
			binary.BigEndian.PutUint16(d[2:4], mid)
			if _, err := c.Write(d); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("client", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if code, _, err := new(Client).Post(ctx, addr, "/tagauth/verify", m2); err != nil || code != Changed {
				b.Fatal(code, err)
			}
		}
	})
}
