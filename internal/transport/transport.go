// Package transport is the seam between tagauth's endpoints and the
// bindings that carry their requests: CoAP over UDP (spec section 11) and
// MQTT 5 through a broker (spec section 12, internal/mqttbind). A caller
// that sends a request (the device agent relaying m2, the user's client)
// takes a Poster and does not know which binding is behind it; a binding
// that serves requests feeds them to the same coap.Handler either way.
package transport

import (
	"context"

	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/tagauth/tagauth/internal/coap"
)

// Options are what a request carries besides its path and payload.
type Options struct {
	// Source names the user's client that the sender verified (an IP
	// address of 4 or 16 bytes, or an opaque name such as an MQTT client
	// identifier): it rides in the CoAP Source option or the MQTT user
	// property "tagauth-source" of a verify request. nil sends none.
	Source []byte
}

// Poster sends one request to one peer (a device or the gateway) and
// returns the answer as the CoAP binding would: code 2.04 with the success
// payload, or a 4.xx/5.xx code with the error message of spec section 7.
// An error means no answer came (timeout, no route, broker down).
type Poster interface {
	Post(ctx context.Context, path string, payload []byte, o Options) (coap.Code, []byte, error)
	// Name says where requests go, for logs and errors.
	Name() string
}

// CoAP is a Poster over CoAP to one address ("host:port").
type CoAP struct {
	Client *coap.Client
	Addr   string
}

// Post sends a CON POST to c.Addr, with the Source option when o has one.
func (c CoAP) Post(ctx context.Context, path string, payload []byte, o Options) (coap.Code, []byte, error) {
	if o.Source == nil {
		return c.Client.Post(ctx, c.Addr, path, payload)
	}
	return c.Client.PostOptions(ctx, c.Addr, path, payload, []message.Option{{ID: coap.OptionSource, Value: o.Source}})
}

// Name returns the address.
func (c CoAP) Name() string { return c.Addr }
