// Command tagauth is the one binary of the project: the gateway daemon and
// its administration, the device agent, the user client, and a demo that
// runs all three on loopback.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one subcommand. Each parses its own flags with the standard
// flag package, so that "tagauth demo -h" documents only demo.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"demo", "run a gateway, a device agent and a user on loopback: enrol, log in, run tasks", cmdDemo},
		{"bench", "load a gateway on loopback and compare it with UDP echo and mTLS baselines", runBench},
		{"gateway", "run the gateway, manage its keys, and administer users, devices and policy", runGateway},
		{"device", "run the device agent (serves login, confirm and task over CoAP)", runDevice},
		{"user", "enrol, log in to a device, run tasks, change the card's password", runUser},
		{"version", "show the version, VCS revision, Go version, spec version and profiles", cmdVersion},
		{"help", "show this help, or a command's: tagauth help COMMAND [SUBCOMMAND]", cmdHelp},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit status: 0 on success,
// 1 when the command failed, 2 for a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if isHelpFlag(args[0]) {
		usage(stdout)
		return 0
	}
	if args[0] == "--version" {
		return cmdVersion(nil, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tagauth: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// isHelpFlag reports whether arg asks for help in any of the spellings
// people type: the flag package's -h and -help, GNU's --help.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tagauth <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "tagauth help <command>" or "tagauth <command> -h" for the flags of a command.`)
}

// cmdHelp is "tagauth help [COMMAND [SUBCOMMAND...]]". A command's usage
// is what its own -h prints, so that the two can never disagree; it goes
// to stdout here because the user asked for it (a pager can read it).
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelpFlag(args[0]) {
		usage(stdout)
		return 0
	}
	if args[0] == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(append(args[1:len(args):len(args)], "-h"), stdout, stdout)
		}
	}
	fmt.Fprintf(stderr, "tagauth help: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// newFlagSet makes the flag set of "tagauth PATH" whose -h prints the
// project's usage convention: the synopsis line, a one-line description
// (or a few lines), then the flags. path is the command's words after
// "tagauth", such as "user login"; argsLine what follows them.
func newFlagSet(path, argsLine, about string, w io.Writer) *flag.FlagSet {
	fset := flag.NewFlagSet(path, flag.ContinueOnError)
	fset.SetOutput(w)
	fset.Usage = func() {
		fmt.Fprintf(w, "usage: tagauth %s %s\n\n%s\n", path, argsLine, about)
		hasFlags := false
		fset.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(w, "\nflags:")
			fset.PrintDefaults()
		}
	}
	return fset
}

// parseExit is the exit status of a flag parse that failed: 0 when the
// user asked for help (the usage was printed, as asked), 2 otherwise (the
// flag package printed the error and the usage).
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// errorLine is the one line that reports err from "tagauth CMD". Errors
// wrap context at every boundary, and several layers open their message
// with their own name ("gateway: ...", "enrol: ..."), while the protocol's
// codes and reasons begin with "tagauth: "; printed after "tagauth CMD: "
// they read "tagauth gateway: gateway: store is locked" or "...: tagauth:
// rejected". A leading word that repeats a word of the command (or its
// stem: "enrol" for "enroll") and every inner "tagauth: " say nothing new,
// so they are dropped; other prefixes ("card: ") name where the error
// arose and stay.
func errorLine(cmd string, err error) string {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, ": tagauth: ", ": ")
	words := append(strings.Fields(cmd), "tagauth")
	for {
		head, rest, ok := strings.Cut(msg, ": ")
		if !ok || rest == "" || !repeats(head, words) {
			break
		}
		msg = rest
	}
	return "tagauth " + cmd + ": " + msg
}

// repeats reports whether head, the part of a message before its first
// ": ", is one of words or the stem of one.
func repeats(head string, words []string) bool {
	if head == "" || strings.ContainsAny(head, " \t") {
		return false
	}
	for _, w := range words {
		if strings.HasPrefix(w, head) {
			return true
		}
	}
	return false
}

// reportErr prints err as "tagauth CMD: message" and, when hint knows the
// error, the hint on the lines after it (indented, so that the first line
// stays the one a script greps).
func reportErr(w io.Writer, cmd string, err error, hint func(error) string) {
	fmt.Fprintln(w, errorLine(cmd, err))
	if hint == nil {
		return
	}
	if h := hint(err); h != "" {
		for line := range strings.SplitSeq(h, "\n") {
			fmt.Fprintln(w, "  "+line)
		}
	}
}
