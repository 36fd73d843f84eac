package device

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// fastKDF keeps Argon2id cheap in tests; the parameters are within range.
var fastKDF = protocol.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

const (
	password = "correct horse"
	deviceID = "sensor-7"
)

var profiles = []protocol.Profile{protocol.Classic, protocol.Hardened}

// clock is the protocol clock every party of a test shares; only the test
// moves it. CoAP retransmission timers run on real time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeGateway is protocol.Gateway behind a real CoAP server on loopback,
// with an in-memory registry. hang makes /tagauth/verify wait for release.
type fakeGateway struct {
	reg     *registry.Memory
	mk      protocol.MasterKey
	addr    string
	hang    atomic.Bool
	arrived chan struct{} // one value per verify that hangs
	release chan struct{}
	// answer, when set, replaces the gateway's answer to every verify.
	answer atomic.Pointer[func() (coap.Code, []byte)]
	// sources are the Source options of the verifies, in order ("" for
	// none).
	smu     sync.Mutex
	sources []string
}

// seenSources returns the Source options the gateway has seen.
func (fg *fakeGateway) seenSources() []string {
	fg.smu.Lock()
	defer fg.smu.Unlock()
	return slices.Clone(fg.sources)
}

func startGateway(t *testing.T, p protocol.Profile, clk *clock) *fakeGateway {
	t.Helper()
	fg := &fakeGateway{reg: registry.NewMemory(p, true), mk: protocol.MasterKey{Version: 1},
		arrived: make(chan struct{}, 64), release: make(chan struct{})}
	rand.Read(fg.mk.Key[:])
	fg.reg.AddKey(fg.mk)
	g, err := protocol.NewGateway(p, fg.reg, replay.New(4096), protocol.Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := coap.NewMux()
	mux.Handle(coapbind.PathVerify, coap.HandlerFunc(func(ctx context.Context, req *coap.Request, dst []byte) (coap.Code, []byte) {
		fg.smu.Lock()
		fg.sources = append(fg.sources, string(req.Source))
		fg.smu.Unlock()
		if fg.hang.Load() {
			fg.arrived <- struct{}{}
			<-fg.release
		}
		if f := fg.answer.Load(); f != nil {
			code, b := (*f)()
			return code, append(dst, b...)
		}
		out, _, err := g.Verify(ctx, dst, req.Payload)
		if err != nil {
			return coapbind.Code(protocol.CodeOf(err)), out
		}
		return coap.Changed, out
	}))
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv := &coap.Server{Handler: mux, Workers: MaxRelays + 8}
	go srv.Serve(conn)
	t.Cleanup(func() {
		close(fg.release)
		conn.Close()
	})
	fg.addr = conn.LocalAddr().String()
	return fg
}

// rig is a fake gateway, a real agent and the means to enrol users.
type rig struct {
	t     *testing.T
	p     protocol.Profile
	clk   *clock
	ucfg  protocol.Config // the users' protocol config
	gw    *fakeGateway
	agent *Agent
	addr  string
	logs  *testenv.LockedBuffer
	cred  protocol.DeviceCredential
	user  *coap.Client
	stop  func() error // cancels Run and returns its error
}

// newRig starts a gateway and an agent for profile p. edit may change the
// agent's config before New; the gateway address can be replaced there.
func newRig(t *testing.T, p protocol.Profile, edit func(*Config)) *rig {
	t.Helper()
	clk := &clock{t: time.Now()}
	r := &rig{t: t, p: p, clk: clk, logs: &testenv.LockedBuffer{}}
	r.ucfg = protocol.Config{Now: clk.Now, Rand: rand.Reader, SessionIdle: time.Hour, SessionLife: 24 * time.Hour}
	r.gw = startGateway(t, p, clk)
	var err error
	r.cred, err = protocol.ProvisionDevice(p, deviceID, r.gw.mk)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.gw.reg.AddDevice(deviceID); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Credential:     credfile.Credential{DeviceCredential: r.cred, Gateway: r.gw.addr},
		Listen:         "127.0.0.1:0",
		Logger:         slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		GatewayTimeout: 5 * time.Second,
		Client:         &coap.Client{ACKTimeout: 50 * time.Millisecond},
		Now:            clk.Now,
	}
	if edit != nil {
		edit(&cfg)
	}
	r.agent, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.addr = r.agent.Addr().String()
	r.user = &coap.Client{ACKTimeout: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.agent.Run(ctx) }()
	var once sync.Once
	var runErr error
	r.stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run returned %v", err)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("agent log:\n%s", r.logs)
		}
	})
	return r
}

