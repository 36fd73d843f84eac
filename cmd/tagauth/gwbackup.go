package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"golang.org/x/term"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/dump"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/postgres"
)

// The backup and restore commands (docs/OPERATIONS.md#backup-and-restore).

// envBackupPassphrase holds a backup's passphrase for scripts.
const envBackupPassphrase = "TAGAUTH_BACKUP_PASSPHRASE"

// gwPassphrase reads a backup passphrase: from a file, the environment or
// the terminal (twice when confirm), never from a flag's value, which
// other users see in the process list.
func gwPassphrase(file string, confirm bool, stderr io.Writer) (string, error) {
	nonEmpty := func(s string) (string, error) {
		if s == "" {
			return "", errors.New("empty passphrase")
		}
		return s, nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading the passphrase: %w", err)
		}
		return nonEmpty(strings.TrimRight(string(b), "\r\n"))
	}
	if pw, ok := os.LookupEnv(envBackupPassphrase); ok {
		return nonEmpty(pw)
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("no terminal to ask the passphrase on: use --passphrase-file FILE, " + envBackupPassphrase + ", or --recipient/--identity")
	}
	fmt.Fprint(stderr, "Backup passphrase: ")
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(stderr, "Backup passphrase again: ")
		again, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(pw, again) {
			return "", errors.New("the two passphrases differ")
		}
	}
	return nonEmpty(string(pw))
}

// gwStrings is a repeatable string flag.
type gwStrings []string

func (s *gwStrings) String() string     { return strings.Join(*s, ",") }
func (s *gwStrings) Set(v string) error { *s = append(*s, v); return nil }

var _ flag.Value = (*gwStrings)(nil)

