package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/atomicfile"
	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/dump"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/protocol"
)

// The dump, load and audit export commands (docs/OPERATIONS.md#dump-and-load,
// #audit-export). Dump and load open the store themselves: the embedded
// store only while no gateway serves it (it is locked), a PostgreSQL store
// at any time. The audit export goes through the admin API.

// dumpStore is a store that dumps and loads.
type dumpStore interface {
	store.Store
	store.Dumper
	store.Loader
}

// gwStoreFlags locate the store of dump and load.
type gwStoreFlags struct {
	data, storeURL, profile string
}

func (f *gwStoreFlags) register(fset *flag.FlagSet) {
	fset.StringVar(&f.data, "data", "", "the gateway's data `directory`: its key file, and its embedded store unless --store")
	fset.StringVar(&f.storeURL, "store", "", "a shared PostgreSQL store `URL`, postgres://user@host/db[?schema=S], instead of DATA/store.db")
	fset.StringVar(&f.profile, "profile", "", "protocol `profile` when there is no key file to read it from (--store without --data)")
}

// keys reads the key file of --data; nil (and no error) when there is
// none to read.
func (f *gwStoreFlags) keys() (*keyfile.File, error) {
	if f.data == "" {
		return nil, nil
	}
	kf, err := keyfile.Load(filepath.Join(f.data, keyfile.FileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return kf, err
}

// profileOf is the profile of the key file, or of --profile.
func (f *gwStoreFlags) profileOf(kf *keyfile.File) (protocol.Profile, error) {
	var p protocol.Profile
	if f.profile != "" {
		var err error
		if p, err = protocol.ParseProfile(f.profile); err != nil {
			return p, fmt.Errorf("--profile: %w", err)
		}
	}
	switch {
	case kf != nil && f.profile != "" && kf.Profile != p:
		return p, fmt.Errorf("--profile %v, but the key file is of %v", p, kf.Profile)
	case kf != nil:
		return kf.Profile, nil
	case f.profile == "":
		return p, errors.New("no key file in --data to read the profile from: give --profile hardened|classic")
	}
	return p, nil
}

// open opens the store; create allows a new embedded store (load).
func (f *gwStoreFlags) open(ctx context.Context, create bool) (st dumpStore, source string, created bool, err error) {
	if f.storeURL != "" {
		pg, err := postgres.Open(ctx, f.storeURL, postgres.Options{})
		if err != nil {
			return nil, "", false, err
		}
		return pg, "postgres", false, nil
	}
	if f.data == "" {
		return nil, "", false, errors.New("give --data DIR (the embedded store) or --store URL")
	}
	path := filepath.Join(f.data, bolt.FileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, "", false, fmt.Errorf("no store at %s", path)
		}
		created = true
	}
	b, err := bolt.Open(path)
	if errors.Is(err, bolt.ErrLocked) {
		return nil, "", false, fmt.Errorf("%w\n(a serving gateway's store: stop it first, or take an online backup: tagauth gateway backup)", err)
	}
	if err != nil {
		return nil, "", false, err
	}
	return b, "bolt", created, nil
}

func gwDump(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("dump", "--out FILE [--audit] (--data DIR | --store URL [--data DIR])",
		"Writes the store's users, devices, grants, revocations and key versions (fingerprints, never\n"+
			"keys), and with --audit its audit log, as a versioned JSON-lines dump that any backend loads\n"+
			"(tagauth gateway load). The embedded store must not be served (stop the gateway, or use\n"+
			"tagauth gateway backup); a PostgreSQL store is read in one consistent transaction while\n"+
			"replicas serve. The file is written with mode 0600.", stderr)
	var sf gwStoreFlags
	sf.register(fset)
	out := fset.String("out", "", "dump `file` to write (\"-\": standard output)")
	withAudit := fset.Bool("audit", false, "include the audit log")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	if *out == "" || len(pos) > 0 {
		fmt.Fprintln(stderr, "tagauth gateway dump: --out FILE is required, and no argument")
		return 2
	}
	kf, err := sf.keys()
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway dump: %v\n", err)
		return 1
	}
	p, err := sf.profileOf(kf)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway dump: %v\n", err)
		return 2
	}
	ctx := context.Background()
	st, source, _, err := sf.open(ctx, false)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway dump: %v\n", err)
		return 1
	}
	defer st.Close()
	opt := dump.Options{Profile: p, Audit: *withAudit, Source: source}
	if kf != nil {
		opt.Keys = dump.KeysOf(kf)
	}
	var c dump.Counts
	err = writeOut(*out, stdout, func(w io.Writer) error {
		var err error
		c, err = dump.Dump(ctx, st, w, opt)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway dump: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "dumped %d users, %d devices, %d grants, %d key versions, %d audit records from the %s store to %s\n",
		c.Users, c.Devices, c.Grants, c.Keys, c.Audit, source, *out)
	return 0
}

