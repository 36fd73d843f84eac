package main

// "tagauth gateway keys" on the gateway's host: it edits the key file,
// which a running gateway watches, or goes through the admin API when a
// gateway serves the data directory (gateway_admin.go).

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/auditjson"
	"github.com/tagauth/tagauth/internal/gateway/adminsvc"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/internal/store/bolt"
)

// gwKeys is "tagauth gateway keys": it edits the key file, which a
// running gateway watches.
func gwKeys(args []string, stdout, stderr io.Writer) int {
	if gwKeysUseAPI(args) { // gwops.go
		return gwKeysAPI(args, stdout, stderr)
	}
	fset := gwFlags("keys", "list [--json]|rotate|retire VERSION [--force] --data DIR",
		"Lists, rotates or retires the gateway's master keys. Rotation adds a version that new cards\n"+
			"and device credentials use; older ones keep working until their version is retired.\n"+
			"Retiring a version that active users or devices still hold is refused unless --force.\n"+
			"With the gateway running the change goes through its admin API, found through --data;\n"+
			"otherwise the key file is edited and the next start uses it.", stderr)
	data := fset.String("data", "", "the gateway's data `directory` (required)")
	force := fset.Bool("force", false, "retire: even if active users or devices still hold the version (they are refused from then on)")
	asJSON := fset.Bool("json", false, "list: print JSON (as the admin API's GET /v1/keys)")
	pos, err := gwParse(fset, args)
	if err != nil {
		return gwParseExit(err)
	}
	if len(pos) == 0 {
		fset.Usage()
		return 2
	}
	if *data == "" {
		fmt.Fprintln(stderr, "tagauth gateway keys: --data DIR is required")
		return 2
	}
	path := filepath.Join(*data, keyfile.FileName)
	want := map[string]int{"list": 1, "rotate": 1, "retire": 2}
	if n, ok := want[pos[0]]; !ok || len(pos) != n {
		fset.Usage()
		return 2
	}
	// A running gateway holds the store: it counts holders and edits the
	// key file itself (gwops.go).
	if gwRunning(*data) {
		return gwKeysAPI(args, stdout, stderr)
	}
	f, err := keyfile.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway keys: %v\n", err)
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintln(stderr, "tagauth gateway keys: start the gateway once with this --data to create its key file")
		}
		return 1
	}
	snap, haveSnap, err := gwOfflineSnapshot(*data)
	if err != nil {
		fmt.Fprintf(stderr, "tagauth gateway keys: %v\n", err)
		return 1
	}
	switch pos[0] {
	case "list":
		newest := f.Newest().Version
		if *asJSON {
			if !haveSnap {
				fmt.Fprintf(stderr, "tagauth gateway keys list: cannot count who holds each version: the gateway is not running and its store is not in %s (replicas share theirs): list with a gateway running\n", *data)
				return 1
			}
			kl := adminapi.KeyList{Profile: f.Profile.String(), Keys: make([]adminapi.KeyInfo, len(f.Keys))}
			for i, k := range f.Keys {
				h := adminsvc.HoldersOf(snap, k.Version, auditjson.SanitizeID)
				kl.Keys[i] = adminapi.KeyInfo{Version: k.Version, Created: k.Created.UTC(), Newest: k.Version == newest, Users: h.Users, Devices: h.Devices}
			}
			return gwPrintJSON(stdout, kl)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tCREATED\tUSERS\tDEVICES\t")
		for _, k := range f.Keys {
			mark := ""
			if k.Version == newest {
				mark = "newest: new cards and credentials use it"
			}
			users, devices := "?", "?"
			if haveSnap {
				h := adminsvc.HoldersOf(snap, k.Version, auditjson.SanitizeID)
				users, devices = strconv.Itoa(h.Users), strconv.Itoa(h.Devices)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", k.Version, k.Created.UTC().Format(time.RFC3339), users, devices, mark)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "profile %v\n", f.Profile)
		return 0
	case "rotate":
		k, err := f.Rotate(rand.Reader, time.Now())
		if err == nil {
			err = f.Save(path)
		}
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway keys rotate: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "added master key version %d: new cards and device credentials use it; older ones keep working until you retire their version\n", k.Version)
		fmt.Fprintln(stdout, "a running gateway picks it up within a second")
		return 0
	default: // retire
		v, err := strconv.ParseUint(pos[1], 10, 8)
		if err != nil || v == 0 {
			fmt.Fprintf(stderr, "tagauth gateway keys retire: VERSION must be a number from 1 to 255, not %q\n", pos[1])
			return 2
		}
		var held adminapi.KeyHolders
		if haveSnap {
			held = adminsvc.HoldersOf(snap, uint8(v), auditjson.SanitizeID)
			err = adminsvc.RetireCheck(held, *force)
		} else if !*force {
			err = fmt.Errorf("cannot tell who holds version %d: the gateway is not running and its store is not in %s (replicas share theirs): retire it with a gateway running, or with --force", v, *data)
		}
		if err == nil {
			err = f.Retire(uint8(v))
		}
		if err == nil {
			err = f.Save(path)
		}
		if err != nil {
			fmt.Fprintf(stderr, "tagauth gateway keys retire: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "retired master key version %d: cards and device credentials under it are refused from now on (re-enrol or re-provision them)\n", v)
		if held.Any() {
			fmt.Fprintf(stdout, "refused from now on: %s\n", gwText(held.String()))
		}
		return 0
	}
}

// gwRunning tells whether a gateway serves the data directory: its
// admin.json names an admin API that answers.
func gwRunning(data string) bool {
	if _, err := os.Stat(filepath.Join(data, adminapi.AdminInfoName)); err != nil {
		return false
	}
	o := gwAdminOpts{data: data, timeout: 5 * time.Second}
	c, err := o.connect(false)
	if err != nil {
		return false
	}
	ctx, done := gwCall(c)
	defer done()
	_, err = c.Info(ctx)
	return err == nil
}

// gwOfflineSnapshot reads the registry from the embedded store of a data
// directory no gateway is serving; ok is false when the store is not
// there (a replica's is shared).
func gwOfflineSnapshot(data string) (snap store.Snapshot, ok bool, err error) {
	path := filepath.Join(data, bolt.FileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return snap, false, nil
	}
	st, err := bolt.Open(path)
	if err != nil {
		return snap, false, fmt.Errorf("counting who holds each key version: %w", err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, err = st.Snapshot(ctx)
	if err != nil {
		return snap, false, fmt.Errorf("counting who holds each key version: %w", err)
	}
	return snap, true, nil
}
