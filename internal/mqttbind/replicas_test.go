package mqttbind_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/redisstate/redistest"
	"github.com/tagauth/tagauth/internal/transport"
)

// verifier is a gateway stand-in whose right answer to a request is known:
// an m3-shaped message (profile, type 0x03; the type byte tells success
// from error, spec section 12) holding SHA-256 of the payload.
type verifier struct{ calls atomic.Int64 }

func (v *verifier) ServeCoAP(_ context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
	v.calls.Add(1)
	s := sha256.Sum256(req.Payload)
	return coap.Changed, append(append(dst, 0x02, 0x03), s[:]...)
}

func want(payload []byte) []byte {
	s := sha256.Sum256(payload)
	return append([]byte{0x02, 0x03}, s[:]...)
}

func replica(t *testing.T, ctx context.Context, b interface{ URL() string }, cache mqttbind.AnswerCache, v *verifier) (*mqttbind.Conn, *mqttbind.Responder) {
	t.Helper()
	c, err := mqttbind.Dial(ctx, mqttbind.Config{URL: b.URL(), Username: "gateway", Password: users["gateway"]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r, err := mqttbind.NewResponder(ctx, c, mqttbind.ResponderConfig{Handler: v, Routes: mqttbind.GatewayRoutes(c.Root()),
		Shared: true, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	ready(t, c)
	return c, r
}

// TestReplicasOneKilledUnderLoad: two replicas on the shared subscription;
// one is killed while requests flow. Every answer that comes is the right
// one; requests lost with the killed replica time out (the requester
// retries), and the survivor answers the rest.
func TestReplicasOneKilledUnderLoad(t *testing.T) {
	b := broker(t)
	rdb := redistest.Client(t)
	cache := mqttbind.NewRedisCache(rdb, testPrefix()+"mqtt-answer:")
	var va, vb verifier
	ctxA, killA := context.WithCancel(t.Context())
	defer killA()
	connA, _ := replica(t, ctxA, b, cache, &va)
	replica(t, t.Context(), b, cache, &vb)
	_, rq := requester(t, b, "sensor-7")
	gw := rq.Gateway()

	const n, workers = 400, 8
	var (
		next, ok, lost atomic.Int64
		wrong          atomic.Value
		wg             sync.WaitGroup
		killOnce       sync.Once
	)
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= n; i = next.Add(1) {
				if i == n/4 {
					killOnce.Do(func() { killA(); connA.Close() })
				}
				payload := make([]byte, 40)
				rand.Read(payload)
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				code, out, err := gw.Post(ctx, coapbind.PathVerify, payload, transport.Options{})
				cancel()
				switch {
				case errors.Is(err, mqttbind.ErrTimeout):
					lost.Add(1)
				case err != nil:
					wrong.Store(err.Error())
				default:
					want := want(payload)
					if code != coap.Changed || !bytes.Equal(out, want) {
						wrong.Store(fmt.Sprintf("wrong answer: %s %x, want %x", code, out, want))
					}
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if w := wrong.Load(); w != nil {
		t.Fatalf("a request got %v", w)
	}
	if va.calls.Load() == 0 || vb.calls.Load() == 0 {
		t.Fatalf("calls A %d B %d: the shared subscription did not spread the load", va.calls.Load(), vb.calls.Load())
	}
	// Only what A held when it died may be lost.
	if lost.Load() > workers {
		t.Fatalf("%d requests lost, more than were in flight (%d); %d answered", lost.Load(), workers, ok.Load())
	}
	t.Logf("answered %d, lost with the killed replica %d (A %d calls, B %d)", ok.Load(), lost.Load(), va.calls.Load(), vb.calls.Load())
}

// TestReplicasShareAnswers: a QoS 1 duplicate delivered to the other
// replica is answered from the shared cache, not run again.
func TestReplicasShareAnswers(t *testing.T) {
	b := broker(t)
	rdb := redistest.Client(t)
	cache := mqttbind.NewRedisCache(rdb, testPrefix()+"mqtt-answer:")
	var va, vb verifier
	_, ra := replica(t, t.Context(), b, cache, &va)
	_, rb := replica(t, t.Context(), b, cache, &vb)
	c, reply, answers := rawConn(t, b, "sensor-7")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	corr := []byte("corr-0123456789")
	payload := []byte("m2 of one login")
	want := want(payload)
	// Shared subscriptions take turns, so four copies reach both replicas.
	for range 4 {
		if _, err := c.Publish(ctx, &paho.Publish{Topic: mqttbind.VerifyTopic(mqttbind.DefaultRoot), QoS: 1, Payload: payload,
			Properties: &paho.PublishProperties{ResponseTopic: reply, CorrelationData: corr}}); err != nil {
			t.Fatal(err)
		}
		select {
		case a := <-answers:
			if !bytes.Equal(a.Payload, want) {
				t.Fatalf("answer %x", a.Payload)
			}
		case <-ctx.Done():
			t.Fatal("no answer")
		}
	}
	if got := va.calls.Load() + vb.calls.Load(); got != 1 {
		t.Fatalf("the request ran %d times on the replicas, want 1", got)
	}
	if ra.Stats.Duplicates.Load() == 0 || rb.Stats.Duplicates.Load() == 0 {
		t.Fatalf("duplicates answered from the cache: A %d, B %d; want both replicas to have answered one",
			ra.Stats.Duplicates.Load(), rb.Stats.Duplicates.Load())
	}
}

// testPrefix keeps each test's Redis keys apart from other tests' (the
// Redis is shared).
func testPrefix() string {
	var p [8]byte
	rand.Read(p[:])
	return "test:" + hex.EncodeToString(p[:]) + ":"
}
