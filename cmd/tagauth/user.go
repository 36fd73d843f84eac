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
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/card"
	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/mqttbind"
	"github.com/tagauth/tagauth/internal/transport"
	"github.com/tagauth/tagauth/internal/userclient"
	"github.com/tagauth/tagauth/protocol"
)

const userUsage = `usage: tagauth user <enroll|login|task> [flags]

  enroll  register with the gateway using a one-time enrolment code and
          write your card file (sealed with your password)
  login   log in to a device; prints who was authenticated and the key
          fingerprint
  task    log in to a device and run one task: tagauth user task [flags] NAME [ARGS]

The password is asked twice without echo at enrolment and once at login. For
scripts: --password-fd N reads it from file descriptor N (first line), or the
environment variable TAGAUTH_PASSWORD holds it.`

func runUser(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, userUsage)
		return 2
	}
	switch args[0] {
	case "enroll", "enrol":
		return userEnroll(args[1:], stdout, stderr)
	case "login":
		return userLogin(args[1:], stdout, stderr, false)
	case "task":
		return userLogin(args[1:], stdout, stderr, true)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, userUsage)
		return 0
	}
	fmt.Fprintf(stderr, "tagauth user: unknown subcommand %q\n\n%s\n", args[0], userUsage)
	return 2
}

// passwordSource reads the user's password from a descriptor, the
// environment or the terminal, in that order.
type passwordSource struct {
	fd int
}

func (ps *passwordSource) register(fs *flag.FlagSet) {
	fs.IntVar(&ps.fd, "password-fd", -1, "read the password from this file descriptor (first line)")
}

func (ps *passwordSource) read(stderr io.Writer, confirm bool) (string, error) {
	if ps.fd >= 0 {
		f := os.NewFile(uintptr(ps.fd), "password-fd")
		if f == nil {
			return "", fmt.Errorf("--password-fd %d is not an open file descriptor", ps.fd)
		}
		line, err := bufio.NewReader(f).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the password from fd %d: %w", ps.fd, err)
		}
		return nonEmpty(strings.TrimRight(line, "\r\n"))
	}
	if pw, ok := os.LookupEnv("TAGAUTH_PASSWORD"); ok {
		return nonEmpty(pw)
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", errors.New("no terminal to ask the password on: use --password-fd N or TAGAUTH_PASSWORD")
	}
	fmt.Fprint(stderr, "Password: ")
	pw, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(stderr, "Password again: ")
		again, err := term.ReadPassword(int(os.Stdin.Fd()))
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
	fs.StringVar(&a.url, "admin", os.Getenv("TAGAUTH_ADMIN_URL"), "gateway admin URL, e.g. https://gw.example:8443 (env TAGAUTH_ADMIN_URL)")
	fs.StringVar(&a.fingerprint, "fingerprint", os.Getenv("TAGAUTH_FINGERPRINT"), "SHA-256 fingerprint of the gateway's admin certificate, as the gateway printed it (env TAGAUTH_FINGERPRINT)")
}

func userEnroll(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tagauth user enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var af adminFlags
	var ps passwordSource
	af.register(fs)
	ps.register(fs)
	code := fs.String("code", "", "one-time enrolment code from the operator")
	id := fs.String("id", "", "your user identity (must match the code)")
	cardPath := fs.String("card", "", "where to write your card file (must not exist)")
	profile := fs.String("profile", "hardened", "protocol profile: hardened or classic (must match the gateway)")
	kdfT := fs.Uint("kdf-t", uint(protocol.DefaultKDF.Time), "Argon2id passes (hardened)")
	kdfM := fs.Uint("kdf-m", uint(protocol.DefaultKDF.MemoryKiB), "Argon2id memory in KiB (hardened)")
	kdfP := fs.Uint("kdf-p", uint(protocol.DefaultKDF.Threads), "Argon2id lanes (hardened)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *code == "" || *id == "" || *cardPath == "" || af.url == "" || af.fingerprint == "" {
		fmt.Fprintln(stderr, "tagauth user enroll: --code, --id, --card, --admin and --fingerprint are required")
		return 2
	}
	p, err := protocol.ParseProfile(*profile)
	if err != nil {
		fmt.Fprintln(stderr, "tagauth user enroll:", err)
		return 2
	}
	kdf := protocol.KDFParams{Time: uint32(*kdfT), MemoryKiB: uint32(*kdfM), Threads: uint8(min(*kdfP, 255))}
	if _, err := os.Lstat(*cardPath); err == nil {
		fmt.Fprintf(stderr, "tagauth user enroll: %s already exists; choose another path or move it away\n", *cardPath)
		return 1
	}
	pw, err := ps.read(stderr, true)
	if err != nil {
		fmt.Fprintln(stderr, "tagauth user enroll:", err)
		return 1
	}
	hc, err := adminapi.PinnedClient(af.fingerprint, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "tagauth user enroll:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	c, err := userclient.Enroll(ctx, hc, strings.TrimRight(af.url, "/"), *code, *id, pw, p, kdf, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "tagauth user enroll:", err)
		return 1
	}
	sealed, err := card.Seal(c, pw, rand.Reader)
	if err == nil {
		err = card.SaveNew(*cardPath, sealed)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tagauth user enroll:", err)
		return 1
	}
	fmt.Fprintf(stdout, "enrolled %s (%s profile); card written to %s (mode 0600, sealed with your password)\n", c.ID, c.Profile, *cardPath)
	return 0
}

