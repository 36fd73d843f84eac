package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	url, root, ca, cert, key, user, passwordFile, clientID string
}

func (m *mqttFlags) register(fs *flag.FlagSet, what string) {
	fs.StringVar(&m.url, "mqtt", "", what+" through the MQTT 5 broker at `URL`: tcp://host:1883, or mqtts://host:8883 with TLS")
	fs.StringVar(&m.root, "mqtt-root", mqttbind.DefaultRoot, "MQTT topic `prefix` of this deployment")
	fs.StringVar(&m.ca, "mqtt-ca", "", "PEM `file` of the CAs of the broker's TLS certificate (mqtts://; default: the system's)")
	fs.StringVar(&m.cert, "mqtt-cert", "", "client certificate PEM `file` for the broker (with --mqtt-key)")
	fs.StringVar(&m.key, "mqtt-key", "", "client key PEM `file` for the broker")
	fs.StringVar(&m.user, "mqtt-user", "", "broker user `name`; its password comes from --mqtt-password-file or TAGAUTH_MQTT_PASSWORD")
	fs.StringVar(&m.passwordFile, "mqtt-password-file", "", "`file` whose first line is the broker password")
	fs.StringVar(&m.clientID, "mqtt-client-id", "", "MQTT client `identifier` (names the reply topic; at least 64 random bits; default: random, or for a user one kept beside the card)")
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
		Username: m.user, Password: pw, ClientID: m.clientID, Logger: log})
}

// userClientID is the MQTT client identifier of a user's card, kept in
// path (made on first use: "tagauth-u-" and 128 random bits, mode 0600).
// Over MQTT the gateway counts a user's failed logins per client
// identifier (its verified source), and a source where the user logged in
// lately is familiar: failed logins forged by others from other sources
// do not lock it. A new identifier per run would never be familiar. Two
// runs with one card at once share it, and the broker then drops the
// older connection (which reconnects): give one --mqtt-client-id.
func userClientID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if len(id) < 16 || strings.ContainsAny(id, "/+#") {
			return "", fmt.Errorf("%s: not an MQTT client identifier; remove it to make a new one", path)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	id := "tagauth-u-" + hex.EncodeToString(r[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("keeping the MQTT client identifier: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(id + "\n"); err != nil {
		return "", err
	}
	return id, f.Close()
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
