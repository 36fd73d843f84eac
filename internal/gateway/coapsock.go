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

// coapEndpoint is the verify service's sockets and the CoAP server that
// reads them.
type coapEndpoint struct {
	conn coap.PacketConn
	more []coap.PacketConn // more SO_REUSEPORT sockets on conn's port
	srv  *coap.Server
	// nonBlocking: the verify never waits on the network, so the sockets
	// are many and batched (see above).
	nonBlocking bool
}

// nonBlockingVerify reports whether a verify never waits on the network.
func nonBlockingVerify(cfg *Config, bk *backends) bool {
	return bk == nil && cfg.Replay == nil && cfg.LockoutStore == nil
}

// listenCoAP binds the CoAP sockets: one and, for a non-blocking verify,
// more on the same port. A conn given in Config.CoAPConn is used alone
// instead.
func listenCoAP(cfg *Config, nonBlocking bool) (*coapEndpoint, error) {
	e := &coapEndpoint{nonBlocking: nonBlocking}
	if cfg.CoAPConn != nil {
		e.conn = cfg.CoAPConn
		return e, nil
	}
	n := 1
	if nonBlocking {
		n = cfg.CoAPWorkers
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
	}
	conns, err := coap.ListenUDP("udp", cfg.CoAPAddr, n)
	if err != nil {
		return nil, fmt.Errorf("gateway: cannot listen for CoAP on %s: %w (is another gateway or CoAP server using it? choose another with --coap)", cfg.CoAPAddr, err)
	}
	pcs := coap.UDPConns(conns)
	e.conn, e.more = pcs[0], pcs[1:]
	return e, nil
}

// setServer sets the CoAP server, its workers per socket and batching
// going with listenCoAP's sockets: workers is Config.CoAPWorkers.
func (e *coapEndpoint) setServer(srv *coap.Server, workers int) {
	e.srv = srv
	if !e.nonBlocking {
		return
	}
	srv.Workers = 1
	if len(e.more) == 0 {
		// One socket after all (no SO_REUSEPORT): as many workers as
		// sockets were asked for.
		srv.Workers = workers
	}
	srv.Batch = verifyBatch
}

// serve serves every CoAP socket until they are closed; when one stops,
// it closes the others.
func (e *coapEndpoint) serve() error {
	conns := append([]coap.PacketConn{e.conn}, e.more...)
	errc := make(chan error, len(conns))
	for _, c := range conns {
		go func() { errc <- e.srv.ServePacket(c) }()
	}
	err := <-errc
	e.close()
	for range conns[1:] {
		if err2 := <-errc; err == nil {
			err = err2
		}
	}
	return err
}

// close closes every CoAP socket. A nil e (Open failed before binding)
// has none.
func (e *coapEndpoint) close() {
	if e == nil {
		return
	}
	if e.conn != nil {
		e.conn.Close()
	}
	for _, c := range e.more {
		c.Close()
	}
}
