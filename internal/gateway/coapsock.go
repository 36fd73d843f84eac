package gateway

import (
	"fmt"
	"runtime"

	"github.com/tagauth/tagauth/internal/coap"
)

// The verify service's sockets. A single gateway whose registry, replay
// cache and lockout all live in its memory never waits in a verify, so it
// binds one SO_REUSEPORT socket per worker (the kernel spreads devices
// across them: no socket lock is shared on the way in) and reads and
// answers datagrams in batches (recvmmsg and sendmmsg): under load, two
// system calls per login cost more CPU than its hashes. A gateway with
// shared backends waits on the network in a verify (a replica even waits
// for its audit commit), so it keeps one socket, many workers and no
// batching: a batch is handled in order, and one slow verify would hold
// back the rest of its batch.

// verifyBatch is the most datagrams a worker reads or sends at once.
const verifyBatch = 32

// nonBlockingVerify reports whether a verify never waits on the network.
func (g *Gateway) nonBlockingVerify() bool {
	return g.bk == nil && g.cfg.Replay == nil && g.cfg.LockoutStore == nil
}

// listenCoAP binds the CoAP sockets: g.coapConn and, for a non-blocking
// verify, g.coapMore on the same port. A conn given in Config.CoAPConn
// is used alone instead.
func (g *Gateway) listenCoAP() error {
	if g.cfg.CoAPConn != nil {
		g.coapConn = g.cfg.CoAPConn
		return nil
	}
	n := 1
	if g.nonBlockingVerify() {
		n = g.cfg.CoAPWorkers
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
	}
	conns, err := coap.ListenUDP("udp", g.cfg.CoAPAddr, n)
	if err != nil {
		return fmt.Errorf("gateway: cannot listen for CoAP on %s: %w (is another gateway or CoAP server using it? choose another with --coap)", g.cfg.CoAPAddr, err)
	}
	pcs := coap.UDPConns(conns)
	g.coapConn, g.coapMore = pcs[0], pcs[1:]
	return nil
}

// tuneCoAP sets the CoAP server's workers per socket and batching to go
// with listenCoAP's sockets.
func (g *Gateway) tuneCoAP() {
	if !g.nonBlockingVerify() {
		return
	}
	g.coapSrv.Workers = 1
	if len(g.coapMore) == 0 {
		// One socket after all (no SO_REUSEPORT): as many workers as
		// sockets were asked for.
		g.coapSrv.Workers = g.cfg.CoAPWorkers
	}
	g.coapSrv.Batch = verifyBatch
}

// serveCoAP serves every CoAP socket until they are closed; when one
// stops, it closes the others.
func (g *Gateway) serveCoAP() error {
	conns := append([]coap.PacketConn{g.coapConn}, g.coapMore...)
	errc := make(chan error, len(conns))
	for _, c := range conns {
		go func() { errc <- g.coapSrv.ServePacket(c) }()
	}
	err := <-errc
	g.closeCoAP()
	for range conns[1:] {
		if e := <-errc; err == nil {
			err = e
		}
	}
	return err
}

// closeCoAP closes every CoAP socket.
func (g *Gateway) closeCoAP() {
	if g.coapConn != nil {
		g.coapConn.Close()
	}
	for _, c := range g.coapMore {
		c.Close()
	}
}
