package mqttbind

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/protocol"
)

// Responder defaults.
const (
	// DefaultKeep is how long answers are kept when a request states no
	// longer expiry: 2 dT for the default dT of 10 s.
	DefaultKeep = 2 * protocol.DefaultWindow
	// maxKeep bounds what a requester's Message Expiry can make us keep.
	maxKeep = 5 * time.Minute
	// DefaultMaxInflight bounds the requests handled at once.
	DefaultMaxInflight = 256
	// maxCorr bounds the Correlation Data we accept (spec: 8 to 16).
	maxCorr = 64
)

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	// Handler answers requests: the same handler the CoAP server runs.
	Handler coap.Handler
	// Routes maps each topic served to the CoAP path its requests get
	// (DeviceRoutes, GatewayRoutes).
	Routes map[string]string
	// Shared subscribes through the gateways' shared subscription
	// (spec section 12) instead of to the topics themselves.
	Shared bool
	// Cache keeps answers for duplicates; default a MemoryCache. Gateway
	// replicas pass one RedisCache.
	Cache AnswerCache
	// Keep is the least time answers are kept: at least 2 dT; default
	// DefaultKeep. A request's Message Expiry (the requester's timeout)
	// makes it longer for that request.
	Keep time.Duration
	// Echo, when not nil, challenges a login from a requester it has not
	// verified (binding extension, see echo.go) and hands the handler the
	// requester's verified name in Request.Peer.
	Echo *Echoer
	// MaxInflight bounds the requests handled at once; more are dropped.
	MaxInflight int
	// Logger receives dropped requests at debug level; default: discard.
	Logger *slog.Logger
	// Now is the clock of the Echo checks; default time.Now.
	Now func() time.Time
}

// ResponderStats are a Responder's counters.
type ResponderStats struct {
	Requests, Answered, Duplicates, Dropped, EchoChallenges atomic.Uint64
}

// Responder serves endpoints through the broker: it subscribes to their
// topics and feeds each request to the Handler, as the CoAP server does,
// and publishes the answer to the request's Response Topic.
type Responder struct {
	cfg   ResponderConfig
	conn  *Conn
	ctx   context.Context
	slots chan struct{}
	log   *slog.Logger
	// Stats counts requests and what became of them.
	Stats ResponderStats
}

// DeviceRoutes are the topics of the device did (spec section 12).
func DeviceRoutes(root, did string) map[string]string {
	r := make(map[string]string, len(deviceEndpoints))
	for path := range deviceEndpoints {
		r[DeviceTopic(root, did, path)] = path
	}
	return r
}

// GatewayRoutes is the gateways' verify topic.
func GatewayRoutes(root string) map[string]string {
	return map[string]string{VerifyTopic(root): coapbind.PathVerify}
}

