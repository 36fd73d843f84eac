package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

// userSubcommand is one "tagauth user" subcommand. stdin is an argument
// because the shell reads its tasks from it and tests feed it.
type userSubcommand struct {
	name, summary string
	run           func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func userSubcommands() []userSubcommand {
	return []userSubcommand{
		{"enroll", "register with the gateway using a one-time enrolment code and write your card file", userEnroll},
		{"login", "log in to a device; prints who was authenticated and the key fingerprint", userLogin},
		{"task", "log in to a device and run one task", userTask},
		{"tasks", "log in to a device and list the tasks it offers", userTasks},
		{"shell", "log in to a device once and run the tasks read from stdin, a line each", userShell},
		{"passwd", "change your card's password (on this host; the gateway is not involved)", userPasswd},
	}
}

const userPasswordNote = `The password is asked without echo (twice when it is a new one). For scripts:
--password-fd N reads it from file descriptor N (first line), or the environment
variable TAGAUTH_PASSWORD holds it; passwd reads the new one from --new-password-fd
or TAGAUTH_NEW_PASSWORD.`

func userUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: tagauth user <subcommand> [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "subcommands:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range userSubcommands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, userPasswordNote)
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "tagauth user <subcommand> -h" for its flags.`)
}

func runUser(args []string, stdout, stderr io.Writer) int {
	return runUserIO(args, os.Stdin, stdout, stderr)
}

func runUserIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		userUsage(stderr)
		return 2
	}
	if args[0] == "help" && len(args) > 1 && !isHelpFlag(args[1]) {
		// "tagauth user help passwd" is "tagauth user passwd -h", on stdout.
		return runUserIO([]string{args[1], "-h"}, stdin, stdout, stdout)
	}
	if isHelpFlag(args[0]) || args[0] == "help" {
		userUsage(stdout)
		return 0
	}
	name := args[0]
	if name == "enrol" {
		name = "enroll"
	}
	for _, c := range userSubcommands() {
		if c.name == name {
			return c.run(args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tagauth user: unknown subcommand %q\n\n", args[0])
	userUsage(stderr)
	return 2
}

// passwordSource reads a password from a descriptor, the environment or
// the terminal, in that order.
type passwordSource struct {
	fd     int
	flag   string // the descriptor's flag, for messages
	env    string // the environment variable
	prompt string // what the terminal shows
}

func (ps *passwordSource) register(fs *flag.FlagSet) {
	ps.registerAs(fs, "password-fd", "TAGAUTH_PASSWORD", "Password", "read the password from this file descriptor (first line)")
}

func (ps *passwordSource) registerAs(fs *flag.FlagSet, name, env, prompt, usage string) {
	ps.flag, ps.env, ps.prompt = name, env, prompt
	fs.IntVar(&ps.fd, name, -1, usage)
}

func (ps *passwordSource) read(stderr io.Writer, confirm bool) (string, error) {
	if ps.fd >= 0 {
		f := os.NewFile(uintptr(ps.fd), ps.flag)
		if f == nil {
			return "", fmt.Errorf("--%s %d is not an open file descriptor", ps.flag, ps.fd)
		}
		line, err := bufio.NewReader(f).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the password from fd %d: %w", ps.fd, err)
		}
		return nonEmpty(strings.TrimRight(line, "\r\n"))
	}
	if pw, ok := os.LookupEnv(ps.env); ok {
		return nonEmpty(pw)
	}
	// With stdin piped (the shell's tasks), the password is asked on the
	// controlling terminal, as ssh and sudo do.
	tty := int(os.Stdin.Fd())
	if !term.IsTerminal(tty) {
		f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
		if err != nil || !term.IsTerminal(int(f.Fd())) {
			if f != nil {
				f.Close()
			}
			return "", fmt.Errorf("no terminal to ask the password on: use --%s N or %s", ps.flag, ps.env)
		}
		defer f.Close()
		tty = int(f.Fd())
	}
	fmt.Fprintf(stderr, "%s: ", ps.prompt)
	pw, err := term.ReadPassword(tty)
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprintf(stderr, "%s again: ", ps.prompt)
		again, err := term.ReadPassword(tty)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if string(again) != string(pw) {
			return "", errors.New("the two passwords differ")
		}
	}
	return nonEmpty(string(pw))
}

func nonEmpty(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}

// adminFlags are the flags that locate and pin the gateway's admin API.
type adminFlags struct {
	url, fingerprint string
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.url, "admin", os.Getenv("TAGAUTH_ADMIN_URL"), "gateway admin `URL`, e.g. https://gw.example:8443 (env TAGAUTH_ADMIN_URL)")
	fs.StringVar(&a.fingerprint, "fingerprint", os.Getenv("TAGAUTH_FINGERPRINT"), "SHA-256 fingerprint (`hex`) of the gateway's admin certificate, as the gateway printed it (env TAGAUTH_FINGERPRINT)")
}

// userParse parses a user subcommand's flags; when it returns false the
// command is over with the status it gives (0 after -h).
func userParse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		return parseExit(err), false
	}
	return 0, true
}

func userEnroll(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	const cmd = "user enroll"
	fs := newFlagSet(cmd, "--code CODE --id ID --card FILE --admin URL --fingerprint HEX [flags]",
		"Registers you with the gateway using the one-time enrolment code an operator gave you,\n"+
			"and writes your card file, sealed with your password.", stderr)
	var af adminFlags
	var ps passwordSource
	af.register(fs)
	ps.register(fs)
	code := fs.String("code", "", "one-time enrolment `code` from the operator")
	id := fs.String("id", "", "your user `identity` (must match the code)")
	cardPath := fs.String("card", "", "where to write your card `file` (must not exist)")
	profile := fs.String("profile", "hardened", "protocol `profile`: hardened or classic (must match the gateway)")
	kdfT := fs.Uint("kdf-t", uint(protocol.DefaultKDF.Time), "Argon2id passes (hardened)")
	kdfM := fs.Uint("kdf-m", uint(protocol.DefaultKDF.MemoryKiB), "Argon2id memory in `KiB` (hardened)")
	kdfP := fs.Uint("kdf-p", uint(protocol.DefaultKDF.Threads), "Argon2id lanes (hardened)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if rc, ok := userParse(fs, args); !ok {
		return rc
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tagauth %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	if *code == "" || *id == "" || *cardPath == "" || af.url == "" || af.fingerprint == "" {
		fmt.Fprintf(stderr, "tagauth %s: --code, --id, --card, --admin and --fingerprint are required\n", cmd)
		return 2
	}
	p, err := protocol.ParseProfile(*profile)
	if err != nil {
		reportErr(stderr, cmd, err, nil)
		return 2
	}
	kdf := protocol.KDFParams{Time: uint32(*kdfT), MemoryKiB: uint32(*kdfM), Threads: uint8(min(*kdfP, 255))}
	if _, err := os.Lstat(*cardPath); err == nil {
		fmt.Fprintf(stderr, "tagauth %s: %s already exists; choose another path or move it away\n", cmd, *cardPath)
		return 1
	}
	pw, err := ps.read(stderr, true)
	if err != nil {
		reportErr(stderr, cmd, err, nil)
		return 1
	}
	hc, err := pinnedClient(af.fingerprint, *timeout) // hints.go
	if err != nil {
		reportErr(stderr, cmd, err, nil)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	c, err := userclient.Enroll(ctx, hc, strings.TrimRight(af.url, "/"), *code, *id, pw, p, kdf, cfg)
	if err != nil {
		reportErr(stderr, cmd, pinMessage(err), commonHint)
		return 1
	}
	sealed, err := card.Seal(c, pw, rand.Reader)
	if err == nil {
		err = card.SaveNew(*cardPath, sealed)
	}
	if err != nil {
		reportErr(stderr, cmd, err, nil)
		return 1
	}
	fmt.Fprintf(stdout, "enrolled %s (%s profile); card written to %s (mode 0600, sealed with your password)\n", c.ID, c.Profile, *cardPath)
	return 0
}

// loginFlags are the flags of every command that logs in to a device.
type loginFlags struct {
	ps         passwordSource
	card       string
	device     string
	did        string
	mf         mqttFlags
	timeout    time.Duration
	ackTimeout time.Duration
}

// loginSynopsis is the common part of the synopses of the login commands.
const loginSynopsis = "--card FILE --device ADDR --did DID [flags]"

func (lf *loginFlags) register(fs *flag.FlagSet) {
	lf.ps.register(fs)
	fs.StringVar(&lf.card, "card", os.Getenv("TAGAUTH_CARD"), "your card `file` (env TAGAUTH_CARD)")
	fs.StringVar(&lf.device, "device", "", "device agent `address` host:port, or its MQTT broker mqtt://host:1883 (the device is then found by --did)")
	lf.mf.register(fs, "reach the device")
	fs.StringVar(&lf.did, "did", "", "the device's identity DID_j")
	fs.DurationVar(&lf.timeout, "timeout", 20*time.Second, "give up the login (and each task) after this long")
	fs.DurationVar(&lf.ackTimeout, "ack-timeout", coap.DefaultACKTimeout, "first CoAP retransmission timeout")
}

// check reports missing flags as a usage error message, or "".
func (lf *loginFlags) check() string {
	if lf.card == "" || lf.device == "" || lf.did == "" {
		return "--card, --device and --did are required"
	}
	return ""
}

// userSession is a login to a device and what it holds open.
type userSession struct {
	user    *protocol.User
	conn    *userclient.Conn
	did     string
	closers []func()
}

// Close ends the session, the card's unlocked state and the connections.
func (s *userSession) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// login opens the card and logs in to the device. The error's hint
// depends on where it failed, so it comes back with it.
// The broker connection, when there is one, lives as long as the session;
// the login's steps are bounded by --timeout.
func (lf *loginFlags) login(stderr io.Writer) (_ *userSession, hint func(error) string, err error) {
	s := &userSession{did: lf.did}
	life, end := context.WithCancel(context.Background())
	s.closers = append(s.closers, end)
	ctx, cancel := context.WithTimeout(life, lf.timeout)
	defer cancel()
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	data, err := card.Load(lf.card)
	if err != nil {
		return nil, commonHint, err
	}
	pw, err := lf.ps.read(stderr, false)
	if err != nil {
		return nil, nil, err
	}
	c, err := card.Open(data, pw)
	if err != nil {
		return nil, commonHint, err
	}
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	if s.user, err = protocol.Unlock(c, pw, cfg); err != nil {
		return nil, commonHint, err
	}
	s.closers = append(s.closers, s.user.Close)
	var dev transport.Poster
	mf := lf.mf
	if broker, ok := mqttDevice(lf.device); ok || mf.url != "" {
		// Through the broker (spec section 12): no UDP to the device.
		// Its topic comes from --did, so a mistyped DID reaches no
		// device at all (a timeout), never a gateway.
		if ok {
			mf.url = broker
		}
		if mf.clientID == "" {
			if mf.clientID, err = userClientID(lf.card + ".mqtt-client-id"); err != nil { // mqtt.go
				return nil, nil, err
			}
		}
		mc, err := mf.dial(life, nil)
		if err != nil {
			return nil, nil, err
		}
		s.closers = append(s.closers, func() { mc.Close() })
		rq, err := mqttbind.NewRequester(ctx, mc)
		if err != nil {
			return nil, nil, err
		}
		if err := mc.Ready(ctx); err != nil {
			return nil, nil, err
		}
		dev = rq.Device(lf.did)
	} else {
		client := &coap.Client{ACKTimeout: lf.ackTimeout}
		// A mistyped --did would reach the gateway as a failed login and
		// count toward the lockout: ask the device first.
		if err := userclient.CheckDevice(ctx, client, lf.device, lf.did, s.user.Profile()); err != nil {
			if errors.Is(err, userclient.ErrWrongDevice) {
				return nil, nil, fmt.Errorf("%w; nothing was sent that could count as a failed login", err)
			}
			return nil, commonHint, err
		}
		dev = transport.CoAP{Client: client, Addr: lf.device}
	}
	if s.conn, err = userclient.LoginVia(ctx, s.user, dev, lf.did); err != nil {
		return nil, loginHint, err
	}
	s.closers = append(s.closers, s.conn.Close)
	return s, nil, nil
}

// task runs one task on the session. A refusal by the device (ok false)
// is an error that names the task; its text is the device's.
func (s *userSession) task(ctx context.Context, name, args string) (string, error) {
	resp, err := s.conn.Task(ctx, name, args)
	if err != nil {
		return "", err
	}
	if !resp.OK {
		return "", &taskRefused{did: s.did, task: name, msg: resp.Error}
	}
	return resp.Result, nil
}

// taskRefused is a task the device ran, or would not run, and answered
// with an error over the session.
type taskRefused struct{ did, task, msg string }

func (e *taskRefused) Error() string {
	return fmt.Sprintf("device %s refused task %q: %s", e.did, e.task, e.msg)
}

// loginCommand parses the flags of a login command and logs in. When it
// returns a nil session the command is over with the given status.
func loginCommand(cmd, argsLine, about string, args []string, stderr io.Writer, extra func(*flag.FlagSet), check func(*flag.FlagSet) string) (*userSession, *loginFlags, *flag.FlagSet, int) {
	fs := newFlagSet(cmd, argsLine, about, stderr)
	lf := &loginFlags{}
	lf.register(fs)
	if extra != nil {
		extra(fs)
	}
	if rc, ok := userParse(fs, args); !ok {
		return nil, nil, nil, rc
	}
	msg := lf.check()
	if msg == "" && check != nil {
		msg = check(fs)
	}
	if msg != "" {
		fmt.Fprintf(stderr, "tagauth %s: %s\n", cmd, msg)
		return nil, nil, nil, 2
	}
	s, hint, err := lf.login(stderr)
	if err != nil {
		reportErr(stderr, cmd, err, hint)
		return nil, nil, nil, 1
	}
	return s, lf, fs, 0
}

// noArgs refuses positional arguments.
func noArgs(fs *flag.FlagSet) string {
	if fs.NArg() > 0 {
		return fmt.Sprintf("unexpected argument %q", fs.Arg(0))
	}
	return ""
}

func userLogin(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	s, _, _, rc := loginCommand("user login", loginSynopsis,
		"Logs in to a device and prints who was authenticated and the session key's fingerprint.", args, stderr, nil, noArgs)
	if s == nil {
		return rc
	}
	defer s.Close()
	fp := s.conn.Session.Fingerprint()
	fmt.Fprintf(stdout, "authenticated: user %s <-> device %s (%s profile)\nsession key fingerprint: %x\n", s.user.ID(), s.did, s.user.Profile(), fp[:8])
	return 0
}

func userTask(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	const cmd = "user task"
	s, lf, fs, rc := loginCommand(cmd, loginSynopsis+" NAME [ARGS...]",
		"Logs in to a device, runs task NAME with ARGS (joined by spaces) and prints its answer.\n"+
			`"tagauth user tasks" lists the tasks a device offers.`, args, stderr, nil,
		func(fs *flag.FlagSet) string {
			if fs.NArg() < 1 {
				return "name the task, e.g. sensor.read (tagauth user tasks lists them)"
			}
			return ""
		})
	if s == nil {
		return rc
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), lf.timeout)
	defer cancel()
	res, err := s.task(ctx, fs.Arg(0), strings.Join(fs.Args()[1:], " "))
	if err != nil {
		reportErr(stderr, cmd, err, taskHint)
		return 1
	}
	fmt.Fprintln(stdout, res)
	return 0
}
