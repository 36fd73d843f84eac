package mqttbind

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultRoot is the topic prefix of spec section 12.
const DefaultRoot = "tagauth/v1"

// Reconnect backoff: from 100 ms, growing to at most 10 s, so that a
// broker restart costs a device about a second and a broker that stays
// down is not hammered.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 10 * time.Second
)

// Config says how to reach the broker.
type Config struct {
	// URL is the broker: tcp://host:1883 (also mqtt://) or, with TLS,
	// mqtts://host:8883 (also tls://, ssl://).
	URL string
	// Root is the topic prefix; default DefaultRoot.
	Root string
	// CAFile is a PEM file of the CAs that sign the broker's certificate;
	// empty uses the system's. CertFile and KeyFile are a client
	// certificate for brokers that authenticate clients by certificate.
	CAFile, CertFile, KeyFile string
	// Username and Password authenticate the client to the broker.
	Username string
	Password string
	// ClientID is the MQTT client identifier, which also names the reply
	// topic and so must hold at least 64 random bits (spec section 12);
	// default "tagauth-" followed by 128 random bits in hex.
	ClientID string
	// Logger receives connection changes; default: discard.
	Logger *slog.Logger
}

// Stats are a connection's counters.
type Stats struct {
	// Connected reports whether the broker connection is up.
	Connected bool
	// Connections counts the connections made, the first included.
	Connections uint64
	// ConnectFailures counts failed connection attempts.
	ConnectFailures uint64
}

// Conn is one MQTT 5 connection to the broker, kept up by autopaho: it
// reconnects with exponential backoff and subscribes again to every topic
// a Responder or Requester registered. It is safe for concurrent use.
type Conn struct {
	root     string
	clientID string
	url      string // without user information
	log      *slog.Logger
	cm       *autopaho.ConnectionManager

	mu     sync.Mutex
	routes map[string]func(*paho.Publish) // topic -> handler (exact match)
	subs   []paho.SubscribeOptions
	ready  chan struct{} // closed once the subscriptions of a connection are made
	gen    uint64        // connection generation, to drop stale subscribe results

	up       atomic.Bool
	conns    atomic.Uint64
	failures atomic.Uint64
}

// Dial starts connecting to the broker and returns at once; the
// connection comes up (and comes back) in the background. Errors are for
// a bad configuration only. Close ends it.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("mqtt: broker URL %q: want tcp://host:port or mqtts://host:port", cfg.URL)
	}
	if u.User != nil {
		// tcp://user:password@host: the same as Username and Password,
		// kept out of every log line.
		if cfg.Username == "" {
			cfg.Username = u.User.Username()
			cfg.Password, _ = u.User.Password()
		}
		u.User = nil
	}
	var tlsCfg *tls.Config
	switch strings.ToLower(u.Scheme) {
	case "tcp", "mqtt":
		if cfg.CAFile != "" || cfg.CertFile != "" {
			return nil, fmt.Errorf("mqtt: a CA or client certificate needs a TLS URL (mqtts://), not %s://", u.Scheme)
		}
	case "mqtts", "tls", "ssl":
		if tlsCfg, err = tlsConfig(cfg, u.Hostname()); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("mqtt: broker URL scheme %q: want tcp, mqtt, mqtts or tls", u.Scheme)
	}
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if err := checkRoot(cfg.Root); err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("mqtt: %w", err)
		}
		cfg.ClientID = "tagauth-" + hex.EncodeToString(b[:])
	} else if strings.ContainsAny(cfg.ClientID, "/+#") {
		return nil, fmt.Errorf("mqtt: client identifier %q names the reply topic and must not hold '/', '+' or '#'", cfg.ClientID)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Conn{
		root:     cfg.Root,
		clientID: cfg.ClientID,
		log:      cfg.Logger.With("broker", u.String()),
		url:      u.String(),
		routes:   make(map[string]func(*paho.Publish)),
		ready:    make(chan struct{}),
	}
	acfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         0,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(backoffMin, backoffMax, 2*backoffMin, 2),
		ConnectTimeout:                5 * time.Second,
		ConnectUsername:               cfg.Username,
		ConnectPassword:               []byte(cfg.Password),
		OnConnectionUp:                c.onUp,
		OnConnectionDown:              c.onDown,
		OnConnectError:                c.onConnectError,
		ClientConfig: paho.ClientConfig{
			ClientID:          cfg.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.route},
		},
	}
	cm, err := autopaho.NewConnection(ctx, acfg)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	c.cm = cm
	return c, nil
}