// NewResponder subscribes to cfg.Routes on conn and serves them until ctx
// is done (handlers see ctx).
func NewResponder(ctx context.Context, conn *Conn, cfg ResponderConfig) (*Responder, error) {
	if cfg.Cache == nil {
		cfg.Cache = NewMemoryCache(0, nil)
	}
	if cfg.Keep < DefaultKeep {
		cfg.Keep = DefaultKeep
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Responder{cfg: cfg, conn: conn, ctx: ctx, slots: make(chan struct{}, cfg.MaxInflight), log: cfg.Logger}
	for topic, path := range cfg.Routes {
		filter := topic
		if cfg.Shared {
			filter = "$share/" + SharedGroup + "/" + topic
		}
		if err := conn.subscribe(ctx, filter, topic, func(p *paho.Publish) { r.receive(p, path) }); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// receive runs on paho's reading goroutine: it checks the request and
// hands it to a goroutine of its own, since a handler may block (a login
// waits for the gateway, through this very connection).
func (r *Responder) receive(p *paho.Publish, path string) {
	r.Stats.Requests.Add(1)
	pr := p.Properties
	if pr == nil || pr.ResponseTopic == "" || len(pr.CorrelationData) == 0 || len(pr.CorrelationData) > maxCorr {
		r.drop("no response topic or correlation data")
		return
	}
	peer, ok := replyClient(r.conn.root, pr.ResponseTopic)
	if !ok {
		r.drop("response topic not under the reply prefix")
		return
	}
	select {
	case r.slots <- struct{}{}:
	default:
		r.drop("too many requests in progress")
		return
	}
	go func() {
		defer func() { <-r.slots }()
		r.serve(p, path, peer)
	}()
}

func (r *Responder) drop(why string) {
	r.Stats.Dropped.Add(1)
	r.log.Debug("mqtt request dropped", "reason", why)
}

func (r *Responder) serve(p *paho.Publish, path, peer string) {
	pr := p.Properties
	keep := r.cfg.Keep
	if pr.MessageExpiry != nil {
		keep = min(max(keep, time.Duration(*pr.MessageExpiry)*time.Second), maxKeep)
	}
	key := cacheKey(pr.ResponseTopic, pr.CorrelationData)
	sum := sha256.Sum256(p.Payload)
	// A duplicate waits for the first copy's answer at most this long.
	wctx, cancel := context.WithTimeout(r.ctx, DefaultTimeout)
	claim, cached, err := r.cfg.Cache.Claim(wctx, key, sum, keep)
	cancel()
	switch {
	case err != nil:
		r.drop(err.Error())
		return
	case claim == ClaimMismatch:
		r.drop("correlation reused with another payload")
		return
	case claim == ClaimBusy:
		r.drop("duplicate of a request still being handled")
		return
	case claim == ClaimDone:
		r.Stats.Duplicates.Add(1)
		if cached == nil {
			return
		}
		r.answer(pr, cached, "")
		return
	}

	req := coap.Request{Path: path, Payload: p.Payload}
	var echo string
	if r.cfg.Echo != nil {
		req.Peer = SourceName(peer)
		req.From = PeerAddr(peer)
		if path == coapbind.PathLogin {
			now := r.cfg.Now()
			if !r.cfg.Echo.Verified(peer, now) {
				if v := pr.User.Get(PropEcho); v != "" && r.cfg.Echo.Valid(v, peer, now) {
					r.cfg.Echo.Remember(peer, now)
				} else {
					echo = r.cfg.Echo.Mint(peer, now)
				}
			}
		}
	} else {
		req.From = PeerAddr(peer)
		if s := pr.User.Get(PropSource); s != "" {
			req.Source = []byte(s)
		}
	}
	var out []byte
	if echo != "" {
		r.Stats.EchoChallenges.Add(1)
		out = []byte{}
	} else {
		code, payload := r.cfg.Handler.ServeCoAP(r.ctx, &req, make([]byte, 0, 256))
		out = toAnswer(code, payload, p.Payload)
	}
	cached = out
	if echo != "" {
		// The cache keeps payloads, not the challenge's property: a
		// duplicate of a challenged request is dropped (its requester
		// took the first answer), and the retry comes under new
		// correlation data anyway.
		cached = nil
	}
	if err := r.cfg.Cache.Store(r.ctx, key, sum, cached, keep); err != nil {
		r.log.Warn("mqtt answer not cached", "err", err.Error())
	}
	r.answer(pr, out, echo)
}

func (r *Responder) answer(pr *paho.PublishProperties, out []byte, echo string) {
	props := &paho.PublishProperties{CorrelationData: pr.CorrelationData}
	if echo != "" {
		props.User = append(props.User, paho.UserProperty{Key: PropEcho, Value: echo})
	}
	ctx, cancel := context.WithTimeout(r.ctx, DefaultTimeout)
	defer cancel()
	if err := r.conn.publish(ctx, &paho.Publish{Topic: pr.ResponseTopic, Payload: out, Properties: props}); err != nil {
		r.log.Debug("mqtt answer not sent", "err", err.Error())
		return
	}
	r.Stats.Answered.Add(1)
}

// toAnswer maps a handler's CoAP code and payload to the MQTT answer of
// spec section 12: a success payload as it is, an error message as it is,
// and a failure without one (such as 4.04) as the error message for its
// code, with the request's profile byte.
func toAnswer(code coap.Code, payload, req []byte) []byte {
	if code == coap.Changed {
		if payload == nil {
			payload = []byte{}
		}
		return payload
	}
	if _, _, err := protocol.ParseError(payload); err == nil {
		return payload
	}
	var c protocol.Code
	switch code {
	case coap.BadRequest, coap.NotFound, coap.MethodNotAllowed, coap.RequestEntityTooLarge:
		c = protocol.ErrMalformed
	case coap.Unauthorized:
		c = protocol.ErrRejected
	case coap.ServiceUnavailable:
		c = protocol.ErrBusy
	default:
		c = protocol.ErrInternal
	}
	var prof protocol.Profile
	if len(req) > 0 && protocol.Profile(req[0]).Valid() {
		prof = protocol.Profile(req[0])
	}
	return protocol.AppendError(nil, prof, c)
}

// PeerAddr is the address a handler sees as the sender of a request that
// came through the broker: a unique local IPv6 address (fd00::/8) made
// from the requester's name, so that per-address bounds of the handler
// apply per requester.
func PeerAddr(name string) netip.AddrPort {
	h := sha256.Sum256([]byte(name))
	h[0] = 0xfd
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(h[:16])), 0)
}

// SourceName is the name by which a verified requester is the source of a
// login (coap.Request.Peer, the Source of the relayed verify): "mqtt:"
// and its client identifier, or "mqtt#" and a digest of it when that
// would be longer than lockout.MaxSourceName (64) or exactly 16 bytes,
// which a gateway would read as an IPv6 address. So no client identifier
// can pose as an IP address or as another kind of source.
func SourceName(clientID string) []byte {
	if n := len("mqtt:") + len(clientID); n <= 64 && n != 16 && n != 4 {
		return []byte("mqtt:" + clientID)
	}
	h := sha256.Sum256([]byte(clientID))
	return []byte("mqtt#" + hex.EncodeToString(h[:20]))
}
