package coap

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// RFC 7252 section 4.8 transmission parameters.
const (
	DefaultACKTimeout    = 2 * time.Second
	DefaultMaxRetransmit = 4
)

// Errors a Post can wrap; test with errors.Is.
var (
	// ErrTimeout: the server never answered within the retransmission
	// schedule (or never sent the separate response it announced).
	ErrTimeout = errors.New("timeout")
	// ErrReset: the server answered the request with a Reset, so it did
	// not understand it.
	ErrReset = errors.New("reset by the server")
)

// Client sends CoAP requests. The zero value (and a nil *Client) uses RFC
// 7252's defaults. A Client is safe for concurrent use: it holds no state
// between calls.
type Client struct {
	// ACKTimeout is the initial retransmission timeout, randomised by a
	// factor of 1 to 1.5 and doubled after every try; default 2 s.
	ACKTimeout time.Duration
	// MaxRetransmit is how many times a request is sent again after the
	// first try; default 4.
	MaxRetransmit int
	// Traffic, when not nil, counts the datagrams and bytes (CoAP header
	// and payload) that Post sends and receives, so that a caller can
	// measure what a protocol step costs on the wire.
	Traffic *Traffic
	// LocalAddr, when not nil, is the address requests are sent from
	// (its port normally zero); nil lets the system choose. A device
	// or a test with several addresses picks one.
	LocalAddr *net.UDPAddr
	// Listen, when set, opens the endpoint an exchange sends from
	// instead of a UDP socket: a PacketConn of another network, such as
	// an in-process one (package memnet). Addresses given to Post must
	// then be numeric ("ip:port"), and LocalAddr is ignored.
	Listen func(ctx context.Context) (PacketConn, error)

	// idle keeps the sockets of finished exchanges for the next Post to
	// the same address (see Post).
	mu   sync.Mutex
	idle map[string][]*clientSocket
}

// A clientSocket is a UDP socket connected to one server, kept between
// exchanges. Its message IDs count up from a random start, so that one
// socket (one endpoint, for the server) never reuses an ID within
// RFC 7252's EXCHANGE_LIFETIME: it is retired after socketUses exchanges.
type clientSocket struct {
	conn exchConn
	mid  uint16
	uses int
}