// enrol registers id with the gateway and returns the unlocked card.
func (r *rig) enrol(id string) *protocol.User {
	r.t.Helper()
	req, err := protocol.NewRegistrationRequest(r.p, id, password, fastKDF, r.ucfg)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.gw.reg.AddUser(id); err != nil {
		r.t.Fatal(err)
	}
	card, err := protocol.IssueCard(&req, r.gw.mk, r.ucfg)
	if err != nil {
		r.t.Fatal(err)
	}
	u, err := protocol.Unlock(card, password, r.ucfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

func (r *rig) login(u *protocol.User) (*userclient.Conn, error) {
	return userclient.Login(context.Background(), u, r.user, r.addr, deviceID)
}

func (r *rig) mustLogin(u *protocol.User) *userclient.Conn {
	r.t.Helper()
	c, err := r.login(u)
	if err != nil {
		r.t.Fatalf("login: %v", err)
	}
	r.t.Cleanup(c.Close)
	return c
}

// post sends one request to the agent with a fresh CoAP client socket.
func (r *rig) post(path string, payload []byte) (coap.Code, []byte) {
	r.t.Helper()
	code, resp, err := r.user.Post(context.Background(), r.addr, path, payload)
	if err != nil {
		r.t.Fatalf("POST %s: %v", path, err)
	}
	return code, resp
}

// wantError checks that a reply is the error message of spec section 7 with
// code c and the CoAP code of section 11.
func wantError(t *testing.T, what string, code coap.Code, resp []byte, c protocol.Code) {
	t.Helper()
	_, got, err := protocol.ParseError(resp)
	if err != nil || got != c || code != coapbind.Code(c) {
		t.Fatalf("%s: answer %s %x, want %s with error %s", what, code, resp, coapbind.Code(c), c)
	}
}

func TestLoginAndBuiltinTasks(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.String(), func(t *testing.T) {
			r := newRig(t, p, nil)
			ctx := context.Background()
			alice := r.mustLogin(r.enrol("alice"))
			bob := r.mustLogin(r.enrol("bob"))

			if st := r.agent.Stats(); st.Sessions != 2 || st.Pending != 0 {
				t.Fatalf("stats after two logins: %+v, want 2 sessions and 0 pending", st)
			}
			ds := r.agent.lookup(alice.Session.SID())
			if ds == nil || ds.user != "alice" || ds.s.Fingerprint() != alice.Session.Fingerprint() {
				t.Fatal("the device's session for alice is missing, has the wrong user or another key")
			}

			resp, err := alice.Task(ctx, "echo", "hello, device")
			if err != nil || !resp.OK || resp.Result != "hello, device" {
				t.Fatalf("echo: %+v %v", resp, err)
			}

			resp, err = alice.Task(ctx, "sensor.read", "")
			if err != nil || !resp.OK {
				t.Fatalf("sensor.read: %+v %v", resp, err)
			}
			var got Reading
			if err := json.Unmarshal([]byte(resp.Result), &got); err != nil {
				t.Fatalf("sensor.read result %q: %v", resp.Result, err)
			}
			want, _ := SensorReading("temperature", r.clk.Now())
			if got.Sensor != "temperature" || got.Value != want.Value || !got.Simulated || !got.Time.Equal(want.Time) {
				t.Fatalf("sensor.read = %+v, want %+v", got, want)
			}
			resp, err = alice.Task(ctx, "sensor.read", "pressure")
			if err != nil || resp.OK || !strings.Contains(resp.Error, "unknown sensor") {
				t.Fatalf("sensor.read pressure: %+v %v", resp, err)
			}

			for _, c := range []struct {
				conn *userclient.Conn
				inst string
			}{{alice, "open valve 3"}, {bob, "close valve 3"}} {
				resp, err = c.conn.Task(ctx, "control.write", c.inst)
				if err != nil || !resp.OK || resp.Result != "ok" {
					t.Fatalf("control.write: %+v %v", resp, err)
				}
			}
			ctl := r.agent.Controls()
			if len(ctl) != 2 || ctl[0].User != "alice" || ctl[0].Instruction != "open valve 3" || !ctl[0].Time.Equal(r.clk.Now()) ||
				ctl[1].User != "bob" || ctl[1].Instruction != "close valve 3" {
				t.Fatalf("Controls() = %+v, want alice's then bob's instruction", ctl)
			}

			resp, err = alice.Task(ctx, "reboot", "")
			if err != nil || resp.OK || !strings.Contains(resp.Error, "unknown task") {
				t.Fatalf("unknown task: %+v %v", resp, err)
			}

			logs := r.logs.String()
			for _, secret := range []string{"open valve", "hello, device", hex.EncodeToString(r.cred.Tag[:]), password} {
				if strings.Contains(logs, secret) {
					t.Errorf("the log contains %q", secret)
				}
			}
			if !strings.Contains(logs, "outcome=established") || !strings.Contains(logs, "user=alice") {
				t.Errorf("the log does not record alice's login:\n%s", logs)
			}
		})
	}
}

