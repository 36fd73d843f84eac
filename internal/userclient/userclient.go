// Package userclient is the user's side of tagauth over the network: it
// enrols with the gateway's HTTPS admin port (pinned by certificate
// fingerprint), logs in to a device over CoAP and runs sealed tasks.
package userclient

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/coap"
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
	var cj adminapi.Card
	if err := adminapi.PostJSON(ctx, hc, adminURL+"/v1/register", "", body, &cj); err != nil {
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
	client     *coap.Client
}

// Login runs the login of FIG. 5 against the device agent at addr (its
// identity did): m1 to /tagauth/login, m4 back, and under hardened sid || m5
// to /tagauth/confirm. Errors from the device are reported with their wire
// code; a stale timestamp suggests checking clock sync.
func Login(ctx context.Context, u *protocol.User, client *coap.Client, addr, did string) (*Conn, error) {
	l, m1, err := u.Login(did)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	code, m4, err := client.Post(ctx, addr, "/tagauth/login", m1)
	if err != nil {
		return nil, err
	}
	if code != coap.Changed {
		return nil, wireError("login", addr, code, m4)
	}
	s, m5, err := l.Finish(m4)
	if err != nil {
		return nil, fmt.Errorf("login to %s: device's answer refused: %w", addr, err)
	}
	if m5 != nil {
		// The confirm request names its login by sid (spec section 11).
		code, resp, err := client.Post(ctx, addr, "/tagauth/confirm", protocol.ConfirmPayload(nil, s.SID(), m5))
		if err != nil {
			s.Close()
			return nil, err
		}
		if code != coap.Changed {
			s.Close()
			return nil, wireError("confirm", addr, code, resp)
		}
	}
	return &Conn{Session: s, DeviceAddr: addr, client: client}, nil
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
	return fmt.Errorf("%s at %s answered %s", step, addr, code)
}

// TaskRequest and TaskResponse are the plaintexts of a task exchange.
type TaskRequest struct {
	Task string `json:"task"`
	Args string `json:"args,omitempty"`
}

// TaskResponse is the device's answer to a task.
type TaskResponse struct {
	OK     bool   `json:"ok"`
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Task seals a task for the device, sends it to /tagauth/task and opens
// the sealed answer.
func (c *Conn) Task(ctx context.Context, name, args string) (TaskResponse, error) {
	pt, err := json.Marshal(TaskRequest{Task: name, Args: args})
	if err != nil {
		return TaskResponse{}, err
	}
	rec, err := c.Session.Seal(nil, pt)
	if err != nil {
		return TaskResponse{}, err
	}
	code, resp, err := c.client.Post(ctx, c.DeviceAddr, "/tagauth/task", rec)
	if err != nil {
		return TaskResponse{}, err
	}
	if code != coap.Changed {
		return TaskResponse{}, wireError("task", c.DeviceAddr, code, resp)
	}
	out, err := c.Session.Open(nil, resp)
	if err != nil {
		return TaskResponse{}, fmt.Errorf("task answer from %s refused: %w", c.DeviceAddr, err)
	}
	var tr TaskResponse
	if err := json.Unmarshal(out, &tr); err != nil {
		return TaskResponse{}, fmt.Errorf("task answer from %s is not valid JSON", c.DeviceAddr)
	}
	return tr, nil
}

// Close ends the session.
func (c *Conn) Close() { c.Session.Close() }
