//go:build linux && (amd64 || arm64)

package coap

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched I/O: a worker reads up to Server.Batch datagrams with one
// recvmmsg(2) and sends their responses with one sendmmsg(2), so that under
// load the two system calls per request, which cost far more than the
// protocol's hashes, are shared by the whole batch. Under light load a
// recvmmsg returns as soon as one datagram is there, so nothing waits for
// a batch to fill.
//
// The calls are made on the socket's descriptor through syscall.RawConn,
// which keeps Go's poller in charge of waiting: the functions passed to it
// return false on EAGAIN and the goroutine parks until the socket is ready.
// golang.org/x/net/ipv4's ReadBatch does the same but allocates a net.Addr
// per datagram; here the peer's raw socket address is read into a reused
// buffer, turned into a netip.AddrPort without allocating, and handed back
// to the kernel unchanged as the response's destination.

// batch holds one worker's buffers for batched reads and writes. Every
// pointer in the headers points into the batch's own slices, which live as
// long as the worker.
type batch struct {
	rc    syscall.RawConn
	in    []unix.Mmsghdr
	iniov []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	bufs  [][]byte
	out   []unix.Mmsghdr
	oiov  []unix.Iovec
	wbufs [][]byte // encoded responses, one per slot

	// State shared with writeFn, which is made once so that passing it
	// to RawConn allocates nothing.
	n, sent, pending int
	rerr, serr       syscall.Errno // of the last recvmmsg, sendmmsg
	writeFn          func(fd uintptr) bool
}

func newBatch(rc syscall.RawConn, size, bufSize, wbufSize int) *batch {
	b := &batch{
		rc:    rc,
		in:    make([]unix.Mmsghdr, size),
		iniov: make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size),
		bufs:  make([][]byte, size),
		out:   make([]unix.Mmsghdr, size),
		oiov:  make([]unix.Iovec, size),
		wbufs: make([][]byte, size),
	}
	for i := range size {
		b.bufs[i] = make([]byte, bufSize)
		b.wbufs[i] = make([]byte, wbufSize)
		b.iniov[i].Base = &b.bufs[i][0]
		b.in[i].Hdr.Iov = &b.iniov[i]
		b.in[i].Hdr.SetIovlen(1)
		b.in[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.out[i].Hdr.Iov = &b.oiov[i]
		b.out[i].Hdr.SetIovlen(1)
	}
	b.writeFn = b.send
	return b
}

// recv runs recvmmsg on fd. It returns false when the socket is empty.
func (b *batch) recv(fd uintptr) bool {
	for i := range b.in {
		// The kernel writes the lengths back: restore them.
		b.iniov[i].SetLen(len(b.bufs[i]))
		b.in[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.in[i].Hdr.Flags = 0
		b.in[i].Len = 0
	}
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), uintptr(len(b.in)), 0, 0, 0)
	switch e {
	case unix.EAGAIN, unix.EINTR:
		return false
	case 0:
		b.n, b.rerr = int(r), 0
	default:
		b.n, b.rerr = 0, e
	}
	return true
}

// send runs sendmmsg on fd for the responses from b.sent to b.pending.
// A response the kernel refuses is skipped and counted by the caller.
func (b *batch) send(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[b.sent])), uintptr(b.pending-b.sent), 0, 0, 0)
	switch e {
	case unix.EAGAIN, unix.EINTR:
		return false
	case 0:
		b.n, b.serr = int(r), 0
	default:
		b.n, b.serr = 0, e
	}
	return true
}

// peer turns slot i's raw source address into an AddrPort.
func (b *batch) peer(i int) (netip.AddrPort, bool) {
	sa := &b.names[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), true
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	}
	return netip.AddrPort{}, false
}

