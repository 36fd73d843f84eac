// Package coap is tagauth's CoAP transport (spec section 11): the subset of
// RFC 7252 that the protocol needs, a server for the gateway and the device
// agent, and a client for relays and the user CLI. Both run over a
// PacketConn: a UDP socket (UDPConn), or an in-process network (package
// memnet) in tests. The package knows nothing of the protocol's messages;
// package coapbind maps the protocol's outcomes to CoAP codes.
//
// # Why the server is hand-rolled
//
// Every tagauth login crosses the gateway's /tagauth/verify endpoint, so its
// per-datagram cost bounds the whole system. go-coap v3's own UDP server
// costs 15 to 25 times the CPU of a bare UDP socket for this workload: it
// keeps a connection object with its own response cache per peer, caches
// every response for the exchange lifetime and checks that cache for expiry
// as datagrams arrive (plgd-dev/go-coap#586). The wire format itself is not
// the problem, so this package uses only go-coap's codec
// (packages message, message/codes and udp/coder) and runs its own loop on a
// PacketConn (a plain *net.UDPConn in production): a few worker goroutines each read into their own
// buffer, decode into a reused message.Message, call the handler with a
// reusable response buffer and encode into another reused buffer. In steady
// state a request costs no heap allocation (see BenchmarkServerHandle).
//
// # What the server implements
//
// Requests are confirmable (CON) or non-confirmable (NON) POSTs with a
// Uri-Path. A CON is answered with a piggybacked ACK, a NON with a NON; both
// carry the request's token and Content-Format 42 when there is a payload.
// Other methods get 4.05, a path no handler serves 4.04, an unrecognised
// critical option 4.02 (RFC 7252 section 5.4.1), an Accept or Content-Format
// other than 42 get 4.06 or 4.15, a CON datagram larger than
// Server.MaxDatagram 4.13 with Size1. An empty CON (a CoAP ping) gets a
// Reset. Datagrams that do not parse are dropped and counted in
// Server.Stats; the server never stops for bad input.
//
// A retransmitted CON (same message ID from the same endpoint within the
// exchange lifetime) is answered from a bounded cache of encoded responses,
// so a protocol step is never run twice and a lost response never turns into
// a replay error. A retransmission that arrives while the first copy is
// still being handled is dropped: the client will retransmit again and then
// find the answer in the cache.
//
// Not implemented, because tagauth messages fit in one datagram and need no
// proxies: block-wise transfer, Observe, multicast, proxying, DTLS.
package coap