func TestHandleCustomTask(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) { c.NoBuiltins = true })
	var gotUser atomic.Value
	r.agent.Handle("valve.open", func(_ context.Context, user string, args []byte) ([]byte, error) {
		gotUser.Store(user)
		return append([]byte("opened "), args...), nil
	})
	r.agent.Handle("fail", func(context.Context, string, []byte) ([]byte, error) {
		return nil, errors.New("valve jammed")
	})
	r.agent.Handle("panic", func(context.Context, string, []byte) ([]byte, error) { panic("bug") })
	r.agent.Handle("big", func(context.Context, string, []byte) ([]byte, error) {
		return bytes.Repeat([]byte("x"), MaxResult), nil
	})
	c := r.mustLogin(r.enrol("carol"))
	ctx := context.Background()

	resp, err := c.Task(ctx, "valve.open", "V3")
	if err != nil || !resp.OK || resp.Result != "opened V3" || gotUser.Load() != "carol" {
		t.Fatalf("valve.open: %+v %v, handler saw user %v", resp, err, gotUser.Load())
	}
	resp, err = c.Task(ctx, "echo", "x")
	if err != nil || resp.OK {
		t.Fatalf("echo with NoBuiltins: %+v %v, want unknown task", resp, err)
	}
	for name, want := range map[string]string{"fail": "valve jammed", "panic": "task handler failed", "big": "result too large"} {
		resp, err = c.Task(ctx, name, "")
		if err != nil || resp.OK || !strings.Contains(resp.Error, want) {
			t.Errorf("%s: %+v %v, want an error saying %q", name, resp, err, want)
		}
	}
	// The session survives failed tasks.
	if resp, err = c.Task(ctx, "valve.open", "V4"); err != nil || resp.Result != "opened V4" {
		t.Fatalf("valve.open after failures: %+v %v", resp, err)
	}

	// A sealed plaintext that is not a task object gets an answer, sealed.
	rec, _ := c.Session.Seal(nil, []byte(`{"task":"valve.open","args":"V5","sudo":true}`))
	code, sealed := r.post(coapbind.PathTask, rec)
	pt, err := c.Session.Open(nil, sealed)
	if code != coap.Changed || err != nil || !bytes.Contains(pt, []byte(`"ok":false`)) {
		t.Fatalf("task with an unknown field: %s %q %v", code, pt, err)
	}
}

func TestGatewayUnreachable(t *testing.T) {
	closed, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().String()
	closed.Close()
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	for name, gw := range map[string]string{"closed port": closedAddr, "silent": silent.LocalAddr().String()} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, protocol.Hardened, func(c *Config) {
				c.Credential.Gateway = gw
				c.GatewayTimeout = 300 * time.Millisecond
			})
			_, err := r.login(r.enrol("alice"))
			if !errors.Is(err, protocol.ErrBusy) || !strings.Contains(err.Error(), "5.03") {
				t.Fatalf("login with the gateway %s: %v, want busy (5.03)", name, err)
			}
			logs := r.logs.String()
			if !strings.Contains(logs, "gateway unreachable") || !strings.Contains(logs, gw) || !strings.Contains(logs, "after") {
				t.Errorf("the log does not say which gateway was unreachable after how many tries:\n%s", logs)
			}
			if st := r.agent.Stats(); st.Pending != 0 || st.Sessions != 0 {
				t.Errorf("stats after a failed relay: %+v", st)
			}
		})
	}
}

func TestGatewayRefusalRelayed(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.String(), func(t *testing.T) {
			r := newRig(t, p, nil)
			u := r.enrol("mallory")
			if err := r.gw.reg.RevokeUser("mallory"); err != nil {
				t.Fatal(err)
			}
			_, err := r.login(u)
			if !errors.Is(err, protocol.ErrRejected) || !strings.Contains(err.Error(), "4.01") {
				t.Fatalf("revoked user's login: %v, want rejected (4.01)", err)
			}
			if st := r.agent.Stats(); st.Pending != 0 || st.Sessions != 0 {
				t.Errorf("stats after a refusal: %+v", st)
			}
			if !strings.Contains(r.logs.String(), "gateway refused: rejected") {
				t.Errorf("the log does not record the gateway's refusal:\n%s", r.logs)
			}
			// An unknown user too: the wire does not say which.
			_, err = r.login(r.enrolOnlyCard("eve"))
			if !errors.Is(err, protocol.ErrRejected) {
				t.Fatalf("unknown user's login: %v, want rejected", err)
			}
		})
	}
}

