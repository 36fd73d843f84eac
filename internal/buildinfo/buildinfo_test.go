package buildinfo

import (
	"bytes"
	"encoding/json"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

func TestFromStampedBuild(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/tagauth/tagauth", Version: "v1.2.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "6a144f0e2b1c0d9f8e7a6b5c4d3e2f1a0b9c8d7e"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00+01:00"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	in := fromBuildInfo(bi, true)
	if in.Version != "v1.2.0" || in.Revision != "6a144f0e2b1c0d9f8e7a6b5c4d3e2f1a0b9c8d7e" || !in.Modified || in.GoVersion != "go1.26.8" {
		t.Fatalf("info %+v", in)
	}
	if in.Time != "2026-12-01T09:00:00Z" {
		t.Errorf("time %q, want it in UTC", in.Time)
	}
	if got, want := in.String(), "tagauth v1.2.0 (6a144f0e2b1c+modified, 2026-12-01T09:00:00Z) go1.26.8, spec "+protocol.SpecVersion; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	var buf bytes.Buffer
	if err := in.Write(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version:  v1.2.0\n", "revision: 6a144f0e2b1c0d9f8e7a6b5c4d3e2f1a0b9c8d7e (modified working tree)\n", "profiles: hardened, classic\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("Write lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestUnstampedBuild: a build without VCS stamps (go test, -buildvcs=false)
// says unknown instead of printing empty fields.
func TestUnstampedBuild(t *testing.T) {
	for _, bi := range []*debug.BuildInfo{nil, {Main: debug.Module{Path: "github.com/tagauth/tagauth", Version: "(devel)"}}} {
		in := fromBuildInfo(bi, bi != nil)
		if in.Revision != Unknown || in.Time != "" || in.Modified {
			t.Errorf("unstamped build: %+v", in)
		}
		if in.GoVersion == "" || in.SpecVersion != protocol.SpecVersion || len(in.Profiles) != 2 {
			t.Errorf("unstamped build lacks the toolchain, spec or profiles: %+v", in)
		}
		if strings.Contains(in.String(), "(") && bi == nil {
			t.Errorf("String() of an unstamped build shows a revision: %q", in.String())
		}
	}
}

// TestJSONNames: the JSON field names are an interface (/v1/info and
// "tagauth version --json"); renaming one breaks scripts.
func TestJSONNames(t *testing.T) {
	b, err := json.Marshal(Read())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"module", "version", "revision", "go_version", "spec_version", "profiles"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}
}
