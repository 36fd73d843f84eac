package coap

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// Request is one decoded CoAP POST. The server reuses a Request and its
// Payload's memory for the next datagram, so a handler must copy whatever it
// keeps after it returns.
type Request struct {
	// Path is the Uri-Path options joined with a leading slash, such as
	// "/tagauth/verify".
	Path string
	// Payload is valid only during the call.
	Payload []byte
	// From is the sender's address, with an IPv4-mapped IPv6 address
	// unmapped so that one peer always has one spelling.
	From netip.AddrPort
	// Echo is the value of the request's Echo option (RFC 9175), nil when
	// it has none. Like Payload it is valid only during the call.
	Echo []byte
	// Source is the value of the request's Source option (OptionSource),
	// nil when it has none. Like Payload it is valid only during the call.
	Source []byte
	// Peer is set only by a binding without addresses (MQTT, package
	// mqttbind): a name of the requester, made from its reply topic's
	// client identifier (mqttbind.SourceName), after the binding verified
	// that the requester receives there. The CoAP server never sets it,
	// so no datagram can forge it.
	Peer []byte
	// Index is the request's position among the requests the handler
	// has seen in its worker's current batch, from 0 (see
	// Server.Commit).
	Index int

	// respEcho is the Echo option of the response, set by SetResponseEcho
	// and copied into echoBuf so that setting it allocates nothing.
	respEcho []byte
	echoBuf  [MaxEcho]byte
}

// MaxEcho is the longest Echo value RFC 9175 allows (section 2.2.1).
const MaxEcho = 40

// SetResponseEcho gives the response to this request an Echo option with
// value v (1 to MaxEcho bytes; v is copied), as a server does in a 4.01
// that asks the client to prove it can receive at its address (RFC 9175
// section 2.4). An empty or longer v clears it.
func (r *Request) SetResponseEcho(v []byte) {
	if len(v) == 0 || len(v) > MaxEcho {
		r.respEcho = nil
		return
	}
	r.respEcho = r.echoBuf[:copy(r.echoBuf[:], v)]
}

// Option numbers beyond RFC 7252 that tagauth reads or writes.
const (
	// OptionEcho is RFC 9175's Echo option: elective, safe to forward, 1
	// to 40 bytes. A server proves that a client can receive at the
	// address it claims by answering 4.01 with an Echo value that the
	// client must send back.
	OptionEcho = 252
	// OptionSource carries, on a verify request from a device to the
	// gateway, the address of the user's client that the device verified
	// (return routability through Echo, or the broker's authenticated
	// client): 4 or 16 bytes for an IP address, else an opaque name of 1
	// to 64 bytes. It is elective (an even number from the experimental
	// range, RFC 7252 section 12.2), so a gateway that does not know it
	// ignores it; it is no part of the protocol's messages and is not
	// authenticated by them: it only chooses which failure counter a
	// refused login is charged to.
	OptionSource = 65004
)

// Handler answers one request. It appends the response payload to dst,
// whose memory the server reuses (append to it, as strconv.Append* do, to
// stay off the heap), and returns the response code with the payload.
type Handler interface {
	ServeCoAP(ctx context.Context, req *Request, dst []byte) (Code, []byte)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, req *Request, dst []byte) (Code, []byte)

// ServeCoAP calls f.
func (f HandlerFunc) ServeCoAP(ctx context.Context, req *Request, dst []byte) (Code, []byte) {
	return f(ctx, req, dst)
}

// Mux routes requests by exact path. A path nobody registered gets 4.04;
// methods other than POST never reach it (the server answers 4.05).
//
// Handle may be called while the server runs: lookups read an immutable map
// through an atomic pointer, so the hot path takes no lock.
type Mux struct {
	mu     sync.Mutex // serialises Handle
	routes atomic.Pointer[map[string]Handler]
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return new(Mux) }

// Handle registers h for path, which must start with "/" (a leading slash is
// added if missing). It panics on a nil handler or a path registered twice,
// as net/http.ServeMux does, because both are programming errors.
func (m *Mux) Handle(path string, h Handler) {
	if h == nil {
		panic("coap: nil handler for " + path)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]Handler)
	if old := m.routes.Load(); old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	if _, dup := next[path]; dup {
		panic("coap: handler for " + path + " registered twice")
	}
	next[path] = h
	m.routes.Store(&next)
}

// ServeCoAP dispatches req to the handler registered for req.Path.
func (m *Mux) ServeCoAP(ctx context.Context, req *Request, dst []byte) (Code, []byte) {
	if routes := m.routes.Load(); routes != nil {
		if h, ok := (*routes)[req.Path]; ok {
			return h.ServeCoAP(ctx, req, dst)
		}
	}
	return NotFound, dst
}
