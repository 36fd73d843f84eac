package gateway_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/tagauth/tagauth/internal/buildinfo"
	"github.com/tagauth/tagauth/protocol"
)

// TestInfoJSON: /v1/info is read by clients in any language, so its numbers
// are JSON numbers (a Go []uint8 would be base64, "AQ=="), and it says
// which version of the spec the gateway implements.
func TestInfoJSON(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	var raw map[string]json.RawMessage
	tg.call(http.MethodGet, "/v1/info", nil, &raw)
	if got := string(raw["key_versions"]); got != "[1]" {
		t.Errorf("key_versions %s, want [1]", got)
	}
	if got := string(raw["spec_version"]); got != `"`+protocol.SpecVersion+`"` || protocol.SpecVersion != "1.1" {
		t.Errorf("spec_version %s, want \"1.1\"", got)
	}
	// The binary's build, as "tagauth version --json" prints it.
	var build buildinfo.Info
	if err := json.Unmarshal(raw["build"], &build); err != nil {
		t.Fatalf("build %s: %v", raw["build"], err)
	}
	if want := buildinfo.Read(); build.GoVersion != want.GoVersion || build.Module != want.Module || build.Version != want.Version ||
		build.Revision != want.Revision || build.SpecVersion != protocol.SpecVersion || len(build.Profiles) != 2 {
		t.Errorf("build %+v, want %+v", build, want)
	}
}
