package userclient

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tagauth/tagauth/internal/coap"
)

// Endpoint is a lean CoAP client of one peer, the lower-level hook under
// Flow for a caller that sends thousands of requests a second and must
// cost as little CPU as possible next to the server it measures (the load
// tool): one UDP socket kept for the whole run (a real device or card
// keeps its socket too), a request buffer and a decoder reused for every
// request, path options made once by the caller (PathOptions). It sends
// CON POSTs and retransmits them like RFC 7252 (same message ID, so the
// server answers a retransmission from its cache), and answers an Echo
// challenge once. Unlike coap.Client it is not safe for concurrent use.
type Endpoint struct {
	conn       *net.UDPConn
	remote     *net.UDPAddr
	local      *net.UDPAddr
	sent       int // requests on this socket
	mid        uint16
	token      [4]byte
	req, rbuf  []byte
	resp       message.Message
	ackTimeout time.Duration
	tries      int
	retrans    *atomic.Uint64
}

// DialEndpoint connects a socket to addr, from local (nil: any).
// retrans, when not nil, counts retransmissions.
func DialEndpoint(addr string, local *net.UDPAddr, ackTimeout time.Duration, maxRetransmit int, retrans *atomic.Uint64) (*Endpoint, error) {
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.DialUDP("udp", local, ra)
	if err != nil {
		return nil, err
	}
	cc := &Endpoint{
		conn:       c,
		remote:     ra,
		local:      local,
		req:        make([]byte, 0, 1500),
		rbuf:       make([]byte, 2048),
		resp:       message.Message{Options: make(message.Options, 0, 16)},
		ackTimeout: ackTimeout,
		tries:      1 + maxRetransmit,
		retrans:    retrans,
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	cc.mid = binary.BigEndian.Uint16(b[:2])
	copy(cc.token[:], b[2:])
	return cc, nil
}

// Close closes the socket.
func (c *Endpoint) Close() { c.conn.Close() }

// midsPerSocket is how many requests a socket sends before the client
// moves to a new one. RFC 7252 forbids reusing a message ID with the same
// server within EXCHANGE_LIFETIME (247 s), and servers answer a reused ID
// from their response cache: at thousands of requests a second the 16-bit
// IDs of one socket would wrap within seconds. A new socket is a new
// endpoint (a new source port), with IDs of its own.
const midsPerSocket = 30000

// rotate moves to a new socket when this one has sent midsPerSocket
// requests.
func (c *Endpoint) rotate() error {
	if c.sent < midsPerSocket {
		return nil
	}
	nc, err := net.DialUDP("udp", c.local, c.remote)
	if err != nil {
		return err
	}
	c.conn.Close()
	c.conn, c.sent = nc, 0
	return nil
}

// PathOptions returns the Uri-Path and Content-Format options of a
// request to path, for a caller to make once per path.
func PathOptions(path string) message.Options {
	var opts message.Options
	for seg := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	return append(opts, message.Option{ID: message.ContentFormat, Value: []byte{byte(message.AppOctets)}})
}

// Meter counts an endpoint's traffic: Datagram for each datagram sent or
// received, with its size (the UDP payload), Repeat for each of them that
// a lossless exchange would not have had (retransmissions, late
// duplicates).
type Meter interface {
	Datagram(n int)
	Repeat()
}

// Post sends payload to the path whose options are opts and returns the
// response code and payload; the payload is valid until the next Post.
// The datagrams are counted in m, which may be nil. An exchange that gets
// no answer wraps coap.ErrTimeout.
func (c *Endpoint) Post(opts message.Options, payload []byte, m Meter) (coap.Code, []byte, error) {
	if m == nil {
		m = noMeter{}
	}
	if err := c.rotate(); err != nil {
		return 0, nil, err
	}
	c.sent++
	c.mid++
	msg := message.Message{
		Token: c.token[:], Options: opts, Code: codes.POST, Payload: payload,
		MessageID: int32(c.mid), Type: message.Confirmable,
	}
	n, err := coder.DefaultCoder.Encode(msg, c.req[:cap(c.req)])
	if err != nil {
		return 0, nil, fmt.Errorf("encoding a request: %w", err)
	}
	req := c.req[:n]
	timeout := c.ackTimeout
	for try := 1; ; try++ {
		if _, err := c.conn.Write(req); err != nil {
			return 0, nil, err
		}
		m.Datagram(len(req))
		if try > 1 {
			m.Repeat()
		}
		deadline := time.Now().Add(timeout)
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return 0, nil, err
		}
		for {
			n, err := c.conn.Read(c.rbuf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return 0, nil, err
			}
			m.Datagram(n)
			if _, err := coder.DefaultCoder.Decode(c.rbuf[:n], &c.resp); err != nil {
				m.Repeat()
				continue
			}
			r := &c.resp
			if r.Type != message.Acknowledgement || r.MessageID != int32(c.mid) || !bytes.Equal(r.Token, c.token[:]) {
				m.Repeat()
				continue // a late answer to an earlier request
			}
			if echo, err := r.Options.GetBytes(coap.OptionEcho); err == nil && coap.Code(r.Code) == coap.Unauthorized && !hasEcho(opts) {
				// The device asks this address to prove it receives
				// there (RFC 9175): once per address and 10 minutes,
				// so it allocates only then.
				return c.Post(append(slices.Clip(opts), message.Option{ID: coap.OptionEcho, Value: bytes.Clone(echo)}), payload, m)
			}
			return coap.Code(r.Code), r.Payload, nil
		}
		if try == c.tries {
			return 0, nil, fmt.Errorf("no answer from %s after %d tries: %w", c.conn.RemoteAddr(), try, coap.ErrTimeout)
		}
		if c.retrans != nil {
			c.retrans.Add(1)
		}
		timeout *= 2
	}
}

func hasEcho(opts message.Options) bool {
	for _, o := range opts {
		if o.ID == coap.OptionEcho {
			return true
		}
	}
	return false
}

type noMeter struct{}

func (noMeter) Datagram(int) {}
func (noMeter) Repeat()      {}
