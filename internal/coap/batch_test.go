//go:build linux && (amd64 || arm64)

package coap

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/tagauth/tagauth/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestBatchAnswersEveryDatagram: with one worker and Batch 16, a handler
// held on the first request lets a burst queue up, which the next read
// must take as one batch; every request, from several peers, gets its own
// answer (token, message ID, payload, destination), and a retransmission
// inside the batch is answered from the cache, not by the handler.
func TestBatchAnswersEveryDatagram(t *testing.T) {
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release) // a failure before the release must not leave the worker held
	var calls atomic.Int64
	var once sync.Once
	mux := NewMux()
	entered := make(chan struct{})
	mux.Handle("/p", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		calls.Add(1)
		once.Do(func() { close(entered); <-hold })
		return Changed, append(append(dst, "re:"...), req.Payload...)
	}))
	s := &Server{Handler: mux, Workers: 1, Batch: 16}
	srv := serveConn(t, s)
	addr := srv.LocalAddr().String()

	first := dial(t, addr)
	if _, err := first.Write(post(t, 1, "/p", []byte("first"))); err != nil {
		t.Fatal(err)
	}
	<-entered // the first request is in the handler, which holds the worker

	// While the worker is held, queue 3 peers x 4 requests, plus a
	// retransmission of one of them, and see all 13 in the server
	// socket's receive queue before the worker reads again.
	if n := queued(t, srv); n != 0 {
		t.Fatalf("%d datagrams queued before the burst, want 0 (the first is in the handler)", n)
	}
	peers := []*net.UDPConn{dial(t, addr), dial(t, addr), dial(t, addr)}
	for p, c := range peers {
		for i := range 4 {
			mid := uint16(100*p + i)
			if _, err := c.Write(post(t, mid, "/p", fmt.Appendf(nil, "p%d-%d", p, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := peers[0].Write(post(t, 0, "/p", []byte("p0-0"))); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "13 datagrams queued", func() bool { return queued(t, srv) == 13 })
	release()

	if r := decode(t, read(t, first)); string(r.Payload) != "re:first" || r.MessageID != 1 {
		t.Fatalf("first reply %v", r.String())
	}
	for p, c := range peers {
		n := 4
		if p == 0 {
			n = 5 // the retransmission is answered too
		}
		got := map[int32]string{}
		for range n {
			r := decode(t, read(t, c))
			if r.Type != message.Acknowledgement || !bytes.Equal(r.Token, []byte{1, 2, 3, 4}) {
				t.Fatalf("peer %d: reply %v", p, r.String())
			}
			if prev, dup := got[r.MessageID]; dup && prev != string(r.Payload) {
				t.Fatalf("peer %d: two different answers for message %d", p, r.MessageID)
			}
			got[r.MessageID] = string(r.Payload)
		}
		for i := range 4 {
			mid := int32(100*p + i)
			if want := fmt.Sprintf("re:p%d-%d", p, i); got[mid] != want {
				t.Errorf("peer %d message %d: answer %q, want %q", p, mid, got[mid], want)
			}
		}
	}
	if c := calls.Load(); c != 13 {
		t.Errorf("handler ran %d times, want 13 (the retransmission is answered from the cache)", c)
	}
	testenv.Eventually(t, "all responses counted", func() bool { return s.Stats.Responses.Load() == 14 })
	if d := s.Stats.Duplicates.Load(); d != 1 {
		t.Errorf("Duplicates = %d, want 1", d)
	}
	if s.Stats.batchedReads.Load() == 0 {
		t.Errorf("no read returned more than one datagram (%d reads for 14 datagrams)", s.Stats.batchReads.Load())
	}
	if s.Stats.batchReads.Load() >= 14 {
		t.Errorf("%d reads for 14 datagrams: not batched", s.Stats.batchReads.Load())
	}
}

// queued counts the datagrams waiting in conn's receive queue, without
// taking them: it peeks at them one after the other with a peek offset
// (SO_PEEK_OFF), which it clears again. The kernel announces no arrival,
// FIONREAD on a UDP socket tells only the first datagram's length and
// SO_MEMINFO's memory is not a count (the kernel condenses datagrams
// under pressure), so tests poll this (boundedly) to know that datagrams
// sent over loopback have reached the socket. Not for a socket a worker
// is reading.
func queued(t *testing.T, conn *net.UDPConn) int {
	t.Helper()
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); serr != nil {
			return
		}
		defer func() {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1); err != nil && serr == nil {
				serr = err
			}
		}()
		buf := make([]byte, 65536)
		for {
			if n > 1<<16 {
				serr = errors.New("SO_PEEK_OFF not honoured: the same datagram peeked again and again")
				return
			}
			_, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err == unix.EAGAIN {
				return
			}
			if err != nil {
				serr = err
				return
			}
			n++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("peeking at the receive queue: %v", serr)
	}
	return n
}

// TestBatchMalformedAndOversized: bad datagrams inside a batch are counted
// and dropped (or answered 4.13) without disturbing their neighbours.
func TestBatchMalformedAndOversized(t *testing.T) {
	var calls atomic.Int64
	s := &Server{Handler: echoMux(&calls), Workers: 1, Batch: 8, MaxDatagram: 64}
	addr := serve(t, s)
	c := dial(t, addr)
	for _, d := range [][]byte{
		{0xff, 0xff}, // not CoAP
		post(t, 7, "/tagauth/verify", make([]byte, 100)), // oversized CON: 4.13
		post(t, 8, "/tagauth/verify", []byte("ok")),
	} {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	codes := map[int32]Code{}
	for range 2 {
		r := decode(t, read(t, c))
		codes[r.MessageID] = Code(r.Code)
	}
	if codes[7] != RequestEntityTooLarge || codes[8] != Changed {
		t.Fatalf("answers %v, want 4.13 for 7 and 2.04 for 8", codes)
	}
	testenv.Eventually(t, "counters", func() bool {
		return s.Stats.Malformed.Load() == 1 && s.Stats.Oversized.Load() == 1 && s.Stats.Received.Load() == 3
	})
}

// BenchmarkLoopbackBatch compares one worker reading one datagram per
// system call with one reading batches, with 32 requests in flight.
func BenchmarkLoopbackBatch(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			mux := NewMux()
			mux.Handle("/tagauth/verify", verifyLike)
			addr := serve(b, &Server{Handler: mux, Workers: 1, Batch: batch})
			c := dial(b, addr)
			d := post(b, 0, "/tagauth/verify", bytes.Repeat([]byte{0x5a}, 200))
			buf := make([]byte, 2048)
			const inFlight = 32
			var mid uint16
			send := func() {
				mid++
				binary.BigEndian.PutUint16(d[2:4], mid)
				if _, err := c.Write(d); err != nil {
					b.Fatal(err)
				}
			}
			for range inFlight {
				send()
			}
			b.ResetTimer()
			for b.Loop() {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
				send()
			}
		})
	}
}

