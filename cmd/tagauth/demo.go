package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/tagauth/tagauth/internal/registry"
	"github.com/tagauth/tagauth/protocol"
	"github.com/tagauth/tagauth/replay"
)

// Demo identities. The password is an input like any other, but it is a
// secret: it is never printed.
const (
	demoUser     = "alice"
	demoDevice   = "sensor-7"
	demoPassword = "correct horse battery staple"
	demoTask     = "sensor.read"
	demoReading  = "sensor.read ok: temperature=21.4C humidity=48%"
)

// demoOptions are the knobs of one demo run. The command sets only
// profiles; tests also swap the KDF for a fast one and the randomness for a
// failing one.
type demoOptions struct {
	profiles []protocol.Profile
	kdf      protocol.KDFParams // hardened Argon2id parameters
	rand     io.Reader          // nil means crypto/rand
	memory   bool               // show the in-memory walk-through
	network  bool               // run the daemons on loopback
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", "[--profile classic|hardened|both] [--part memory|network|both]",
		"Part 1 runs a gateway, a device and a user card in one process, in memory:\n"+
			"provisioning, registration, login and one sealed task, message by message.\n"+
			"Part 2 starts the real gateway daemon and device agent on loopback sockets,\n"+
			"enrols a user, logs in, runs tasks, revokes the user and shows the refusal.", stderr)
	profile := fs.String("profile", "both", "profile to run: classic, hardened or both")
	part := fs.String("part", "both", "what to show: memory (the protocol message by message), network (the daemons on loopback) or both")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tagauth demo: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	opts := demoOptions{kdf: protocol.DefaultKDF}
	switch *profile {
	case "both":
		opts.profiles = []protocol.Profile{protocol.Classic, protocol.Hardened}
	case "classic":
		opts.profiles = []protocol.Profile{protocol.Classic}
	case "hardened":
		opts.profiles = []protocol.Profile{protocol.Hardened}
	default:
		fmt.Fprintf(stderr, "tagauth demo: unknown profile %q (want classic, hardened or both)\n", *profile)
		return 2
	}
	switch *part {
	case "both", "memory", "network":
		opts.memory = *part != "network"
		opts.network = *part != "memory"
	default:
		fmt.Fprintf(stderr, "tagauth demo: unknown part %q (want memory, network or both)\n", *part)
		return 2
	}
	if err := runDemo(stdout, opts); err != nil {
		fmt.Fprintf(stderr, "tagauth demo: FAILED: %v\n", err)
		return 1
	}
	return 0
}

// runDemo runs every requested profile in turn and stops at the first
// failure.
func runDemo(w io.Writer, opts demoOptions) error {
	if opts.memory {
		fmt.Fprintln(w, "tagauth demo, part 1: a gateway, a device and a user's card, all in this process.")
		fmt.Fprintln(w, "Messages are the exact wire bytes a transport would carry; secrets are never printed.")
		fmt.Fprintln(w)
		for i, p := range opts.profiles {
			if i > 0 {
				fmt.Fprintln(w)
			}
			if err := demoProfile(w, p, opts); err != nil {
				return fmt.Errorf("%s profile: %w", p, err)
			}
		}
	}
	if opts.network {
		if opts.memory {
			fmt.Fprintln(w)
			fmt.Fprint(w, "tagauth demo, part 2: ")
		}
		// The daemons run one profile: hardened, the default, unless only
		// classic was asked for.
		p := opts.profiles[len(opts.profiles)-1]
		if err := runNetDemo(w, p, opts.kdf); err != nil {
			return fmt.Errorf("%s profile on loopback: %w", p, err)
		}
	}
	return nil
}

// timed runs f and returns how long it took.
func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

// fmtDur prints durations to a precision a reader can take in at a glance.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// short is the part of a fingerprint shown to people: enough to compare by
// eye, and a hash of the key rather than the key.
func short(fp [protocol.Size]byte) string {
	return hex.EncodeToString(fp[:8])
}

