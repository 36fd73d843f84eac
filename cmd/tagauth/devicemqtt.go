package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tagauth/tagauth/internal/device"
	"github.com/tagauth/tagauth/internal/mqttbind"
)

// deviceBroker is the MQTT side of "tagauth device --mqtt URL".
type deviceBroker struct {
	conn *mqttbind.Conn
}

// deviceMQTT connects to the broker when --mqtt is given and sets up cfg:
// no UDP socket unless --listen was given too, and m2 relayed through the
// broker unless --relay coap. It returns nil without --mqtt.
func deviceMQTT(ctx context.Context, fset *flag.FlagSet, mf *mqttFlags, relay string, cfg *device.Config) (*deviceBroker, error) {
	if mf.url == "" {
		if relay == "mqtt" {
			return nil, errors.New("--relay mqtt needs --mqtt URL")
		}
		return nil, nil
	}
	listen := false
	fset.Visit(func(f *flag.Flag) { listen = listen || f.Name == "listen" })
	cfg.NoListen = !listen
	conn, err := mf.dial(ctx, cfg.Logger)
	if err != nil {
		return nil, err
	}
	switch relay {
	case "", "mqtt":
		rq, err := mqttbind.NewRequester(ctx, conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		cfg.Relay = rq.Gateway()
	case "coap":
	default:
		conn.Close()
		return nil, fmt.Errorf("--relay %q: want mqtt or coap", relay)
	}
	return &deviceBroker{conn: conn}, nil
}

// serve subscribes the agent's endpoints on the device's topics; the
// connection comes up (and back, with backoff) in the background.
func (b *deviceBroker) serve(ctx context.Context, agent *device.Agent, stdout io.Writer) error {
	echo, err := mqttbind.NewEchoer(0)
	if err != nil {
		return err
	}
	if _, err := mqttbind.NewResponder(ctx, b.conn, mqttbind.ResponderConfig{
		Handler: agent.Handler(),
		Routes:  mqttbind.DeviceRoutes(b.conn.Root(), agent.ID()),
		Echo:    echo,
	}); err != nil {
		return err
	}
	for _, c := range b.conn.Collectors("tagauth_device") {
		agent.MetricsRegistry().MustRegister(c)
	}
	fmt.Fprintf(stdout, "device %s (%s) serving MQTT on %s/device/%s/# at %s, client %s, gateway %s; stop with Ctrl-C\n",
		agent.ID(), agent.Profile(), b.conn.Root(), mqttbind.DeviceLevel(agent.ID()), b.conn.URL(), b.conn.ClientID(), agent.Gateway())
	return nil
}

func (b *deviceBroker) close() { b.conn.Close() }
