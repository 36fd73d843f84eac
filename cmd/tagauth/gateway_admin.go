package main

// The admin commands of "tagauth gateway": thin clients of the gateway's
// HTTPS admin API (internal/adminapi's typed client). They do not import
// the daemon.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
)

// gwAdminOpts are the flags every admin client command takes.
type gwAdminOpts struct {
	url, fingerprint, tokenFile, data string
	timeout                           time.Duration
}

func (o *gwAdminOpts) register(fset *flag.FlagSet) {
	fset.StringVar(&o.url, "admin", "", "gateway admin `URL` (or "+envAdminURL+")")
	fset.StringVar(&o.fingerprint, "fingerprint", "", "pinned SHA-256 `hex` of the gateway's certificate (or "+envFingerprint+")")
	fset.StringVar(&o.tokenFile, "token-file", "", "`file` holding the admin token (or "+envAdminToken+")")
	fset.StringVar(&o.data, "data", "", "gateway data `directory`, on the gateway's host: URL, fingerprint and token are read from it")
	fset.DurationVar(&o.timeout, "timeout", 15*time.Second, "how long to wait for the gateway")
}

// connect resolves URL, fingerprint and (if needToken) token from flags,
// environment and data directory, in that order.
func (o *gwAdminOpts) connect(needToken bool) (*adminapi.Client, error) {
	base, fp, token := o.url, o.fingerprint, ""
	if base == "" {
		base = os.Getenv(envAdminURL)
	}
	if fp == "" {
		fp = os.Getenv(envFingerprint)
	}
	if (base == "" || fp == "") && o.data != "" {
		b, err := os.ReadFile(filepath.Join(o.data, adminapi.AdminInfoName))
		if err != nil {
			return nil, fmt.Errorf("reading the gateway's admin address from --data: %w (has the gateway been started with this data directory?)", err)
		}
		var ai adminapi.AdminInfo
		if err := json.Unmarshal(b, &ai); err != nil {
			return nil, fmt.Errorf("%s is damaged: %v (restart the gateway to rewrite it)", filepath.Join(o.data, adminapi.AdminInfoName), err)
		}
		if base == "" {
			base = ai.URL
		}
		if fp == "" {
			fp = ai.Fingerprint
		}
	}
	if base == "" {
		return nil, errors.New("no admin URL: give --admin URL (the gateway prints it at start), set " + envAdminURL + ", or --data DIR on the gateway's host")
	}
	if u, err := url.Parse(base); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q must look like https://HOST:PORT", base)
	}
	if fp == "" {
		return nil, errors.New("no fingerprint: give --fingerprint HEX (the gateway prints it at start), set " + envFingerprint + ", or --data DIR on the gateway's host")
	}
	if needToken {
		var err error
		if token, err = o.token(); err != nil {
			return nil, err
		}
	}
	return adminapi.NewClient(base, fp, token, o.timeout)
}

func (o *gwAdminOpts) token() (string, error) {
	path := o.tokenFile
	if path == "" {
		if t := os.Getenv(envAdminToken); t != "" {
			return t, nil
		}
		if o.data != "" {
			path = filepath.Join(o.data, adminapi.TokenFileName)
		}
	}
	if path == "" {
		return "", errors.New("no admin token: give --token-file FILE, set " + envAdminToken + ", or --data DIR on the gateway's host")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return t, nil
}

// gwCall is the context of a command's admin calls. A command makes a
// call or two: when it is done it holds no idle connection, which would
// count against the gateway's per-source limit.
func gwCall(c *adminapi.Client) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	return ctx, func() { cancel(); c.CloseIdle() }
}

