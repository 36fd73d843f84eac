package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/device"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/userclient"
)

// The demo's MQTT part (spec section 12): the same device, as a second
// agent with no UDP socket at all, reached through a broker by the user,
// relaying to the gateway through the broker. The broker is the local
// Mosquitto (TAGAUTH_DEMO_MQTT overrides tcp://127.0.0.1:1883); without
// one the part says how to start it and is skipped.

// demoMQTTBroker is the broker the demo uses.
func demoMQTTBroker() string {
	if u := os.Getenv("TAGAUTH_DEMO_MQTT"); u != "" {
		return u
	}
	return "tcp://127.0.0.1:1883"
}

type demoMQTT struct {
	root string
	user *mqttbind.Requester
}

func (d *netDemo) startMQTTDevice() (string, error) {
	broker := demoMQTTBroker()
	u, err := url.Parse(broker)
	if err != nil {
		return "", fmt.Errorf("TAGAUTH_DEMO_MQTT %q: %w", broker, err)
	}
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err != nil {
		return fmt.Sprintf("skipped: no MQTT broker at %s (start one: mosquitto -d, or set TAGAUTH_DEMO_MQTT)", broker), nil
	} else {
		c.Close()
	}
	// A topic prefix of its own, so that the demo never meets another
	// deployment on a shared broker.
	var r [6]byte
	rand.Read(r[:])
	root := "tagauth-demo-" + hex.EncodeToString(r[:]) + "/v1"
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = append(d.stop, cancel)
	dial := func() (*mqttbind.Conn, error) {
		c, err := mqttbind.Dial(ctx, mqttbind.Config{URL: broker, Root: root})
		if err == nil {
			d.stop = append(d.stop, func() { c.Close() })
		}
		return c, err
	}
	// The gateway: verify on the shared subscription, beside its CoAP.
	gc, err := dial()
	if err != nil {
		return "", err
	}
	if _, err := mqttbind.NewResponder(ctx, gc, mqttbind.ResponderConfig{Handler: d.gw.VerifyHandler(),
		Routes: mqttbind.GatewayRoutes(root), Shared: true}); err != nil {
		return "", err
	}
	// The device: no socket of its own; requests in and m2 out through
	// the broker.
	dc, err := dial()
	if err != nil {
		return "", err
	}
	relay, err := mqttbind.NewRequester(ctx, dc)
	if err != nil {
		return "", err
	}
	a, err := device.New(device.Config{Credential: d.cred, NoListen: true, Relay: relay.Gateway()})
	if err != nil {
		return "", err
	}
	echo, err := mqttbind.NewEchoer(0)
	if err != nil {
		return "", err
	}
	if _, err := mqttbind.NewResponder(ctx, dc, mqttbind.ResponderConfig{Handler: a.Handler(),
		Routes: mqttbind.DeviceRoutes(root, a.ID()), Echo: echo}); err != nil {
		return "", err
	}
	d.serve(a.Run)
	uc, err := dial()
	if err != nil {
		return "", err
	}
	ur, err := mqttbind.NewRequester(ctx, uc)
	if err != nil {
		return "", err
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	for _, c := range []*mqttbind.Conn{gc, dc, uc} {
		if err := c.Ready(rctx); err != nil {
			return "", err
		}
	}
	d.mqtt = &demoMQTT{root: root, user: ur}
	return fmt.Sprintf("a second agent of %q with no UDP port at all, on %s topics %s/device/%s/#\n(gateway: %s)",
		demoDevice, broker, root, mqttbind.DeviceLevel(demoDevice), mqttbind.VerifyFilter(root)), nil
}

func (d *netDemo) loginMQTT() (string, error) {
	if d.mqtt == nil {
		return "skipped (no broker)", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := userclient.LoginVia(ctx, d.user, d.mqtt.user.Device(demoDevice), demoDevice)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	took := time.Since(start)
	r, err := conn.Task(ctx, "sensor.read", "")
	if err != nil {
		return "", err
	}
	fp := conn.Session.Fingerprint()
	lines := []string{
		fmt.Sprintf("authenticated %s <-> %s through the broker in %s (first login: one Echo round trip more); key %x", demoUser, demoDevice, fmtDur(took), fp[:8]),
		fmt.Sprintf("sealed task sensor.read    -> %s", r.Result),
	}
	if took > 50*time.Millisecond {
		// Eight hops through the broker; at about 40 ms each with Nagle.
		lines = append(lines, "slow: the broker probably runs with Nagle's algorithm; set set_tcp_nodelay true (docs/OPERATIONS.md)")
	}
	return strings.Join(lines, "\n"), nil
}
