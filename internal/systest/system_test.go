package systest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/device"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/memnet"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/internal/store/postgres/pgtest"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// Cards use a cheap Argon2id, which the gateway accepts with
// InsecureTestKDF.
var testKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

const password = "correct horse"

// protoCfg is the cards' configuration. Its clock never gives one
// millisecond twice: logins in process follow each other faster than
// that, and the classic profile tells a replay by its timestamp.
var protoCfg = protocol.Config{Now: strictClock(), Rand: rand.Reader}

func strictClock() func() time.Time {
	var mu sync.Mutex
	var last time.Time
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now().Truncate(time.Millisecond)
		if !now.After(last) {
			now = last.Add(time.Millisecond)
		}
		last = now
		return now
	}
}

// node is one gateway in the test's process.
type node struct {
	g     *gateway.Gateway
	hc    *http.Client
	token string
}

// world is a network with gateways, device agents and users.
type world struct {
	t   *testing.T
	nw  *memnet.Network
	gws []*node
}

func newWorld(t *testing.T) *world {
	return &world{t: t, nw: new(memnet.Network)}
}

// listener returns a client's Listen function: fresh endpoints at ip.
func (w *world) listener(ip string) func(context.Context) (coap.PacketConn, error) {
	at := netip.AddrPortFrom(netip.MustParseAddr(ip), 0)
	return func(context.Context) (coap.PacketConn, error) {
		c, err := w.nw.Listen(at)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// startGateway opens a gateway on dir whose verify service listens at
// coapAddr on the in-process network, and runs it until the test ends.
func (w *world) startGateway(dir, coapAddr string, edit func(*gateway.Config)) *node {
	t := w.t
	t.Helper()
	cfg := gateway.Config{
		DataDir:          dir,
		Profile:          protocol.Hardened,
		CoAPConn:         w.nw.MustListen(coapAddr),
		AdminAddr:        "127.0.0.1:0",
		AuditOut:         io.Discard,
		AuditSampleEvery: -1,
		InsecureTestKDF:  true,
		AllowAll:         true,
	}
	if edit != nil {
		edit(&cfg)
	}
	g, err := gateway.Open(cfg)
	if err != nil {
		t.Fatalf("gateway.Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	})
	tok, err := os.ReadFile(filepath.Join(dir, adminapi.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	hc, err := adminapi.PinnedClient(g.Fingerprint(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{g: g, hc: hc, token: strings.TrimSpace(string(tok))}
	w.gws = append(w.gws, n)
	return n
}

// admin calls gateway n's admin API.
func (w *world) admin(n *node, method, path string, in, out any) {
	w.t.Helper()
	if err := adminapi.DoJSON(context.Background(), n.hc, method, n.g.AdminURL()+path, n.token, in, out); err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// enrol enrols user id through n and returns the unlocked card.
func (w *world) enrol(n *node, id string, p protocol.Profile) *protocol.User {
	w.t.Helper()
	return w.unlock(w.enrolCard(n, id, p), password)
}

// enrolCard enrols user id through n and returns the card.
func (w *world) enrolCard(n *node, id string, p protocol.Profile) protocol.Card {
	w.t.Helper()
	var code adminapi.EnrolCode
	w.admin(n, http.MethodPost, "/v1/enrol-codes", adminapi.EnrolCodeRequest{User: id}, &code)
	card, err := userclient.Enroll(context.Background(), n.hc, n.g.AdminURL(), code.Code, id, password, p, testKDF, protoCfg)
	if err != nil {
		w.t.Fatalf("enrol %s: %v", id, err)
	}
	return card
}

func (w *world) unlock(card protocol.Card, pw string) *protocol.User {
	w.t.Helper()
	u, err := protocol.Unlock(card, pw, protoCfg)
	if err != nil {
		w.t.Fatalf("unlock: %v", err)
	}
	w.t.Cleanup(u.Close)
	return u
}

type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// provision provisions device id through n.
func (w *world) provision(n *node, id string) credfile.Credential {
	w.t.Helper()
	var raw rawJSON
	w.admin(n, http.MethodPost, "/v1/devices", adminapi.DeviceRequest{ID: id, Group: "plant"}, &raw)
	c, err := credfile.Unmarshal(raw)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// startDevice runs a device agent for cred at addr; it relays to the
// gateway its credential names.
func (w *world) startDevice(cred credfile.Credential, addr string) string {
	t := w.t
	t.Helper()
	at := netip.MustParseAddrPort(addr)
	a, err := device.New(device.Config{
		Credential: cred,
		Conn:       w.nw.MustListen(addr),
		Client:     &coap.Client{Listen: w.listener(at.Addr().String())},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("device Run: %v", err)
		}
	})
	return addr
}

// login logs u in to the device did at addr from the client address ip.
func (w *world) login(u *protocol.User, ip, addr, did string) (*userclient.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := userclient.Login(ctx, u, &coap.Client{Listen: w.listener(ip)}, addr, did)
	if err == nil {
		w.t.Cleanup(c.Close)
	}
	return c, err
}

// mustTask runs a task on an established session and checks its answer.
func (w *world) mustTask(c *userclient.Conn, name, args, want string) {
	w.t.Helper()
	tr, err := c.Task(context.Background(), name, args)
	if err != nil || !tr.OK || !strings.Contains(tr.Result, want) {
		w.t.Fatalf("task %s(%s): %+v %v, want a result with %q", name, args, tr, err, want)
	}
}

// TestSystem: enrolment, login, tasks, revocation and lockout through a
// gateway and a device agent, over the in-process network.
func TestSystem(t *testing.T) {
	for _, p := range []protocol.Profile{protocol.Hardened, protocol.Classic} {
		t.Run(p.String(), func(t *testing.T) {
			w := newWorld(t)
			gw := w.startGateway(t.TempDir(), "10.0.0.1:5683", func(c *gateway.Config) { c.Profile = p })
			cred := w.provision(gw, "sensor-7")
			if cred.Gateway != "10.0.0.1:5683" {
				t.Fatalf("credential names gateway %q, want the in-process address", cred.Gateway)
			}
			dev := w.startDevice(cred, "10.0.0.2:5683")
			alice := w.enrol(gw, "alice", p)
			bob := w.enrol(gw, "bob", p)

			t.Run("login and tasks", func(t *testing.T) {
				c, err := w.login(alice, "10.1.0.1", dev, "sensor-7")
				if err != nil {
					t.Fatal(err)
				}
				w.mustTask(c, "sensor.read", "temperature", "temperature")
				w.mustTask(c, "sensor.read", "temperature", "temperature")
				tr, err := c.Task(context.Background(), "no.such.task", "")
				if err != nil || tr.OK || !strings.Contains(tr.Error, "unknown task") {
					t.Errorf("unknown task: %+v %v", tr, err)
				}
				p2, did, err := userclient.DeviceInfo(context.Background(), &coap.Client{Listen: w.listener("10.1.0.1")}, dev)
				if err != nil || p2 != p || did != "sensor-7" {
					t.Errorf("device info: %v %q %v", p2, did, err)
				}
				if err := userclient.CheckDevice(context.Background(), &coap.Client{Listen: w.listener("10.1.0.1")}, dev, "sensor-8", p); !errors.Is(err, userclient.ErrWrongDevice) {
					t.Errorf("check of the wrong device: %v", err)
				}
			})

			t.Run("revocation", func(t *testing.T) {
				if _, err := w.login(bob, "10.1.0.2", dev, "sensor-7"); err != nil {
					t.Fatalf("bob before revocation: %v", err)
				}
				w.admin(gw, http.MethodPost, "/v1/users/revoke", adminapi.IDRequest{ID: "bob"}, nil)
				if _, err := w.login(bob, "10.1.0.2", dev, "sensor-7"); !errors.Is(err, protocol.ErrRejected) {
					t.Fatalf("revoked bob logs in: %v, want rejected", err)
				}
				if _, err := w.login(alice, "10.1.0.1", dev, "sensor-7"); err != nil {
					t.Fatalf("alice after bob's revocation: %v", err)
				}
			})

			t.Run("lockout", func(t *testing.T) {
				if p != protocol.Classic {
					// Under hardened the card itself refuses most wrong
					// passwords, so they never reach the gateway.
					t.Skip("wrong passwords reach the gateway under classic")
				}
				card := w.enrolCard(gw, "carol", p)
				carol := w.unlock(card, password)
				if _, err := w.login(carol, "10.1.0.3", dev, "sensor-7"); err != nil {
					t.Fatal(err)
				}
				for i := range 5 {
					wrong := w.unlock(card, fmt.Sprint("guess ", i))
					if _, err := w.login(wrong, "10.1.0.3", dev, "sensor-7"); !errors.Is(err, protocol.ErrRejected) {
						t.Fatalf("guess %d: %v, want rejected", i, err)
					}
				}
				if _, err := w.login(carol, "10.1.0.3", dev, "sensor-7"); !errors.Is(err, protocol.ErrRejected) {
					t.Fatalf("the right password after five wrong ones: %v, want rejected (locked)", err)
				}
				w.admin(gw, http.MethodPost, "/v1/users/unlock", adminapi.IDRequest{ID: "carol"}, nil)
				if _, err := w.login(carol, "10.1.0.3", dev, "sensor-7"); err != nil {
					t.Fatalf("after unlock: %v", err)
				}
			})

			t.Run("device revocation", func(t *testing.T) {
				w.admin(gw, http.MethodPost, "/v1/devices/revoke", adminapi.IDRequest{ID: "sensor-7"}, nil)
				if _, err := w.login(alice, "10.1.0.1", dev, "sensor-7"); !errors.Is(err, protocol.ErrRejected) {
					t.Fatalf("login to a revoked device: %v, want rejected", err)
				}
			})
		})
	}
}

// TestReplicasChangeFeed: two gateways on one PostgreSQL schema. A
// replica opened after an enrolment serves it at once (it loads the
// registry), and a revocation made through one replica reaches the other
// through the change feed, which the spec bounds to about a second.
func TestReplicasChangeFeed(t *testing.T) {
	storeURL, _ := pgtest.Schema(t)
	w := newWorld(t)
	// Each replica opens the shared store itself, as the command line does
	// from --store.
	shared := func(c *gateway.Config) {
		st, err := postgres.Open(context.Background(), storeURL, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		c.Store = st
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a := w.startGateway(dirA, "10.0.0.1:5683", shared)
	alice := w.enrol(a, "alice", protocol.Hardened)
	cred := w.provision(a, "sensor-7")
	// Every replica needs the same key file (docs/OPERATIONS.md#replicas).
	keys, err := os.ReadFile(filepath.Join(dirA, gateway.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, gateway.KeyFileName), keys, 0o600); err != nil {
		t.Fatal(err)
	}
	w.startGateway(dirB, "10.0.0.11:5683", shared)
	// The device relays to replica B, which never saw the admin calls.
	cred.Gateway = "10.0.0.11:5683"
	dev := w.startDevice(cred, "10.0.0.2:5683")
	c, err := w.login(alice, "10.1.0.1", dev, "sensor-7")
	if err != nil {
		t.Fatalf("login through the replica that did not enrol: %v", err)
	}
	w.mustTask(c, "sensor.read", "temperature", "temperature")

	w.admin(a, http.MethodPost, "/v1/users/revoke", adminapi.IDRequest{ID: "alice"}, nil)
	// Replica B applies the change when its feed delivers it: log in
	// until B refuses, each try paced by its own round trip, within the
	// bound the feed promises (with room for a loaded machine).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tries := 0
	for {
		tries++
		_, err := w.login(alice, "10.1.0.1", dev, "sensor-7")
		if errors.Is(err, protocol.ErrRejected) {
			break
		}
		if err != nil {
			t.Fatalf("login %d after the revocation: %v, want success or rejected", tries, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("replica B still lets alice in %d logins after her revocation through A", tries)
		}
	}
	t.Logf("replica B refused alice after %d logins", tries)
}
