package main

// "tagauth gateway provision --from FILE.csv --out-dir DIR": bulk
// provisioning through POST /v1/devices/batch (adminapi's CSV format and
// credential file names).

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/credfile"
)

// maxListed is how many clashing files or lines an error names.
const maxListed = 20

// writers is how many credential files are written at once.
const writers = 32

// gwProvisionBatch provisions every device of the CSV file from, all or
// none, and writes one credential file per device into outDir. Every
// check that can be made here (the file's shape, the names of the files
// to write) is made before the gateway is asked, so that a refused batch
// changes nothing anywhere.
func gwProvisionBatch(fset *flag.FlagSet, c *adminapi.Client, from, outDir string, stdout, stderr io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "tagauth %s: %s\n", fset.Name(), fmt.Sprintf(format, args...))
		return 1
	}
	f, err := os.Open(from)
	if err != nil {
		return fail("%v", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, adminapi.MaxBatchBytes+1))
	f.Close()
	if err != nil {
		return fail("reading %s: %v", from, err)
	}
	if len(data) > adminapi.MaxBatchBytes {
		return fail("%s is over %d bytes: split it (at most %d devices a batch; each part is provisioned all or none)", from, adminapi.MaxBatchBytes, adminapi.MaxBatchRows)
	}
	rows, err := adminapi.ParseDevicesCSV(bytes.NewReader(data))
	if err != nil {
		return fail("%s: %v; nothing was provisioned", from, err)
	}
	if msg := checkOutDir(outDir, rows); msg != "" {
		return fail("%s", msg)
	}
	ctx, done := gwCall(c)
	defer done()
	start := time.Now()
	res, err := c.ProvisionBatch(ctx, data)
	if err != nil {
		return fail("%s: %v", from, err)
	}
	defer res.Clear()
	took := time.Since(start)
	if len(res.Devices) != len(rows) {
		return fail("the gateway answered %d credentials for %d rows: revoke the devices of %s and provision them again", len(res.Devices), len(rows), from)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fail("the %d devices are provisioned but %s cannot be made: %v (revoke them, or move the answer's credentials by hand)", len(rows), outDir, err)
	}
	// Each file is synced before the command says it is written; the
	// syncs run side by side, so that the file system commits them in
	// groups (one at a time, 10 000 took 26 s instead of a few).
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	next := make(chan int)
	for range writers {
		wg.Go(func() {
			for i := range next {
				errs[i] = writeBatchCredential(outDir, rows[i].ID, res.Devices[i])
			}
		})
	}
	for i := range rows {
		next <- i
	}
	close(next)
	wg.Wait()
	var lost []string
	for i, err := range errs {
		if err != nil {
			lost = append(lost, fmt.Sprintf("line %d (%s): %v", rows[i].Line, gwText(rows[i].ID), err))
		}
	}
	if err := syncDir(outDir); err != nil && len(lost) == 0 {
		lost = append(lost, fmt.Sprintf("syncing %s: %v", outDir, err))
	}
	if len(lost) > 0 {
		fmt.Fprintf(stderr, "tagauth %s: the %d devices are provisioned, but %d credentials could not be written; revoke those devices and provision other ids:\n  %s\n",
			fset.Name(), len(rows), len(lost), strings.Join(lost, "\n  "))
		return 1
	}
	fmt.Fprintf(stdout, "provisioned %d devices from %s in %s and wrote their credentials (mode 0600) to %s\n", len(rows), from, took.Round(time.Millisecond), outDir)
	fmt.Fprintln(stdout, "each file holds its device's secret: copy it to its device only, then delete this copy")
	return 0
}

// checkOutDir refuses a batch whose credential files could not all be
// written into dir as new files: one there already (a re-run), or two
// names that differ only in case (one file on macOS and Windows). It
// returns the refusal, or "".
func checkOutDir(dir string, rows []adminapi.DeviceRow) string {
	fi, err := os.Stat(dir)
	// A new dir (made after the gateway answers) holds no file yet, but
	// its names can still clash by case.
	exists := !errors.Is(err, fs.ErrNotExist)
	switch {
	case !exists:
	case err != nil:
		return err.Error() + "; nothing was provisioned"
	case !fi.IsDir():
		return dir + " is not a directory; nothing was provisioned"
	}
	var clashes []string
	folded := make(map[string]int, len(rows))
	for i, r := range rows {
		name := adminapi.CredentialFileName(r.ID)
		if j, ok := folded[strings.ToLower(name)]; ok {
			if adminapi.CredentialFileName(rows[j].ID) != name {
				clashes = append(clashes, fmt.Sprintf("line %d: %s differs from line %d's %s only in case, which a case-insensitive file system cannot hold",
					r.Line, name, rows[j].Line, adminapi.CredentialFileName(rows[j].ID)))
			}
			continue // a duplicate id: the gateway names it
		}
		folded[strings.ToLower(name)] = i
		if !exists {
			continue
		}
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			clashes = append(clashes, fmt.Sprintf("line %d: %s already exists", r.Line, filepath.Join(dir, name)))
		}
	}
	if len(clashes) == 0 {
		return ""
	}
	n := len(clashes)
	if n > maxListed {
		clashes = append(clashes[:maxListed], fmt.Sprintf("... and %d more", n-maxListed))
	}
	return fmt.Sprintf("%d credential files cannot be written as new files into %s, so nothing was provisioned (credentials are never overwritten: choose another --out-dir, or remove the rows already provisioned):\n  %s",
		n, dir, strings.Join(clashes, "\n  "))
}

// writeBatchCredential checks one credential of the answer and writes it
// as a new file (never over one), mode 0600, synced. The name is made
// here from the id asked for, not taken from the answer.
func writeBatchCredential(dir, id string, d adminapi.BatchDevice) error {
	cred, err := credfile.Unmarshal(d.Credential)
	if err != nil {
		return fmt.Errorf("the gateway returned a bad credential: %w", err)
	}
	defer clear(cred.Tag[:])
	if cred.ID != id || d.ID != id {
		return fmt.Errorf("the gateway returned the credential of another id")
	}
	b, err := credfile.Marshal(cred)
	if err != nil {
		return err
	}
	defer clear(b)
	f, err := os.OpenFile(filepath.Join(dir, adminapi.CredentialFileName(id)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes the new directory entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