// enrolOnlyCard makes a card the gateway's registry does not know.
func (r *rig) enrolOnlyCard(id string) *protocol.User {
	r.t.Helper()
	req, err := protocol.NewRegistrationRequest(r.p, id, password, fastKDF, r.ucfg)
	if err != nil {
		r.t.Fatal(err)
	}
	card, err := protocol.IssueCard(&req, r.gw.mk, r.ucfg)
	if err != nil {
		r.t.Fatal(err)
	}
	u, err := protocol.Unlock(card, password, r.ucfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

// startLogin sends m1 and returns the card's login and the device's m4,
// leaving the login unconfirmed.
func (r *rig) startLogin(u *protocol.User) (*protocol.Login, []byte) {
	r.t.Helper()
	l, m1, err := u.Login(nil, deviceID)
	if err != nil {
		r.t.Fatal(err)
	}
	code, m4 := r.post(coapbind.PathLogin, m1)
	if code != coap.Changed {
		r.t.Fatalf("login: %s %x", code, m4)
	}
	return l, m4
}

// rawPost sends one CON POST from a socket bound to from and returns the
// answer: internal/coap's client cannot choose its source address.
func rawPost(t *testing.T, from, to, path string, payload []byte) (coap.Code, []byte) {
	t.Helper()
	laddr, err := net.ResolveUDPAddr("udp", from)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		t.Skipf("cannot bind %s: %v", from, err)
	}
	defer conn.Close()
	opts, _, err := make(message.Options, 0, 8).SetPath(make([]byte, len(path)), path)
	if err != nil {
		t.Fatal(err)
	}
	opts = opts.Add(message.Option{ID: message.ContentFormat, Value: []byte{byte(message.AppOctets)}})
	m := message.Message{Token: []byte{9, 8, 7, 6}, Options: opts, Code: codes.POST, Payload: payload, MessageID: 4242, Type: message.Confirmable}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP(b, raddr); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no answer to the raw POST: %v", err)
	}
	resp := message.Message{Options: make(message.Options, 0, 8)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &resp); err != nil {
		t.Fatal(err)
	}
	return coap.Code(resp.Code), resp.Payload
}

