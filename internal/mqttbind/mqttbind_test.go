package mqttbind_test

import (
	"bytes"
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/mqttbind/mqtttest"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/protocol"
)

// users of docs/mosquitto/tagauth.acl and their passwords.
var users = map[string]string{"gateway": "gw-pw", "sensor-7": "dev-pw", "alice": "alice-pw", "mallory": "mallory-pw"}

func broker(t *testing.T) *mqtttest.Broker {
	t.Helper()
	acl, err := os.ReadFile("../../docs/mosquitto/tagauth.acl")
	if err != nil {
		t.Fatal(err)
	}
	return mqtttest.Start(t, string(acl), users)
}

func dial(t *testing.T, b *mqtttest.Broker, user string) *mqttbind.Conn {
	t.Helper()
	c, err := mqttbind.Dial(t.Context(), mqttbind.Config{URL: b.URL(), Username: user, Password: users[user]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ready(t *testing.T, c *mqttbind.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

// counter is a device handler that answers every request with its
// payload reversed and counts the calls.
type counter struct {
	calls   atomic.Int64
	peer    atomic.Value
	block   chan struct{}
	entered chan struct{} // when not nil, told of each call before it blocks
}

func (h *counter) ServeCoAP(_ context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	h.calls.Add(1)
	h.peer.Store(string(req.Peer))
	if h.entered != nil {
		h.entered <- struct{}{}
	}
	if h.block != nil {
		<-h.block
	}
	for i := len(req.Payload) - 1; i >= 0; i-- {
		dst = append(dst, req.Payload[i])
	}
	if req.Path == coapbind.PathTask && len(req.Payload) == 0 {
		return coap.BadRequest, dst
	}
	return coap.Changed, dst
}

func deviceSide(t *testing.T, b *mqtttest.Broker, h coap.Handler) (*mqttbind.Conn, *mqttbind.Responder) {
	t.Helper()
	c := dial(t, b, "sensor-7")
	echo, err := mqttbind.NewEchoer(0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := mqttbind.NewResponder(t.Context(), c, mqttbind.ResponderConfig{
		Handler: h, Routes: mqttbind.DeviceRoutes(c.Root(), "sensor-7"), Echo: echo})
	if err != nil {
		t.Fatal(err)
	}
	ready(t, c)
	return c, r
}

func requester(t *testing.T, b *mqtttest.Broker, user string) (*mqttbind.Conn, *mqttbind.Requester) {
	t.Helper()
	c := dial(t, b, user)
	r, err := mqttbind.NewRequester(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	ready(t, c)
	return c, r
}

func TestRequestThroughBrokerWithEcho(t *testing.T) {
	b := broker(t)
	h := &counter{}
	_, resp := deviceSide(t, b, h)
	uc, req := requester(t, b, "alice")
	dev := req.Device("sensor-7")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	code, out, err := dev.Post(ctx, coapbind.PathLogin, []byte{1, 2, 3}, transport.Options{})
	if err != nil || code != coap.Changed || !bytes.Equal(out, []byte{3, 2, 1}) {
		t.Fatalf("login: %v %s %x", err, code, out)
	}
	if got := resp.Stats.EchoChallenges.Load(); got != 1 {
		t.Fatalf("echo challenges = %d, want 1 (first login from a new client)", got)
	}
	if got := h.peer.Load(); got != string(mqttbind.SourceName(uc.ClientID())) {
		t.Fatalf("handler saw peer %q, want the requester's client id %q", got, uc.ClientID())
	}
	// Verified now: no second challenge.
	if _, _, err := dev.Post(ctx, coapbind.PathLogin, []byte{4}, transport.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := resp.Stats.EchoChallenges.Load(); got != 1 {
		t.Fatalf("echo challenges = %d after a verified login, want 1", got)
	}
	// A failure code without an error message becomes one.
	code, out, err = dev.Post(ctx, coapbind.PathTask, nil, transport.Options{})
	if err != nil || code != coap.BadRequest {
		t.Fatalf("task: %v %s", err, code)
	}
	if _, c, err := protocol.ParseError(out); err != nil || c != protocol.ErrMalformed {
		t.Fatalf("task answer %x: %v %v", out, c, err)
	}
}

// rawRequest publishes one request with the given properties from conn
// and returns the answers that come to its reply topic.
func rawConn(t *testing.T, b *mqtttest.Broker, user string) (*paho.Client, string, chan *paho.Publish) {
	t.Helper()
	c, reply, ch := mqtttest.Raw(t, b, user, users[user])
	return c, reply, ch
}

func TestDuplicateAnsweredFromCache(t *testing.T) {
	b := broker(t)
	h := &counter{block: make(chan struct{}), entered: make(chan struct{}, 8)}
	_, resp := deviceSide(t, b, h)
	c, reply, answers := rawConn(t, b, "alice")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	topic := mqttbind.DeviceTopic(mqttbind.DefaultRoot, "sensor-7", coapbind.PathTask)
	corr := []byte("0123456789abcdef")
	pub := func(payload []byte, corr []byte, rt string) {
		t.Helper()
		if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload,
			Properties: &paho.PublishProperties{ResponseTopic: rt, CorrelationData: corr}}); err != nil {
			t.Fatal(err)
		}
	}
	pub([]byte{1, 2}, corr, reply)
	// The responder serves each request on a goroutine of its own: the
	// copies below must come once the first holds its claim, or any of
	// them could be "the first".
	select {
	case <-h.entered:
	case <-ctx.Done():
		t.Fatal("the first request never reached the handler")
	}
	pub([]byte{1, 2}, corr, reply)                                  // the QoS 1 duplicate, while the first is handled
	pub([]byte{9, 9}, corr, reply)                                  // same key, other payload: dropped
	pub([]byte{5}, nil, reply)                                      // no correlation data: dropped
	pub([]byte{6}, []byte("fedcba9876543210"), "elsewhere/reply/x") // not under reply/: dropped
	close(h.block)
	for range 2 {
		select {
		case a := <-answers:
			if !bytes.Equal(a.Payload, []byte{2, 1}) || !bytes.Equal(a.Properties.CorrelationData, corr) {
				t.Fatalf("answer %x corr %q", a.Payload, a.Properties.CorrelationData)
			}
		case <-ctx.Done():
			t.Fatal("no answer")
		}
	}
	pub([]byte{1, 2}, corr, reply) // a late duplicate: from the cache too
	select {
	case a := <-answers:
		if !bytes.Equal(a.Payload, []byte{2, 1}) {
			t.Fatalf("late duplicate answered %x", a.Payload)
		}
	case <-ctx.Done():
		t.Fatal("no answer to the late duplicate")
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
	testenv.Eventually(t, "3 requests dropped", func() bool { return resp.Stats.Dropped.Load() >= 3 })
	select {
	case a := <-answers:
		t.Fatalf("a dropped request was answered: %x", a.Payload)
	default:
	}
}
