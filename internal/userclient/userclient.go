// Package userclient is the user's side of tagauth over the network: it
// enrols with the gateway's HTTPS admin port (pinned by certificate
// fingerprint), logs in to a device and runs sealed tasks. The login and
// task flow (Flow) is written once here: the CLI, the demo, the load tool
// and the e2e tests run it, over coap.Client (or MQTT, through a
// transport.Poster) or, for the load tool, over Endpoint, a lean CoAP
// client of one peer.
package userclient

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/protocol"
)

// Enroll registers user id with the gateway at adminURL (FIG. 4): it
// computes W_i locally from the password and sends m_reg with the one-time
// enrolment code over the pinned TLS channel. W_i and r_i never leave it
// otherwise.
func Enroll(ctx context.Context, hc *http.Client, adminURL, code, id, password string, p protocol.Profile, kdf protocol.KDFParams, cfg protocol.Config) (protocol.Card, error) {
	req, err := protocol.NewRegistrationRequest(p, id, password, kdf, cfg)
	if err != nil {
		return protocol.Card{}, err
	}
	defer req.Wipe()
	body := adminapi.RegisterRequest{Code: code, Profile: p.String(), ID: id, W: hex.EncodeToString(req.W[:]),
		R: hex.EncodeToString(req.R[:]), T: req.T, KDF: adminapi.KDF{T: req.KDF.Time, MKiB: req.KDF.MemoryKiB, P: req.KDF.Threads}}
	cj, err := (&adminapi.Client{Base: adminURL, HTTP: hc}).Register(ctx, body)
	if err != nil {
		return protocol.Card{}, fmt.Errorf("enrol: %w", err)
	}
	card, err := cj.Card()
	if err != nil {
		return protocol.Card{}, fmt.Errorf("enrol: gateway returned a bad card: %w", err)
	}
	if card.ID != id || card.R != req.R || card.Profile != p {
		return protocol.Card{}, errors.New("enrol: gateway returned a card for another request")
	}
	return card, nil
}

// Conn is an established session with a device.
type Conn struct {
	Session    *protocol.Session
	DeviceAddr string
	mu         sync.Mutex // the flow's buffers serve one Task at a time
	flow       *Flow
}

// Login runs the login of FIG. 5 against the device agent at addr (its
// identity did): m1 to /tagauth/login, m4 back, and under hardened sid || m5
// to /tagauth/confirm. Errors from the device are reported with their wire
// code; a stale timestamp suggests checking clock sync.
func Login(ctx context.Context, u *protocol.User, client *coap.Client, addr, did string) (*Conn, error) {
	return LoginVia(ctx, u, transport.CoAP{Client: client, Addr: addr}, did)
}

// LoginVia is Login through any binding: dev carries the requests to the
// device (CoAP, or MQTT through a broker).
func LoginVia(ctx context.Context, u *protocol.User, dev transport.Poster, did string) (*Conn, error) {
	f := &Flow{Device: dev.Name(), Post: func(ctx context.Context, path string, payload []byte) (coap.Code, []byte, error) {
		return dev.Post(ctx, path, payload, transport.Options{})
	}}
	s, err := f.Login(ctx, u, did)
	if err != nil {
		return nil, err
	}
	return &Conn{Session: s, DeviceAddr: f.Device, flow: f}, nil
}

// Flow is the card's side of a login and of its tasks (spec sections 7
// and 11), written once for every caller: Login and Conn.Task run it for
// one session, the load tool runs one Flow per worker for thousands of
// logins, reusing its buffers, over a CoAP endpoint of its own.
type Flow struct {
	// Post carries one request to the device and returns its answer,
	// which may alias the poster's memory until its next call.
	Post func(ctx context.Context, path string, payload []byte) (coap.Code, []byte, error)
	// Device names the device in errors (its address).
	Device string

	m1, m5, confirm, rec, pt []byte
}

// ErrBadAnswer marks an answer that is not what the step expects: a
// refusal without the error message of spec section 7, or a sealed task
// answer that does not open or parse.
var ErrBadAnswer = errors.New("bad answer")

// Login logs u in to the device did: m1 to /tagauth/login, m4 back, and
// under hardened sid || m5 to /tagauth/confirm. The caller closes the
// session.
func (f *Flow) Login(ctx context.Context, u *protocol.User, did string) (*protocol.Session, error) {
	l, m1, err := u.Login(f.m1[:0], did)
	if err != nil {
		return nil, err
	}
	f.m1 = m1
	defer l.Close()
	code, m4, err := f.Post(ctx, coapbind.PathLogin, m1)
	if err != nil {
		return nil, err
	}
	if code != coap.Changed {
		return nil, wireError("login", f.Device, code, m4)
	}
	s, m5, err := l.Finish(f.m5[:0], m4)
	if err != nil {
		return nil, fmt.Errorf("login to %s: device's answer refused: %w", f.Device, err)
	}
	if m5 != nil {
		f.m5 = m5
		// The confirm request names its login by sid (spec section 11).
		f.confirm = protocol.AppendConfirmPayload(f.confirm[:0], s.SID(), m5)
		code, resp, err := f.Post(ctx, coapbind.PathConfirm, f.confirm)
		if err != nil {
			s.Close()
			return nil, err
		}
		if code != coap.Changed {
			s.Close()
			return nil, wireError("confirm", f.Device, code, resp)
		}
	}
	return s, nil
}