// gwAdminCommand runs the common part of an admin command: parse flags,
// check positionals, connect. When the command must stop it returns a nil
// client and the exit status; otherwise the status is meaningless.
// check, if not nil, validates the flags before anything is sent and
// returns a usage error message.
func gwAdminCommand(fset *flag.FlagSet, opts *gwAdminOpts, args []string, npos int, needToken bool, check func() string, stderr io.Writer) (*adminapi.Client, []string, int) {
	pos, err := gwParse(fset, args)
	if err != nil {
		return nil, nil, gwParseExit(err)
	}
	if len(pos) != npos {
		if len(pos) > npos {
			fmt.Fprintf(stderr, "tagauth %s: unexpected argument %q\n", fset.Name(), pos[npos])
		}
		fset.Usage()
		return nil, nil, 2
	}
	if check != nil {
		if msg := check(); msg != "" {
			fmt.Fprintf(stderr, "tagauth %s: %s\n", fset.Name(), msg)
			return nil, nil, 2
		}
	}
	c, err := opts.connect(needToken)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth %s: %v\n", fset.Name(), err)
		return nil, nil, 2
	}
	return c, pos, -1
}

// gwFail reports an admin call's failure.
func gwFail(stderr io.Writer, fset *flag.FlagSet, err error) int {
	fmt.Fprintf(stderr, "tagauth %s: %v\n", fset.Name(), err)
	return 1
}

func gwInfo(args []string, stdout, stderr io.Writer) int {
	info, base, asJSON, rc, ok := gwFetch(args, stderr, "info", "[admin flags]",
		"Shows the gateway's profile, live key versions, CoAP address and fingerprint.", false, (*adminapi.Client).Info)
	if !ok {
		return rc
	}
	if asJSON {
		return gwPrintJSON(stdout, info)
	}
	vs := make([]string, len(info.KeyVersions))
	for i, v := range info.KeyVersions {
		vs[i] = strconv.Itoa(int(v))
	}
	fmt.Fprintf(stdout, "profile:      %s\nspec version: %s\nkey versions: %s\nCoAP verify:  %s\nadmin API:    %s\nfingerprint:  %s\nversion:      %s %s (%s)\n",
		gwText(info.Profile), gwText(info.SpecVersion), strings.Join(vs, ", "), gwText(info.CoAP), base, gwText(info.Fingerprint),
		gwText(info.Build.Version), gwText(info.Build.Revision), gwText(info.Build.GoVersion))
	return 0
}

func gwEnrolCode(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("enrol-code", "--user ID [--ttl 15m] [admin flags]",
		"Makes a one-time enrolment code for a user id and prints it on stdout. Give it to the user,\n"+
			"who runs: tagauth user enroll --id ID --code CODE ...", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	user := fset.String("user", "", "user `id` the code is for (required)")
	ttl := fset.Duration("ttl", adminapi.DefaultCodeTTL, "how long the code stays valid")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *user == "" {
			return "--user ID is required"
		}
		if *ttl < time.Second || *ttl > adminapi.MaxCodeTTL {
			return fmt.Sprintf("--ttl must be between 1s and %s", adminapi.MaxCodeTTL)
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	ctx, done := gwCall(c)
	defer done()
	code, err := c.EnrolCode(ctx, adminapi.EnrolCodeRequest{User: *user, TTLs: int(*ttl / time.Second)})
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	fmt.Fprintln(stdout, code.Code)
	fmt.Fprintf(stderr, "one-time enrolment code for user %s, valid until %s\n", gwText(*user), code.Expires.Local().Format(time.RFC3339))
	// The whole command, so that the user need not look up the admin URL
	// and fingerprint; the profile only when it is not the default.
	profile := ""
	if info, err := c.Info(ctx); err == nil && info.Profile != "hardened" {
		profile = " --profile " + gwShellWord(info.Profile)
	}
	fmt.Fprintf(stderr, "the user enrols with:\n  tagauth user enroll --id %s --code %s --card %s --admin %s --fingerprint %s%s\n",
		gwShellWord(*user), code.Code, gwShellWord(cardName(*user)), gwShellWord(c.Base), c.Fingerprint, profile)
	return 0
}

// cardName is a card file name for a user id: the id's safe characters.
func cardName(id string) string {
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_' || r == '.') {
			return r
		}
		return '_'
	}, id) + ".card"
}

