package adminapi

import (
	"strconv"
	"time"
)

// Paths of the admin API. Patterns with {id} or {version} are the
// server's routes; the functions below fill them in for a client.
const (
	PathInfo          = "/v1/info"
	PathRegister      = "/v1/register"
	PathEnrolCodes    = "/v1/enrol-codes"
	PathDevices       = "/v1/devices"        // POST: provision; GET: list
	PathUsers         = "/v1/users"          // GET: list
	PathGrants        = "/v1/grants"         // POST: grant; DELETE: ungrant; GET: list
	PathAudit         = "/v1/audit"          // GET with AuditQuery.Values
	PathUsersRevoke   = "/v1/users/revoke"   // IDRequest: every id, "/" included
	PathDevicesRevoke = "/v1/devices/revoke" // IDRequest
	PathUsersUnlock   = "/v1/users/unlock"   // IDRequest
	PathLocks         = "/v1/locks"
	PathKeys          = "/v1/keys"
	PathKeysRotate    = "/v1/keys/rotate"
	PathStats         = "/v1/stats"
	PathStatus        = "/v1/status" // GET: Status, the health of the gateway and its backends
	PathBackup        = "/v1/backup" // POST BackupRequest: an age-encrypted archive (internal/dump)
	PathMetrics       = "/metrics"
	PathConsole       = "/console/"

	PatternUserRevoke   = "/v1/users/{id}/revoke"
	PatternDeviceRevoke = "/v1/devices/{id}/revoke"
	PatternUserUnlock   = "/v1/users/{id}/unlock"
	PatternKeyRetire    = "/v1/keys/{version}/retire"
)

// Enrolment code lifetimes: the default and the most an operator may ask.
const (
	DefaultCodeTTL = 15 * time.Minute
	MaxCodeTTL     = 7 * 24 * time.Hour
)

// Files the gateway writes into its data directory for the admin
// commands run on its own host.
const (
	// AdminInfoName holds an AdminInfo.
	AdminInfoName = "admin.json"
	// TokenFileName holds the admin bearer token (mode 0600).
	TokenFileName = "admin-token"
)

// AdminInfo is DATA/admin.json: where the running gateway's admin API and
// CoAP endpoint are, and the admin certificate's fingerprint.
type AdminInfo struct {
	URL         string `json:"url"`
	Fingerprint string `json:"fingerprint"`
	CoAP        string `json:"coap"`
}

// UserRevokePath is POST /v1/users/{id}/revoke for id (see PathSegment).
func UserRevokePath(id string) string { return "/v1/users/" + PathSegment(id) + "/revoke" }

// DeviceRevokePath is POST /v1/devices/{id}/revoke for id.
func DeviceRevokePath(id string) string { return "/v1/devices/" + PathSegment(id) + "/revoke" }

// UserUnlockPath is POST /v1/users/{id}/unlock for id.
func UserUnlockPath(id string) string { return "/v1/users/" + PathSegment(id) + "/unlock" }

// KeyRetirePath is POST /v1/keys/{version}/retire; force retires a
// version still held (?force=1).
func KeyRetirePath(version uint8, force bool) string {
	p := "/v1/keys/" + strconv.Itoa(int(version)) + "/retire"
	if force {
		p += "?force=1"
	}
	return p
}
