package coap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Defaults for the zero Server.
const (
	DefaultMaxDatagram      = 1152
	DefaultCacheSize        = 65536
	DefaultExchangeLifetime = 247 * time.Second // RFC 7252 section 4.8.2
)

// Stats are the server's counters, safe to read while it runs.
type Stats struct {
	// Received counts every datagram read.
	Received atomic.Uint64
	// Malformed counts datagrams that are not CoAP messages (bad version,
	// token length over 8, truncated options, a non-empty empty message,
	// a reserved code class): dropped without answer.
	Malformed atomic.Uint64
	// Oversized counts datagrams larger than MaxDatagram. A CON among them
	// is answered 4.13; the handler never sees them.
	Oversized atomic.Uint64
	// Duplicates counts retransmitted CONs: answered from the cache, or
	// dropped while the first copy is still being handled.
	Duplicates atomic.Uint64
	// Responses counts datagrams sent: responses, cached responses and
	// resets.
	Responses atomic.Uint64
	// Dropped counts well-formed datagrams that get no answer: ACKs, RSTs
	// and responses addressed to a server, and responses that could not be
	// sent.
	Dropped atomic.Uint64

	// batchReads counts batched reads, batchedReads those that returned
	// more than one datagram (for tests).
	batchReads, batchedReads atomic.Uint64
}

// Server serves CoAP requests on a UDP socket. Set its fields before the
// first call to Serve and do not change them afterwards. Serve may be called
// for several sockets (say IPv4 and IPv6) at once; they share the cache.
type Server struct {
	// Handler answers every valid request. Required.
	Handler Handler
	// Workers is the number of goroutines reading the socket; default
	// runtime.GOMAXPROCS(0).
	Workers int
	// MaxDatagram bounds a request datagram, header included. Larger ones
	// never reach the handler and are counted in Stats.Oversized: a CON
	// gets 4.13 with Size1 so that its sender learns why, a NON is
	// dropped. Default 1152 bytes, RFC 7252's message size that fits the
	// IPv6 minimum MTU.
	MaxDatagram int
	// CacheSize bounds the number of responses kept for retransmitted
	// CONs; default 65536. When full, the oldest response is forgotten.
	CacheSize int
	// ExchangeLifetime is how long a response is kept for retransmissions
	// of its request; default 247 s (RFC 7252).
	ExchangeLifetime time.Duration
	// Logger receives malformed-input notes at debug level and failures at
	// warn or error level; it never sees payload bytes. Default: discard.
	Logger *slog.Logger
	// Batch is how many datagrams a worker reads with one system call
	// and answers with one more (recvmmsg and sendmmsg, Linux only;
	// elsewhere it is ignored). Zero or one reads one datagram at a time.
	// A worker handles its batch in order, so a handler that blocks (on
	// the network, a lock held long) delays the rest of its batch: leave
	// Batch at 1 for such handlers, or give the server more workers. With
	// one worker per socket, closing the socket waits until the batch in
	// hand has been handled.
	Batch int
	// Stats counts what the server saw and did.
	Stats Stats
	// Commit, when set, makes every worker hold its responses back until
	// the handler's side effects for them are committed (commit.go). It
	// is called once per worker with the worker's context, and returns
	// the context that worker's handler calls see (so that the handler
	// can find its per-worker state) and the worker's Committer.
	Commit func(ctx context.Context) (context.Context, Committer)

	once sync.Once
	rt   *state
	// now, when set before the first Serve, replaces the monotonic clock
	// that ages cache entries, so that tests need not sleep.
	now func() time.Duration
}

// state is what every Serve call shares: the configuration with defaults
// applied, fixed at the first Serve, and the response cache.
type state struct {
	handler     Handler
	workers     int
	batch       int
	maxDatagram int
	log         *slog.Logger
	cache       *respCache
	now         func() int64
	nonMID      atomic.Uint32 // message IDs of NON responses
}

var errNoHandler = errors.New("coap: Server.Handler is nil")