func tlsConfig(cfg Config, host string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt: CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt: CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("mqtt: a client certificate needs both its certificate and its key file")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// checkRoot refuses a prefix that is empty, has wildcards or starts with
// '$' (reserved by brokers) or '/'.
func checkRoot(root string) error {
	if root == "" || strings.ContainsAny(root, "+#\x00") || strings.HasPrefix(root, "$") ||
		strings.HasPrefix(root, "/") || strings.HasSuffix(root, "/") {
		return fmt.Errorf("mqtt: topic prefix %q: want levels such as tagauth/v1, without wildcards or a leading $", root)
	}
	return nil
}

// URL returns the broker's URL, without user information.
func (c *Conn) URL() string { return c.url }

// ClientID returns the client identifier.
func (c *Conn) ClientID() string { return c.clientID }

// Root returns the topic prefix.
func (c *Conn) Root() string { return c.root }

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	return Stats{Connected: c.up.Load(), Connections: c.conns.Load(), ConnectFailures: c.failures.Load()}
}

// Ready waits until the connection is up and every registered topic is
// subscribed, or ctx is done.
func (c *Conn) Ready(ctx context.Context) error {
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt: broker not reached: %w", ctx.Err())
	}
}

// Close disconnects from the broker and stops reconnecting.
func (c *Conn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := c.cm.Disconnect(ctx)
	if errors.Is(err, autopaho.ConnectionDownError) {
		err = nil
	}
	return err
}

// Done is closed when the connection has shut down for good.
func (c *Conn) Done() <-chan struct{} { return c.cm.Done() }

// subscribe registers h for the messages published to topic and
// subscribes to filter (topic itself, or a shared subscription of it),
// now and after every reconnect. QoS 1 (spec section 12).
func (c *Conn) subscribe(ctx context.Context, filter, topic string, h func(*paho.Publish)) error {
	c.mu.Lock()
	if _, dup := c.routes[topic]; dup {
		c.mu.Unlock()
		return fmt.Errorf("mqtt: topic %s registered twice", topic)
	}
	c.routes[topic] = h
	opt := paho.SubscribeOptions{Topic: filter, QoS: 1}
	c.subs = append(c.subs, opt)
	up := c.up.Load()
	c.mu.Unlock()
	if !up {
		return nil // onUp subscribes to it
	}
	_, err := c.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{opt}})
	if err != nil {
		return fmt.Errorf("mqtt: subscribe to %s: %w", filter, err)
	}
	return nil
}

func (c *Conn) onUp(cm *autopaho.ConnectionManager, _ *paho.Connack) {
	c.conns.Add(1)
	c.up.Store(true)
	c.mu.Lock()
	c.gen++
	gen := c.gen
	subs := append([]paho.SubscribeOptions(nil), c.subs...)
	c.mu.Unlock()
	c.log.Info("mqtt connected", "client_id", c.clientID, "subscriptions", len(subs))
	// OnConnectionUp must not block: subscribe on another goroutine.
	go func() {
		if len(subs) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
				c.log.Warn("mqtt subscribe failed; will retry on the next connection", "err", err.Error())
				return
			}
		}
		c.mu.Lock()
		if c.gen == gen {
			select {
			case <-c.ready:
			default:
				close(c.ready)
			}
		}
		c.mu.Unlock()
	}()
}

func (c *Conn) onDown() bool {
	c.up.Store(false)
	c.mu.Lock()
	select {
	case <-c.ready:
		c.ready = make(chan struct{})
	default:
	}
	c.mu.Unlock()
	c.log.Warn("mqtt connection lost; reconnecting")
	return true
}

func (c *Conn) onConnectError(err error) {
	c.failures.Add(1)
	c.log.Warn("mqtt broker unreachable; retrying with backoff", "err", err.Error())
}

// route hands a message to the handler of its topic. Handlers must not
// block: paho calls route on its reading goroutine.
func (c *Conn) route(pr paho.PublishReceived) (bool, error) {
	c.mu.Lock()
	h := c.routes[pr.Packet.Topic]
	c.mu.Unlock()
	if h == nil {
		return false, nil
	}
	h(pr.Packet)
	return true, nil
}

// publish sends p with QoS 1 and waits for the broker's PUBACK.
func (c *Conn) publish(ctx context.Context, p *paho.Publish) error {
	p.QoS = 1
	p.Retain = false
	if _, err := c.cm.Publish(ctx, p); err != nil {
		return fmt.Errorf("mqtt: publish to %s: %w", p.Topic, err)
	}
	return nil
}

// Collectors are Prometheus metrics of the connection, named with prefix
// (such as "tagauth_device"): whether the broker is connected, and the
// failed connection attempts (the broker unreachable).
func (c *Conn) Collectors(prefix string) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "_mqtt_connected",
			Help: "1 while the MQTT broker connection is up, 0 while it is down (reconnecting)."},
			func() float64 {
				if c.up.Load() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_mqtt_connect_failures_total",
			Help: "Failed connection attempts to the MQTT broker (unreachable or refused)."},
			func() float64 { return float64(c.failures.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_mqtt_connections_total",
			Help: "Connections made to the MQTT broker, reconnections included."},
			func() float64 { return float64(c.conns.Load()) }),
	}
}
