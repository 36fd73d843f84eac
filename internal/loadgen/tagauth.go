package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/device"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// Client-side retransmission: a loopback datagram is lost only when a
// socket buffer overflows, so the first timeout is short and the total
// wait bounded (0.5 + 1 + 2 s).
const (
	ackTimeout    = 500 * time.Millisecond
	maxRetransmit = 2
)

// userOf is the user that worker w of workers uses for its n-th
// operation: w, w+workers, w+2*workers... below users, in turn. No two
// workers share a user unless there are fewer users than workers, which
// matters under classic: its replay check is on (ID_i, T1), so one user
// logging in twice within a millisecond is refused as a replay (spec
// section 8, item 6), as it would be in the field.
func userOf(w, n, workers, users int) int {
	if users < workers {
		return w % users
	}
	mine := (users - w + workers - 1) / workers
	return w + (n%mine)*workers
}

// userPicker hands a worker its users in turn (userOf). Under classic it
// also never gives one user twice within a millisecond: the gateway's
// replay check is on (ID_i, T1), T1 in milliseconds, so a second login in
// the same millisecond is refused as a replay (spec section 8, item 6), a
// limit no real user meets. When every user of the worker has logged in
// during this millisecond, it waits.
type userPicker struct {
	classic bool
	users   int
	n       int
	last    map[int]int64 // user -> millisecond of its last login
}

func newUserPicker(f *Fleet) userPicker {
	return userPicker{classic: f.Profile == protocol.Classic, users: len(f.Users), last: map[int]int64{}}
}

func (p *userPicker) next(w, workers int) int {
	mine := max(1, (p.users-w+workers-1)/workers)
	for tries := 0; ; tries++ {
		u := userOf(w, p.n, workers, p.users)
		p.n++
		if !p.classic {
			return u
		}
		// used recorded a time no earlier than the user's last T1.
		if last, seen := p.last[u]; !seen || time.Now().UnixMilli() > last {
			return u
		}
		if tries >= mine {
			time.Sleep(time.Millisecond)
			tries = 0
		}
	}
}

// used records that user u's login has read its T1.
func (p *userPicker) used(u int) {
	if p.classic {
		p.last[u] = time.Now().UnixMilli()
	}
}

// noReplay is the simulated devices' replay cache in verify-only mode: the
// load client plays the device, whose own replay check is not under test
// and would only cost the client memory. The gateway's check is intact.
type noReplay struct{}

func (noReplay) Insert(context.Context, protocol.ReplayKey, uint64, uint64) (bool, error) {
	return true, nil
}

// replyError turns a CoAP answer that is not 2.04 into an error of the
// protocol's wire code, so that KindOf sorts it.
func replyError(step string, code coap.Code, payload []byte) error {
	if _, c, err := protocol.ParseError(payload); err == nil {
		return fmt.Errorf("%s answered %s: %w", step, code, c)
	}
	return withKind(KindBadResponse, fmt.Errorf("%s answered %s without an error message", step, code))
}

// Traffic is what the tagauth load sent and received on each link.
type Traffic struct {
	CardDevice    Link // m1, m4, m5 and its acknowledgement
	Task          Link // the sealed task and its sealed answer
	DeviceGateway Link // m2 and m3 (verify-only load)
	// Relay counts the device agents' relays to the gateway (full
	// logins): m2 and m3.
	Relay       coap.Traffic
	Retransmits atomic.Uint64
}

// TrafficCounts is a reading of Traffic.
type TrafficCounts struct {
	CardDevice, Task, DeviceGateway LinkCount
	Retransmits                     uint64
}

// LinkCount is a reading of a Link.
type LinkCount struct{ Datagrams, Bytes, Repeats uint64 }

func (l *Link) read() LinkCount {
	return LinkCount{l.Datagrams.Load(), l.Bytes.Load(), l.Repeats.Load()}
}

// Read reads every counter.
func (t *Traffic) Read() TrafficCounts {
	return TrafficCounts{
		CardDevice: t.CardDevice.read(),
		Task:       t.Task.read(),
		DeviceGateway: LinkCount{
			t.DeviceGateway.Datagrams.Load() + t.Relay.SentDatagrams.Load() + t.Relay.ReceivedDatagrams.Load(),
			t.DeviceGateway.Bytes.Load() + t.Relay.SentBytes.Load() + t.Relay.ReceivedBytes.Load(),
			t.DeviceGateway.Repeats.Load() + t.Relay.Repeats.Load(),
		},
		Retransmits: t.Retransmits.Load(),
	}
}

