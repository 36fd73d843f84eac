// Package systest holds whole-system tests that run in one process: a
// gateway (or two replicas on one PostgreSQL schema), device agents and
// users' clients, with every CoAP datagram on an in-process network
// (package memnet) instead of sockets. Only the admin API, HTTPS, still
// listens on loopback. The real-socket tests (libcoap interop, processes,
// SIGKILL) stay in e2e.
package systest