func (s *Server) init() *state {
	s.once.Do(func() {
		rt := &state{
			handler:     s.Handler,
			workers:     s.Workers,
			batch:       min(max(s.Batch, 1), maxBatch),
			maxDatagram: s.MaxDatagram,
			log:         s.Logger,
		}
		if rt.workers <= 0 {
			rt.workers = runtime.GOMAXPROCS(0)
		}
		if rt.maxDatagram <= 0 {
			rt.maxDatagram = DefaultMaxDatagram
		}
		if rt.log == nil {
			rt.log = slog.New(slog.DiscardHandler)
		}
		size := s.CacheSize
		if size <= 0 {
			size = DefaultCacheSize
		}
		life := s.ExchangeLifetime
		if life <= 0 {
			life = DefaultExchangeLifetime
		}
		rt.cache = newRespCache(size, int64(life))
		if s.now != nil {
			rt.now = func() int64 { return int64(s.now()) }
		} else {
			start := time.Now()
			rt.now = func() int64 { return int64(time.Since(start)) }
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		rt.nonMID.Store(binary.BigEndian.Uint32(b[:]))
		s.rt = rt
	})
	return s.rt
}

// Serve answers requests arriving on a UDP socket until it is closed, then
// returns nil. See ServePacket.
func (s *Server) Serve(conn *net.UDPConn) error {
	if conn == nil {
		return errors.New("coap: Serve on a nil connection")
	}
	return s.ServePacket(UDP(conn))
}

// ServePacket answers requests arriving on conn until conn is closed, then
// returns nil. Read errors other than a closed conn are logged and retried
// with a backoff, so a transient failure does not take the server down.
func (s *Server) ServePacket(conn PacketConn) error {
	if s.Handler == nil {
		return errNoHandler
	}
	if conn == nil {
		return errors.New("coap: Serve on a nil connection")
	}
	rt := s.init()
	// Handlers see a context that ends when Serve returns.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range rt.workers {
		w := s.newWorker(ctx)
		wg.Go(func() { w.loop(conn) })
	}
	wg.Wait()
	return nil
}

// worker owns every buffer one goroutine needs to handle a datagram, so
// that handling one allocates nothing.
type worker struct {
	s    *Server
	rt   *state
	ctx  context.Context
	rbuf []byte // MaxDatagram+1: a full buffer means the datagram was larger
	wbuf []byte // encoded response
	pbuf []byte // handler's response payload
	msg  message.Message
	opts message.Options // response options, backing array reused
	num  [4]byte         // Size1 value
	req  Request
	path []byte
	// paths interns request paths: a handful of endpoints get every
	// request, so their strings are made once per worker.
	paths map[string]string
	// lastWarn rate-limits send-failure logs: a full socket buffer
	// fails every send at once.
	lastWarn time.Time
	// With Server.Commit (commit.go): the worker's committer, the
	// handler calls of the current batch and the responses held back.
	commit Committer
	calls  int
	held   []held
}

const (
	maxRequestOptions = 32
	maxInternedPaths  = 64
	// maxBatch bounds Server.Batch: past a few dozen datagrams a batch
	// saves nothing more and only holds requests back.
	maxBatch = 64
)

// contentOctets is the Content-Format value 42 (application/octet-stream),
// shared read-only by every response.
var contentOctets = []byte{byte(message.AppOctets)}

func (s *Server) newWorker(ctx context.Context) *worker {
	rt := s.init()
	w := &worker{
		s:     s,
		rt:    rt,
		ctx:   ctx,
		rbuf:  make([]byte, rt.maxDatagram+1),
		wbuf:  make([]byte, rt.maxDatagram+64),
		pbuf:  make([]byte, 0, rt.maxDatagram),
		msg:   message.Message{Options: make(message.Options, 0, maxRequestOptions)},
		opts:  make(message.Options, 0, 2),
		path:  make([]byte, 0, 64),
		paths: make(map[string]string, maxInternedPaths),
	}
	w.ctx, w.commit = s.commitContext(ctx)
	return w
}

func (w *worker) loop(conn PacketConn) {
	if w.rt.batch > 1 && w.loopBatch(conn) { // batch_linux.go: the fast path
		return
	}
	w.loopPackets(conn)
}

// packets is one worker's batch for PacketConn.ReadBatch and WriteBatch.
type packets struct {
	bufs  [][]byte
	sizes []int
	from  []netip.AddrPort
	wbufs [][]byte // encoded responses, one per slot
	out   [][]byte // the responses to send, in order
	to    []netip.AddrPort
}

func (p *packets) setReply(k int, reply []byte) { p.out[k] = reply }

