package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"
)

// ServeUDPEcho is the transport floor: the plainest UDP server Go offers,
// one goroutine per core reading a datagram and writing it back
// (ReadFromUDPAddrPort, WriteToUDPAddrPort), with no parsing, no cache
// and no batching. It returns when conn is closed.
func ServeUDPEcho(conn *net.UDPConn, workers int) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 65536)
			for {
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						errc <- err
					}
					return
				}
				_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// EchoOps returns the operations of the UDP echo baseline: each sends a
// datagram of size bytes (at least 8) on its own connected socket and
// waits for it to come back. A datagram that does not come back within
// ackTimeout is a timeout: the echo has no retransmission.
func EchoOps(addr string, size int, link *Link) func(int) (Op, error) {
	size = max(size, 8)
	return func(int) (Op, error) {
		ra, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, err
		}
		c, err := net.DialUDP("udp", nil, ra)
		if err != nil {
			return nil, err
		}
		return &echoOp{conn: c, buf: make([]byte, size), rbuf: make([]byte, 65536), link: link}, nil
	}
}

type echoOp struct {
	conn      *net.UDPConn
	buf, rbuf []byte
	seq       uint64
	link      *Link
}

func (o *echoOp) Do(context.Context) error {
	o.seq++
	binary.BigEndian.PutUint64(o.buf, o.seq)
	if _, err := o.conn.Write(o.buf); err != nil {
		return withKind(KindNetwork, err)
	}
	o.link.add(len(o.buf))
	if err := o.conn.SetReadDeadline(time.Now().Add(ackTimeout)); err != nil {
		return withKind(KindNetwork, err)
	}
	for {
		n, err := o.conn.Read(o.rbuf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return withKind(KindTimeout, fmt.Errorf("no echo within %v", ackTimeout))
		}
		if err != nil {
			return withKind(KindNetwork, err)
		}
		o.link.add(n)
		if n >= 8 && binary.BigEndian.Uint64(o.rbuf) == o.seq {
			if n != len(o.buf) {
				return withKind(KindBadResponse, fmt.Errorf("echo of %d bytes, sent %d", n, len(o.buf)))
			}
			return nil
		}
		// A late echo of an earlier datagram: keep waiting.
	}
}

func (o *echoOp) Close() { o.conn.Close() }
