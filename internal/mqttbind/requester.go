package mqttbind

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/protocol"
)

// User properties of the binding extension (docs/ARCHITECTURE.md, "MQTT
// binding"): not in spec section 12, and ignored by a responder that does
// not know them.
const (
	// PropEcho carries an Echo challenge: a responder answers a login
	// from a client it has not verified with an empty answer that holds
	// it, and the requester repeats its request with the same property.
	PropEcho = "tagauth-echo"
	// PropSource, on a verify request from a device, names the user's
	// client that the device verified (its reply topic's client id).
	PropSource = "tagauth-source"
)

// DefaultTimeout bounds one request when ctx has no deadline.
const DefaultTimeout = 5 * time.Second

// corrSize is the Correlation Data length: 16 random bytes (spec: 8 to 16,
// never reused).
const corrSize = 16

// ErrTimeout: no answer came before the deadline.
var ErrTimeout = errors.New("no answer through the broker")

// answer is what a requester receives for one correlation.
type answer struct {
	payload []byte
	echo    string
}

// Requester sends requests through the broker and waits for their answers
// on its reply topic, {root}/reply/{client id}. It is safe for concurrent
// use.
type Requester struct {
	conn  *Conn
	reply string

	mu      sync.Mutex
	waiting map[string]chan answer // correlation data -> the one waiter
}

// NewRequester subscribes to the connection's reply topic.
func NewRequester(ctx context.Context, conn *Conn) (*Requester, error) {
	r := &Requester{conn: conn, reply: ReplyTopic(conn.root, conn.clientID), waiting: make(map[string]chan answer)}
	if err := conn.subscribe(ctx, r.reply, r.reply, r.onAnswer); err != nil {
		return nil, err
	}
	return r, nil
}

// ReplyTopic returns the topic answers come back on.
func (r *Requester) ReplyTopic() string { return r.reply }

// onAnswer delivers an answer to its waiter: the first answer per
// correlation wins, and one nobody waits for (late, a duplicate, forged
// with a guessed correlation) is dropped.
func (r *Requester) onAnswer(p *paho.Publish) {
	if p.Properties == nil {
		return
	}
	key := string(p.Properties.CorrelationData)
	r.mu.Lock()
	ch := r.waiting[key]
	delete(r.waiting, key)
	r.mu.Unlock()
	if ch != nil {
		ch <- answer{payload: p.Payload, echo: p.Properties.User.Get(PropEcho)}
	}
}

// Device returns a Poster for the device with identity did.
func (r *Requester) Device(did string) transport.Poster { return endpoint{r: r, did: did} }

// Gateway returns a Poster for the gateways' verify topic.
func (r *Requester) Gateway() transport.Poster { return endpoint{r: r, gateway: true} }

type endpoint struct {
	r       *Requester
	did     string
	gateway bool
}

func (e endpoint) Name() string {
	if e.gateway {
		return "mqtt:" + VerifyTopic(e.r.conn.root)
	}
	return "mqtt:" + e.r.conn.root + "/device/" + DeviceLevel(e.did)
}

func (e endpoint) Post(ctx context.Context, path string, payload []byte, o transport.Options) (coap.Code, []byte, error) {
	var topic string
	if e.gateway {
		if path == coapbind.PathVerify {
			topic = VerifyTopic(e.r.conn.root)
		}
	} else {
		topic = DeviceTopic(e.r.conn.root, e.did, path)
	}
	if topic == "" {
		return 0, nil, fmt.Errorf("mqtt: %s has no endpoint %s", e.Name(), path)
	}
	return e.r.Post(ctx, topic, payload, o)
}

// Post publishes one request to topic and waits for its answer, which it
// returns as the CoAP binding would (Answer). An Echo challenge is
// answered once by repeating the request with its value.
func (r *Requester) Post(ctx context.Context, topic string, payload []byte, o transport.Options) (coap.Code, []byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	a, err := r.exchange(ctx, topic, payload, o, "")
	if err == nil && a.echo != "" && len(a.payload) == 0 {
		a, err = r.exchange(ctx, topic, payload, o, a.echo)
	}
	if err != nil {
		return 0, nil, err
	}
	code, out := Answer(a.payload)
	return code, out, nil
}

func (r *Requester) exchange(ctx context.Context, topic string, payload []byte, o transport.Options, echo string) (answer, error) {
	corr := make([]byte, corrSize)
	if _, err := rand.Read(corr); err != nil {
		return answer{}, fmt.Errorf("mqtt: %w", err)
	}
	ch := make(chan answer, 1)
	key := string(corr)
	r.mu.Lock()
	r.waiting[key] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, key)
		r.mu.Unlock()
	}()
	dl, _ := ctx.Deadline()
	// Whole seconds, at least 1: an interval of 0 could read as "already
	// expired" to one broker and "never" to another.
	expiry := uint32(min(max(math.Ceil(time.Until(dl).Seconds()), 1), math.MaxUint32))
	props := &paho.PublishProperties{ResponseTopic: r.reply, CorrelationData: corr, MessageExpiry: &expiry}
	if echo != "" {
		props.User = append(props.User, paho.UserProperty{Key: PropEcho, Value: echo})
	}
	if o.Source != nil {
		props.User = append(props.User, paho.UserProperty{Key: PropSource, Value: string(o.Source)})
	}
	if err := r.conn.publish(ctx, &paho.Publish{Topic: topic, Payload: payload, Properties: props}); err != nil {
		return answer{}, err
	}
	select {
	case a := <-ch:
		return a, nil
	case <-ctx.Done():
		return answer{}, fmt.Errorf("mqtt: %s: %w (%w)", topic, ErrTimeout, ctx.Err())
	}
}

// Answer maps an MQTT answer to the CoAP binding's code and payload (spec
// section 12: type byte 0x7f is the error message, anything else success):
// an error message gets the code of section 11 for its error code.
func Answer(b []byte) (coap.Code, []byte) {
	if len(b) >= 2 && b[1] == errorType {
		if _, c, err := protocol.ParseError(b); err == nil {
			return coapbind.Code(c), b
		}
		return coap.InternalServerError, b
	}
	return coap.Changed, b
}

// errorType is the type byte of the error message (spec section 7).
const errorType = 0x7f