// TestBatchSendSkipsRefusedResponse: when the kernel refuses one response
// of a batch (here: a broadcast destination on a socket without
// SO_BROADCAST, EACCES), that response is counted as dropped and the rest
// of the batch still goes out, in order; the refusal is not left behind
// for the worker to take for a failed read (the batch ends on one).
func TestBatchSendSkipsRefusedResponse(t *testing.T) {
	s := &Server{Handler: NewMux(), Workers: 1, Batch: 4}
	w := s.newWorker(context.Background())
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Go turns SO_BROADCAST on for every UDP socket: turn it off.
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 0)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	b := newBatch(rc, 4, 64, 64)
	dests := []*net.UDPAddr{
		peer.LocalAddr().(*net.UDPAddr),
		{IP: net.IPv4bcast, Port: 9},
		peer.LocalAddr().(*net.UDPAddr),
		{IP: net.IPv4bcast, Port: 9},
	}
	for i, d := range dests {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&b.names[i]))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], uint16(d.Port))
		copy(sa.Addr[:], d.IP.To4())
		b.out[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.out[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		b.wbufs[i] = append(b.wbufs[i][:0], byte('a'+i))
		b.oiov[i].Base = &b.wbufs[i][0]
		b.oiov[i].SetLen(1)
	}
	b.pending = len(dests)
	if err := w.sendBatch(b); err != nil {
		t.Fatal(err)
	}
	if got := s.Stats.Dropped.Load(); got != 2 {
		t.Errorf("dropped %d responses, want the 2 to the broadcast address", got)
	}
	if got := s.Stats.Responses.Load(); got != 2 {
		t.Errorf("sent %d responses, want 2", got)
	}
	if b.serr != 0 {
		t.Errorf("send error %v left behind after the batch went out", b.serr)
	}
	buf := make([]byte, 8)
	for _, want := range []string{"a", "c"} {
		if err := peer.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := peer.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != want {
			t.Errorf("peer got %q, want %q", buf[:n], want)
		}
	}
}

