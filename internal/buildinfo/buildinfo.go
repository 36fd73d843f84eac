// Package buildinfo says which tagauth is running: the module version and
// the VCS revision the Go toolchain stamped into the binary, the Go
// version, and the protocol specification and profiles it implements. The
// CLI's "tagauth version" prints it and the admin API's /v1/info can carry
// it, so that an operator can tell which build answered without shell
// access to the host.
package buildinfo

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

// Unknown stands for a value the binary does not carry, such as the VCS
// revision of a build made with -buildvcs=false or outside a checkout.
const Unknown = "unknown"

// Info is what a binary knows about its own build. Its JSON form is
// stable: fields are only ever added.
type Info struct {
	// Module is the main module's path.
	Module string `json:"module"`
	// Version is the main module's version: a tag such as v1.2.0 for a
	// "go install module@version" build, "(devel)" for a build from a
	// checkout (the go command then knows no version), or Unknown.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from, or Unknown.
	Revision string `json:"revision"`
	// Time is the commit's time in RFC 3339, or empty when not stamped.
	Time string `json:"time,omitempty"`
	// Modified says the working tree had uncommitted changes at build time,
	// so Revision alone does not describe the code.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go_version"`
	// SpecVersion is the protocol specification the binary implements
	// (protocol.SpecVersion).
	SpecVersion string `json:"spec_version"`
	// Profiles are the protocol profiles the binary implements.
	Profiles []string `json:"profiles"`
}

// Read returns the running binary's Info. Values the binary does not
// carry are Unknown rather than an error: a test binary or a build with
// -buildvcs=false is still a binary that must be able to say what it is.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	return fromBuildInfo(bi, ok)
}

// fromBuildInfo is Read for a given build record, so that tests can feed
// it the stamped records that a test binary lacks.
func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	in := Info{
		Module:      "github.com/tagauth/tagauth",
		Version:     Unknown,
		Revision:    Unknown,
		GoVersion:   runtime.Version(),
		SpecVersion: protocol.SpecVersion,
		Profiles:    []string{protocol.Hardened.String(), protocol.Classic.String()},
	}
	if !ok || bi == nil {
		return in
	}
	if bi.GoVersion != "" {
		in.GoVersion = bi.GoVersion
	}
	if bi.Main.Path != "" {
		in.Module = bi.Main.Path
	}
	if bi.Main.Version != "" {
		in.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				in.Revision = s.Value
			}
		case "vcs.time":
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
				in.Time = t.UTC().Format(time.RFC3339)
			}
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one-line form, as in "tagauth v1.2.0 (abc1234..., 2026-12-01T10:00:00Z)".
func (in Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tagauth %s", in.Version)
	if in.Revision != Unknown {
		rev := in.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if in.Modified {
			rev += "+modified"
		}
		if in.Time != "" {
			rev += ", " + in.Time
		}
		fmt.Fprintf(&b, " (%s)", rev)
	}
	fmt.Fprintf(&b, " %s, spec %s", in.GoVersion, in.SpecVersion)
	return b.String()
}

// Write prints Info as aligned "name: value" lines, for people.
func (in Info) Write(w io.Writer) error {
	rev := in.Revision
	if in.Modified {
		rev += " (modified working tree)"
	}
	t := in.Time
	if t == "" {
		t = Unknown
	}
	_, err := fmt.Fprintf(w, "module:   %s\nversion:  %s\nrevision: %s\ntime:     %s\ngo:       %s\nspec:     %s\nprofiles: %s\n",
		in.Module, in.Version, rev, t, in.GoVersion, in.SpecVersion, strings.Join(in.Profiles, ", "))
	return err
}
