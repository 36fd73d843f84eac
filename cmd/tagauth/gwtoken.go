package main

// "tagauth gateway token": admin tokens with roles (admin, operator,
// auditor), as Kerberos' kadm5.acl, through the admin API. Only an admin
// token may run these.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/tagauth/tagauth/internal/adminapi"
)

const gwTokenUsage = `usage: tagauth gateway token add --name N --role admin|operator|auditor [--out FILE] [admin flags]
       tagauth gateway token list [--json] [admin flags]
       tagauth gateway token revoke NAME [admin flags]

Admin tokens with a role, for the admin API and the console:
  admin     everything (tokens, keys, backups included)
  operator  enrolment codes, provisioning, grants, revocation, unlocking,
            and the lists they need (users, devices, grants, locks)
  auditor   the audit log, statistics and metrics only
The gateway keeps only each token's hash: "add" prints the token once.
Run "tagauth gateway token SUBCOMMAND -h" for its flags.
`

func gwToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, gwTokenUsage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, gwTokenUsage)
		return 0
	case "add":
		return gwTokenAdd(args[1:], stdout, stderr)
	case "list":
		return gwTokenList(args[1:], stdout, stderr)
	case "revoke":
		return gwTokenRevoke(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "tagauth gateway token: unknown subcommand %q\n\n%s", args[0], gwTokenUsage)
	return 2
}

func gwTokenAdd(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("token add", "--name N --role admin|operator|auditor [--out FILE] [admin flags]",
		"Creates an admin token with a role and prints it, once (the gateway keeps only its hash).\n"+
			"With --out the token goes to FILE (mode 0600, never overwritten) instead of the terminal.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	name := fset.String("name", "", "the token's `name`, as the audit and the list show it: A-Z a-z 0-9 . _ - (required)")
	role := fset.String("role", "", "the token's `role`: admin, operator or auditor (required)")
	out := fset.String("out", "", "write the token to this `file` (mode 0600) rather than print it")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *name == "" || *role == "" {
			return "--name N and --role R are required"
		}
		if !adminapi.Role(*role).Valid() {
			return fmt.Sprintf("--role %q: use admin, operator or auditor", *role)
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	// Refuse before the gateway creates anything.
	if *out != "" {
		if _, err := os.Lstat(*out); err == nil {
			fmt.Fprintf(stderr, "tagauth gateway token add: %s already exists; not overwriting (choose another --out)\n", *out)
			return 1
		}
	}
	ctx, done := gwCall(c)
	defer done()
	nt, err := c.CreateToken(ctx, adminapi.TokenRequest{Name: *name, Role: adminapi.Role(*role)})
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	if *out == "" {
		fmt.Fprintf(stdout, "created token %s with role %s; it is shown only this once:\n%s\n", nt.Name, nt.Role, nt.Token)
		return 0
	}
	if err := writeSecretFile(*out, nt.Token+"\n"); err != nil {
		return gwFail(stderr, fset, fmt.Errorf("token %s is created but could not be written: %w (revoke it with tagauth gateway token revoke %s and create another)", nt.Name, err, nt.Name))
	}
	fmt.Fprintf(stdout, "created token %s with role %s and wrote it to %s (mode 0600); use it with --token-file %s\n", nt.Name, nt.Role, *out, *out)
	return 0
}

// writeSecretFile creates path with mode 0600 and writes s; it never
// replaces a file.
func writeSecretFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists", path)
	}
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func gwTokenList(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "token list",
		"Lists the admin tokens: name, role, created, last used (never the tokens themselves).\n"+
			"The gateway's own token (DATA/admin-token, TAGAUTH_ADMIN_TOKEN) is not listed: it is the admin \"bootstrap\".",
		(*adminapi.Client).Tokens, "NAME\tROLE\tCREATED\tLAST USED\t", func(w io.Writer, list *adminapi.TokenList) {
			for _, t := range list.Tokens {
				last := "never"
				if !t.LastUsed.IsZero() {
					last = gwTime(t.LastUsed)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t\n", gwText(t.Name), gwText(string(t.Role)), gwTime(t.Created), last)
			}
		})
}

func gwTokenRevoke(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("token revoke", "NAME [admin flags]",
		"Revokes an admin token: every replica refuses it from its next request, console sessions included.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	c, pos, rc := gwAdminCommand(fset, &opts, args, 1, true, nil, stderr)
	if c == nil {
		return rc
	}
	ctx, done := gwCall(c)
	defer done()
	rv, err := c.RevokeToken(ctx, strings.TrimSpace(pos[0]))
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	fmt.Fprintf(stdout, "revoked token %s\n", gwText(rv.Name))
	return 0
}
