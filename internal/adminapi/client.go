package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client is the typed client of the admin API: one method per route. Its
// zero value is not usable; make one with NewClient, or fill every field.
type Client struct {
	// Base is the admin URL, https://HOST:PORT, without a trailing slash.
	Base string
	// Token is the admin bearer token; empty for the calls that need
	// none (Info, Register).
	Token string
	// HTTP is the HTTPS client, normally PinnedClient's.
	HTTP *http.Client
	// Fingerprint is the pinned certificate's SHA-256 (hex), when known:
	// what a user is told to pin in turn.
	Fingerprint string
}

// NewClient returns a client of the admin API at base whose certificate
// must have the SHA-256 fingerprint (hex). timeout bounds each HTTP
// exchange.
func NewClient(base, fingerprint, token string, timeout time.Duration) (*Client, error) {
	if u, err := url.Parse(base); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q must look like https://HOST:PORT", base)
	}
	hc, err := PinnedClient(strings.ToLower(fingerprint), timeout)
	if err != nil {
		return nil, err
	}
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: hc, Fingerprint: strings.ToLower(fingerprint)}, nil
}

// CloseIdle closes the client's idle connections: a command that is done
// should not hold one, since it counts against the gateway's per-source
// connection limit.
func (c *Client) CloseIdle() { c.HTTP.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return DoJSON(ctx, c.HTTP, method, c.Base+path, c.Token, in, out)
}

// Info is GET /v1/info (no token needed).
func (c *Client) Info(ctx context.Context) (Info, error) {
	var out Info
	return out, c.do(ctx, http.MethodGet, PathInfo, nil, &out)
}

// Register is POST /v1/register: the user's side of enrolment, authorized
// by the one-time code in req (no token needed).
func (c *Client) Register(ctx context.Context, req RegisterRequest) (Card, error) {
	var out Card
	return out, c.do(ctx, http.MethodPost, PathRegister, req, &out)
}

// EnrolCode is POST /v1/enrol-codes.
func (c *Client) EnrolCode(ctx context.Context, req EnrolCodeRequest) (EnrolCode, error) {
	var out EnrolCode
	return out, c.do(ctx, http.MethodPost, PathEnrolCodes, req, &out)
}

// Provision is POST /v1/devices. The answer is the device's credential
// file (internal/credfile) as sent: it holds the device's secret tag, so
// the caller clears it once used.
func (c *Client) Provision(ctx context.Context, req DeviceRequest) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.do(ctx, http.MethodPost, PathDevices, req, &out)
}

// RevokeUser is POST /v1/users/revoke.
func (c *Client) RevokeUser(ctx context.Context, id string) (Revoked, error) {
	var out Revoked
	return out, c.do(ctx, http.MethodPost, PathUsersRevoke, IDRequest{ID: id}, &out)
}

// RevokeDevice is POST /v1/devices/revoke.
func (c *Client) RevokeDevice(ctx context.Context, id string) (Revoked, error) {
	var out Revoked
	return out, c.do(ctx, http.MethodPost, PathDevicesRevoke, IDRequest{ID: id}, &out)
}

// Grant is POST /v1/grants.
func (c *Client) Grant(ctx context.Context, g Grant) error {
	return c.do(ctx, http.MethodPost, PathGrants, g, nil)
}

// Ungrant is DELETE /v1/grants.
func (c *Client) Ungrant(ctx context.Context, g Grant) error {
	return c.do(ctx, http.MethodDelete, PathGrants, g, nil)
}

// Users is GET /v1/users.
func (c *Client) Users(ctx context.Context) (UserList, error) {
	var out UserList
	return out, c.do(ctx, http.MethodGet, PathUsers, nil, &out)
}

// Devices is GET /v1/devices.
func (c *Client) Devices(ctx context.Context) (DeviceList, error) {
	var out DeviceList
	return out, c.do(ctx, http.MethodGet, PathDevices, nil, &out)
}

// Grants is GET /v1/grants.
func (c *Client) Grants(ctx context.Context) (GrantList, error) {
	var out GrantList
	return out, c.do(ctx, http.MethodGet, PathGrants, nil, &out)
}

// Audit is GET /v1/audit.
func (c *Client) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	var out AuditPage
	path := PathAudit
	if v := q.Values().Encode(); v != "" {
		path += "?" + v
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Unlock is POST /v1/users/unlock.
func (c *Client) Unlock(ctx context.Context, id string) (Unlocked, error) {
	var out Unlocked
	return out, c.do(ctx, http.MethodPost, PathUsersUnlock, IDRequest{ID: id}, &out)
}

// Locks is GET /v1/locks.
func (c *Client) Locks(ctx context.Context) (LockList, error) {
	var out LockList
	return out, c.do(ctx, http.MethodGet, PathLocks, nil, &out)
}

// Keys is GET /v1/keys.
func (c *Client) Keys(ctx context.Context) (KeyList, error) {
	var out KeyList
	return out, c.do(ctx, http.MethodGet, PathKeys, nil, &out)
}

// RotateKey is POST /v1/keys/rotate.
func (c *Client) RotateKey(ctx context.Context) (KeyChange, error) {
	var out KeyChange
	return out, c.do(ctx, http.MethodPost, PathKeysRotate, nil, &out)
}

// RetireKey is POST /v1/keys/{version}/retire; force retires a version
// that active users or devices still hold.
func (c *Client) RetireKey(ctx context.Context, version uint8, force bool) (KeyChange, error) {
	var out KeyChange
	return out, c.do(ctx, http.MethodPost, KeyRetirePath(version, force), nil, &out)
}

// Stats is GET /v1/stats.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var out Stats
	return out, c.do(ctx, http.MethodGet, PathStats, nil, &out)
}

// Backup is POST /v1/backup: it returns the age-encrypted archive as a
// stream, which the caller must close. The stream has no time limit (a
// backup takes as long as the store is large; ctx bounds it); a stream
// cut short does not decrypt, so a short read is never a short backup.
func (c *Client) Backup(ctx context.Context, req BackupRequest) (io.ReadCloser, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+PathBackup, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Authorization", "Bearer "+c.Token)
	hr.Header.Set("Content-Type", "application/json")
	hc := *c.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("cannot reach gateway admin API at %s: %w", c.Base, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e ErrorBody
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return nil, &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	return resp.Body, nil
}

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.do(ctx, http.MethodGet, PathStatus, nil, &out)
}