// exchConn is an exchange's endpoint, which hears only its server.
type exchConn interface {
	Write(b []byte) (int, error)
	Read(b []byte) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// dial opens an endpoint for exchanges with addr: a UDP socket connected
// to it, or a conn from c.Listen that filters by sender.
func (c *Client) dial(ctx context.Context, addr string) (exchConn, error) {
	if c != nil && c.Listen != nil {
		to, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		pc, err := c.Listen(ctx)
		if err != nil {
			return nil, err
		}
		return &peerConn{pc: pc, peer: netip.AddrPortFrom(to.Addr().Unmap(), to.Port())}, nil
	}
	var d net.Dialer
	if c != nil && c.LocalAddr != nil {
		d.LocalAddr = c.LocalAddr
	}
	nc, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	return nc.(*net.UDPConn), nil
}

// peerConn is a PacketConn that sends to one peer and reads only its
// datagrams, as a connected UDP socket does.
type peerConn struct {
	pc    PacketConn
	peer  netip.AddrPort
	bufs  [1][]byte
	sizes [1]int
	from  [1]netip.AddrPort
}

func (p *peerConn) Write(b []byte) (int, error) {
	p.bufs[0] = b
	_, err := p.pc.WriteBatch(p.bufs[:], []netip.AddrPort{p.peer})
	p.bufs[0] = nil
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

func (p *peerConn) Read(b []byte) (int, error) {
	for {
		p.bufs[0] = b
		_, err := p.pc.ReadBatch(p.bufs[:], p.sizes[:], p.from[:])
		p.bufs[0] = nil
		if err != nil {
			return 0, err
		}
		if f := p.from[0]; f.Port() == p.peer.Port() && f.Addr().Unmap() == p.peer.Addr() {
			return p.sizes[0], nil
		}
	}
}

func (p *peerConn) SetReadDeadline(t time.Time) error { return p.pc.SetReadDeadline(t) }
func (p *peerConn) Close() error                      { return p.pc.Close() }

// Socket reuse bounds: sockets kept per address and addresses kept.
const (
	socketUses     = 30000
	maxIdlePerAddr = 64
	maxIdleAddrs   = 16
)

// Traffic counts datagrams and their bytes (UDP payload: CoAP header,
// options and payload). It is safe for concurrent use.
type Traffic struct {
	SentDatagrams, SentBytes         atomic.Uint64
	ReceivedDatagrams, ReceivedBytes atomic.Uint64
	// Repeats counts, among those datagrams, the ones a lossless exchange
	// would not have had: retransmitted requests, and datagrams received
	// that answer no request in flight (late duplicates, noise).
	Repeats atomic.Uint64
}

func (t *Traffic) repeat() {
	if t != nil {
		t.Repeats.Add(1)
	}
}

func (t *Traffic) sent(n int) {
	if t != nil {
		t.SentDatagrams.Add(1)
		t.SentBytes.Add(uint64(n))
	}
}

func (t *Traffic) received(n int) {
	if t != nil {
		t.ReceivedDatagrams.Add(1)
		t.ReceivedBytes.Add(uint64(n))
	}
}

// maxResponse bounds a response datagram: the largest UDP payload.
const maxResponse = 65535

var readBufs = sync.Pool{New: func() any { b := make([]byte, maxResponse+1); return &b }}

// Post sends a CON POST to addr ("host:port") at path with Content-Format 42
// and waits for the piggybacked response (or an empty ACK and then a separate
// response), retransmitting with exponential backoff (RFC 7252 section
// 4.2), until the server answers, the tries run out or ctx is done. Errors
// say where and how long it tried:
//
//	coap: no answer from 127.0.0.1:5683 after 5 tries (timeout)
//
// Each call uses an ephemeral UDP socket of its own (or an endpoint from
// Client.Listen), connected to addr so that only addr's datagrams are read
// and an ICMP port-unreachable ends the wait at once. A (non-nil) Client keeps the socket of a successful
// exchange for its next Post to the same address: a device relaying
// thousands of logins to its gateway then saves a socket, a connect and a
// close per login. A response code in class 4 or 5 is returned as a Code,
// not as an error.
//
// A 4.01 that carries an Echo option (RFC 9175) is the server asking the
// client to prove that it receives at its address: Post repeats the
// request once, as a new exchange carrying that Echo value, and returns
// the answer to the repetition.
func (c *Client) Post(ctx context.Context, addr, path string, payload []byte) (Code, []byte, error) {
	return c.PostOptions(ctx, addr, path, payload, nil)
}

// PostOptions is Post with extra request options, such as OptionSource on
// a relayed verify. opts must not include Uri-Path or Content-Format,
// which Post sets.
func (c *Client) PostOptions(ctx context.Context, addr, path string, payload []byte, opts []message.Option) (Code, []byte, error) {
	code, resp, echo, err := c.exchange(ctx, addr, path, payload, opts)
	if err != nil || echo == nil {
		return code, resp, err
	}
	with := make([]message.Option, 0, len(opts)+1)
	for _, o := range opts {
		if o.ID != OptionEcho {
			with = append(with, o)
		}
	}
	with = append(with, message.Option{ID: OptionEcho, Value: echo})
	code, resp, _, err = c.exchange(ctx, addr, path, payload, with)
	return code, resp, err
}

// exchange runs one CON exchange. echo is the Echo value of a 4.01
// answer, nil for any other answer.
func (c *Client) exchange(ctx context.Context, addr, path string, payload []byte, opts []message.Option) (Code, []byte, []byte, error) {
	ackTimeout, maxRe := DefaultACKTimeout, DefaultMaxRetransmit
	var traffic *Traffic
	if c != nil {
		traffic = c.Traffic
	}
	if c != nil && c.ACKTimeout > 0 {
		ackTimeout = c.ACKTimeout
	}
	if c != nil && c.MaxRetransmit > 0 {
		maxRe = c.MaxRetransmit
	}

	var ids [11]byte
	if _, err := rand.Read(ids[:]); err != nil {
		return 0, nil, nil, fmt.Errorf("coap: %w", err)
	}
	token := ids[3 : 3+4+int(ids[2])%5] // 4 to 8 bytes: unguessable by off-path senders
	sock := c.take(addr)
	if sock == nil {
		nc, err := c.dial(ctx, addr)
		if err != nil {
			return 0, nil, nil, fmt.Errorf("coap: %s: %w", addr, err)
		}
		sock = &clientSocket{conn: nc, mid: binary.BigEndian.Uint16(ids[:2])}
	}
	sock.mid++
	sock.uses++
	mid := sock.mid
	conn := sock.conn
	keep := false
	defer func() {
		if !keep || !c.put(addr, sock) {
			conn.Close()
		}
	}()
	req, err := encodeRequest(mid, token, path, payload, opts)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("coap: request to %s%s: %w", addr, slashed(path), err)
	}

	// A done ctx moves the read deadline to the past, which ends a
	// pending Read at once. A socket it may have touched is not kept.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			keep = false
		}
	}()

	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp

	var (
		tries    int
		timeout  = ackTimeout + mrand.N(ackTimeout/2+1)
		next     time.Time // when to retransmit
		acked    bool      // an empty ACK came: wait for the separate response
		sepUntil time.Time
		resp     = message.Message{Options: make(message.Options, 0, 64)}
	)
	noAnswer := func(why error) error {
		return fmt.Errorf("coap: no answer from %s after %d %s (%w)", addr, tries, plural(tries, "try", "tries"), why)
	}
	for {
		now := time.Now()
		if !acked && !now.Before(next) {
			if tries > maxRe {
				return 0, nil, nil, noAnswer(ErrTimeout)
			}
			if _, err := conn.Write(req); err != nil {
				return 0, nil, nil, fmt.Errorf("coap: cannot send to %s: %w", addr, err)
			}
			traffic.sent(len(req))
			if tries > 0 {
				traffic.repeat()
			}
			tries++
			next = now.Add(timeout)
			timeout *= 2
		}
		deadline := next
		if acked {
			if !now.Before(sepUntil) {
				return 0, nil, nil, fmt.Errorf("coap: %s acknowledged the request but sent no response (%w)", addr, ErrTimeout)
			}
			deadline = sepUntil
		}
		if err := conn.SetReadDeadline(deadline); err != nil {
			return 0, nil, nil, fmt.Errorf("coap: %s: %w", addr, err)
		}
		// Checked after setting the deadline: a cancellation from now on
		// resets it (see AfterFunc above), one before is seen here.
		if err := ctx.Err(); err != nil {
			return 0, nil, nil, noAnswer(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case ctx.Err() != nil:
				return 0, nil, nil, noAnswer(ctx.Err())
			case errors.As(err, &ne) && ne.Timeout():
				continue
			case errors.Is(err, syscall.ECONNREFUSED):
				return 0, nil, nil, noAnswer(syscall.ECONNREFUSED)
			default:
				return 0, nil, nil, fmt.Errorf("coap: reading from %s: %w", addr, err)
			}
		}
		traffic.received(n)
		if n > maxResponse {
			continue // cannot happen over UDP; never parse a cut datagram
		}
		switch classify(buf[:n], &resp, mid, token) {
		case gotNoise:
			traffic.repeat()
		case gotEmptyACK:
			if !acked {
				acked = true
				sepUntil = time.Now().Add(maxTransmitWait(ackTimeout, maxRe))
			}
		case gotReset:
			return 0, nil, nil, fmt.Errorf("coap: %s answered %s with a reset: %w", addr, slashed(path), ErrReset)
		case gotSeparateCON:
			// A separate response (RFC 7252 section 5.2.2), possibly
			// before its empty ACK, which may have been lost.
			if ack, err := encodeEmpty(message.Acknowledgement, resp.MessageID); err == nil {
				if _, err := conn.Write(ack); err == nil {
					traffic.sent(len(ack))
				}
			}
			keep = true
			return Code(resp.Code), bytes.Clone(resp.Payload), echoOf(&resp), nil
		case gotResponse:
			keep = true
			return Code(resp.Code), bytes.Clone(resp.Payload), echoOf(&resp), nil
		}
	}
}

