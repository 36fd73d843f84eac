package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// ListenUDP binds n UDP sockets to address (network "udp", "udp4" or
// "udp6"), for Serve to serve each. With n > 1 on Linux the sockets share
// the port through SO_REUSEPORT: the kernel spreads peers across them by
// a hash of the peer's address and port, so each socket has its own
// receive queue and its own workers, and no lock is shared between them
// on the way in. Elsewhere, or when the kernel refuses, it binds one
// socket. A port of 0 picks a free port for the first socket; the others
// join it.
//
// SO_REUSEPORT lets another process of the same user bind the same port
// and receive a share of the datagrams; only processes of the same user
// can, which is why the gateway should run as a dedicated user.
func ListenUDP(network, address string, n int) ([]*net.UDPConn, error) {
	if n < 1 {
		n = 1
	}
	lc := net.ListenConfig{}
	if n > 1 && reusePortSupported {
		lc.Control = setReusePort
	}
	first, err := listenOne(lc, network, address)
	if err != nil && lc.Control != nil {
		// A kernel without SO_REUSEPORT: one socket serves as well.
		lc.Control = nil
		first, err = listenOne(lc, network, address)
	}
	if err != nil {
		return nil, err
	}
	conns := []*net.UDPConn{first}
	if lc.Control == nil {
		return conns, nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		first.Close()
		return nil, err
	}
	port := first.LocalAddr().(*net.UDPAddr).Port
	again := net.JoinHostPort(host, strconv.Itoa(port))
	for len(conns) < n {
		c, err := listenOne(lc, network, again)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("coap: binding socket %d of %d to %s with SO_REUSEPORT: %w", len(conns)+1, n, again, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func listenOne(lc net.ListenConfig, network, address string) (*net.UDPConn, error) {
	pc, err := lc.ListenPacket(context.Background(), network, address)
	if err != nil {
		return nil, err
	}
	c, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, errors.New("coap: " + network + " is not a UDP network")
	}
	return c, nil
}
