package loadgen

import "sync/atomic"

// Link counts the datagrams and bytes (CoAP header, options and payload:
// the UDP payload) that cross one link, both directions together.
// Repeats counts, among the datagrams, those a lossless exchange would not
// have had: retransmitted requests and answers to no request in flight
// (late duplicates). A run's datagrams less its repeats are a fixed
// number per operation, whatever the losses.
type Link struct {
	Datagrams, Bytes, Repeats atomic.Uint64
}

func (l *Link) add(n int) {
	if l != nil {
		l.Datagrams.Add(1)
		l.Bytes.Add(uint64(n))
	}
}

func (l *Link) repeat() {
	if l != nil {
		l.Repeats.Add(1)
	}
}

// Datagram counts one datagram of n bytes (userclient.Meter).
func (l *Link) Datagram(n int) { l.add(n) }

// Repeat counts one datagram as a repeat (userclient.Meter).
func (l *Link) Repeat() { l.repeat() }