// echoOf returns a copy of the Echo value of a 4.01 response, or nil.
func echoOf(resp *message.Message) []byte {
	if Code(resp.Code) != Unauthorized {
		return nil
	}
	for _, o := range resp.Options {
		if o.ID == OptionEcho && len(o.Value) >= 1 && len(o.Value) <= MaxEcho {
			return bytes.Clone(o.Value)
		}
	}
	return nil
}

// replyKind is what one datagram received by Post means for its request.
type replyKind int

const (
	gotNoise       replyKind = iota // undecodable, or for another exchange: keep waiting
	gotEmptyACK                     // the request arrived; the response comes separately
	gotReset                        // the server refused the request
	gotResponse                     // piggybacked or NON separate response
	gotSeparateCON                  // separate response that must be acknowledged
)

// classify decodes a datagram from the server into resp and says what it
// means for the request with message ID mid and token. It is the client's
// decoder of untrusted bytes (FuzzClientReply).
func classify(datagram []byte, resp *message.Message, mid uint16, token []byte) replyKind {
	if _, err := coder.DefaultCoder.Decode(datagram, resp); err != nil {
		return gotNoise
	}
	code := Code(resp.Code)
	switch {
	case resp.Type == message.Acknowledgement && resp.MessageID == int32(mid):
		if code == empty {
			return gotEmptyACK
		}
		if code.isResponse() && bytes.Equal(resp.Token, token) {
			return gotResponse
		}
	case resp.Type == message.Reset && resp.MessageID == int32(mid):
		return gotReset
	case (resp.Type == message.Confirmable || resp.Type == message.NonConfirmable) &&
		code.isResponse() && bytes.Equal(resp.Token, token):
		if resp.Type == message.Confirmable {
			return gotSeparateCON
		}
		return gotResponse
	}
	return gotNoise
}

