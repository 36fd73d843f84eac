package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/tagauth/tagauth/internal/buildinfo"
)

// cmdVersion is "tagauth version": which build this is, for bug reports and
// for checking that every host of a deployment runs the same one.
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("version", "[--json]",
		"Shows the module version, the VCS revision and time the binary was built from, the Go\n"+
			"version, the protocol specification version and the profiles this binary implements.", stderr)
	asJSON := fset.Bool("json", false, "print one JSON object instead of lines")
	if err := fset.Parse(args); err != nil {
		return parseExit(err)
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "tagauth version: unexpected argument %q\n", fset.Arg(0))
		fset.Usage()
		return 2
	}
	in := buildinfo.Read()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(in); err != nil {
			reportErr(stderr, "version", err, nil)
			return 1
		}
		return 0
	}
	if err := in.Write(stdout); err != nil {
		reportErr(stderr, "version", err, nil)
		return 1
	}
	return 0
}