// gwShellWord quotes s for a POSIX shell command line the operator copies.
func gwShellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_.@+:/,=", r)))
	}) < 0 {
		return s
	}
	if gwText(s) != s {
		return gwText(s) // not printable: shown escaped, to be typed by hand
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func gwProvision(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("provision", "--id DID [--group G] --out FILE [admin flags]\n       tagauth gateway provision --from DEVICES.csv --out-dir DIR [admin flags]",
		"Provisions a device and writes its credential file (mode 0600). The file holds the device's\n"+
			"secret tag: copy it to the device only, over a channel you trust.\n"+
			"With --from, provisions every device of a CSV file (rows id,group; a header row id,group is\n"+
			"optional; at most 10000 rows), all or none, and writes one credential file per device into\n"+
			"--out-dir, named by the id (bytes other than A-Z a-z 0-9 - _ . written %XX) plus .json.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	id := fset.String("id", "", "device `id` DID_j (required)")
	group := fset.String("group", "", "policy `group` of the device")
	out := fset.String("out", "", "credential `file` to write (required; never overwritten)")
	from := fset.String("from", "", "CSV `file` of devices to provision at once (with --out-dir)")
	outDir := fset.String("out-dir", "", "`directory` for the credential files of --from (made if missing; files are never overwritten)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		switch {
		case *from != "" && (*id != "" || *group != "" || *out != ""):
			return "--from takes no --id, --group or --out: the file names the devices, --out-dir takes the credentials"
		case *from != "" && *outDir == "":
			return "--from FILE needs --out-dir DIR"
		case *from == "" && *outDir != "":
			return "--out-dir DIR goes with --from FILE"
		case *from == "" && (*id == "" || *out == ""):
			return "--id DID and --out FILE are required (or --from FILE --out-dir DIR)"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	if *from != "" {
		return gwProvisionBatch(fset, c, *from, *outDir, stdout, stderr)
	}
	// Refuse before the gateway provisions anything.
	if _, err := os.Lstat(*out); err == nil {
		fmt.Fprintf(stderr, "tagauth gateway provision: %s already exists; not overwriting a credential (choose another --out)\n", *out)
		return 1
	}
	ctx, done := gwCall(c)
	defer done()
	raw, err := c.Provision(ctx, adminapi.DeviceRequest{ID: *id, Group: *group})
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	defer clear(raw)
	cred, err := credfile.Unmarshal(raw)
	if err != nil {
		return gwFail(stderr, fset, fmt.Errorf("the gateway returned a bad credential: %w", err))
	}
	defer clear(cred.Tag[:])
	if err := credfile.Save(*out, cred); err != nil {
		return gwFail(stderr, fset, fmt.Errorf("device %s is provisioned but its credential could not be written: %w (revoke it and provision another id)", gwText(*id), err))
	}
	fmt.Fprintf(stdout, "provisioned device %s (key version %d) and wrote its credential to %s\n", gwText(cred.ID), cred.KV, *out)
	fmt.Fprintln(stdout, "the file holds the device's secret: copy it to the device only, then delete this copy")
	return 0
}

func gwRevokeUser(args []string, stdout, stderr io.Writer) int {
	return gwRevoke("revoke-user", "user", (*adminapi.Client).RevokeUser, args, stdout, stderr)
}

func gwRevokeDevice(args []string, stdout, stderr io.Writer) int {
	return gwRevoke("revoke-device", "device", (*adminapi.Client).RevokeDevice, args, stdout, stderr)
}

func gwRevoke(name, what string, revoke func(*adminapi.Client, context.Context, string) (adminapi.Revoked, error), args []string, stdout, stderr io.Writer) int {
	fset := gwFlags(name, "ID [admin flags]", "Revokes the identity: the gateway refuses it from the next login on. Ids stay taken.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	c, pos, rc := gwAdminCommand(fset, &opts, args, 1, true, nil, stderr)
	if c == nil {
		return rc
	}
	ctx, done := gwCall(c)
	defer done()
	rv, err := revoke(c, ctx, pos[0])
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	fmt.Fprintf(stdout, "revoked %s %s at %s\n", what, gwText(rv.ID), rv.RevokedAt.Local().Format(time.RFC3339))
	return 0
}

func gwGrant(args []string, stdout, stderr io.Writer) int {
	return gwPolicy("grant", (*adminapi.Client).Grant, args, stdout, stderr)
}

func gwUngrant(args []string, stdout, stderr io.Writer) int {
	return gwPolicy("ungrant", (*adminapi.Client).Ungrant, args, stdout, stderr)
}

func gwPolicy(name string, change func(*adminapi.Client, context.Context, adminapi.Grant) error, args []string, stdout, stderr io.Writer) int {
	fset := gwFlags(name, "--user U --group G [admin flags]", `Grants (or removes) a user's right to log in to every device of a group ("*": all devices).`, stderr)
	var opts gwAdminOpts
	opts.register(fset)
	user := fset.String("user", "", "user `id` (required)")
	group := fset.String("group", "", "device `group`, or * for every device (required)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *user == "" || *group == "" {
			return "--user U and --group G are required"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	ctx, done := gwCall(c)
	defer done()
	if err := change(c, ctx, adminapi.Grant{User: *user, Group: *group}); err != nil {
		return gwFail(stderr, fset, err)
	}
	if name == "grant" {
		fmt.Fprintf(stdout, "user %s may log in to the devices of group %s\n", gwText(*user), gwText(*group))
	} else {
		fmt.Fprintf(stdout, "removed the grant of group %s to user %s\n", gwText(*group), gwText(*user))
	}
	return 0
}

func gwUsers(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "users", "Lists the enrolled users.", (*adminapi.Client).Users,
		"ID\tKV\tCREATED\tSTATE", func(tw io.Writer, list *adminapi.UserList) {
			for _, u := range list.Users {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", gwText(u.ID), u.KV, gwTime(u.Created), gwState(u.Revoked, u.RevokedAt))
			}
		})
}

func gwDevices(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "devices", "Lists the provisioned devices.", (*adminapi.Client).Devices,
		"ID\tGROUP\tKV\tCREATED\tSTATE", func(tw io.Writer, list *adminapi.DeviceList) {
			for _, d := range list.Devices {
				group := d.Group
				if group == "" {
					group = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", gwText(d.ID), gwText(group), d.KV, gwTime(d.Created), gwState(d.Revoked, d.RevokedAt))
			}
		})
}

func gwGrants(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "grants", "Lists the policy grants: which user may log in to which device group.", (*adminapi.Client).Grants,
		"USER\tGROUP", func(tw io.Writer, list *adminapi.GrantList) {
			for _, g := range list.Grants {
				fmt.Fprintf(tw, "%s\t%s\n", gwText(g.User), gwText(g.Group))
			}
		})
}

// gwFetch is the start of an admin command that asks the gateway one
// thing: its flags (the admin flags and --json), the call, and the report
// of a refusal. When ok is false the command is over, with exit status rc.
func gwFetch[T any](args []string, stderr io.Writer, name, usage, about string, needToken bool, fetch func(*adminapi.Client, context.Context) (T, error)) (v T, base string, asJSON bool, rc int, ok bool) {
	fset := gwFlags(name, usage, about, stderr)
	var opts gwAdminOpts
	opts.register(fset)
	jsonFlag := fset.Bool("json", false, "print JSON")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, needToken, nil, stderr)
	if c == nil {
		return v, "", false, rc, false
	}
	ctx, done := gwCall(c)
	defer done()
	v, err := fetch(c, ctx)
	if err != nil {
		return v, "", false, gwFail(stderr, fset, err), false
	}
	return v, c.Base, *jsonFlag, 0, true
}

// gwList is a list command: it fetches a T and prints it as JSON
// (--json) or as a table with the given header and rows.
func gwList[T any](args []string, stdout, stderr io.Writer, name, about string, fetch func(*adminapi.Client, context.Context) (T, error), header string, rows func(io.Writer, *T)) int {
	list, _, asJSON, rc, ok := gwFetch(args, stderr, name, "[--json] [admin flags]", about, true, fetch)
	if !ok {
		return rc
	}
	if asJSON {
		return gwPrintJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw, &list)
	tw.Flush()
	return 0
}

func gwAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "export" {
		return gwAuditExport(args[1:], stdout, stderr) // gwdump.go
	}
	fset := gwFlags("audit", "[filters] [--json] [admin flags]",
		"Queries the audit log, oldest first (--newest: newest first). For the next page, pass the\nprinted cursor as --after (--before with --newest).", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	asJSON := fset.Bool("json", false, "print JSON")
	kind := fset.String("kind", "", "only records of this `kind`: verify, enrol, provision, revoke, policy, key, lockout")
	user := fset.String("user", "", "only records about this user `id`")
	device := fset.String("device", "", "only records about this device `id`")
	outcome := fset.String("outcome", "", "only records with this `outcome`: ok, refused, error, locked")
	since := fset.String("since", "", "only records at or after this `time` (RFC 3339) or this long ago (such as 1h)")
	until := fset.String("until", "", "only records before this `time` (RFC 3339) or this long ago")
	after := fset.Uint64("after", 0, "only records after this sequence `number` (paging cursor)")
	limit := fset.Int("limit", 100, "most records to return (at most 1000)")
	newest := fset.Bool("newest", false, "newest first")
	before := fset.Uint64("before", 0, "with --newest: only records before this sequence `number` (paging cursor)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *newest && *after > 0 || !*newest && *before > 0 {
			return "--after pages oldest first, --before pages --newest"
		}
		if *limit < 1 || *limit > 1000 {
			return "--limit must be from 1 to 1000"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	q := adminapi.AuditQuery{Kind: *kind, User: *user, Device: *device, Outcome: *outcome,
		After: *after, Before: *before, Newest: *newest, Limit: *limit}
	for _, t := range []struct {
		name, value string
		dst         *time.Time
	}{{"since", *since, &q.Since}, {"until", *until, &q.Until}} {
		if t.value == "" {
			continue
		}
		at, err := gwParseTime(t.value)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway audit: --%s: %v\n", t.name, err)
			return 2
		}
		*t.dst = at
	}
	ctx, done := gwCall(c)
	defer done()
	page, err := c.Audit(ctx, q)
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	if *asJSON {
		return gwPrintJSON(stdout, page)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tOUTCOME\tREASON\tUSER\tDEVICE\tSOURCE\tDETAIL")
	for _, r := range page.Records {
		outcome := gwText(r.Outcome)
		if r.Count > 1 {
			outcome += fmt.Sprintf(" x%d", r.Count) // a sample of that many refusals
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, gwTime(r.Time), gwText(r.Kind), outcome,
			gwDash(r.Reason), gwDash(r.User), gwDash(r.Device), gwDash(r.Source), gwDash(r.Detail))
	}
	tw.Flush()
	if len(page.Records) == *limit {
		cursor := "--after"
		if *newest {
			cursor = "--before"
		}
		fmt.Fprintf(stderr, "more may follow: add %s %d\n", cursor, page.Next)
	}
	return 0
}

// gwParseTime reads an RFC 3339 time or a duration ago.
func gwParseTime(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2025-01-02T15:04:05Z) nor a duration (1h)", s)
	}
	return t, nil
}

func gwPrintJSON(w io.Writer, v any) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	w.Write(buf.Bytes())
	return 0
}