// Sub is c minus an earlier reading.
func (c TrafficCounts) Sub(prev TrafficCounts) TrafficCounts {
	sub := func(a, b LinkCount) LinkCount {
		return LinkCount{a.Datagrams - b.Datagrams, a.Bytes - b.Bytes, a.Repeats - b.Repeats}
	}
	return TrafficCounts{
		CardDevice: sub(c.CardDevice, prev.CardDevice), Task: sub(c.Task, prev.Task),
		DeviceGateway: sub(c.DeviceGateway, prev.DeviceGateway), Retransmits: c.Retransmits - prev.Retransmits,
	}
}

// VerifyOps returns the operations of verify-only load: each plays a card
// and a device (cheap: a few hashes) to make a fresh m2, sends it straight
// to the gateway's /tagauth/verify and checks that m3 comes back. Every
// m2 is new, because the gateway's replay cache refuses a second use.
func VerifyOps(f *Fleet, gateway string, tr *Traffic, workers int) (func(int) (Op, error), error) {
	cfg := clientConfig()
	devs := make([]*protocol.Device, len(f.Devices))
	for i, c := range f.Devices {
		d, err := protocol.NewDevice(c.DeviceCredential, noReplay{}, cfg)
		if err != nil {
			return nil, err
		}
		devs[i] = d
	}
	opts := userclient.PathOptions(coapbind.PathVerify)
	return func(w int) (Op, error) {
		c, err := userclient.DialEndpoint(gateway, nil, ackTimeout, maxRetransmit, &tr.Retransmits)
		if err != nil {
			return nil, err
		}
		return &verifyOp{f: f, devs: devs, conn: c, opts: opts, tr: tr, w: w, workers: workers, pick: newUserPicker(f)}, nil
	}, nil
}

type verifyOp struct {
	pick       userPicker
	f          *Fleet
	devs       []*protocol.Device
	conn       *userclient.Endpoint
	opts       message.Options
	tr         *Traffic
	w, workers int
	n          int
}

func (o *verifyOp) Do(ctx context.Context) error {
	ui := o.pick.next(o.w, o.workers)
	d := o.devs[(o.w+o.n)%len(o.devs)]
	o.n++
	l, m1, err := o.f.Users[ui].Login(nil, d.ID())
	o.pick.used(ui)
	if err != nil {
		return err
	}
	defer l.Close()
	dl, m2, err := d.Start(ctx, nil, m1)
	if err != nil {
		return err
	}
	defer dl.Close()
	code, m3, err := o.conn.Post(o.opts, m2, &o.tr.DeviceGateway)
	if err != nil {
		return err
	}
	if code != coap.Changed {
		return replyError("gateway", code, m3)
	}
	if _, t, err := protocol.Header(m3); err != nil || t != protocol.TypeM3 {
		return withKind(KindBadResponse, errors.New("gateway answered 2.04 without an m3"))
	}
	return nil
}

func (o *verifyOp) Close() { o.conn.Close() }

