// Package memnet is an in-process datagram network for tests and demos:
// endpoints with netip.AddrPort addresses exchange datagrams through
// bounded queues, without sockets. It behaves like UDP where tagauth's
// code can tell: a datagram to an address nobody listens on is lost, a
// full receive queue drops what arrives, nothing is retransmitted. It
// differs from UDP where that makes tests deterministic: nothing is lost,
// reordered or duplicated otherwise, and delivery is immediate.
//
// A *Conn satisfies coap.PacketConn without importing it.
package memnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQueue is the receive queue of an endpoint, in datagrams, when
// Network.Queue is zero.
const DefaultQueue = 1024

// Network is a set of endpoints that can reach each other. The zero
// value is ready to use.
type Network struct {
	// Queue bounds every endpoint's receive queue; default DefaultQueue.
	// Set it before the first Listen.
	Queue int

	mu       sync.Mutex
	ends     map[netip.AddrPort]*Conn
	nextPort uint16

	// Dropped counts datagrams lost: sent to no endpoint, or to a full
	// or closed one.
	Dropped atomic.Uint64
}

// Listen opens an endpoint at addr. A zero port picks a free one (from
// 49152 up, as ephemeral ports are); an invalid addr (the zero AddrPort)
// picks 127.0.0.1 with a free port. Two endpoints cannot share an
// address.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	ip := addr.Addr()
	if !ip.IsValid() {
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	ip = ip.Unmap()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ends == nil {
		n.ends = make(map[netip.AddrPort]*Conn)
	}
	port := addr.Port()
	if port == 0 {
		for tries := 0; ; tries++ {
			if tries > 1<<14 {
				return nil, fmt.Errorf("memnet: no free port on %s", ip)
			}
			n.nextPort++
			p := 49152 + n.nextPort%16384
			if _, used := n.ends[netip.AddrPortFrom(ip, p)]; !used {
				port = p
				break
			}
		}
	}
	at := netip.AddrPortFrom(ip, port)
	if _, used := n.ends[at]; used {
		return nil, fmt.Errorf("memnet: listen %s: address already in use", at)
	}
	q := n.Queue
	if q <= 0 {
		q = DefaultQueue
	}
	c := &Conn{
		net:     n,
		addr:    at,
		queue:   make(chan datagram, q),
		closed:  make(chan struct{}),
		changed: make(chan struct{}),
	}
	n.ends[at] = c
	return c, nil
}

// MustListen is Listen for addresses given as strings ("10.0.0.1:5683",
// or ":0" for any), panicking on error: a test's own setup.
func (n *Network) MustListen(addr string) *Conn {
	var ap netip.AddrPort
	if addr != ":0" && addr != "" {
		ap = netip.MustParseAddrPort(addr)
	}
	c, err := n.Listen(ap)
	if err != nil {
		panic(err)
	}
	return c
}

// deliver queues a copy of b at to, or drops it.
func (n *Network) deliver(b []byte, from, to netip.AddrPort) {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	n.mu.Lock()
	c := n.ends[to]
	n.mu.Unlock()
	if c == nil {
		n.Dropped.Add(1)
		return
	}
	select {
	case <-c.closed:
		n.Dropped.Add(1)
	case c.queue <- datagram{b: append([]byte(nil), b...), from: from}:
	default:
		n.Dropped.Add(1)
	}
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// Conn is one endpoint of a Network. Its methods are safe for concurrent
// use.
type Conn struct {
	net    *Network
	addr   netip.AddrPort
	queue  chan datagram
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed and replaced when the deadline changes
}

// ReadBatch waits for a datagram and returns it with any others already
// queued, up to len(bufs).
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	for {
		c.mu.Lock()
		deadline, changed := c.deadline, c.changed
		c.mu.Unlock()
		var (
			timer   *time.Timer
			timeout <-chan time.Time
		)
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, c.opError(os.ErrDeadlineExceeded)
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		n, done, err := c.wait(bufs, sizes, from, changed, timeout)
		if timer != nil {
			timer.Stop()
		}
		if done {
			return n, err
		}
	}
}

// wait waits for a datagram, the conn's closing, a deadline change or the
// timeout; done is false for the latter two, to look at the deadline
// again.
func (c *Conn) wait(bufs [][]byte, sizes []int, from []netip.AddrPort, changed <-chan struct{}, timeout <-chan time.Time) (n int, done bool, err error) {
	select {
	case <-c.closed:
		return 0, true, c.opError(net.ErrClosed)
	case d := <-c.queue:
		sizes[0], from[0] = copy(bufs[0], d.b), d.from
		n = 1
		for n < len(bufs) {
			select {
			case d := <-c.queue:
				sizes[n], from[n] = copy(bufs[n], d.b), d.from
				n++
				continue
			default:
			}
			break
		}
		return n, true, nil
	case <-changed:
	case <-timeout:
	}
	return 0, false, nil
}

// WriteBatch delivers each datagram to its address's endpoint, or drops
// it as UDP would.
func (c *Conn) WriteBatch(bufs [][]byte, to []netip.AddrPort) (int, error) {
	select {
	case <-c.closed:
		return 0, c.opError(net.ErrClosed)
	default:
	}
	for i, b := range bufs {
		c.net.deliver(b, c.addr, to[i])
	}
	return len(bufs), nil
}

// SetReadDeadline bounds reads; a pending read sees the new deadline at
// once.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// LocalAddrPort returns the endpoint's address.
func (c *Conn) LocalAddrPort() netip.AddrPort { return c.addr }

// Close frees the address and ends pending reads. Datagrams still queued
// are lost.
func (c *Conn) Close() error {
	first := false
	c.once.Do(func() {
		first = true
		close(c.closed)
		c.net.mu.Lock()
		if c.net.ends[c.addr] == c {
			delete(c.net.ends, c.addr)
		}
		c.net.mu.Unlock()
	})
	if !first {
		return c.opError(net.ErrClosed)
	}
	return nil
}

func (c *Conn) opError(err error) error {
	return &net.OpError{Op: "read", Net: "memnet", Addr: net.UDPAddrFromAddrPort(c.addr), Err: err}
}
