// Command tagauth is the one binary of the project: the gateway daemon and
// its administration, the device agent, the user client, and a demo that
// runs all three on loopback.
package main

import (
	"fmt"
	"io"
	"os"
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
		{"user", "enrol, log in to a device, run a task", runUser},
		{"help", "show this help", cmdHelp},
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
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tagauth: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tagauth <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "tagauth <command> -h" for the flags of a command.`)
}

func cmdHelp(_ []string, stdout, _ io.Writer) int {
	usage(stdout)
	return 0
}