func gwBackup(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("backup", "--out FILE [--recipient age1... | --passphrase-file F] [admin flags]",
		"Takes an online backup of a serving gateway through its admin API: a consistent snapshot of\n"+
			"the store (the embedded store's file, or a dump of a PostgreSQL store with its audit) and the\n"+
			"key file, encrypted with age by the gateway before it leaves it. Encrypted to the --recipient\n"+
			"public keys, or else to a passphrase (--passphrase-file, "+envBackupPassphrase+", or asked\n"+
			"on the terminal). Restore it with tagauth gateway restore.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	out := fset.String("out", "", "backup `file` to write (mode 0600; required)")
	var recipients gwStrings
	fset.Var(&recipients, "recipient", "age `recipient` (age1...) to encrypt to; repeat for several")
	passFile := fset.String("passphrase-file", "", "`file` holding the passphrase (first line)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		switch {
		case *out == "":
			return "--out FILE is required"
		case len(recipients) > 0 && *passFile != "":
			return "--recipient and --passphrase-file exclude each other"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	for _, r := range recipients {
		if _, err := age.ParseRecipients(strings.NewReader(r)); err != nil {
			fmt.Fprintf(stderr, "tagauth gateway backup: --recipient %q: %v\n", r, err)
			return 2
		}
	}
	// With a passphrase, the gateway encrypts to a one-time key of this
	// command, which re-encrypts to the passphrase: the passphrase never
	// travels, and the key file never crosses the wire in clear.
	var (
		oneTime *age.X25519Identity
		scrypt  *age.ScryptRecipient
	)
	if len(recipients) == 0 {
		pw, err := gwPassphrase(*passFile, true, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway backup: %v\n", err)
			return 2
		}
		if scrypt, err = age.NewScryptRecipient(pw); err != nil {
			fmt.Fprintf(stderr, "tagauth gateway backup: %v\n", err)
			return 2
		}
		if oneTime, err = age.GenerateX25519Identity(); err != nil {
			fmt.Fprintf(stderr, "tagauth gateway backup: %v\n", err)
			return 1
		}
		recipients = gwStrings{oneTime.Recipient().String()}
	}
	defer c.CloseIdle()
	// Refused before the gateway takes (and audits) a backup that could
	// not be written; writeOut checks again when it links the file.
	if _, err := os.Lstat(*out); *out != "-" && err == nil {
		fmt.Fprintf(stderr, "tagauth gateway backup: %s already exists: choose another name or remove it first\n", *out)
		return 1
	}
	body, err := c.Backup(context.Background(), adminapi.BackupRequest{Recipients: recipients})
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	defer body.Close()
	var n int64
	err = writeOut(*out, stdout, func(w io.Writer) error {
		if oneTime == nil {
			var err error
			n, err = io.Copy(w, body)
			return err
		}
		plain, err := age.Decrypt(body, oneTime)
		if err != nil {
			return err
		}
		enc, err := age.Encrypt(w, scrypt)
		if err != nil {
			return err
		}
		// Decrypting to the end authenticates the whole stream: a backup
		// the gateway cut short is refused here, not at restore.
		if n, err = io.Copy(enc, plain); err != nil {
			return err
		}
		return enc.Close()
	})
	if err != nil {
		return gwFail(stderr, fset, fmt.Errorf("%w (no backup was written)", err))
	}
	what := "to the passphrase"
	if oneTime == nil {
		what = fmt.Sprintf("to %d recipient(s)", len(recipients))
	}
	msg := stdout
	if *out == "-" {
		msg = stderr
	}
	fmt.Fprintf(msg, "backup written to %s, encrypted %s (%d bytes)\n", *out, what, n)
	return 0
}

func gwRestore(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("restore", "--in FILE --data DIR [--identity FILE | --passphrase-file F] [--store URL]",
		"Restores a backup (tagauth gateway backup) into a new or empty data directory: its key file\n"+
			"and its store. The registry goes to DATA/store.db, or with --store to that PostgreSQL store,\n"+
			"which must be empty. A backup that does not decrypt, is truncated or damaged restores\n"+
			"nothing. The gateway makes a new certificate and admin token at its next start.", stderr)
	in := fset.String("in", "", "backup `file` to read (required)")
	data := fset.String("data", "", "data `directory` to fill: new, or empty (required)")
	identity := fset.String("identity", "", "age identity `file` (AGE-SECRET-KEY-1...) of a backup made with --recipient")
	passFile := fset.String("passphrase-file", "", "`file` holding the passphrase (first line)")
	storeURL := fset.String("store", "", "empty PostgreSQL store `URL` to restore the registry into, instead of DATA/store.db")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	if *in == "" || *data == "" || len(pos) > 0 {
		fmt.Fprintln(stderr, "tagauth gateway restore: --in FILE and --data DIR are required, and no argument")
		return 2
	}
	if *identity != "" && *passFile != "" {
		fmt.Fprintln(stderr, "tagauth gateway restore: --identity and --passphrase-file exclude each other")
		return 2
	}
	var ids []age.Identity
	if *identity != "" {
		f, err := os.Open(*identity)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway restore: %v\n", err)
			return 1
		}
		ids, err = age.ParseIdentities(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway restore: --identity: %v\n", err)
			return 2
		}
	} else {
		pw, err := gwPassphrase(*passFile, false, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway restore: %v\n", err)
			return 2
		}
		id, err := age.NewScryptIdentity(pw)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway restore: %v\n", err)
			return 2
		}
		ids = []age.Identity{id}
	}
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway restore: %v\n", err)
		return 1
	}
	defer f.Close()
	plain, err := age.Decrypt(f, ids...)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway restore: %s does not decrypt with this identity or passphrase: %v\n", *in, err)
		return 1
	}
	ctx := context.Background()
	opt := dump.RestoreOptions{Dir: *data}
	if *storeURL != "" {
		pg, err := postgres.Open(ctx, *storeURL, postgres.Options{})
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway restore: %v\n", err)
			return 1
		}
		defer pg.Close()
		opt.Target = store.Loader(pg)
	}
	m, err := dump.Restore(ctx, plain, opt)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway restore: %v\n", err)
		return 1
	}
	where := *data
	if *storeURL != "" {
		where += " and the PostgreSQL store"
	}
	fmt.Fprintf(stdout, "restored a %s backup of a %s store (taken %s) into %s\n", m.Profile, m.Backend, m.Created.Format("2006-01-02T15:04:05Z07:00"), where)
	return 0
}
