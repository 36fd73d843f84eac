package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/mqttbind/mqtttest"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/protocol"
)

// mqttUsers are the broker accounts of docs/mosquitto/tagauth.acl.
var mqttUsers = map[string]string{"gateway": "gw-secret", "sensor-7": "dev-secret", "alice": "alice-secret", "mallory": "mallory-secret"}

func mqttEnv(user string) []string { return []string{"TAGAUTH_MQTT_PASSWORD=" + mqttUsers[user]} }

// mqttWorld is a broker run with the ACL file of docs/OPERATIONS.md, a
// gateway serving verify on CoAP and on the broker, a device agent with no
// UDP socket at all, and an enrolled user.
type mqttWorld struct {
	*world
	broker *mqtttest.Broker
}

func newMQTTWorld(t *testing.T, profile string) *mqttWorld {
	t.Helper()
	w := newMQTTWorldNoDevice(t, profile)
	w.startMQTTDevice()
	return w
}

func newMQTTWorldNoDevice(t *testing.T, profile string) *mqttWorld {
	t.Helper()
	acl, err := os.ReadFile("../docs/mosquitto/tagauth.acl")
	if err != nil {
		t.Fatal(err)
	}
	b := mqtttest.Start(t, string(acl), mqttUsers)
	dir := t.TempDir()
	w := &world{t: t, dir: dir}
	data := filepath.Join(dir, "gw")
	p := start(t, mqttEnv("gateway"), "gateway", "serve", "--data", data, "--profile", profile,
		"--coap", freeUDPPort(t), "--admin", "127.0.0.1:0", "--audit-log", data+"-audit.jsonl",
		"--mqtt", b.URL(), "--mqtt-user", "gateway", "--insecure-test-kdf")
	w.gw = &gateway{proc: p, data: data}
	w.gw.coap = p.waitLine(`CoAP verify:\s+(\S+)`)[1]
	w.gw.admin = p.waitLine(`admin API:\s+(\S+)`)[1]
	w.gw.fingerprint = p.waitLine(`fingerprint:\s+([0-9a-f]{64})`)[1]
	p.waitLine(`MQTT verify:\s+\S+ on \$share/tagauth-gateways/tagauth/v1/gateway/verify`)
	must(t, nil, "gateway", "provision", "--data", data, "--id", "sensor-7", "--group", "plant-a", "--out", filepath.Join(dir, "sensor-7.json"))
	must(t, nil, "gateway", "grant", "--data", data, "--user", "alice", "--group", "plant-a")
	code := strings.TrimSpace(must(t, nil, "gateway", "enrol-code", "--data", data, "--user", "alice"))
	w.card = filepath.Join(dir, "alice.card")
	w.userPW = []string{"TAGAUTH_PASSWORD=correct horse"}
	must(t, w.userPW, "user", "enroll", "--admin", w.gw.admin, "--fingerprint", w.gw.fingerprint,
		"--code", code, "--id", "alice", "--card", w.card, "--profile", profile, fastKDF, "--kdf-m=1024")
	return &mqttWorld{world: w, broker: b}
}

// startMQTTDevice runs the device agent on the broker only: no --listen,
// so no UDP socket.
func (w *mqttWorld) startMQTTDevice() {
	w.t.Helper()
	w.dev = start(w.t, mqttEnv("sensor-7"), "device", "--cred", filepath.Join(w.dir, "sensor-7.json"),
		"--mqtt", w.broker.URL(), "--mqtt-user", "sensor-7", "--metrics", "127.0.0.1:0")
	w.dev.waitLine(`serving MQTT on tagauth/v1/device/73656e736f722d37/#`)
	if strings.Contains(w.dev.stdout(), "serving CoAP") {
		w.t.Fatalf("the device serves CoAP too: %s", w.dev.stdout())
	}
}

// mqttUser runs "tagauth user SUB" through the broker as alice.
func (w *mqttWorld) mqttUser(sub string, extra ...string) (int, string, string) {
	w.t.Helper()
	args := append([]string{"user", sub, "--card", w.card, "--device", "mqtt://" + w.broker.Addr(), "--did", "sensor-7",
		"--mqtt-user", "alice", "--timeout", "10s"}, extra...)
	return run(w.t, append(append([]string(nil), w.userPW...), mqttEnv("alice")...), args...)
}