// loopPackets serves conn through its PacketConn methods, up to
// Server.Batch datagrams at a time.
func (w *worker) loopPackets(conn PacketConn) {
	n := w.rt.batch
	p := &packets{
		bufs:  make([][]byte, n),
		sizes: make([]int, n),
		from:  make([]netip.AddrPort, n),
		wbufs: make([][]byte, n),
		out:   make([][]byte, 0, n),
		to:    make([]netip.AddrPort, 0, n),
	}
	p.bufs[0], p.wbufs[0] = w.rbuf, w.wbuf
	for i := 1; i < n; i++ {
		p.bufs[i] = make([]byte, len(w.rbuf))
		p.wbufs[i] = make([]byte, len(w.wbuf))
	}
	backoff := time.Duration(0)
	for {
		k, err := conn.ReadBatch(p.bufs, p.sizes, p.from)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = w.readFailed(conn, err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		p.out, p.to = p.out[:0], p.to[:0]
		for i := range k {
			// handle encodes into w.wbuf: give it this slot's buffer,
			// and keep the buffer it leaves (it may have grown).
			w.wbuf = p.wbufs[i]
			held := len(w.held)
			reply := w.handle(p.bufs[i][:p.sizes[i]], p.from[i])
			p.wbufs[i] = w.wbuf
			if reply == nil {
				continue
			}
			if len(w.held) > held {
				w.held[held].out = len(p.out) // commit.go
			}
			p.out = append(p.out, reply)
			p.to = append(p.to, p.from[i])
		}
		w.endBatch(p) // commit.go: before any response leaves
		for sent := 0; sent < len(p.out); {
			m, err := conn.WriteBatch(p.out[sent:], p.to[sent:])
			w.s.Stats.Responses.Add(uint64(m))
			sent += m
			if err == nil {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				w.s.Stats.Dropped.Add(uint64(len(p.out) - sent))
				return
			}
			w.sendFailed(p.to[sent], err)
			sent++
		}
	}
}

// sendFailed counts a response that could not be sent and logs the first
// failure of every second.
func (w *worker) sendFailed(to netip.AddrPort, err error) {
	w.s.Stats.Dropped.Add(1)
	if now := time.Now(); now.Sub(w.lastWarn) >= time.Second {
		w.lastWarn = now
		w.rt.log.Warn("coap: cannot send response (further failures in the next second are only counted)", "to", to.String(), "err", err)
	}
}

// readFailed logs a read error other than a closed socket and returns the
// backoff to sleep before the next read.
func (w *worker) readFailed(conn PacketConn, err error, backoff time.Duration) time.Duration {
	backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
	w.rt.log.Warn("coap: read failed, retrying", "local", conn.LocalAddrPort().String(), "err", err, "backoff", backoff)
	return backoff
}

// handle processes one datagram from from and returns the datagram to send
// back, or nil. The result aliases the worker's buffers.
func (w *worker) handle(d []byte, from netip.AddrPort) []byte {
	st := &w.s.Stats
	st.Received.Add(1)
	if len(d) > w.rt.maxDatagram {
		st.Oversized.Add(1)
		return w.tooLarge(d)
	}
	m := &w.msg
	if _, err := coder.DefaultCoder.Decode(d, m); err != nil {
		st.Malformed.Add(1)
		if w.rt.log.Enabled(w.ctx, slog.LevelDebug) {
			w.rt.log.Debug("coap: malformed datagram dropped", "from", from.String(), "len", len(d), "err", err)
		}
		return nil
	}
	switch m.Type {
	case message.Confirmable, message.NonConfirmable:
	default: // ACK or RST: the server sends no CONs, so nothing to match.
		st.Dropped.Add(1)
		return nil
	}
	code := Code(m.Code)
	switch {
	case code == empty:
		// RFC 7252 section 4.1: an empty message has nothing after the
		// message ID. An empty CON is a ping, answered with a reset.
		if len(d) != 4 || m.Type != message.Confirmable {
			st.Malformed.Add(1)
			return nil
		}
		return w.encodeHeaderOnly(message.Reset, m.MessageID)
	case code.Class() == 0:
	case code.isResponse():
		st.Dropped.Add(1)
		return nil
	default: // classes 1, 3, 6, 7 are reserved
		st.Malformed.Add(1)
		return nil
	}

	var t ticket
	if m.Type == message.Confirmable {
		key := cacheKey{from: from, mid: uint16(m.MessageID)}
		res, cached, tk := w.rt.cache.begin(key, w.rt.now(), w.wbuf[:0])
		switch res {
		case cacheHit:
			st.Duplicates.Add(1)
			w.wbuf = cached[:cap(cached)]
			return cached
		case cacheInFlight:
			st.Duplicates.Add(1)
			return nil
		}
		t = tk
	}
	calls := w.calls
	rcode, payload := w.dispatch(from)
	reply := w.encodeResponse(rcode, payload)
	if w.commit != nil && w.calls > calls && reply != nil {
		// The handler ran: its response waits for the batch's commit.
		w.hold(t, calls, reply)
		return reply
	}
	if t.shard != nil {
		if reply == nil {
			w.rt.cache.forget(t)
		} else {
			w.rt.cache.finish(t, reply)
		}
	}
	return reply
}

// dispatch validates the decoded request in w.msg and runs the handler.
func (w *worker) dispatch(from netip.AddrPort) (Code, []byte) {
	m := &w.msg
	w.req.respEcho = nil
	if Code(m.Code) != methodPOST {
		return MethodNotAllowed, nil
	}
	w.path = w.path[:0]
	var (
		hasPath, hasQuery        bool
		host, port, accept, form int // occurrences of non-repeatable options
		echo, source             []byte
	)
	for _, o := range m.Options {
		if !lengthOK(o) {
			// A critical option with an illegal length is treated as
			// unrecognised (RFC 7252 section 5.4.3); go-coap has already
			// skipped elective ones.
			return badOption, nil
		}
		switch o.ID {
		case message.URIPath:
			for _, b := range o.Value {
				if b == '/' {
					// Segments are joined with '/', so this one
					// would name a different resource.
					return BadRequest, nil
				}
			}
			hasPath = true
			w.path = append(w.path, '/')
			w.path = append(w.path, o.Value...)
		case message.URIQuery:
			hasQuery = true
		case message.URIHost:
			host++ // any host name: the socket decides who we are
		case message.URIPort:
			port++
		case message.Accept:
			accept++
			if v, _, err := message.DecodeUint32(o.Value); err != nil || v != uint32(message.AppOctets) {
				return notAcceptable, nil
			}
		case message.ContentFormat:
			// Elective: a repeated one is ignored (RFC 7252 section 5.4.5).
			if form++; form == 1 {
				if v, _, err := message.DecodeUint32(o.Value); err != nil || v != uint32(message.AppOctets) {
					return unsupportedContentFormat, nil
				}
			}
		case OptionEcho:
			// Elective: only the first counts (RFC 7252 section 5.4.5);
			// an illegal length is ignored like an unknown elective option.
			if echo == nil && len(o.Value) >= 1 && len(o.Value) <= MaxEcho {
				echo = o.Value
			}
		case OptionSource:
			if source == nil && len(o.Value) >= 1 && len(o.Value) <= 64 {
				source = o.Value
			}
		default:
			if o.ID%2 == 1 {
				// An unrecognised critical option (RFC 7252 section
				// 5.4.1): Block1, Proxy-Uri, If-Match and the like.
				return badOption, nil
			}
		}
	}
	if host > 1 || port > 1 || accept > 1 {
		// A repeated non-repeatable critical option is unrecognised
		// (RFC 7252 section 5.4.5).
		return badOption, nil
	}
	if !hasPath || hasQuery {
		// Every tagauth resource has a path and none takes a query.
		return NotFound, nil
	}

	req := &w.req
	req.Path = w.intern(w.path)
	req.Payload = m.Payload
	req.From = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	req.Echo, req.Source = echo, source
	return w.serve(req)
}

// lengthOK checks the length of the critical options the server
// recognises (RFC 7252 section 5.10), without go-coap's map lookup.
func lengthOK(o message.Option) bool {
	switch o.ID {
	case message.URIPath, message.URIQuery:
		return len(o.Value) <= 255
	case message.URIHost:
		return len(o.Value) >= 1 && len(o.Value) <= 255
	case message.URIPort, message.Accept:
		return len(o.Value) <= 2
	}
	return true
}

// serve runs the handler, turning a panic or a non-response code into 5.00
// so that one bad request cannot take the server down.
func (w *worker) serve(req *Request) (code Code, payload []byte) {
	defer func() {
		if p := recover(); p != nil {
			w.rt.log.Error("coap: handler panicked", "path", req.Path, "from", req.From.String(), "panic", fmt.Sprint(p))
			code, payload = InternalServerError, nil
		}
	}()
	req.Index = w.calls
	w.calls++
	code, payload = w.rt.handler.ServeCoAP(w.ctx, req, w.pbuf[:0])
	if !code.isResponse() {
		w.rt.log.Error("coap: handler returned a non-response code", "path", req.Path, "code", code.String())
		return InternalServerError, nil
	}
	return code, payload
}

func (w *worker) intern(b []byte) string {
	if s, ok := w.paths[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(w.paths) < maxInternedPaths {
		w.paths[s] = s
	}
	return s
}

// encodeResponse encodes the response to the request in w.msg: a
// piggybacked ACK to a CON, a NON to a NON, with the request's token.
func (w *worker) encodeResponse(code Code, payload []byte) []byte {
	req := &w.msg
	return w.encodeReply(req.Token, req.MessageID, req.Type, code, payload, w.req.respEcho)
}

// encodeReply encodes a response with token to a request of type typ and
// message ID mid (a piggybacked ACK to a CON, a NON with a fresh ID to a
// NON), with an Echo option when echo is not nil, into w.wbuf.
func (w *worker) encodeReply(token []byte, mid int32, typ message.Type, code Code, payload, echo []byte) []byte {
	resp := message.Message{
		Token:     token,
		Code:      codes.Code(code),
		Payload:   payload,
		MessageID: mid,
		Type:      message.Acknowledgement,
		Options:   w.opts[:0],
	}
	if typ == message.NonConfirmable {
		resp.Type = message.NonConfirmable
		resp.MessageID = int32(uint16(w.rt.nonMID.Add(1)))
	}
	if len(payload) > 0 {
		resp.Options = append(resp.Options, message.Option{ID: message.ContentFormat, Value: contentOctets})
	}
	if echo != nil {
		// Option numbers ascend: Echo (252) follows Content-Format (12).
		resp.Options = append(resp.Options, message.Option{ID: OptionEcho, Value: echo})
	}
	return w.encode(&resp)
}

// tooLarge answers a CON whose datagram exceeds MaxDatagram with 4.13 and
// Size1 (RFC 7252 section 5.9.2.9), so that the client learns why instead of
// retransmitting. Its header and token sit in the first bytes, so they are
// intact even though the rest was cut off.
func (w *worker) tooLarge(d []byte) []byte {
	if len(d) < 4 || d[0]>>6 != 1 || (d[0]>>4)&3 != byte(message.Confirmable) {
		return nil
	}
	tkl := int(d[0] & 0x0f)
	if tkl > message.MaxTokenSize || len(d) < 4+tkl || Code(d[1]).Class() != 0 || Code(d[1]) == empty {
		return nil
	}
	n, err := message.EncodeUint32(w.num[:], uint32(w.rt.maxDatagram))
	if err != nil {
		return nil
	}
	resp := message.Message{
		Token:     d[4 : 4+tkl],
		Code:      codes.Code(RequestEntityTooLarge),
		MessageID: int32(binary.BigEndian.Uint16(d[2:4])),
		Type:      message.Acknowledgement,
		Options:   append(w.opts[:0], message.Option{ID: message.Size1, Value: w.num[:n]}),
	}
	return w.encode(&resp)
}

func (w *worker) encodeHeaderOnly(t message.Type, mid int32) []byte {
	resp := message.Message{Code: codes.Empty, MessageID: mid, Type: t}
	return w.encode(&resp)
}

// encode encodes m into the worker's response buffer, growing it for an
// unusually large handler response.
func (w *worker) encode(m *message.Message) []byte {
	n, err := coder.DefaultCoder.Encode(*m, w.wbuf)
	if errors.Is(err, message.ErrTooSmall) {
		w.wbuf = make([]byte, n)
		n, err = coder.DefaultCoder.Encode(*m, w.wbuf)
	}
	if err != nil {
		w.rt.log.Error("coap: cannot encode response", "code", Code(m.Code).String(), "err", err)
		return nil
	}
	return w.wbuf[:n]
}