// loopBatch is loop with batched I/O. It returns false, having read
// nothing, when conn does not expose its descriptor.
//
// A worker that is its socket's only reader handles a batch inside the
// callback it gives RawConn.Read (serveReady). When recvmmsg returns fewer
// datagrams than the batch holds, the socket was empty, so after answering
// them the worker goes straight back to the poller instead of asking the
// kernel again only to hear EAGAIN. That is safe only inside one
// RawConn.Read: each call resets the descriptor's readiness, while between
// the callback's false and its next call the poller keeps any readiness
// that arrived meanwhile (Go's poller is edge-triggered: a datagram that
// lands after the last recvmmsg always leaves a wake-up behind). The
// callback handles one batch per call at most, and the poller's wait
// between calls fails once the socket is closing, so closing the socket
// waits for the batch in hand, never for a stream of them. Inline handling
// needs this worker to be its socket's only reader: one Serve with one
// worker per socket, as the gateway runs it.
// Workers that share a socket handle outside the callback, since the
// descriptor's read lock, held during the callback, would serialize them.
func (w *worker) loopBatch(conn PacketConn) bool {
	sc, ok := conn.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	b := newBatch(rc, w.rt.batch, len(w.rbuf), len(w.wbuf))
	inline := w.rt.workers == 1
	serve := func(fd uintptr) bool { return w.serveReady(b, fd, inline) }
	backoff := time.Duration(0)
	for {
		if err := rc.Read(serve); err != nil {
			// Read fails only when the socket is closed.
			return true
		}
		if b.rerr != 0 {
			backoff = w.readFailed(conn, b.rerr, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !inline { // inline, serveReady handled the batch
			w.handleBatch(b)
		}
		// Responses left: the socket's send buffer was full, or the batch
		// was handled here. Wait until the socket takes them.
		if b.sent < b.pending && w.sendBatch(b) != nil {
			return true
		}
	}
}

// serveReady reads a batch from fd. Unless inline, it returns true to
// have the caller handle and answer it. Inline, it handles the batch and
// answers what the socket takes without waiting; then it returns false
// (wait for the poller, and read again) when the read emptied the socket,
// true otherwise (a full batch, so that the caller reads again at once, or
// responses left for the caller to send). A read error returns true with
// b.rerr set.
func (w *worker) serveReady(b *batch, fd uintptr, inline bool) bool {
	if !b.recv(fd) {
		return false
	}
	if b.rerr != 0 || !inline {
		return true
	}
	drained := b.n < len(b.in)
	w.handleBatch(b)
	if !w.sendReady(b, fd) {
		return true
	}
	return !drained
}

// sendReady sends the queued responses without waiting, skipping any the
// kernel refuses. It returns false when the socket's send buffer is full.
func (w *worker) sendReady(b *batch, fd uintptr) bool {
	for b.sent < b.pending {
		if !b.send(fd) {
			return false
		}
		w.sent(b)
	}
	return true
}

// sent accounts for one sendmmsg: b.n responses went out, or, on an
// error (b.serr), the response at b.sent is skipped.
func (w *worker) sent(b *batch) {
	if b.serr != 0 {
		to, _ := w.destination(b, b.sent)
		w.sendFailed(to, b.serr)
		b.serr = 0
		b.sent++
		return
	}
	w.s.Stats.Responses.Add(uint64(b.n))
	b.sent += b.n
}

// handleBatch handles the b.n datagrams read and queues their responses
// in b.out[:b.pending].
func (w *worker) handleBatch(b *batch) {
	b.pending, b.sent = 0, 0
	for i := range b.n {
		from, ok := b.peer(i)
		if !ok {
			w.s.Stats.Received.Add(1)
			w.s.Stats.Malformed.Add(1)
			continue
		}
		// handle encodes into w.wbuf: give it this slot's buffer, and keep
		// the buffer it leaves (it may have grown).
		w.wbuf = b.wbufs[i]
		held := len(w.held)
		reply := w.handle(b.bufs[i][:b.in[i].Len], from)
		b.wbufs[i] = w.wbuf
		if reply == nil {
			continue
		}
		if len(w.held) > held {
			w.held[held].out = b.pending // commit.go
		}
		o := &b.out[b.pending]
		o.Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		o.Hdr.Namelen = b.in[i].Hdr.Namelen
		b.oiov[b.pending].Base = &reply[0]
		b.oiov[b.pending].SetLen(len(reply))
		b.pending++
	}
	w.endBatch(b) // commit.go: before any response leaves
	w.s.Stats.batchReads.Add(1)
	if b.n > 1 {
		w.s.Stats.batchedReads.Add(1)
	}
}

// setReply makes response k of the send queue reply.
func (b *batch) setReply(k int, reply []byte) {
	b.oiov[k].Base = &reply[0]
	b.oiov[k].SetLen(len(reply))
}

// sendBatch sends the responses left from b.sent, waiting for the socket
// to take them. It fails only when the socket is closed.
func (w *worker) sendBatch(b *batch) error {
	for b.sent < b.pending {
		if err := b.rc.Write(b.writeFn); err != nil {
			w.s.Stats.Dropped.Add(uint64(b.pending - b.sent))
			return err
		}
		w.sent(b)
	}
	return nil
}

// destination is the address response k goes to, for a log line.
func (w *worker) destination(b *batch, k int) (netip.AddrPort, error) {
	name := unsafe.Pointer(b.out[k].Hdr.Name)
	for i := range b.names {
		if unsafe.Pointer(&b.names[i]) == name {
			p, _ := b.peer(i)
			return p, nil
		}
	}
	return netip.AddrPort{}, errors.New("unknown slot")
}
