package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/tagauth/tagauth/internal/mqttbind"
)

// mqttFlags are the broker flags shared by "tagauth device", "tagauth
// gateway serve" and "tagauth user" (spec section 12).
type mqttFlags struct {
	url, root, ca, cert, key, user, passwordFile string
}

func (m *mqttFlags) register(fs *flag.FlagSet, what string) {
	fs.StringVar(&m.url, "mqtt", "", what+" through the MQTT 5 broker at `URL`: tcp://host:1883, or mqtts://host:8883 with TLS")
	fs.StringVar(&m.root, "mqtt-root", mqttbind.DefaultRoot, "MQTT topic `prefix` of this deployment")
	fs.StringVar(&m.ca, "mqtt-ca", "", "PEM `file` of the CAs of the broker's TLS certificate (mqtts://; default: the system's)")
	fs.StringVar(&m.cert, "mqtt-cert", "", "client certificate PEM `file` for the broker (with --mqtt-key)")
	fs.StringVar(&m.key, "mqtt-key", "", "client key PEM `file` for the broker")
	fs.StringVar(&m.user, "mqtt-user", "", "broker user `name`; its password comes from --mqtt-password-file or TAGAUTH_MQTT_PASSWORD")
	fs.StringVar(&m.passwordFile, "mqtt-password-file", "", "`file` whose first line is the broker password")
}

// dial connects to the broker (in the background: the connection comes
// up and back by itself).
func (m *mqttFlags) dial(ctx context.Context, log *slog.Logger) (*mqttbind.Conn, error) {
	pw := os.Getenv("TAGAUTH_MQTT_PASSWORD")
	if m.passwordFile != "" {
		b, err := os.ReadFile(m.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--mqtt-password-file: %w", err)
		}
		pw, _, _ = strings.Cut(string(b), "\n")
		pw = strings.TrimRight(pw, "\r")
	}
	if pw != "" && m.user == "" {
		return nil, errors.New("a broker password needs --mqtt-user")
	}
	return mqttbind.Dial(ctx, mqttbind.Config{URL: m.url, Root: m.root, CAFile: m.ca, CertFile: m.cert, KeyFile: m.key,
		Username: m.user, Password: pw, Logger: log})
}

// mqttDevice reads "--device mqtt://broker:1883" (or tcp://, mqtts://) of
// the user CLI: the device is reached through that broker, by its DID.
func mqttDevice(device string) (string, bool) {
	u, err := url.Parse(device)
	if err != nil {
		return "", false
	}
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp", "mqtts", "tls", "ssl":
		return device, true
	}
	return "", false
}