// TestConfirmFoundBySID: the confirm request names its login by sid (spec
// section 11); the agent checks one tau_i, whatever address m5 comes from.
func TestConfirmFoundBySID(t *testing.T) {
	r := newRig(t, protocol.Hardened, nil)
	la, m4a := r.startLogin(r.enrol("alice"))
	lb, m4b := r.startLogin(r.enrol("bob"))
	sa, m5a, err := la.Finish(nil, m4a)
	if err != nil {
		t.Fatal(err)
	}
	sb, m5b, err := lb.Finish(nil, m4b)
	if err != nil {
		t.Fatal(err)
	}
	wantPending := func(what string, pending, sessions int) {
		t.Helper()
		if st := r.agent.Stats(); st.Pending != pending || st.Sessions != sessions {
			t.Fatalf("%s: %+v, want %d pending and %d sessions", what, st, pending, sessions)
		}
	}
	wantPending("before m5", 2, 0)
	confirm := func(s *protocol.Session, m5 []byte) []byte { return protocol.AppendConfirmPayload(nil, s.SID(), m5) }

	// alice's sid with bob's tau_i: refused, and both logins stay pending.
	code, resp := r.post(coapbind.PathConfirm, confirm(sa, m5b))
	wantError(t, "a valid sid with another login's tau_i", code, resp, protocol.ErrRejected)
	wantPending("after another login's tau_i", 2, 0)
	// A forged tau_i does not cancel the genuine login either.
	forged := bytes.Clone(m5a)
	forged[len(forged)-1] ^= 1
	code, resp = r.post(coapbind.PathConfirm, confirm(sa, forged))
	wantError(t, "forged m5", code, resp, protocol.ErrRejected)
	// An unknown sid is rejected.
	unknown := confirm(sa, m5a)
	unknown[0] ^= 1
	code, resp = r.post(coapbind.PathConfirm, unknown)
	wantError(t, "unknown sid", code, resp, protocol.ErrRejected)
	// Under 9 bytes: malformed, with profile byte 0x00.
	for _, short := range [][]byte{nil, {0x02}, confirm(sa, m5a)[:protocol.SIDSize]} {
		code, resp = r.post(coapbind.PathConfirm, short)
		wantError(t, fmt.Sprintf("confirm payload of %d bytes", len(short)), code, resp, protocol.ErrMalformed)
		if p, _, _ := protocol.ParseError(resp); p != 0 {
			t.Errorf("confirm payload of %d bytes: error carries profile %v, want 0x00", len(short), p)
		}
	}
	wantPending("after the refusals", 2, 0)

	// alice's m5 from another address than her m1: accepted.
	_, port, _ := net.SplitHostPort(r.addr)
	code, resp = rawPost(t, "127.0.0.2:0", "127.0.0.1:"+port, coapbind.PathConfirm, confirm(sa, m5a))
	if code != coap.Changed || len(resp) != 0 {
		t.Fatalf("m5 from another address: %s %x, want 2.04 and no payload", code, resp)
	}
	wantPending("after alice's m5", 1, 1)
	rec, _ := sa.Seal(nil, []byte(`{"task":"echo","args":"hi"}`))
	code, sealed := r.post(coapbind.PathTask, rec)
	if pt, err := sa.Open(nil, sealed); code != coap.Changed || err != nil || !bytes.Contains(pt, []byte(`"result":"hi"`)) {
		t.Fatalf("task after confirm: %s %q %v", code, pt, err)
	}
	// A second m5 (a new request, not a retransmission): the login has
	// passed that step, so it is replayed (section 7) and confirms nothing.
	code, resp = r.post(coapbind.PathConfirm, confirm(sa, m5a))
	wantError(t, "m5 again", code, resp, protocol.ErrReplayed)
	wantPending("after m5 again", 1, 1)

	// bob's m5 after the device dropped his pending login (dT after m4).
	r.clk.Advance(protocol.DefaultWindow + time.Millisecond)
	code, resp = r.post(coapbind.PathConfirm, confirm(sb, m5b))
	wantError(t, "m5 after the pending login expired", code, resp, protocol.ErrRejected)
	wantPending("after the late m5", 0, 1)
}