// Agents is one device agent per simulated device, running in this
// process and relaying to the gateway named in its credential.
type Agents struct {
	agents []*device.Agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Session bounds of the simulated device agents.
const (
	agentSessionIdle = 2 * time.Second
	agentMaxSessions = 100000
)

// StartAgents starts the agents on loopback; their relays to the gateway
// are counted in tr.Relay.
func StartAgents(f *Fleet, tr *Traffic) (*Agents, error) {
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agents{cancel: cancel}
	relay := &coap.Client{Traffic: &tr.Relay}
	for _, c := range f.Devices {
		ag, err := device.New(device.Config{
			Credential: c, Listen: "127.0.0.1:0", Client: relay,
			Logger: slog.New(slog.DiscardHandler),
			// Each simulated login runs one task and is never used again:
			// end its session soon, or thousands of logins a second fill
			// the agent's session table (a real session idles 5 minutes).
			SessionIdle: agentSessionIdle, MaxSessions: agentMaxSessions,
			// Each worker is one address logging in as fast as it can,
			// and few users may share many workers: lift the per-source
			// and per-user bounds, which are for the field.
			SourceRate: 1e9, SourceBurst: 1 << 30, MaxSessionsPerUser: agentMaxSessions, MaxPendingPerUser: agentMaxSessions,
		})
		if err != nil {
			a.Stop()
			return nil, err
		}
		a.agents = append(a.agents, ag)
		a.wg.Go(func() { _ = ag.Run(ctx) })
	}
	return a, nil
}

// Stop stops every agent and waits for them.
func (a *Agents) Stop() {
	a.cancel()
	a.wg.Wait()
}

// LoginOps returns the operations of full-login load: each worker is a
// user's card talking CoAP to one device agent, through the user client's
// login flow (userclient.Flow): m1 to /tagauth/login, m4 back, m5 to
// /tagauth/confirm (hardened), then one sealed task (sensor.read) to
// /tagauth/task and its sealed answer. login, when not nil, records the
// latency of the login alone (m1 to the acknowledgement of m5), without
// the task.
//
// Workers send from their own loopback address (127.1.x.y) when the
// agents listen on 127.0.0.1, since distinct users are distinct hosts in
// practice (an agent finds m5's login by the sid in front of it, from any
// address).
func LoginOps(f *Fleet, ag *Agents, tr *Traffic, workers int, login *Hist) func(int) (Op, error) {
	optLogin, optConfirm, optTask := userclient.PathOptions(coapbind.PathLogin), userclient.PathOptions(coapbind.PathConfirm), userclient.PathOptions(coapbind.PathTask)
	task := []byte(`{"task":"sensor.read","args":"temperature"}`)
	return func(w int) (Op, error) {
		d := w % len(ag.agents)
		addr := ag.agents[d].Addr().(*net.UDPAddr)
		var local *net.UDPAddr
		if addr.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			local = &net.UDPAddr{IP: net.IPv4(127, 1, byte(w/250), byte(w%250+1))}
		}
		c, err := userclient.DialEndpoint(addr.String(), local, ackTimeout, maxRetransmit, &tr.Retransmits)
		if err != nil {
			return nil, err
		}
		o := &loginOp{
			pick: newUserPicker(f),
			f:    f, did: ag.agents[d].ID(), conn: c, w: w, workers: workers, login: login, task: task,
		}
		// The flow's requests go through this worker's lean CoAP
		// endpoint, with each path's options made once above.
		o.flow = userclient.Flow{Device: addr.String(), Post: func(_ context.Context, path string, payload []byte) (coap.Code, []byte, error) {
			switch path {
			case coapbind.PathLogin:
				return c.Post(optLogin, payload, &tr.CardDevice)
			case coapbind.PathConfirm:
				return c.Post(optConfirm, payload, &tr.CardDevice)
			case coapbind.PathTask:
				return c.Post(optTask, payload, &tr.Task)
			}
			return c.Post(userclient.PathOptions(path), payload, nil) // no other path: the flow names the three above
		}}
		return o, nil
	}
}

type loginOp struct {
	pick          userPicker
	f             *Fleet
	did           string
	conn          *userclient.Endpoint
	flow          userclient.Flow
	w, workers, n int
	login         *Hist
	task          []byte
}

func (o *loginOp) Do(ctx context.Context) error {
	ui := o.pick.next(o.w, o.workers)
	o.n++
	start := time.Now()
	s, err := o.flow.Login(ctx, o.f.Users[ui], o.did)
	o.pick.used(ui)
	if err != nil {
		return flowError(err)
	}
	defer s.Close()
	if o.login != nil {
		o.login.Record(time.Since(start))
	}
	pt, err := o.flow.Task(ctx, s, o.task)
	if err != nil {
		return flowError(err)
	}
	if !bytes.HasPrefix(pt, []byte(`{"ok":true`)) {
		return withKind(KindBadResponse, fmt.Errorf("task failed: %s", pt))
	}
	return nil
}

// flowError sorts an error of the user client's flow: an answer it could
// not use is a bad response; the rest (wire codes, timeouts, sockets) sort
// themselves.
func flowError(err error) error {
	if errors.Is(err, userclient.ErrBadAnswer) {
		return withKind(KindBadResponse, err)
	}
	return err
}

func (o *loginOp) Close() { o.conn.Close() }
