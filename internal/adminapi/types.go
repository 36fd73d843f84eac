package adminapi

import (
	"fmt"
	"github.com/tagauth/tagauth/internal/buildinfo"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Audit record vocabulary: the values of AuditEntry's Kind and Outcome
// that the gateway writes (and that "tagauth gateway audit --kind" and the
// console's filters offer).
const (
	KindVerify    = "verify"
	KindEnrol     = "enrol"
	KindProvision = "provision"
	KindRevoke    = "revoke"
	KindPolicy    = "policy"
	KindKey       = "key"
	KindLockout   = "lockout"

	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
	OutcomeError   = "error"
	OutcomeLocked  = "locked"
)

// UserInfo is one user in GET /v1/users.
type UserInfo struct {
	ID        string     `json:"id"`
	KV        uint8      `json:"kv"`
	Created   time.Time  `json:"created"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// DeviceInfo is one device in GET /v1/devices.
type DeviceInfo struct {
	ID        string     `json:"id"`
	KV        uint8      `json:"kv"`
	Group     string     `json:"group,omitempty"`
	Created   time.Time  `json:"created"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// UserList is the answer of GET /v1/users.
type UserList struct {
	Users []UserInfo `json:"users"`
}

// DeviceList is the answer of GET /v1/devices.
type DeviceList struct {
	Devices []DeviceInfo `json:"devices"`
}

// GrantList is the answer of GET /v1/grants.
type GrantList struct {
	Grants []Grant `json:"grants"`
}

// AuditEntry is one audit record in GET /v1/audit.
type AuditEntry struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason,omitempty"`
	User      string    `json:"user,omitempty"`
	Device    string    `json:"device,omitempty"`
	Source    string    `json:"source,omitempty"`
	KVUser    uint8     `json:"kv_user,omitempty"`
	KVDevice  uint8     `json:"kv_device,omitempty"`
	LatencyUS int64     `json:"latency_us,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	// Count is the number of refusals a sampled refusal record stands
	// for (absent: one).
	Count uint32 `json:"count,omitempty"`
}

// AuditPage is the answer of GET /v1/audit. Next is the cursor for the
// following page: oldest first, pass it as after= (it is the last
// record's sequence number, or the request's after when the page is
// empty); newest first, pass it as before= (0 when the page is empty).
type AuditPage struct {
	Records []AuditEntry `json:"records"`
	Next    uint64       `json:"next"`
}

// AuditQuery is the query of GET /v1/audit. The zero value asks for the
// oldest records first, one default-sized page.
type AuditQuery struct {
	Kind, User, Device, Outcome string
	// Since and Until bound the records' times (zero: no bound).
	Since, Until time.Time
	// Newest asks for the newest records first (order=desc); Before then
	// pages (the previous page's Next), After otherwise.
	Newest bool
	After  uint64
	Before uint64
	// Limit is the page size; zero means the gateway's default.
	Limit int
}

// Values is the query's URL form, as the gateway reads it.
func (q AuditQuery) Values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"kind": q.Kind, "user": q.User, "device": q.Device, "outcome": q.Outcome} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Newest {
		v.Set("order", "desc")
	}
	if q.After != 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	if q.Before != 0 {
		v.Set("before", strconv.FormatUint(q.Before, 10))
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Revoked is the answer of the revoke calls.
type Revoked struct {
	ID        string    `json:"id"`
	RevokedAt time.Time `json:"revoked_at"`
}

// Unlocked is the answer of POST /v1/users/{id}/unlock.
type Unlocked struct {
	ID        string `json:"id"`
	WasLocked bool   `json:"was_locked"`
}

// LockInfo is one lock: of a user's logins from one source (Scope
// "source", Source its address, /64 or name), from every source not
// familiar to the user (Scope "unfamiliar sources"), or, stored by an
// older version, from everywhere ("all sources").
type LockInfo struct {
	User   string    `json:"user"`
	Scope  string    `json:"scope"`
	Source string    `json:"source,omitempty"`
	Until  time.Time `json:"until"`
}

// LockList is the answer of GET /v1/locks.
type LockList struct {
	Policy string     `json:"policy"`
	Locks  []LockInfo `json:"locks"`
}

// KeyInfo is one master-key version in GET /v1/keys. Users and Devices
// count the identities issued under it, revoked ones excluded.
type KeyInfo struct {
	Version uint8     `json:"version"`
	Created time.Time `json:"created"`
	Newest  bool      `json:"newest"`
	Users   int       `json:"users"`
	Devices int       `json:"devices"`
}

// KeyList is the answer of GET /v1/keys.
type KeyList struct {
	Profile string    `json:"profile"`
	Keys    []KeyInfo `json:"keys"`
}

// KeyChange is the answer of the rotate and retire calls.
type KeyChange struct {
	Version uint8 `json:"version"`
	Newest  uint8 `json:"newest"`
	// HeldBy, in a forced retire, is who was still under the version.
	HeldBy *KeyHolders `json:"held_by,omitempty"`
}

// KeyHolders are the active (not revoked) users and devices whose card or
// credential is under one master-key version: retiring it locks them out.
type KeyHolders struct {
	Version     uint8    `json:"version"`
	Users       int      `json:"users"`
	Devices     int      `json:"devices"`
	SomeUsers   []string `json:"some_users,omitempty"`   // at most 5, sanitized
	SomeDevices []string `json:"some_devices,omitempty"` // at most 5, sanitized
}

// Any reports whether anyone active holds the version.
func (h KeyHolders) Any() bool { return h.Users+h.Devices > 0 }

// String says who holds the version: "2 active users (alice, bob) and 1
// active device (sensor-7)".
func (h KeyHolders) String() string {
	part := func(n int, what string, some []string) string {
		s := fmt.Sprintf("%d active %s", n, what)
		if n != 1 {
			s += "s"
		}
		if len(some) > 0 {
			s += " (" + strings.Join(some, ", ")
			if n > len(some) {
				s += ", ..."
			}
			s += ")"
		}
		return s
	}
	return part(h.Users, "user", h.SomeUsers) + " and " + part(h.Devices, "device", h.SomeDevices)
}

// StatsMinute is one minute of verifies.
type StatsMinute struct {
	Start   time.Time `json:"start"`
	OK      uint64    `json:"ok"`
	Refused uint64    `json:"refused"`
	Error   uint64    `json:"error"`
}

// ReasonCount is how often a verify outcome happened.
type ReasonCount struct {
	Outcome string `json:"outcome"`
	Code    string `json:"code"`
	Reason  string `json:"reason"`
	Count   uint64 `json:"count"`
}

// Stats is the answer of GET /v1/stats: this replica's verifies per
// minute over the last hour (oldest first) and the refusals of that hour
// by reason, most frequent first.
type Stats struct {
	Now     time.Time     `json:"now"`
	Minutes []StatsMinute `json:"minutes"`
	Reasons []ReasonCount `json:"reasons"`
}

// BackupRequest is the body of POST /v1/backup: the age recipients
// (age1...) the archive is encrypted to, 1 to MaxBackupRecipients. The
// gateway encrypts, so the key file inside never leaves it in clear.
type BackupRequest struct {
	Recipients []string `json:"recipients"`
}

// MaxBackupRecipients bounds BackupRequest.Recipients.
const MaxBackupRecipients = 16

// Status is GET /v1/status: whether the gateway can do its work, part by
// part, for "tagauth gateway status" and monitoring. Any role may read it.
type Status struct {
	// OK is true when every part is OK: logins can be verified and
	// audited, admin actions taken.
	OK      bool   `json:"ok"`
	Profile string `json:"profile"`
	// Replica is true when the store is shared (PostgreSQL).
	Replica bool `json:"replica"`
	// Store is the registry's store (bbolt, postgres); on a replica it is
	// OK only while its change feed is up and the registry was reloaded
	// since it came back.
	Store PartHealth `json:"store"`
	// Replay is the replay cache (memory, redis).
	Replay PartHealth `json:"replay"`
	// Audit is the audit trail (journal and store): when it is not OK,
	// successful logins are answered busy and admin actions refused.
	Audit PartHealth `json:"audit"`
	// Build is the gateway binary's build, as in Info.
	Build buildinfo.Info `json:"build"`
}

// PartHealth is the health of one part of the gateway.
type PartHealth struct {
	// Kind names the implementation: "bbolt", "postgres", "memory",
	// "redis", "journal".
	Kind string `json:"kind"`
	OK   bool   `json:"ok"`
	// Since is when OK last changed, when known.
	Since time.Time `json:"since,omitzero"`
	// Error says what is wrong while not OK.
	Error string `json:"error,omitempty"`
	// QuarantineUntil (redis): logins are refused until then because the
	// cache is new or forgot its data.
	QuarantineUntil *time.Time `json:"quarantine_until,omitempty"`
}
