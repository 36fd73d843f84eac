package main

import (
	"context"
	"flag"
	"io"
	"os"
	"regexp"
	"testing"

	"filippo.io/age"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/tagauth/tagauth/internal/testenv"
)

// The CLI's tests as scripts, as age keeps them under cmd/age/testdata:
// each testdata/script/NAME.txtar runs "tagauth ..." commands and checks
// their output and exit status. Run one with
//
//	go test ./cmd/tagauth -run TestScript/NAME
//
// and see testscript's documentation for the language. The tagauth
// command is this test binary itself, registered in TestMain, so a script
// runs the code under test without a separate build.

// scriptLogEnv names a file that a tagauth started by a script also
// writes its output to. A background command's output reaches the script
// only when it ends; the log lets a script wait for a line of a daemon
// still running ("serving CoAP on ...").
const scriptLogEnv = "TAGAUTH_SCRIPT_LOG"

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"tagauth": scriptTagauth})
}

// scriptTagauth is main, with the output also appended to the file
// TAGAUTH_SCRIPT_LOG names, if any.
func scriptTagauth() {
	var stdout, stderr io.Writer = os.Stdout, os.Stderr
	if p := os.Getenv(scriptLogEnv); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(3)
		}
		stdout, stderr = io.MultiWriter(os.Stdout, f), io.MultiWriter(os.Stderr, f)
	}
	os.Exit(run(os.Args[1:], stdout, stderr))
}

func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds: map[string]func(*testscript.TestScript, bool, []string){
			"waitmatch": cmdWaitMatch,
			"agekey":    cmdAgeKey,
		},
	})
}

// cmdWaitMatch is the script command
//
//	waitmatch [-env NAME] [-timeout D] FILE REGEXP
//
// which waits, for at most D (default testenv.Wait), until FILE exists and
// matches REGEXP (multi-line mode); with -env it sets NAME to the first
// submatch, or the whole match if REGEXP has none. FILE may be stdout or
// stderr, the output of the last command. It is how a script waits for a
// daemon started with & (its admin.json, a line of its log) instead of
// sleeping, and how it keeps a value a command printed (an enrolment
// code) for the next commands.
func cmdWaitMatch(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! waitmatch")
	}
	fs := flag.NewFlagSet("waitmatch", flag.ContinueOnError)
	env := fs.String("env", "", "set this variable to the match")
	timeout := fs.Duration("timeout", testenv.Wait, "how long to wait")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		ts.Fatalf("usage: waitmatch [-env NAME] [-timeout D] FILE REGEXP")
	}
	file := fs.Arg(0)
	rx, err := regexp.Compile("(?m)" + fs.Arg(1))
	ts.Check(err)
	var m []string
	read := func() string {
		if file == "stdout" || file == "stderr" {
			return ts.ReadFile(file)
		}
		b, err := os.ReadFile(ts.MkAbs(file))
		if err != nil {
			return ""
		}
		return string(b)
	}
	if !testenv.Poll(context.Background(), *timeout, func() bool {
		m = rx.FindStringSubmatch(read())
		return m != nil
	}) {
		ts.Fatalf("%s did not match %q within %v; it holds:\n%s", file, fs.Arg(1), *timeout, read())
	}
	if *env != "" {
		ts.Setenv(*env, m[min(1, len(m)-1)])
	}
}

// cmdAgeKey is the script command
//
//	agekey FILE NAME
//
// which writes a new age identity (AGE-SECRET-KEY-1...) to FILE, mode
// 0600, and sets NAME to its recipient (age1...): what age-keygen does,
// without needing age-keygen on the machine, for the backups a script
// encrypts to a recipient.
func cmdAgeKey(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: agekey FILE NAME")
	}
	id, err := age.GenerateX25519Identity()
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(id.String()+"\n"), 0o600))
	ts.Setenv(args[1], id.Recipient().String())
}
