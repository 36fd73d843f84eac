package coap

import (
	"net"
	"net/netip"
	"syscall"
	"time"
)

// PacketConn is the datagram endpoint the server and the client run over:
// a UDP socket (UDPConn) or an in-process network (package memnet). It is
// shaped after wireguard-go's conn.Bind, in batches: the server reads and
// answers several datagrams per call when the implementation can. Every
// type in its method set comes from the standard library, so that an
// implementation need not import this package.
//
// A PacketConn is used by one reader at a time per worker; ReadBatch and
// WriteBatch may be called from several goroutines at once.
type PacketConn interface {
	// ReadBatch waits for at least one datagram and reads up to len(bufs)
	// of them: datagram i goes into bufs[i], its length into sizes[i]
	// and its sender into from[i]. A datagram longer than its buffer is
	// cut (a caller that wants to know passes buffers one byte longer
	// than the largest datagram it accepts). It fails with an error
	// wrapping net.ErrClosed once the conn is closed, and with one
	// whose Timeout() is true when the read deadline passes.
	ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (n int, err error)
	// WriteBatch sends bufs[i] to to[i] in order. It returns how many it
	// sent; on an error, datagram n is the one that failed, and a caller
	// may go on with the rest.
	WriteBatch(bufs [][]byte, to []netip.AddrPort) (n int, err error)
	// SetReadDeadline bounds the current and future reads; the zero
	// time removes the bound. A deadline in the past ends a pending
	// read at once.
	SetReadDeadline(t time.Time) error
	// LocalAddrPort is the address peers send to.
	LocalAddrPort() netip.AddrPort
	// Close ends pending and future reads.
	Close() error
}

// UDPConn is a PacketConn over a UDP socket. On Linux (amd64, arm64) the
// server reads and answers it with recvmmsg and sendmmsg when
// Server.Batch is above one; that fast path reaches the socket through
// SyscallConn, so it is no part of the PacketConn interface.
type UDPConn struct {
	c *net.UDPConn
}

// UDP wraps a UDP socket.
func UDP(c *net.UDPConn) *UDPConn { return &UDPConn{c: c} }

// Conn returns the socket.
func (u *UDPConn) Conn() *net.UDPConn { return u.c }

// ReadBatch reads one datagram: without the fast path a batch saves no
// system call, so it returns as soon as one is there.
func (u *UDPConn) ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	n, addr, err := u.c.ReadFromUDPAddrPort(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0], from[0] = n, addr
	return 1, nil
}

// WriteBatch sends the datagrams one system call each.
func (u *UDPConn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	for i, b := range bufs {
		if _, err := u.c.WriteToUDPAddrPort(b, to[i]); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

// SetReadDeadline sets the socket's read deadline.
func (u *UDPConn) SetReadDeadline(t time.Time) error { return u.c.SetReadDeadline(t) }

// LocalAddrPort returns the socket's address.
func (u *UDPConn) LocalAddrPort() netip.AddrPort {
	if a, ok := u.c.LocalAddr().(*net.UDPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// Close closes the socket.
func (u *UDPConn) Close() error { return u.c.Close() }

// SyscallConn exposes the socket's descriptor for the batched fast path.
func (u *UDPConn) SyscallConn() (syscall.RawConn, error) { return u.c.SyscallConn() }

// UDPConns wraps sockets, such as ListenUDP's, as PacketConns.
func UDPConns(cs []*net.UDPConn) []PacketConn {
	out := make([]PacketConn, len(cs))
	for i, c := range cs {
		out[i] = UDP(c)
	}
	return out
}

// LocalAddr turns a PacketConn's address into a net.Addr, for callers
// that report addresses as net.Addr.
func LocalAddr(pc PacketConn) net.Addr {
	if u, ok := pc.(*UDPConn); ok {
		return u.c.LocalAddr()
	}
	return net.UDPAddrFromAddrPort(pc.LocalAddrPort())
}