// writeOut writes a new file whole or not at all (atomicfile.WriteNewFrom),
// mode 0600, or standard output for "-". It refuses a path that exists.
func writeOut(path string, stdout io.Writer, fill func(io.Writer) error) error {
	if path == "-" {
		bw := bufio.NewWriter(stdout)
		if err := fill(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	// Never replace a file: an old backup or dump overwritten by mistake
	// is lost for good (as provision --out and token add --out refuse).
	exists := fmt.Errorf("%s already exists: choose another name or remove it first", path)
	if _, err := os.Lstat(path); err == nil {
		return exists
	}
	err := atomicfile.WriteNewFrom(path, fill)
	if errors.Is(err, fs.ErrExist) {
		return exists
	}
	return err
}

func gwLoad(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("load", "--in FILE (--data DIR | --store URL [--data DIR])",
		"Loads a dump (tagauth gateway dump) into an empty store: DATA/store.db (created) or the\n"+
			"PostgreSQL store of --store. The whole file is checked inside the load's one transaction: a\n"+
			"store with anything in it, a truncated or damaged file (the error names its line) or a key\n"+
			"file in DATA that is not the dump's is refused, and nothing is changed. Stop the gateway of\n"+
			"an embedded store first.", stderr)
	var sf gwStoreFlags
	sf.register(fset)
	in := fset.String("in", "", "dump `file` to read (\"-\": standard input)")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	if *in == "" || len(pos) > 0 {
		fmt.Fprintln(stderr, "tagauth gateway load: --in FILE is required, and no argument")
		return 2
	}
	kf, err := sf.keys()
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway load: %v\n", err)
		return 1
	}
	if kf == nil {
		fmt.Fprintln(stderr, "tagauth gateway load: warning: no key file in --data: the dump's key versions are not checked against the keys that will serve it")
	}
	var rd io.Reader = os.Stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway load: %v\n", err)
			return 1
		}
		defer f.Close()
		rd = f
	}
	ctx := context.Background()
	st, source, created, err := sf.open(ctx, true)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway load: %v\n", err)
		return 1
	}
	h, c, err := dump.Load(ctx, st, rd, kf)
	st.Close()
	if err != nil {
		if created {
			os.Remove(filepath.Join(sf.data, bolt.FileName)) // made by this load: leave nothing
		}
		fmt.Fprintf(stderr, "tagauth gateway load: %s: %v\n", *in, err)
		return 1
	}
	fmt.Fprintf(stdout, "loaded %d users, %d devices, %d grants, %d key versions, %d audit records (a %s dump of %s) into the %s store\n",
		c.Users, c.Devices, c.Grants, c.Keys, c.Audit, h.Profile, h.Created.Format(time.RFC3339), source)
	return 0
}

// gwAuditExport is "tagauth gateway audit export": the records of a time
// range as JSON lines, the same lines the gateway writes to its audit log
// output, for a SIEM.
func gwAuditExport(args []string, stdout, stderr io.Writer) int {
	fset := gwFlags("audit export", "--since T [--until T] [--out FILE] [admin flags]",
		"Writes the audit records from --since (included) to --until (excluded, default now) as JSON\n"+
			"lines, one record per line exactly as the gateway writes its audit log output, oldest first.\n"+
			"It pages through the admin API, so it works on both backends while the gateway serves.", stderr)
	var opts gwAdminOpts
	opts.register(fset)
	since := fset.String("since", "", "first `time` (RFC 3339) or how long ago (such as 24h); required")
	until := fset.String("until", "", "end `time` (RFC 3339) or how long ago; default now")
	out := fset.String("out", "-", "`file` to write (mode 0600; \"-\": standard output)")
	c, _, rc := gwAdminCommand(fset, &opts, args, 0, true, func() string {
		if *since == "" {
			return "--since is required"
		}
		return ""
	}, stderr)
	if c == nil {
		return rc
	}
	defer c.CloseIdle()
	q := adminapi.AuditQuery{Limit: store.MaxAuditLimit}
	for _, f := range []struct {
		name, v string
		t       *time.Time
	}{{"since", *since, &q.Since}, {"until", *until, &q.Until}} {
		if f.v == "" {
			continue
		}
		t, err := gwParseTime(f.v)
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway audit export: --%s: %v\n", f.name, err)
			return 2
		}
		*f.t = t
	}
	if q.Until.IsZero() {
		// A fixed end, so that records arriving while it pages do not
		// make the export longer than its range.
		q.Until = time.Now()
	}
	n := 0
	err := writeOut(*out, stdout, func(w io.Writer) error {
		var buf []byte
		for {
			page, err := c.Audit(context.Background(), q)
			if err != nil {
				return err
			}
			for _, e := range page.Records {
				r := store.AuditRecord{Time: e.Time, Kind: e.Kind, Outcome: e.Outcome, Reason: e.Reason, User: e.User, Device: e.Device,
					Source: e.Source, KVUser: e.KVUser, KVDevice: e.KVDevice, LatencyUS: e.LatencyUS, Detail: e.Detail, Count: e.Count}
				buf = auditjson.AppendLine(buf[:0], &r)
				if _, err := w.Write(buf); err != nil {
					return err
				}
				n++
			}
			if len(page.Records) < store.MaxAuditLimit {
				return nil
			}
			q.After = page.Next
		}
	})
	if err != nil {
		return gwFail(stderr, fset, err)
	}
	if *out != "-" {
		fmt.Fprintf(stderr, "exported %d audit records to %s\n", n, *out)
	}
	return 0
}
