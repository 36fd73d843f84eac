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
	"sync"
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
// Each call uses its own ephemeral UDP socket, connected to addr so that
// only addr's datagrams are read and an ICMP port-unreachable ends the wait
// at once. A response code in class 4 or 5 is returned as a Code, not as
// an error.
func (c *Client) Post(ctx context.Context, addr, path string, payload []byte) (Code, []byte, error) {
	ackTimeout, maxRe := DefaultACKTimeout, DefaultMaxRetransmit
	if c != nil && c.ACKTimeout > 0 {
		ackTimeout = c.ACKTimeout
	}
	if c != nil && c.MaxRetransmit > 0 {
		maxRe = c.MaxRetransmit
	}

	var ids [11]byte
	if _, err := rand.Read(ids[:]); err != nil {
		return 0, nil, fmt.Errorf("coap: %w", err)
	}
	mid := binary.BigEndian.Uint16(ids[:2])
	token := ids[3 : 3+4+int(ids[2])%5] // 4 to 8 bytes: unguessable by off-path senders
	req, err := encodeRequest(mid, token, path, payload)
	if err != nil {
		return 0, nil, fmt.Errorf("coap: request to %s%s: %w", addr, slashed(path), err)
	}

	var d net.Dialer
	nc, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return 0, nil, fmt.Errorf("coap: %s: %w", addr, err)
	}
	defer nc.Close()
	conn := nc.(*net.UDPConn)
	// A done ctx moves the read deadline to the past, which ends a
	// pending Read at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

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
				return 0, nil, noAnswer(ErrTimeout)
			}
			if _, err := conn.Write(req); err != nil {
				return 0, nil, fmt.Errorf("coap: cannot send to %s: %w", addr, err)
			}
			tries++
			next = now.Add(timeout)
			timeout *= 2
		}
		deadline := next
		if acked {
			if !now.Before(sepUntil) {
				return 0, nil, fmt.Errorf("coap: %s acknowledged the request but sent no response (%w)", addr, ErrTimeout)
			}
			deadline = sepUntil
		}
		if err := conn.SetReadDeadline(deadline); err != nil {
			return 0, nil, fmt.Errorf("coap: %s: %w", addr, err)
		}
		// Checked after setting the deadline: a cancellation from now on
		// resets it (see AfterFunc above), one before is seen here.
		if err := ctx.Err(); err != nil {
			return 0, nil, noAnswer(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case ctx.Err() != nil:
				return 0, nil, noAnswer(ctx.Err())
			case errors.As(err, &ne) && ne.Timeout():
				continue
			case errors.Is(err, syscall.ECONNREFUSED):
				return 0, nil, noAnswer(syscall.ECONNREFUSED)
			default:
				return 0, nil, fmt.Errorf("coap: reading from %s: %w", addr, err)
			}
		}
		if n > maxResponse {
			continue // cannot happen over UDP; never parse a cut datagram
		}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &resp); err != nil {
			continue // noise on the socket: keep waiting for the answer
		}
		code := Code(resp.Code)
		switch {
		case resp.Type == message.Acknowledgement && resp.MessageID == int32(mid):
			if code == empty {
				if !acked {
					acked = true
					sepUntil = time.Now().Add(maxTransmitWait(ackTimeout, maxRe))
				}
				continue
			}
			if code.isResponse() && bytes.Equal(resp.Token, token) {
				return code, bytes.Clone(resp.Payload), nil
			}
		case resp.Type == message.Reset && resp.MessageID == int32(mid):
			return 0, nil, fmt.Errorf("coap: %s answered %s with a reset: %w", addr, slashed(path), ErrReset)
		case (resp.Type == message.Confirmable || resp.Type == message.NonConfirmable) &&
			code.isResponse() && bytes.Equal(resp.Token, token):
			// A separate response (RFC 7252 section 5.2.2), possibly
			// before its empty ACK, which may have been lost.
			if resp.Type == message.Confirmable {
				if ack, err := encodeEmpty(message.Acknowledgement, resp.MessageID); err == nil {
					_, _ = conn.Write(ack)
				}
			}
			return code, bytes.Clone(resp.Payload), nil
		}
	}
}

// maxTransmitWait is RFC 7252's MAX_TRANSMIT_WAIT: how long a client can
// wait for an answer, used here to bound the wait for a separate response.
func maxTransmitWait(ackTimeout time.Duration, maxRe int) time.Duration {
	return ackTimeout * time.Duration(1<<(maxRe+1)-1) * 3 / 2
}

func encodeRequest(mid uint16, token []byte, path string, payload []byte) ([]byte, error) {
	pathBuf := make([]byte, len(path))
	opts, _, err := make(message.Options, 0, 8).SetPath(pathBuf, path)
	if err != nil {
		return nil, fmt.Errorf("bad path: %w", err)
	}
	opts = opts.Add(message.Option{ID: message.ContentFormat, Value: contentOctets})
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