func userLogin(args []string, stdout, stderr io.Writer, task bool) int {
	name := "tagauth user login"
	if task {
		name = "tagauth user task"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ps passwordSource
	ps.register(fs)
	cardPath := fs.String("card", os.Getenv("TAGAUTH_CARD"), "your card file (env TAGAUTH_CARD)")
	device := fs.String("device", "", "device agent address host:port, or its MQTT broker mqtt://host:1883 (the device is then found by --did)")
	var mf mqttFlags
	mf.register(fs, "reach the device")
	did := fs.String("did", "", "the device's identity DID_j")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long")
	ackTimeout := fs.Duration("ack-timeout", coap.DefaultACKTimeout, "first CoAP retransmission timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cardPath == "" || *device == "" || *did == "" {
		fmt.Fprintf(stderr, "%s: --card, --device and --did are required\n", name)
		return 2
	}
	if task && fs.NArg() < 1 {
		fmt.Fprintf(stderr, "%s: name the task, e.g. sensor.read\n", name)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	data, err := card.Load(*cardPath)
	if err != nil {
		return fail(err)
	}
	pw, err := ps.read(stderr, false)
	if err != nil {
		return fail(err)
	}
	c, err := card.Open(data, pw)
	if err != nil {
		return fail(err)
	}
	cfg := protocol.Config{Now: time.Now, Rand: rand.Reader}
	u, err := protocol.Unlock(c, pw, cfg)
	if err != nil {
		return fail(err)
	}
	defer u.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var dev transport.Poster
	if broker, ok := mqttDevice(*device); ok || mf.url != "" {
		// Through the broker (spec section 12): no UDP to the device.
		// Its topic comes from --did, so a mistyped DID reaches no
		// device at all (a timeout), never a gateway.
		if ok {
			mf.url = broker
		}
		if mf.clientID == "" {
			if mf.clientID, err = userClientID(*cardPath + ".mqtt-client-id"); err != nil { // mqtt.go
				return fail(err)
			}
		}
		mc, err := mf.dial(ctx, nil)
		if err != nil {
			return fail(err)
		}
		defer mc.Close()
		rq, err := mqttbind.NewRequester(ctx, mc)
		if err != nil {
			return fail(err)
		}
		if err := mc.Ready(ctx); err != nil {
			return fail(err)
		}
		dev = rq.Device(*did)
	} else {
		client := &coap.Client{ACKTimeout: *ackTimeout}
		// A mistyped --did would reach the gateway as a failed login and
		// count toward the lockout: ask the device first.
		if err := userclient.CheckDevice(ctx, client, *device, *did, u.Profile()); err != nil {
			if errors.Is(err, userclient.ErrWrongDevice) {
				return fail(fmt.Errorf("%w; nothing was sent that could count as a failed login", err))
			}
			return fail(err)
		}
		dev = transport.CoAP{Client: client, Addr: *device}
	}
	conn, err := userclient.LoginVia(ctx, u, dev, *did)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	fp := conn.Session.Fingerprint()
	if !task {
		fmt.Fprintf(stdout, "authenticated: user %s <-> device %s (%s profile)\nsession key fingerprint: %x\n", u.ID(), *did, u.Profile(), fp[:8])
		return 0
	}
	resp, err := conn.Task(ctx, fs.Arg(0), strings.Join(fs.Args()[1:], " "))
	if err != nil {
		return fail(err)
	}
	if !resp.OK {
		return fail(fmt.Errorf("device %s refused task %s: %s", *did, strconv.Quote(fs.Arg(0)), resp.Error))
	}
	fmt.Fprintln(stdout, resp.Result)
	return 0
}
