// Package mqtttest runs a Mosquitto broker of a test's own, with a
// password file and an ACL file, on a free loopback port.
package mqtttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Broker is a running mosquitto process.
type Broker struct {
	t    testing.TB
	dir  string
	conf string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	stderr bytes.Buffer
}

// binary finds mosquitto, or ends the test: Fatal under CI=true, Skip
// otherwise.
func binary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	msg := "mosquitto is not installed: apt-get install mosquitto (the tests start their own broker)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Start runs a broker that authenticates users (name -> password) and
// applies the ACL file acl (its text), with TCP_NODELAY. It is stopped
// when the test ends.
func Start(t testing.TB, acl string, users map[string]string) *Broker {
	t.Helper()
	binary(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for u, p := range users {
		out, err := exec.Command("mosquitto_passwd", "-b", pw, u, p).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	aclPath := filepath.Join(dir, "acl")
	if err := os.WriteFile(aclPath, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	return StartConf(t, fmt.Sprintf("allow_anonymous false\npassword_file %s\nacl_file %s\n", pw, aclPath))
}

// StartConf runs a broker on a free loopback port with TCP_NODELAY and
// the listener options in conf (such as cafile, certfile, keyfile for
// TLS). It is stopped when the test ends.
func StartConf(t testing.TB, conf string) *Broker {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	b := &Broker{t: t, dir: dir, conf: filepath.Join(dir, "mosquitto.conf"), port: freePort(t)}
	// Run as root, mosquitto would switch to the user "mosquitto", who
	// cannot read the test's files: stay who we are.
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	full := fmt.Sprintf("user %s\nper_listener_settings false\nset_tcp_nodelay true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlistener %d 127.0.0.1\n%s",
		me, b.port, conf)
	if err := os.WriteFile(b.conf, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start(bin)
	t.Cleanup(b.Stop)
	return b
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (b *Broker) start(bin string) {
	b.t.Helper()
	cmd := exec.Command(bin, "-c", b.conf)
	b.stderr.Reset()
	cmd.Stderr = &b.stderr
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b.t.Fatalf("mosquitto exited: %s", b.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto not listening on %s after 10 s: %s", b.Addr(), b.stderr.String())
		}
	}
}

// Addr is the broker's "127.0.0.1:port".
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// URL is the broker's tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// PID is the broker process's id (for its CPU time in /proc).
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd.Process.Pid
}

// Stop kills the broker and waits for it.
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// Restart stops the broker and starts it again on the same port; every
// client loses its connection and its subscriptions.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start(b.cmd.Path)
}

// Raw connects a bare paho client as user (to send hand-made requests),
// subscribed to its reply topic; answers arrive on the channel. The
// client is closed when the test ends.
func Raw(t testing.TB, b *Broker, user, password string) (*paho.Client, string, chan *paho.Publish) {
	t.Helper()
	var id [16]byte
	rand.Read(id[:])
	cid := "raw-" + hex.EncodeToString(id[:])
	nc, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *paho.Publish, 64)
	c := paho.NewClient(paho.ClientConfig{Conn: nc, ClientID: cid,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			ch <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: cid, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(password)})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	reply := "tagauth/v1/reply/" + cid
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: reply, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return c, reply, ch
}