// untilOK runs f until it exits 0, for at most 30 s (a device
// reconnecting to a restarted broker).
func untilOK(t *testing.T, f func() (int, string, string)) string {
	t.Helper()
	var code int
	var out, errs string
	if !testenv.Poll(t.Context(), 30*time.Second, func() bool {
		code, out, errs = f()
		return code == 0
	}) {
		t.Fatalf("still failing after 30 s: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	return out
}

func TestMQTTLoginAndTasks(t *testing.T) {
	for _, profile := range []string{"hardened", "classic"} {
		t.Run(profile, func(t *testing.T) {
			w := newMQTTWorld(t, profile)
			code, out, errs := w.mqttUser("login")
			if code != 0 || !strings.Contains(out, "authenticated: user alice <-> device sensor-7") {
				t.Fatalf("login through the broker: exit %d\nstdout: %s\nstderr: %s\ndevice: %s", code, out, errs, w.dev.errText())
			}
			code, out, errs = w.mqttUser("task", "echo", "over", "mqtt")
			if code != 0 || strings.TrimSpace(out) != "over mqtt" {
				t.Fatalf("task through the broker: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
			}
			code, out, _ = w.mqttUser("task", "sensor.read")
			if code != 0 || !strings.Contains(out, "temperature") {
				t.Fatalf("sensor.read through the broker: exit %d: %s", code, out)
			}
		})
	}
}

func TestMQTTBrokerRestartMidSession(t *testing.T) {
	w := newMQTTWorld(t, "hardened")
	if code, out, errs := w.mqttUser("task", "echo", "before"); code != 0 {
		t.Fatalf("before the restart: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	w.broker.Restart() // every connection and subscription is gone
	out := untilOK(t, func() (int, string, string) { return w.mqttUser("task", "echo", "after") })
	if strings.TrimSpace(out) != "after" {
		t.Fatalf("after the restart: %q", out)
	}
	if !strings.Contains(w.dev.errText(), "mqtt connection lost") {
		t.Fatalf("the device did not log the lost broker:\n%s", w.dev.errText())
	}
	// And its metrics say so: connected again, on a second connection.
	at := w.dev.waitLine(`metrics at (http://\S+)`)[1]
	resp, err := http.Get(at)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"tagauth_device_mqtt_connected 1", "tagauth_device_mqtt_connections_total 2"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("device metrics lack %q:\n%s", want, grepLines(string(body), "mqtt"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMQTTForgedAnswerRefused: whoever can publish on a user's reply topic
// with the right Correlation Data (the broker, or here a client with the
// device's broker account, which sees the request) and answers first gets
// its answer taken, and the protocol refuses it: the user is not logged
// in.
func TestMQTTForgedAnswerRefused(t *testing.T) {
	w := newMQTTWorld(t, "hardened")
	forger, _, _ := mqtttest.Raw(t, w.broker, "sensor-7", mqttUsers["sensor-7"])
	topic := mqttbind.DeviceTopic(mqttbind.DefaultRoot, "sensor-7", coapbind.PathLogin)
	forged := make(chan struct{}, 16)
	forger.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		if p.Topic != topic || p.Properties == nil {
			return false, nil
		}
		// A well-formed hardened m4 with fresh timestamps and random
		// values: X_ij, gamma_i, T3, T4, tau_j.
		m4 := append([]byte{0x02, 0x04}, make([]byte, 32+32)...)
		rand.Read(m4[2:])
		now := uint64(time.Now().UnixMilli())
		m4 = binary.BigEndian.AppendUint64(m4, now)
		m4 = binary.BigEndian.AppendUint64(m4, now)
		tau := make([]byte, 32)
		rand.Read(tau)
		m4 = append(m4, tau...)
		go func() {
			pr.Client.Publish(t.Context(), &paho.Publish{Topic: p.Properties.ResponseTopic, QoS: 1, Payload: m4,
				Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData}})
			forged <- struct{}{}
		}()
		return true, nil
	})
	ctx := t.Context()
	if _, err := forger.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// The requester takes the first answer per correlation: with the real
	// device still serving, its answer could come first (it did on a
	// loaded machine) and the test would prove nothing. With the device
	// gone, the forger's answer is the one the card must judge.
	w.dev.stop()
	code, out, errs := w.mqttUser("login")
	if code == 0 || strings.Contains(out, "authenticated") {
		t.Fatalf("a forged m4 logged the user in: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if !strings.Contains(errs, "answer refused") {
		t.Fatalf("want the card to refuse the forged answer, got: %s", errs)
	}
	select {
	case <-forged:
	default:
		t.Fatal("the forger never answered: the test proved nothing")
	}
}

// TestMQTTDuplicateLoginAnsweredFromCache: a QoS 1 duplicate of a real m1
// (same response topic and correlation data) gets the same m4 from the
// device's answer cache: the login is not run again and the duplicate is
// never answered as a replay.
func TestMQTTDuplicateLoginAnsweredFromCache(t *testing.T) {
	w := newMQTTWorld(t, "hardened")
	data, err := card.Load(w.card)
	if err != nil {
		t.Fatal(err)
	}
	c, err := card.Open(data, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	u, err := protocol.Unlock(c, "correct horse", protocol.Config{Now: time.Now, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	l, m1, err := u.Login(nil, "sensor-7")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cl, reply, answers := mqtttest.Raw(t, w.broker, "alice", mqttUsers["alice"])
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	topic := mqttbind.DeviceTopic(mqttbind.DefaultRoot, "sensor-7", coapbind.PathLogin)
	send := func(corr []byte, echo string) *paho.Publish {
		t.Helper()
		props := &paho.PublishProperties{ResponseTopic: reply, CorrelationData: corr}
		if echo != "" {
			props.User = append(props.User, paho.UserProperty{Key: mqttbind.PropEcho, Value: echo})
		}
		if _, err := cl.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: m1, Properties: props}); err != nil {
			t.Fatal(err)
		}
		select {
		case a := <-answers:
			if !bytes.Equal(a.Properties.CorrelationData, corr) {
				t.Fatalf("answer for another correlation")
			}
			return a
		case <-ctx.Done():
			t.Fatal("no answer")
		}
		return nil
	}
	// A new client is first asked to prove it reads its reply topic.
	challenge := send([]byte("first-try-corr-1"), "")
	echo := challenge.Properties.User.Get(mqttbind.PropEcho)
	if len(challenge.Payload) != 0 || echo == "" {
		t.Fatalf("want an empty answer with an Echo challenge, got %x", challenge.Payload)
	}
	corr := []byte("the-login-corr-2")
	first := send(corr, echo)
	dup := send(corr, echo) // what QoS 1 may deliver again
	if len(first.Payload) < 2 || first.Payload[1] != 0x04 {
		t.Fatalf("first answer is not m4: %x", first.Payload)
	}
	if !bytes.Equal(dup.Payload, first.Payload) {
		t.Fatalf("the duplicate got %x, not the first answer %x", dup.Payload, first.Payload)
	}
	if _, _, err := l.Finish(nil, first.Payload); err != nil {
		t.Fatalf("the card refuses the m4: %v", err)
	}
	// Run again, the m1 would have been a replay: check that the device
	// says so for a new correlation, so the cache above is what answered.
	again := send([]byte("another-corr-03"), echo)
	if _, code, err := protocol.ParseError(again.Payload); err != nil || code != protocol.ErrReplayed {
		t.Fatalf("a new request with the same m1: %x (%v), want replayed", again.Payload, err)
	}
}

// TestMQTTOutsiderCannotLockOutUser: an outsider with a broker account
// sends forged logins claiming alice from several MQTT clients. The
// device verifies each client by an Echo on its reply topic and relays it
// as the source; the gateway charges the failures to those sources and to
// alice's unfamiliar budget, never to the client alice logged in from, so
// alice still logs in. A client alice never used is locked (the attack
// did take effect).
func TestMQTTOutsiderCannotLockOutUser(t *testing.T) {
	w := newMQTTWorld(t, "hardened")
	if code, out, errs := w.mqttUser("login"); code != 0 {
		t.Fatalf("alice's first login: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	forged := func() []byte {
		m1 := []byte{0x02, 0x01, byte(len("alice"))}
		m1 = append(m1, "alice"...)
		m1 = append(m1, 1) // kv_i
		r := make([]byte, 16+32+32)
		rand.Read(r)
		m1 = append(m1, r...) // n_i, E_i, theta_i
		return binary.BigEndian.AppendUint64(m1, uint64(time.Now().UnixMilli()))
	}
	refused := 0
	for range 3 { // three clients, more failures than the unfamiliar budget (10)
		c, err := mqttbind.Dial(t.Context(), mqttbind.Config{URL: w.broker.URL(), Username: "mallory", Password: mqttUsers["mallory"]})
		if err != nil {
			t.Fatal(err)
		}
		rq, err := mqttbind.NewRequester(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		if err := c.Ready(ctx); err != nil {
			t.Fatal(err)
		}
		dev := rq.Device("sensor-7")
		for range 6 {
			_, out, err := dev.Post(ctx, coapbind.PathLogin, forged(), transport.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, code, err := protocol.ParseError(out); err == nil && code == protocol.ErrRejected {
				refused++
			}
		}
		cancel()
		c.Close()
	}
	if refused < 11 {
		t.Fatalf("only %d forged logins were refused as rejected; the attack did not exhaust the unfamiliar budget", refused)
	}
	code, out, errs := w.mqttUser("task", "echo", "still in")
	if code != 0 || strings.TrimSpace(out) != "still in" {
		t.Fatalf("alice was locked out by an outsider's forged logins: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	// From a client identifier alice never logged in from, she is locked
	// like every unfamiliar source.
	code, _, errs = w.mqttUser("login", "--mqtt-client-id", "tagauth-u-never-used-before-0123456789")
	if code == 0 || !strings.Contains(errs, "rejected") {
		t.Fatalf("from an unfamiliar client: exit %d, stderr: %s; want the unfamiliar lock", code, errs)
	}
}