// Task seals the plaintext pt (a coapbind.TaskRequest in JSON) under s,
// sends it to /tagauth/task and opens the sealed answer, which it returns
// in memory of f's that the next Task reuses.
func (f *Flow) Task(ctx context.Context, s *protocol.Session, pt []byte) ([]byte, error) {
	var err error
	f.rec, err = s.Seal(f.rec[:0], pt)
	if err != nil {
		return nil, err
	}
	code, resp, err := f.Post(ctx, coapbind.PathTask, f.rec)
	if err != nil {
		return nil, err
	}
	if code != coap.Changed {
		return nil, wireError("task", f.Device, code, resp)
	}
	f.pt, err = s.Open(f.pt[:0], resp)
	if err != nil {
		return nil, fmt.Errorf("task answer from %s refused: %w: %w", f.Device, ErrBadAnswer, err)
	}
	return f.pt, nil
}

// wireError turns an error reply into an error that says what happened.
func wireError(step, addr string, code coap.Code, payload []byte) error {
	if _, c, err := protocol.ParseError(payload); err == nil {
		hint := ""
		if c == protocol.ErrStaleTimestamp {
			hint = " (check that the clocks of card, device and gateway are in sync)"
		}
		return fmt.Errorf("%s at %s refused (%s): %w%s", step, addr, code, c, hint)
	}
	return fmt.Errorf("%s at %s answered %s: %w", step, addr, code, ErrBadAnswer)
}

// Task seals a task for the device, sends it to /tagauth/task and opens
// the sealed answer. It is safe for concurrent use; concurrent tasks of
// one Conn go one at a time (they share the flow's buffers).
func (c *Conn) Task(ctx context.Context, name, args string) (coapbind.TaskResponse, error) {
	pt, err := json.Marshal(coapbind.TaskRequest{Task: name, Args: args})
	if err != nil {
		return coapbind.TaskResponse{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out, err := c.flow.Task(ctx, c.Session, pt)
	if err != nil {
		return coapbind.TaskResponse{}, err
	}
	var tr coapbind.TaskResponse
	if err := json.Unmarshal(out, &tr); err != nil {
		return coapbind.TaskResponse{}, fmt.Errorf("task answer from %s is not valid JSON: %w", c.DeviceAddr, ErrBadAnswer)
	}
	return tr, nil
}

// Close ends the session.
func (c *Conn) Close() { c.Session.Close() }

// Device identification (a binding extension in front of spec section 11):
// POST /tagauth/info asks a device agent which profile and DID_j it
// serves, with coapbind.InfoRequestSize bytes of padding; the answer is
// 2.04 with coapbind.AppendDeviceInfo's encoding.

// ErrWrongDevice says that the device at an address serves another DID_j
// or profile than the one the user asked for; nothing was sent to it that
// could count as a failed login.
var ErrWrongDevice = errors.New("wrong device")

// ErrNoDeviceInfo says that a device answered /tagauth/info with 4.04: an
// agent older than the extension. The caller may go on with the login.
var ErrNoDeviceInfo = errors.New("device does not say which DID it serves")

// DeviceInfo asks the device agent at addr which profile and DID_j it
// serves. A device without the extension gives ErrNoDeviceInfo.
func DeviceInfo(ctx context.Context, client *coap.Client, addr string) (protocol.Profile, string, error) {
	code, resp, err := client.Post(ctx, addr, coapbind.PathInfo, make([]byte, coapbind.InfoRequestSize))
	if err != nil {
		return 0, "", err
	}
	switch code {
	case coap.Changed:
	case coap.NotFound:
		return 0, "", fmt.Errorf("%s: %w", addr, ErrNoDeviceInfo)
	default:
		return 0, "", fmt.Errorf("device info from %s: answered %s", addr, code)
	}
	p, did, err := coapbind.ParseDeviceInfo(resp)
	if err != nil {
		return 0, "", fmt.Errorf("%s: %w", addr, err)
	}
	return p, did, nil
}

// CheckDevice asks the device at addr which DID_j and profile it serves
// and fails with ErrWrongDevice, before any m1 is sent, when they are not
// did and p. A device too old to say is let through.
func CheckDevice(ctx context.Context, client *coap.Client, addr, did string, p protocol.Profile) error {
	gp, gdid, err := DeviceInfo(ctx, client, addr)
	switch {
	case errors.Is(err, ErrNoDeviceInfo):
		return nil
	case err != nil:
		return err
	case gdid != did:
		return fmt.Errorf("device at %s serves DID %s, not %s: %w", addr, strconv.Quote(gdid), strconv.Quote(did), ErrWrongDevice)
	case gp != p:
		return fmt.Errorf("device at %s (%s) serves the %s profile, your card is %s: %w", addr, strconv.Quote(did), gp, p, ErrWrongDevice)
	}
	return nil
}