// demoProfile is one complete run: every party lives in this process and
// messages are handed over as byte slices, which is exactly what a
// transport would carry.
func demoProfile(out io.Writer, p protocol.Profile, opts demoOptions) error {
	ctx := context.Background()
	rnd := opts.rand
	if rnd == nil {
		rnd = rand.Reader
	}
	cfg := protocol.Config{Now: time.Now, Rand: rnd}
	hardened := p == protocol.Hardened

	title := "classic profile (0x01): the patent's protocol exactly, kept for study"
	if hardened {
		title = "hardened profile (0x02, the default)"
	}
	fmt.Fprintf(out, "=== %s ===\n", title)
	fmt.Fprintf(out, "user %q, device %q\n\n", demoUser, demoDevice)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SET-UP\tTIME\tWHAT HAPPENED")

	// Gateway master key. Classic wires carry no key version, so a classic
	// deployment holds exactly one key, as version 1.
	reg := registry.NewMemory(p, false)
	mk := protocol.MasterKey{Version: protocol.ClassicKeyVersion}
	d, err := timed(func() error {
		if _, err := io.ReadFull(rnd, mk.Key[:]); err != nil {
			return fmt.Errorf("gateway master key: %w", err)
		}
		reg.AddKey(mk)
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "gateway master key\t%s\tK_GTW version %d: 32 random bytes that never leave the gateway\n", fmtDur(d), mk.Version)

	gw, err := protocol.NewGateway(p, reg, replay.New(1024), cfg)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}

	// Device provisioning (patent [0155]).
	var cred protocol.DeviceCredential
	d, err = timed(func() error {
		if err := reg.AddDevice(demoDevice); err != nil {
			return err
		}
		var err error
		cred, err = protocol.ProvisionDevice(p, demoDevice, mk)
		return err
	})
	if err != nil {
		return fmt.Errorf("device provisioning: %w", err)
	}
	fmt.Fprintf(tw, "device provisioning\t%s\tgateway derived Tag_j for %q; device stores DID_j and Tag_j\n", fmtDur(d), demoDevice)
	dev, err := protocol.NewDevice(cred, replay.New(1024), cfg)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}

	// User registration (FIG. 4): the enroller computes W_i, the gateway
	// turns it into a card. In a deployment the request travels over TLS.
	kdfName := "SHA-256(r_i || PW_i)"
	if hardened {
		kdfName = fmt.Sprintf("Argon2id t=%d m=%d KiB p=%d", opts.kdf.Time, opts.kdf.MemoryKiB, opts.kdf.Threads)
	}
	var req protocol.RegistrationRequest
	d, err = timed(func() error {
		var err error
		req, err = protocol.NewRegistrationRequest(p, demoUser, demoPassword, opts.kdf, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("registration (enroller): %w", err)
	}
	defer req.Wipe()
	fmt.Fprintf(tw, "registration: enroller\t%s\tdrew r_i, W_i = %s\n", fmtDur(d), kdfName)

	var card protocol.Card
	d, err = timed(func() error {
		if err := reg.AddUser(demoUser); err != nil {
			return err
		}
		reg.Allow(demoUser, demoDevice)
		var err error
		card, err = protocol.IssueCard(&req, mk, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("registration (gateway): %w", err)
	}
	fmt.Fprintf(tw, "registration: gateway\t%s\tchecked T_reg, issued card (ID_i, alpha_i, r_i); kept neither W_i nor r_i\n", fmtDur(d))

	// Card unlock: the password function again, on the user's side. Under
	// hardened this is the deliberate cost, so it gets its own line.
	var user *protocol.User
	d, err = timed(func() error {
		var err error
		user, err = protocol.Unlock(card, demoPassword, cfg)
		return err
	})
	if err != nil {
		return fmt.Errorf("card unlock: %w", err)
	}
	defer user.Close()
	unlockFn, unlockWhat := "SHA-256", "W_i = "+kdfName+", Tag_i = W_i ^ alpha_i"
	if hardened {
		unlockFn = "Argon2id"
		unlockWhat += "; fuzzy verifier accepted the password"
	}
	fmt.Fprintf(tw, "card unlock (%s)\t%s\t%s\n", unlockFn, fmtDur(d), unlockWhat)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)

	// Login. Each row is one message: who sent it, its size, how long its
	// sender took to check what came before and build it.
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOGIN\tDIRECTION\tBYTES\tTIME\tWHAT HAPPENED")
	var login *protocol.Login
	var m1 []byte
	d, err = timed(func() error {
		var err error
		login, m1, err = user.Login(nil, demoDevice)
		return err
	})
	if err != nil {
		return fmt.Errorf("m1: %w", err)
	}
	defer login.Close()
	what := "card drew K_i, computed beta_i, E_i, theta_i"
	if hardened {
		what = "card drew n_i and K_i, computed beta_i (bound to DID_j), E_i, theta_i"
	}
	fmt.Fprintf(tw, "m1\tcard -> device\t%d\t%s\t%s\n", len(m1), fmtDur(d), what)

	var dl *protocol.DeviceLogin
	var m2 []byte
	d, err = timed(func() error {
		var err error
		dl, m2, err = dev.Start(ctx, nil, m1)
		return err
	})
	if err != nil {
		return fmt.Errorf("m2: %w", err)
	}
	defer dl.Close()
	fmt.Fprintf(tw, "m2\tdevice -> gateway\t%d\t%s\tdevice checked T1 and its replay cache, computed I_j\n", len(m2), fmtDur(d))

	var m3 []byte
	d, err = timed(func() error {
		var err error
		m3, _, err = gw.Verify(ctx, nil, m2)
		return err
	})
	if err != nil {
		return fmt.Errorf("m3: gateway answered %s: %w", protocol.CodeOf(err), err)
	}
	fmt.Fprintf(tw, "m3\tgateway -> device\t%d\t%s\tgateway verified E_i and I_j, built F_ij and gamma_i\n", len(m3), fmtDur(d))

	var m4 []byte
	var devSess *protocol.Session
	d, err = timed(func() error {
		var err error
		m4, devSess, err = dl.Respond(nil, m3)
		return err
	})
	if err != nil {
		return fmt.Errorf("m4: %w", err)
	}
	what = "device verified m3 by recomputing E_i, drew K_j, derived SK_ij"
	if hardened {
		what += ", added tau_j (pending until m5)"
	}
	fmt.Fprintf(tw, "m4\tdevice -> card\t%d\t%s\t%s\n", len(m4), fmtDur(d), what)

	var userSess *protocol.Session
	var m5 []byte
	d, err = timed(func() error {
		var err error
		userSess, m5, err = login.Finish(nil, m4)
		return err
	})
	if err != nil {
		return fmt.Errorf("card finishing with m4: %w", err)
	}
	if hardened {
		// Over CoAP the confirm request puts the sid in front of m5, to
		// name its login (spec section 11); the size shown is m5's own.
		fmt.Fprintf(tw, "m5\tcard -> device\t%d\t%s\tcard verified gamma_i and tau_j, derived SK_ij, sent tau_i (CoAP: sid || m5, naming the login)\n", len(m5), fmtDur(d))
		d, err = timed(func() error {
			var err error
			devSess, err = dl.Confirm(m5)
			return err
		})
		if err != nil {
			return fmt.Errorf("device confirming m5: %w", err)
		}
		fmt.Fprintf(tw, "-\tat device\t-\t%s\tdevice verified tau_i: session established on both sides\n", fmtDur(d))
	} else {
		if m5 != nil {
			return errors.New("classic login produced an m5")
		}
		fmt.Fprintf(tw, "-\tat card\t-\t%s\tcard verified gamma_i, derived SK_ij (classic has no m5: no key confirmation)\n", fmtDur(d))
	}
	if devSess == nil || userSess == nil {
		return errors.New("login finished without a session on both sides")
	}
	defer devSess.Close()
	defer userSess.Close()
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)

	// Both sides print a hash of their key, never the key: equal
	// fingerprints mean equal keys.
	ufp, dfp := userSess.Fingerprint(), devSess.Fingerprint()
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tFINGERPRINT (first 8 bytes)")
	fmt.Fprintf(tw, "card\t%s\n", short(ufp))
	fmt.Fprintf(tw, "device\t%s\n", short(dfp))
	if err := tw.Flush(); err != nil {
		return err
	}
	if ufp != dfp {
		return errors.New("session keys differ between card and device")
	}
	fmt.Fprintln(out, "keys match: card and device derived the same SK_ij (only a hash of it is shown)")
	fmt.Fprintln(out)

	// One collaboration task through the sealed channel.
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tDIRECTION\tBYTES\tTIME\tWHAT HAPPENED")
	var rec []byte
	d, err = timed(func() error {
		var err error
		rec, err = userSess.Seal(nil, []byte(demoTask))
		return err
	})
	if err != nil {
		return fmt.Errorf("sealing the task: %w", err)
	}
	fmt.Fprintf(tw, "record 1\tcard -> device\t%d\t%s\tcard sealed %q\n", len(rec), fmtDur(d), demoTask)

	var reply []byte
	d, err = timed(func() error {
		task, err := devSess.Open(nil, rec)
		if err != nil {
			return err
		}
		if string(task) != demoTask {
			return fmt.Errorf("device read %q, want %q", task, demoTask)
		}
		reply, err = devSess.Seal(nil, []byte(demoReading))
		return err
	})
	if err != nil {
		return fmt.Errorf("device handling the task: %w", err)
	}
	fmt.Fprintf(tw, "record 1\tdevice -> card\t%d\t%s\tdevice opened %q and sealed a simulated reading\n", len(reply), fmtDur(d), demoTask)

	var got []byte
	d, err = timed(func() error {
		var err error
		got, err = userSess.Open(nil, reply)
		return err
	})
	if err != nil {
		return fmt.Errorf("card opening the reply: %w", err)
	}
	if string(got) != demoReading {
		return fmt.Errorf("card read %q, want %q", got, demoReading)
	}
	fmt.Fprintf(tw, "-\tat card\t-\t%s\tcard opened %q\n", fmtDur(d), got)
	return tw.Flush()
}
