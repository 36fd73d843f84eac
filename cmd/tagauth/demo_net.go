package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/internal/device"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// netDemo is the second half of the demo: the real gateway daemon and
// device agent on loopback sockets, driven the way an operator and a user
// would drive them, through the admin API and the user client.
type netDemo struct {
	out     io.Writer
	tw      *tabwriter.Writer
	profile protocol.Profile
	kdf     protocol.KDFParams
	dir     string
	gw      *gateway.Gateway
	agent   *device.Agent
	hc      *http.Client     // the pinned HTTPS client, for enrolment
	admin   *adminapi.Client // the operator's admin API client
	token   string
	stop    []func()
	cred    credfile.Credential
	user    *protocol.User
	mqtt    *demoMQTT // demo_mqtt.go
}

func runNetDemo(w io.Writer, p protocol.Profile, kdf protocol.KDFParams) (err error) {
	d := &netDemo{out: w, profile: p, kdf: kdf}
	defer d.cleanup()
	fmt.Fprintf(w, "=== the system on loopback (%s profile) ===\n", p)
	fmt.Fprintln(w, "A gateway daemon (CoAP/UDP + HTTPS admin, embedded store) and a device agent")
	fmt.Fprintln(w, "(CoAP/UDP) on 127.0.0.1, a user client; all cleaned up at the end.")
	fmt.Fprintln(w)
	d.tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(d.tw, "STEP\tTIME\tWHAT HAPPENED")
	steps := []struct {
		name string
		f    func() (string, error)
	}{
		{"start gateway", d.startGateway},
		{"provision device", d.provision},
		{"grant", d.grant},
		{"enrol user", d.enrol},
		{"start device agent", d.startDevice},
		{"login", d.login},
		{"device on MQTT", d.startMQTTDevice}, // demo_mqtt.go
		{"login via MQTT", d.loginMQTT},
		{"revoke user", d.revoke},
		{"login again", d.loginRevoked},
		{"audit log", d.audit},
	}
	for _, s := range steps {
		var what string
		dur, err := timed(func() (err error) { what, err = s.f(); return err })
		if err != nil {
			d.tw.Flush()
			return fmt.Errorf("%s: %w", s.name, err)
		}
		lines := strings.Split(what, "\n")
		fmt.Fprintf(d.tw, "%s\t%s\t%s\n", s.name, fmtDur(dur), lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(d.tw, "\t\t%s\n", l)
		}
	}
	return d.tw.Flush()
}

func (d *netDemo) cleanup() {
	for i := len(d.stop) - 1; i >= 0; i-- {
		d.stop[i]()
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

// serve runs a daemon's Run until cleanup, which waits for it to return.
func (d *netDemo) serve(run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run(ctx); close(done) }()
	d.stop = append(d.stop, func() { cancel(); <-done })
}

func (d *netDemo) startGateway() (string, error) {
	dir, err := os.MkdirTemp("", "tagauth-demo-")
	if err != nil {
		return "", err
	}
	d.dir = dir
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return "", err
	}
	d.token = hex.EncodeToString(tok)
	d.gw, err = gateway.Open(gateway.Config{
		DataDir: filepath.Join(dir, "gateway"), Profile: d.profile,
		CoAPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", AdminToken: d.token,
		AuditOut: io.Discard,
		// The demo's own card parameters are its gateway's floor (the
		// spec's defaults unless a test asks for cheaper ones).
		KDFFloor: d.kdf,
	})
	if err != nil {
		return "", err
	}
	d.stop = append(d.stop, func() { d.gw.Close() })
	d.serve(d.gw.Run)
	d.admin, err = adminapi.NewClient(d.gw.AdminURL(), d.gw.Fingerprint(), d.token, 10*time.Second)
	if err != nil {
		return "", err
	}
	d.hc = d.admin.HTTP
	return fmt.Sprintf("CoAP verify on udp %s, admin API on %s\nadmin certificate pinned by fingerprint %s…", d.gw.CoAPPublic(), d.gw.AdminURL(), d.gw.Fingerprint()[:16]), nil
}

// apiCtx bounds one admin call of the demo.
func apiCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func (d *netDemo) provision() (string, error) {
	ctx, cancel := apiCtx()
	defer cancel()
	raw, err := d.admin.Provision(ctx, adminapi.DeviceRequest{ID: demoDevice, Group: "plant-a"})
	if err != nil {
		return "", err
	}
	defer clear(raw)
	c, err := credfile.Unmarshal(raw)
	if err != nil {
		return "", err
	}
	d.cred = c
	return fmt.Sprintf("operator provisioned %q in group plant-a: credential file with DID_j, Tag_j, kv_j %d", demoDevice, c.KV), nil
}