// take returns an idle socket connected to addr, or nil. A socket whose
// kept error (an ICMP error that arrived while it was idle) cannot be
// cleared is not used.
func (c *Client) take(addr string) *clientSocket {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for list := c.idle[addr]; len(list) > 0; list = c.idle[addr] {
		s := list[len(list)-1]
		c.idle[addr] = list[:len(list)-1]
		if u, ok := s.conn.(*net.UDPConn); !ok || clearSocketError(u) {
			return s
		}
		s.conn.Close()
	}
	return nil
}

// put keeps s for the next Post to addr, unless it has had its share of
// message IDs or the pool is full; it reports whether it kept s.
func (c *Client) put(addr string, s *clientSocket) bool {
	if c == nil || s.uses >= socketUses {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle == nil {
		c.idle = make(map[string][]*clientSocket)
	}
	list, ok := c.idle[addr]
	if (!ok && len(c.idle) >= maxIdleAddrs) || len(list) >= maxIdlePerAddr {
		return false
	}
	_ = s.conn.SetReadDeadline(time.Time{})
	c.idle[addr] = append(list, s)
	return true
}

// CloseIdle closes the sockets kept between exchanges.
func (c *Client) CloseIdle() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, list := range c.idle {
		for _, s := range list {
			s.conn.Close()
		}
	}
	c.idle = nil
}

// maxTransmitWait is RFC 7252's MAX_TRANSMIT_WAIT: how long a client can
// wait for an answer, used here to bound the wait for a separate response.
func maxTransmitWait(ackTimeout time.Duration, maxRe int) time.Duration {
	return ackTimeout * time.Duration(1<<(maxRe+1)-1) * 3 / 2
}

func encodeRequest(mid uint16, token []byte, path string, payload []byte, extra []message.Option) ([]byte, error) {
	pathBuf := make([]byte, len(path))
	opts, _, err := make(message.Options, 0, 8+len(extra)).SetPath(pathBuf, path)
	if err != nil {
		return nil, fmt.Errorf("bad path: %w", err)
	}
	opts = opts.Add(message.Option{ID: message.ContentFormat, Value: contentOctets})
	for _, o := range extra {
		opts = opts.Add(o) // Add keeps the options sorted by number
	}
	m := message.Message{
		Token:     token,
		Options:   opts,
		Code:      codes.POST,
		Payload:   payload,
		MessageID: int32(mid),
		Type:      message.Confirmable,
	}
	return encodeMessage(&m)
}

func encodeEmpty(t message.Type, mid int32) ([]byte, error) {
	return encodeMessage(&message.Message{Code: codes.Empty, MessageID: mid, Type: t})
}

func encodeMessage(m *message.Message) ([]byte, error) {
	size, err := coder.DefaultCoder.Size(*m)
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(*m, b); err != nil {
		return nil, err
	}
	return b, nil
}

func slashed(path string) string {
	if len(path) > 0 && path[0] == '/' {
		return path
	}
	return "/" + path
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
