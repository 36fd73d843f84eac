// Command tagauth is the command-line entry point of the project. For now it
// has one real subcommand, demo, which runs a whole login in memory; the
// gateway, device, user and admin subcommands come with the networked
// daemons.
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
		{"demo", "run registration, login and one sealed task in memory, for each profile", cmdDemo},
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
		fmt.Fprintf(w, "  %-6s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "tagauth <command> -h" for the flags of a command.`)
}

func cmdHelp(_ []string, stdout, _ io.Writer) int {
	usage(stdout)
	return 0
}
