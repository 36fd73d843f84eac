package dump_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/tagauth/tagauth/internal/dump"
)

// FuzzOpen: a dump file is untrusted input to "gateway load". Whatever
// its bytes, reading it never panics, and a file read to its end holds
// exactly the records its end line counts.
func FuzzOpen(f *testing.F) {
	fl := newFleet(f)
	st := openBolt(f)
	fl.fill(f, st)
	good := dumpOf(f, st, fl, "bolt")
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(bytes.ReplaceAll(good, []byte(`"alice"`), []byte(`"alicf"`)))
	f.Add([]byte("{\"tagauth_dump\":{\"version\":1,\"profile\":\"hardened\"}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, set, err := dump.Open(bytes.NewReader(b))
		if err != nil {
			return
		}
		audit := 0
		if set.NextAudit != nil {
			for {
				_, err := set.NextAudit()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return
				}
				audit++
			}
		}
		c := r.Counts()
		if c.Users != len(set.Users) || c.Devices != len(set.Devices) || c.Grants != len(set.Grants) || c.Keys != len(set.Keys) || c.Audit != audit {
			t.Fatalf("a dump read to its end: counts %+v, records %d/%d/%d/%d/%d", c, len(set.Users), len(set.Devices), len(set.Grants), len(set.Keys), audit)
		}
	})
}

// FuzzRestore: a backup archive (once decrypted) is untrusted input to
// "gateway restore". Whatever its bytes, restoring never panics, and a
// refused archive leaves the data directory as it found it: absent.
func FuzzRestore(f *testing.F) {
	fl := newFleet(f)
	st := openBolt(f)
	fl.fill(f, st)
	good := archiveOf(f, st, fl)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:512])
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := filepath.Join(t.TempDir(), "data")
		if _, err := dump.Restore(context.Background(), bytes.NewReader(b), dump.RestoreOptions{Dir: dir}); err == nil {
			return
		}
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			t.Fatalf("a refused restore left %d entries in the data directory", len(ents))
		}
	})
}
