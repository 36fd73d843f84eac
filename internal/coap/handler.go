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
}

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