// TestBatchCloseUnderFlood: a worker that always finds a full batch must
// still let its socket close; Serve returns soon after Close.
func TestBatchCloseUnderFlood(t *testing.T) {
	// The handler is slower than the sender by construction: each call
	// waits until two more requests have been sent, so the socket never
	// runs dry while the flood lasts.
	sent := make(chan struct{}, 1024)
	stop := make(chan struct{})
	mux := NewMux()
	mux.Handle("/p", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		for range 2 {
			select {
			case <-sent:
			case <-stop:
			}
		}
		return Changed, dst
	}))
	s := &Server{Handler: mux, Workers: 1, Batch: 8}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(conn) }()
	c := dial(t, conn.LocalAddr().String())
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		for mid := uint16(0); ; mid++ {
			select {
			case <-stop:
				return
			default:
			}
			c.Write(post(t, mid, "/p", nil))
			select {
			case sent <- struct{}{}:
			default: // the handler is far behind: the socket is full anyway
			}
		}
	}()
	defer func() { close(stop); <-flooding }()
	testenv.Eventually(t, "the worker reads full batches", func() bool { return s.Stats.batchedReads.Load() > 10 })
	closed := make(chan struct{})
	go func() { conn.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still blocked 10 s into a flood: the worker never let go of the socket")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after Close", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}

// TestBatchWorkersShareSocket: several batching workers on one socket
// handle requests at the same time (none holds the socket while its
// handler runs).
func TestBatchWorkersShareSocket(t *testing.T) {
	const workers = 4
	var inside, most atomic.Int64
	all := make(chan struct{})
	entered := make(chan struct{}, workers)
	var once sync.Once
	mux := NewMux()
	mux.Handle("/p", HandlerFunc(func(_ context.Context, req *Request, dst []byte) (Code, []byte) {
		n := inside.Add(1)
		entered <- struct{}{}
		defer inside.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if n == workers {
			once.Do(func() { close(all) })
		}
		select { // wait until every worker is in a handler, or give up
		case <-all:
		case <-time.After(5 * time.Second):
		}
		return Changed, dst
	}))
	s := &Server{Handler: mux, Workers: workers, Batch: 8}
	addr := serve(t, s)
	peers := make([]*net.UDPConn, workers)
	for i := range peers {
		peers[i] = dial(t, addr)
		// Spread the requests over time so that each worker's read
		// takes one of them.
		if _, err := peers[i].Write(post(t, uint16(i), "/p", nil)); err != nil {
			t.Fatal(err)
		}
		<-entered // a worker has it in a handler

	}
	for _, p := range peers {
		read(t, p)
	}
	if got := most.Load(); got != workers {
		t.Fatalf("at most %d handlers ran at once, want %d", got, workers)
	}
}
