package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/tagauth/tagauth/internal/device"
)

// userTasks is "tagauth user tasks": the device's own list of its tasks
// (the built-in task "tasks"), so that what a device offers is found by
// asking it rather than by reading its integrator's notes.
func userTasks(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	const cmd = "user tasks"
	var asJSON bool
	s, lf, fs, rc := loginCommand(cmd, loginSynopsis+" [PREFIX]",
		"Logs in to a device and lists the tasks it offers (those whose names start with PREFIX),\n"+
			"with their arguments.", args, stderr,
		func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print the device's JSON list as it came") },
		func(fs *flag.FlagSet) string {
			if fs.NArg() > 1 {
				return fmt.Sprintf("unexpected argument %q", fs.Arg(1))
			}
			return ""
		})
	if s == nil {
		return rc
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), lf.timeout)
	defer cancel()
	res, err := s.task(ctx, "tasks", fs.Arg(0))
	var tr *taskRefused
	if errors.As(err, &tr) && strings.HasPrefix(tr.msg, "unknown task") {
		fmt.Fprintf(stderr, "tagauth %s: device %s does not list its tasks (an agent older than this client, or one without built-in tasks)\n", cmd, s.did)
		fmt.Fprintln(stderr, "  the built-in tasks of a tagauth device agent are echo, sensor.read and control.write (docs/OPERATIONS.md)")
		return 1
	}
	if err != nil {
		reportErr(stderr, cmd, err, taskHint)
		return 1
	}
	var list []device.TaskInfo
	if err := json.Unmarshal([]byte(res), &list); err != nil {
		reportErr(stderr, cmd, fmt.Errorf("device %s answered tasks with something other than a JSON list: %w", s.did, err), nil)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			reportErr(stderr, cmd, err, nil)
			return 1
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tARGS\tWHAT IT DOES")
	for _, t := range list {
		// The list comes from the device: a hostile one must not write
		// escape sequences to the user's terminal.
		fmt.Fprintf(tw, "%s\t%s\t%s\n", printable(t.Name), printable(t.Args), printable(t.About))
	}
	if err := tw.Flush(); err != nil {
		reportErr(stderr, cmd, err, nil)
		return 1
	}
	return 0
}

// printable replaces control characters, which a device's text could use
// to rewrite the user's terminal, with the Unicode replacement character.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '\uFFFD'
		}
		return r
	}, s)
}

const shellHelp = `one task per line: NAME [ARGS...]   (for example: sensor.read humidity)
  tasks           what this device offers
  help            this text
  quit, exit      end the session (so does end of input)
Lines starting with # are comments.`

// userShell is "tagauth user shell": one login, then as many tasks as the
// user types or a script pipes in, each sealed on the same session. A
// login costs the card an Argon2id and the gateway a verify; a task costs
// two AEAD operations and one round trip.
func userShell(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	const cmd = "user shell"
	s, lf, _, rc := loginCommand(cmd, loginSynopsis,
		"Logs in to a device once, then reads tasks from stdin, one per line (NAME [ARGS...]),\n"+
			"runs each over the same session and prints its answer. quit, exit or the end of the\n"+
			"input ends the session. Exits 1 if any task failed.", args, stderr, nil, noArgs)
	if s == nil {
		return rc
	}
	defer s.Close()
	f, isFile := stdin.(*os.File)
	interactive := isFile && term.IsTerminal(int(f.Fd()))
	if interactive {
		fmt.Fprintf(stderr, "logged in to %s as %s; type help for help\n", s.did, s.user.ID())
	}
	status := 0
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 0, 4096), device.MaxResult)
	for {
		if interactive {
			fmt.Fprint(stderr, "tagauth> ")
		}
		if !sc.Scan() {
			break
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, targs, _ := strings.Cut(line, " ")
		targs = strings.TrimSpace(targs)
		switch name {
		case "quit", "exit":
			return status
		case "help":
			fmt.Fprintln(stdout, shellHelp)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), lf.timeout)
		res, err := s.task(ctx, name, targs)
		cancel()
		var tr *taskRefused
		switch {
		case err == nil:
			fmt.Fprintln(stdout, res)
		case errors.As(err, &tr):
			// The session is fine; the device did not like this task.
			reportErr(stderr, cmd, err, nil)
			status = 1
		default:
			// The session itself failed (expired, the device restarted,
			// no answer): the next task would fail the same way.
			reportErr(stderr, cmd, err, taskHint)
			return 1
		}
	}
	if err := sc.Err(); err != nil {
		reportErr(stderr, cmd, fmt.Errorf("reading tasks: %w", err), nil)
		return 1
	}
	return status
}