func TestTaskRefusals(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.String(), func(t *testing.T) {
			r := newRig(t, p, nil)
			c := r.mustLogin(r.enrol("alice"))
			rec, err := c.Session.Seal(nil, []byte(`{"task":"echo","args":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			unknown := append([]byte(nil), rec...)
			unknown[2] ^= 0xff // the sid
			code, resp := r.post(coapbind.PathTask, unknown)
			wantError(t, "unknown sid", code, resp, protocol.ErrRejected)

			tampered := append([]byte(nil), rec...)
			tampered[len(tampered)-1] ^= 1
			code, resp = r.post(coapbind.PathTask, tampered)
			wantError(t, "tampered record", code, resp, protocol.ErrRejected)

			code, resp = r.post(coapbind.PathTask, rec[:10])
			wantError(t, "truncated record", code, resp, protocol.ErrMalformed)

			if code, _ := r.post(coapbind.PathTask, rec); code != coap.Changed {
				t.Fatalf("genuine record after the refusals: %s", code)
			}
			// The same record again, in a new CoAP exchange: a replay.
			code, resp = r.post(coapbind.PathTask, rec)
			wantError(t, "replayed record", code, resp, protocol.ErrReplayed)
		})
	}
}

func TestSessionExpiry(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.String(), func(t *testing.T) {
			r := newRig(t, p, func(c *Config) { c.SessionIdle = time.Minute })
			ctx := context.Background()
			a := r.mustLogin(r.enrol("alice"))
			b := r.mustLogin(r.enrol("bob"))
			if _, err := a.Task(ctx, "echo", "x"); err != nil {
				t.Fatal(err)
			}
			r.clk.Advance(2 * time.Minute) // the users' sessions idle for an hour

			// Found by sid, refused by the session itself, then removed.
			_, err := a.Task(ctx, "echo", "x")
			if !errors.Is(err, protocol.ErrRejected) {
				t.Fatalf("task after idle expiry: %v, want rejected", err)
			}
			if r.agent.lookup(a.Session.SID()) != nil {
				t.Fatal("the expired session is still in the table")
			}
			// The janitor removes the other one without a task.
			r.agent.sweep()
			if st := r.agent.Stats(); st.Sessions != 0 {
				t.Fatalf("after the sweep: %+v, want no session", st)
			}
			if _, err := b.Task(ctx, "echo", "x"); !errors.Is(err, protocol.ErrRejected) {
				t.Fatalf("task on a swept session: %v, want rejected", err)
			}
			if !strings.Contains(r.logs.String(), "unknown session") {
				t.Errorf("the log does not say the session was unknown:\n%s", r.logs)
			}
		})
	}
}

// signalHandler passes records on to its slog.Handler and sends on seen
// (without blocking) for each whose message is msg: a test waits on the
// code's own log line instead of polling.
type signalHandler struct {
	slog.Handler
	msg  string
	seen chan<- struct{}
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.seen <- struct{}{}:
		default:
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h signalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return signalHandler{h.Handler.WithAttrs(as), h.msg, h.seen}
}

func (h signalHandler) WithGroup(name string) slog.Handler {
	return signalHandler{h.Handler.WithGroup(name), h.msg, h.seen}
}

func TestMalformedInput(t *testing.T) {
	// The CoAP server counts a malformed datagram, then logs it at debug
	// level: each line says one more is counted.
	dropped := make(chan struct{}, 16)
	r := newRig(t, protocol.Hardened, func(c *Config) {
		c.Logger = slog.New(signalHandler{c.Logger.Handler(), "coap: malformed datagram dropped", dropped})
	})
	conn, err := net.Dial("udp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	garbage := [][]byte{{0xff, 0xff, 0xff, 0xff, 0xff}, {0x00}, bytes.Repeat([]byte{0x4f}, 40)}
	for _, g := range garbage {
		if _, err := conn.Write(g); err != nil {
			t.Fatal(err)
		}
	}
	classicM1 := (&protocol.M1{Profile: protocol.Classic, ID: []byte("alice"), T1: 1}).Append(nil)
	for _, c := range []struct {
		name    string
		path    string
		payload []byte
		want    protocol.Code
		profile protocol.Profile
	}{
		{"garbage m1", coapbind.PathLogin, []byte{0x02, 0x01, 0xde, 0xad}, protocol.ErrMalformed, protocol.Hardened},
		{"empty m1", coapbind.PathLogin, nil, protocol.ErrMalformed, 0},
		{"unknown profile", coapbind.PathLogin, []byte{0x09, 0x01}, protocol.ErrUnsupportedProfile, 0},
		{"classic m1 to a hardened device", coapbind.PathLogin, classicM1, protocol.ErrUnsupportedProfile, protocol.Classic},
		{"garbage m5", coapbind.PathConfirm, append(make([]byte, protocol.SIDSize), 0x02, 0x05, 1), protocol.ErrMalformed, protocol.Hardened},
		{"confirm shorter than sid and a byte", coapbind.PathConfirm, []byte{0x02, 0x05, 1}, protocol.ErrMalformed, 0},
		{"garbage record", coapbind.PathTask, []byte("hello"), protocol.ErrUnsupportedProfile, 0},
		{"short record", coapbind.PathTask, []byte{0x02, 0x10, 1}, protocol.ErrMalformed, protocol.Hardened},
	} {
		code, resp := r.post(c.path, c.payload)
		wantError(t, c.name, code, resp, c.want)
		if p, _, _ := protocol.ParseError(resp); p != c.profile {
			t.Errorf("%s: error carries profile %v, want %v", c.name, p, c.profile)
		}
	}
	if code, _ := r.post("/tagauth/nothing", nil); code != coap.NotFound {
		t.Errorf("unknown path: %s, want 4.04", code)
	}
	// The garbage was sent first, but another worker may still be
	// counting it: wait for the count rather than assume an order.
	timeout := time.After(10 * time.Second)
	for range garbage {
		select {
		case <-dropped:
		case <-timeout:
			t.Fatalf("after 10 s, %d of %d malformed datagrams counted", r.agent.TransportStats().Malformed.Load(), len(garbage))
		}
	}
	if n := r.agent.TransportStats().Malformed.Load(); n != uint64(len(garbage)) {
		t.Errorf("%d malformed datagrams counted, want %d", n, len(garbage))
	}
	if st := r.agent.Stats(); st.Pending != 0 {
		t.Errorf("malformed input left %d pending logins", st.Pending)
	}
	r.mustLogin(r.enrol("alice")) // still serving
}

func TestTablesFull(t *testing.T) {
	t.Run("pending", func(t *testing.T) {
		r := newRig(t, protocol.Hardened, func(c *Config) { c.MaxSessions = 1 })
		r.startLogin(r.enrol("alice")) // never confirmed
		bob := r.enrol("bob")
		if _, err := r.login(bob); !errors.Is(err, protocol.ErrBusy) {
			t.Fatalf("login with the pending table full: %v, want busy", err)
		}
		if !strings.Contains(r.logs.String(), "pending login table full") {
			t.Errorf("the log does not say which table was full:\n%s", r.logs)
		}
		// Once alice's pending login is older than dT it is swept.
		r.clk.Advance(protocol.DefaultWindow + time.Second)
		r.mustLogin(bob)
	})
	t.Run("sessions", func(t *testing.T) {
		r := newRig(t, protocol.Classic, func(c *Config) { c.MaxSessions = 1; c.SessionIdle = time.Minute })
		r.mustLogin(r.enrol("alice"))
		bob := r.enrol("bob")
		if _, err := r.login(bob); !errors.Is(err, protocol.ErrBusy) {
			t.Fatalf("login with the session table full: %v, want busy", err)
		}
		r.clk.Advance(2 * time.Minute)
		r.mustLogin(bob)
	})
}

// TestRelayDoesNotBlockTasks holds more logins at the gateway than the
// machine has CPUs (the CoAP server's default worker count) and checks that
// tasks are still served meanwhile, and that the held logins complete.
func TestRelayDoesNotBlockTasks(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) {
		// The relays must outlast the test's wait, retransmissions
		// included.
		c.GatewayTimeout = time.Minute
		c.Client = &coap.Client{ACKTimeout: time.Second}
	})
	ctx := context.Background()
	c := r.mustLogin(r.enrol("alice"))

	r.gw.hang.Store(true)
	held := min(runtime.GOMAXPROCS(0)+2, MaxRelays)
	slow := &coap.Client{ACKTimeout: 500 * time.Millisecond} // waits 15 s or more
	errs := make(chan error, held)
	for i := range held {
		u := r.enrol("user" + string(rune('a'+i)))
		go func() {
			conn, err := userclient.Login(ctx, u, slow, r.addr, deviceID)
			if err == nil {
				conn.Close()
			}
			errs <- err
		}()
	}
	for range held {
		<-r.gw.arrived
	}
	resp, err := c.Task(ctx, "echo", "still here")
	if err != nil || resp.Result != "still here" {
		t.Fatalf("task while %d logins wait on the gateway: %+v %v", held, resp, err)
	}
	if st := r.agent.Stats(); st.Pending != held {
		t.Errorf("pending = %d, want the %d held logins", st.Pending, held)
	}
	r.gw.hang.Store(false)
	for range held {
		r.gw.release <- struct{}{}
	}
	for range held {
		if err := <-errs; err != nil {
			t.Errorf("held login: %v", err)
		}
	}
	if st := r.agent.Stats(); st.Sessions != held+1 {
		t.Errorf("sessions = %d, want %d", st.Sessions, held+1)
	}
}

func TestRunStopsDuringRelay(t *testing.T) {
	r := newRig(t, protocol.Hardened, func(c *Config) { c.GatewayTimeout = time.Minute })
	r.gw.hang.Store(true)
	u := r.enrol("alice")
	go r.login(u) // fails once the agent stops: that is the point
	<-r.gw.arrived
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := r.agent.Stats(); st.Pending != 0 || st.Sessions != 0 {
		t.Errorf("after Run returned: %+v", st)
	}
	if err := r.agent.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	cred, err := protocol.ProvisionDevice(protocol.Hardened, deviceID, protocol.MasterKey{Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"no gateway":      {Credential: credfile.Credential{DeviceCredential: cred}},
		"bad gateway":     {Credential: credfile.Credential{DeviceCredential: cred, Gateway: "nowhere"}},
		"bad listen":      {Credential: credfile.Credential{DeviceCredential: cred, Gateway: "127.0.0.1:5683"}, Listen: "127.0.0.1:99999"},
		"zero credential": {Credential: credfile.Credential{Gateway: "127.0.0.1:5683"}, Listen: "127.0.0.1:0"},
	} {
		if a, err := New(cfg); err == nil {
			a.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestSensorReading(t *testing.T) {
	at := time.UnixMilli(1_760_000_000_000)
	a, err := SensorReading("", at)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := SensorReading("temperature", at)
	if a != b || !a.Simulated || a.Unit != "celsius" || a.Value < 17.5 || a.Value > 24.5 {
		t.Fatalf("temperature = %+v / %+v", a, b)
	}
	later, _ := SensorReading("temperature", at.Add(3*time.Hour))
	if later.Value == a.Value {
		t.Error("the simulated temperature does not change over three hours")
	}
	h, err := SensorReading("humidity", at)
	if err != nil || h.Unit != "percent" || h.Value < 38 || h.Value > 62 {
		t.Fatalf("humidity = %+v %v", h, err)
	}
	if _, err := SensorReading("pressure", at); err == nil {
		t.Error("an unknown sensor was read")
	}
}

// TestGatewayAnswers checks what the user is told for each kind of answer
// from the gateway: its error codes relayed as they are, an answer that is
// not an error message or an m3 that does not parse reported as internal.
func TestGatewayAnswers(t *testing.T) {
	r := newRig(t, protocol.Hardened, nil)
	u := r.enrol("alice")
	for _, c := range []struct {
		name    string
		code    coap.Code
		payload []byte
		want    protocol.Code
	}{
		{"busy", coap.ServiceUnavailable, protocol.AppendError(nil, protocol.Hardened, protocol.ErrBusy), protocol.ErrBusy},
		{"stale", coap.Unauthorized, protocol.AppendError(nil, protocol.Hardened, protocol.ErrStaleTimestamp), protocol.ErrStaleTimestamp},
		{"replayed", coap.Unauthorized, protocol.AppendError(nil, protocol.Hardened, protocol.ErrReplayed), protocol.ErrReplayed},
		{"malformed", coap.BadRequest, protocol.AppendError(nil, protocol.Hardened, protocol.ErrMalformed), protocol.ErrMalformed},
		{"error without message", coap.Unauthorized, []byte("no"), protocol.ErrInternal},
		{"garbage m3", coap.Changed, []byte{0x02, 0x03, 0x00}, protocol.ErrInternal},
		{"forged m3", coap.Changed, (&protocol.M3{Profile: protocol.Hardened, T3: uint64(r.clk.Now().UnixMilli())}).Append(nil), protocol.ErrRejected},
	} {
		f := func() (coap.Code, []byte) { return c.code, c.payload }
		r.gw.answer.Store(&f)
		l, m1, err := u.Login(nil, deviceID)
		if err != nil {
			t.Fatal(err)
		}
		code, resp := r.post(coapbind.PathLogin, m1)
		wantError(t, c.name, code, resp, c.want)
		l.Close()
	}
	if st := r.agent.Stats(); st.Pending != 0 || st.Sessions != 0 {
		t.Errorf("after refusals: %+v", st)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "m3 does not verify") || !strings.Contains(logs, "gateway answered without a valid error message") {
		t.Errorf("the log lacks the precise reasons:\n%s", logs)
	}
	r.gw.answer.Store(nil)
	r.mustLogin(u)
}

func TestReplayedM1(t *testing.T) {
	r := newRig(t, protocol.Classic, nil)
	l, m1, err := r.enrol("alice").Login(nil, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if code, _ := r.post(coapbind.PathLogin, m1); code != coap.Changed {
		t.Fatalf("first m1: %s", code)
	}
	// A new exchange with the same m1 (a retransmission would reuse the
	// message ID and be answered from the CoAP cache instead).
	code, resp := r.post(coapbind.PathLogin, m1)
	wantError(t, "m1 again", code, resp, protocol.ErrReplayed)
	if st := r.agent.Stats(); st.Sessions != 1 || st.Pending != 0 {
		t.Errorf("after a replayed m1: %+v", st)
	}
}

// TestSlotsFull checks that a request finding every relay or task slot
// taken is answered busy at once instead of waiting for a worker.
func TestSlotsFull(t *testing.T) {
	r := newRig(t, protocol.Hardened, nil)
	u := r.enrol("alice")
	c := r.mustLogin(u)
	for range MaxRelays {
		r.agent.relays <- struct{}{}
	}
	if _, err := r.login(u); !errors.Is(err, protocol.ErrBusy) {
		t.Fatalf("login with every relay slot taken: %v, want busy", err)
	}
	for range MaxTasks {
		r.agent.tasks <- struct{}{}
	}
	if _, err := c.Task(context.Background(), "echo", "x"); !errors.Is(err, protocol.ErrBusy) {
		t.Fatalf("task with every task slot taken: %v, want busy", err)
	}
	for range MaxRelays {
		<-r.agent.relays
	}
	for range MaxTasks {
		<-r.agent.tasks
	}
	c2 := r.mustLogin(u)
	if resp, err := c2.Task(context.Background(), "echo", "back"); err != nil || resp.Result != "back" {
		t.Fatalf("task after the slots freed: %+v %v", resp, err)
	}
}
