// Package loadgen is the load generator behind "tagauth bench": it loads a
// tagauth gateway on loopback with simulated users and devices, runs the
// baselines the gateway is judged against in the same invocation, and
// reports what a skeptical reader needs to check a claim of
// "lightweight": throughput, latency quantiles, errors by kind, the
// server's own CPU time per operation and the bytes on each link.
//
// # What is measured
//
//   - tagauth verify: the load client plays a card and a device (a few
//     hashes per login) to make a fresh m2 for every request, sends it to
//     the gateway's /tagauth/verify over CoAP and checks that m3 comes back.
//     Every m2 is new: the gateway's replay cache refuses a second use.
//   - tagauth login: each worker is a card talking CoAP to a device agent
//     (package device, in this process, one per simulated device), which
//     relays m2 to the gateway: m1, m4, m5 and one sealed task, as a real
//     login. The login alone (m1 to the acknowledgement of m5) is timed
//     apart from the task.
//   - udp-echo: the transport floor, the plainest Go UDP server
//     (ServeUDPEcho) echoing datagrams of an m2's size.
//   - mtls: TLS 1.3 full handshakes with client certificates (ECDSA P-256,
//     X25519, no resumption) over loopback TCP, plus one byte of data.
//
// The servers run as child processes of the bench when it has the tagauth
// binary (Plan.Exe), so that their CPU time, read from /proc/PID/stat
// (user plus system, every thread), is theirs alone: that is the "server
// CPU per operation". Clients and servers share the machine's cores, so
// throughput is the system's, while CPU per operation is the server's.
//
// # Method
//
// Drive runs one Op per worker: back to back (closed loop, a fixed number
// in flight) or at a fixed rate (open loop: latency counts from each
// operation's scheduled start, so that a server falling behind is charged
// for the queue). A warm-up precedes each measured window; the window ends
// after a duration or a count, so every run stops by itself. Latencies go
// into per-worker log-linear histograms (under 1 % error). A login runs
// the user client's flow (userclient.Flow) over its lean CoAP endpoint
// (userclient.Endpoint), which keeps one socket per worker and moves to a new one every 30 000 requests
// (RFC 7252 forbids reusing a message ID with a server within 247 s).
package loadgen