// gwText makes a value from the gateway safe to print on a terminal:
// printable text as is, anything else quoted with escapes.
func gwText(s string) string {
	if !utf8.ValidString(s) {
		return strconv.QuoteToASCII(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

func gwDash(s string) string {
	if s == "" {
		return "-"
	}
	return gwText(s)
}

func gwTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func gwState(revoked bool, at *time.Time) string {
	if !revoked {
		return "active"
	}
	if at == nil {
		return "revoked"
	}
	return "revoked " + gwTime(*at)
}

func gwUnlock(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("unlock", "ID [admin flags]", "Lifts a user's lockout and clears their failed logins.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	c, pos, rc := gwAdminCommand(fset, &opts, args, 1, true, nil, stderr)
	if c == nil {
		return rc
	}
	ctx, done := gwCall(c)
	defer done()
	u, err := c.Unlock(ctx, pos[0])
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	if u.WasLocked {
		fmt.Fprintf(stdout, "unlocked user %s\n", gwText(u.ID))
	} else {
		fmt.Fprintf(stdout, "user %s was not locked; their failed logins are cleared\n", gwText(u.ID))
	}
	return 0
}

func gwLocks(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "locks", "Lists the locks set by failed logins: of a user's logins from one source, or from\nevery source the user has not logged in from lately (\"unfamiliar sources\").", (*adminapi.Client).Locks,
		"USER\tLOCKED FOR\tUNTIL", func(tw io.Writer, l *adminapi.LockList) {
			for _, x := range l.Locks {
				what := x.Scope
				if x.Source != "" {
					what = "source " + x.Source
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", gwText(x.User), gwText(what), gwTime(x.Until))
			}
			fmt.Fprintf(tw, "(policy: %s)\n", gwText(l.Policy))
		})
}

func gwStats(args []string, stdout, stderr io.Writer) int {
	return gwList(args, stdout, stderr, "stats", "Shows this gateway's verifies per minute and refusals by reason over the last hour\n(what the console's overview charts).", (*adminapi.Client).Stats,
		"MINUTE (UTC)\tOK\tREFUSED\tERROR", func(tw io.Writer, s *adminapi.Stats) {
			for _, m := range s.Minutes {
				if m.OK+m.Refused+m.Error > 0 {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", m.Start.UTC().Format("15:04"), m.OK, m.Refused, m.Error)
				}
			}
			fmt.Fprintln(tw, "\t\t\t")
			fmt.Fprintln(tw, "REASON\tCODE\tCOUNT\t")
			for _, r := range s.Reasons {
				fmt.Fprintf(tw, "%s\t%s\t%d\t\n", gwText(r.Reason), gwText(r.Code), r.Count)
			}
		})
}

// gwKeysUseAPI tells whether "keys" should go through the admin API: when
// it is given --admin, or an admin URL in the environment and no --data.
func gwKeysUseAPI(args []string) bool {
	has := func(name string) bool {
		return slices.ContainsFunc(args, func(a string) bool {
			n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			return strings.HasPrefix(a, "-") && n == name
		})
	}
	return has("admin") || (!has("data") && os.Getenv(envAdminURL) != "")
}

// gwKeysAPI is "tagauth gateway keys" through the admin API, for an
// operator who is not on the gateway's host.
func gwKeysAPI(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("keys", "list|rotate|retire VERSION [--force] --admin URL [admin flags]",
		"Lists, rotates or retires the gateway's master keys through the admin API.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	asJSON := fset.Bool("json", false, "print JSON (list)")
	force := fset.Bool("force", false, "retire: even if active users or devices still hold the version (they are refused from then on)")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	want := map[string]int{"list": 1, "rotate": 1, "retire": 2}
	if len(pos) == 0 || want[pos[0]] != len(pos) {
		fset.Usage()
		return 2
	}
	c, err := opts.connect(true)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway keys: %v\n", err)
		return 2
	}
	ctx, done := gwCall(c)
	defer done()
	switch pos[0] {
	case "list":
		kl, err := c.Keys(ctx)
		if err != nil {
			return gwFail(stderr, fset, err)
		}
		if *asJSON {
			return gwPrintJSON(stdout, kl)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tCREATED\tUSERS\tDEVICES\t")
		for _, k := range kl.Keys {
			mark := ""
			if k.Newest {
				mark = "newest: new cards and credentials use it"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\n", k.Version, gwTime(k.Created), k.Users, k.Devices, mark)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "profile %s\n", gwText(kl.Profile))
		return 0
	case "rotate":
		kc, err := c.RotateKey(ctx)
		if err != nil {
			return gwFail(stderr, fset, err)
		}
		fmt.Fprintf(stdout, "added master key version %d: new cards and device credentials use it; older ones keep working until you retire their version\n", kc.Version)
		return 0
	default:
		v, err := strconv.ParseUint(pos[1], 10, 8)
		if err != nil || v == 0 {
			fmt.Fprintf(stderr, "tagauth gateway keys retire: VERSION must be a number from 1 to 255, not %q\n", pos[1])
			return 2
		}
		kc, err := c.RetireKey(ctx, uint8(v), *force)
		if err != nil {
			return gwFail(stderr, fset, err)
		}
		fmt.Fprintf(stdout, "retired master key version %d: cards and device credentials under it are refused from now on (re-enrol or re-provision them)\n", v)
		if kc.HeldBy != nil {
			fmt.Fprintf(stdout, "refused from now on: %s\n", gwText(kc.HeldBy.String()))
		}
		return 0
	}
}