func (d *netDemo) grant() (string, error) {
	ctx, cancel := apiCtx()
	defer cancel()
	if err := d.admin.Grant(ctx, adminapi.Grant{User: demoUser, Group: "plant-a"}); err != nil {
		return "", err
	}
	return fmt.Sprintf("operator let %q log in to the devices of plant-a", demoUser), nil
}

func (d *netDemo) enrol() (string, error) {
	actx, acancel := apiCtx()
	defer acancel()
	code, err := d.admin.EnrolCode(actx, adminapi.EnrolCodeRequest{User: demoUser})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	c, err := userclient.Enroll(ctx, d.hc, d.gw.AdminURL(), code.Code, demoUser, demoPassword, d.profile, d.kdf, cfg)
	if err != nil {
		return "", err
	}
	sealed, err := card.Seal(c, demoPassword, rand.Reader)
	if err != nil {
		return "", err
	}
	path := filepath.Join(d.dir, "alice.card")
	if err := card.SaveNew(path, sealed); err != nil {
		return "", err
	}
	data, err := card.Load(path)
	if err == nil {
		c, err = card.Open(data, demoPassword)
	}
	if err == nil {
		d.user, err = protocol.Unlock(c, demoPassword, cfg)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("operator made a one-time code; the user client sent m_reg over pinned TLS\ncard file written (%d bytes, sealed with the password), then opened and unlocked", len(sealed)), nil
}

func (d *netDemo) startDevice() (string, error) {
	a, err := device.New(device.Config{Credential: d.cred, Listen: "127.0.0.1:0"})
	if err != nil {
		return "", err
	}
	d.agent = a
	d.stop = append(d.stop, func() { a.Close() })
	d.serve(a.Run)
	return fmt.Sprintf("device agent %q serving /tagauth/login, /confirm, /task on udp %s", demoDevice, a.Addr()), nil
}

func (d *netDemo) connect() (*userclient.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return userclient.Login(ctx, d.user, &coap.Client{ACKTimeout: 200 * time.Millisecond}, d.agent.Addr().String(), demoDevice)
}

func (d *netDemo) login() (string, error) {
	conn, err := d.connect()
	if err != nil {
		return "", err
	}
	defer conn.Close()
	fp := conn.Session.Fingerprint()
	lines := []string{fmt.Sprintf("authenticated %s <-> %s over CoAP; key fingerprint %x (the device holds the same)", demoUser, demoDevice, fp[:8])}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, t := range [][2]string{{"echo", "hello"}, {"sensor.read", ""}, {"control.write", "valve-3=open"}} {
		start := time.Now()
		r, err := conn.Task(ctx, t[0], t[1])
		if err != nil {
			return "", err
		}
		if !r.OK {
			return "", fmt.Errorf("task %s: %s", t[0], r.Error)
		}
		lines = append(lines, fmt.Sprintf("sealed task %-13s -> %s (%s)", t[0], r.Result, fmtDur(time.Since(start))))
	}
	if cs := d.agent.Controls(); len(cs) == 1 {
		lines = append(lines, fmt.Sprintf("device recorded the instruction as coming from the authenticated user %q", cs[0].User))
	}
	return strings.Join(lines, "\n"), nil
}

func (d *netDemo) revoke() (string, error) {
	ctx, cancel := apiCtx()
	defer cancel()
	if _, err := d.admin.RevokeUser(ctx, demoUser); err != nil {
		return "", err
	}
	return fmt.Sprintf("operator revoked %q; the gateway's registry changed before the answer", demoUser), nil
}

func (d *netDemo) loginRevoked() (string, error) {
	conn, err := d.connect()
	if err == nil {
		conn.Close()
		return "", errors.New("a revoked user logged in")
	}
	if !errors.Is(err, protocol.ErrRejected) {
		return "", fmt.Errorf("want a rejected login, got: %w", err)
	}
	return "refused as it should be: " + err.Error() + "\n(the wire says only \"rejected\"; the audit log has the reason)", nil
}

func (d *netDemo) audit() (string, error) {
	ctx, cancel := apiCtx()
	defer cancel()
	page, err := d.admin.Audit(ctx, adminapi.AuditQuery{User: demoUser})
	if err != nil {
		return "", err
	}
	var lines []string
	for _, r := range page.Records {
		l := fmt.Sprintf("%-8s %-8s", r.Kind, r.Outcome)
		if r.Reason != "" {
			l += " reason: " + r.Reason
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return "", errors.New("no audit records")
	}
	return strings.Join(lines, "\n"), nil
}
