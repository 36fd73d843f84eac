package gateway_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/keyfile"
	"github.com/tagauth/tagauth/internal/testenv"
	"github.com/tagauth/tagauth/protocol"
)

// openErr opens a gateway on cfg and expects it to fail; it returns the
// error.
func openErr(t *testing.T, cfg gateway.Config) error {
	t.Helper()
	cfg.AuditOut = io.Discard
	g, err := gateway.Open(cfg)
	if err == nil {
		g.Close()
		t.Fatal("Open succeeded")
	}
	return err
}

// firstStart opens and closes a gateway on a new data directory.
func firstStart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gw")
	cfg := testConfig(dir, protocol.Hardened)
	cfg.AuditOut = io.Discard
	g, err := gateway.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func reopen(t *testing.T, dir string) {
	t.Helper()
	cfg := testConfig(dir, protocol.Hardened)
	cfg.AuditOut = io.Discard
	g, err := gateway.Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	g.Close()
}

// TestStrictModes: a data directory, or a file in it, that is writable by
// group or others or owned by another user stops the start with the
// command that fixes it; fixed, the gateway starts.
func TestStrictModes(t *testing.T) {
	dir := firstStart(t)
	uid := strconv.Itoa(os.Geteuid())
	for _, c := range []struct {
		name       string
		break_     func(dir string) error
		fix        func(dir string) error
		wantInMsg  string
		needsOwner bool
	}{
		{"directory 0777", func(d string) error { return os.Chmod(d, 0o777) }, func(d string) error { return os.Chmod(d, 0o700) },
			"has mode 0777, so other users can replace what is in it: run chmod 700 " + dir, false},
		{"directory 0770", func(d string) error { return os.Chmod(d, 0o770) }, func(d string) error { return os.Chmod(d, 0o700) },
			"run chmod 700 " + dir, false},
		{"certificate 0664", func(d string) error { return os.Chmod(filepath.Join(d, gateway.CertFileName), 0o664) },
			func(d string) error { return os.Chmod(filepath.Join(d, gateway.CertFileName), 0o644) },
			"run chmod go-w " + filepath.Join(dir, gateway.CertFileName), false},
		{"key file 0602", func(d string) error { return os.Chmod(filepath.Join(d, gateway.KeyFileName), 0o602) },
			func(d string) error { return os.Chmod(filepath.Join(d, gateway.KeyFileName), 0o600) },
			"run chmod go-w " + filepath.Join(dir, gateway.KeyFileName), false},
		{"key file of another user", func(d string) error { return os.Chown(filepath.Join(d, gateway.KeyFileName), 65534, 65534) },
			func(d string) error {
				return os.Chown(filepath.Join(d, gateway.KeyFileName), os.Geteuid(), os.Getegid())
			},
			"is owned by uid 65534, not by uid " + uid + " that runs the gateway: run chown " + uid + " " + filepath.Join(dir, gateway.KeyFileName), true},
		{"directory of another user", func(d string) error { return os.Chown(d, 65534, 65534) },
			func(d string) error { return os.Chown(d, os.Geteuid(), os.Getegid()) },
			"directory " + dir + " is owned by uid 65534", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.needsOwner && os.Geteuid() != 0 {
				testenv.SkipOrFail(t, "changing a file's owner needs root: run as root (or in a container) to test ownership")
			}
			if err := c.break_(dir); err != nil {
				t.Fatal(err)
			}
			err := openErr(t, testConfig(dir, protocol.Hardened))
			if !errors.Is(err, gateway.ErrDataDirInsecure) || !strings.Contains(err.Error(), c.wantInMsg) {
				t.Errorf("error %v, want ErrDataDirInsecure saying %q", err, c.wantInMsg)
			}
			if err := c.fix(dir); err != nil {
				t.Fatal(err)
			}
			reopen(t, dir)
		})
	}
}

// TestStrictModesReload: a key file replaced while the directory is
// writable by others is not loaded (the keys in use stay); once the mode
// is fixed the same file is.
func TestStrictModesReload(t *testing.T) {
	dir := t.TempDir()
	tg := startGateway(t, testConfig(dir, protocol.Hardened))
	path := filepath.Join(dir, gateway.KeyFileName)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	f, err := keyfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Rotate(rand.Reader, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := tg.g.ReloadKeys(); !errors.Is(err, gateway.ErrDataDirInsecure) || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("reload in a 0777 directory: %v", err)
	}
	if vs := tg.g.KeyVersions(); !slices.Equal(vs, []uint8{1}) {
		t.Fatalf("key versions %v after a refused reload", vs)
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := tg.g.ReloadKeys(); !errors.Is(err, gateway.ErrDataDirInsecure) || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("reload of a key file of another user: %v", err)
		}
		if vs := tg.g.KeyVersions(); !slices.Equal(vs, []uint8{1}) {
			t.Fatalf("key versions %v after a refused reload", vs)
		}
		if err := os.Chown(path, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := tg.g.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	if vs := tg.g.KeyVersions(); !slices.Equal(vs, []uint8{1, 2}) {
		t.Fatalf("key versions %v after the fix", vs)
	}
}

// TestNoSilentRecreate: a used data directory without its key file, or
// with its store missing or empty, is refused with the backup to restore;
// nothing is made in it.
func TestNoSilentRecreate(t *testing.T) {
	for _, c := range []struct {
		name, file, want string
		damage           func(path string) error
	}{
		{"key file removed", gateway.KeyFileName, "restore %s from your backup", os.Remove},
		{"store removed", gateway.StoreFileName, "restore %s from your backup", os.Remove},
		{"store empty", gateway.StoreFileName, "the store %s is empty (0 bytes): restore it from your backup",
			func(p string) error { return os.Truncate(p, 0) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := firstStart(t)
			path := filepath.Join(dir, c.file)
			if err := c.damage(path); err != nil {
				t.Fatal(err)
			}
			before := listDir(t, dir)
			err := openErr(t, testConfig(dir, protocol.Hardened))
			want := strings.ReplaceAll(c.want, "%s", path)
			if !errors.Is(err, gateway.ErrDataDirIncomplete) || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want ErrDataDirIncomplete saying %q", err, want)
			}
			if after := listDir(t, dir); !slices.Equal(before, after) {
				t.Errorf("the refused start changed the directory: %v -> %v", before, after)
			}
		})
	}
}

// TestSeededKeyFile: a directory holding only a key file (a replica's,
// copied in) is a first start for everything else.
func TestSeededKeyFile(t *testing.T) {
	src := firstStart(t)
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(src, gateway.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, gateway.KeyFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	reopen(t, dir)
	reopen(t, dir)
}

// TestFailedStartLeavesNothing: a start whose port is taken leaves no data
// directory, and an empty one empty, so that the next start is again a
// first start.
func TestFailedStartLeavesNothing(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, c := range []struct {
		name string
		set  func(*gateway.Config)
	}{
		{"admin port taken", func(cfg *gateway.Config) { cfg.AdminAddr = tcp.Addr().String() }},
		{"CoAP port taken", func(cfg *gateway.Config) { cfg.CoAPAddr = udp.LocalAddr().String() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "gw")
			cfg := testConfig(dir, protocol.Hardened)
			c.set(&cfg)
			if err := openErr(t, cfg); !strings.Contains(err.Error(), "cannot listen") {
				t.Fatalf("error %v", err)
			}
			if left := listDir(t, parent); len(left) != 0 {
				t.Fatalf("a failed first start left %v in %s", left, parent)
			}
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			openErr(t, cfg)
			if left := listDir(t, dir); len(left) != 0 {
				t.Fatalf("a failed first start left %v in the empty %s", left, dir)
			}
			if left := listDir(t, parent); !slices.Equal(left, []string{"gw"}) {
				t.Fatalf("a failed first start left %v in %s", left, parent)
			}
			reopen(t, dir) // and the next start is a first start
		})
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestFirstStartJournal: the audit journal of a first start is in the
// data directory once it is renamed into place, made 0700 with 0600
// segments, checked by the strict modes, and a later start of the used
// directory replays nothing twice and records on.
func TestFirstStartJournal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	tg := startGateway(t, testConfig(dir, protocol.Hardened))
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	tg.mustLogin(alice, cred)
	coapAddr := tg.g.CoAPAddr().String() // in the credential
	tg.stop()

	jdir := filepath.Join(dir, gateway.JournalDirName)
	err := filepath.WalkDir(jdir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %04o, want no group or other bits", path, perm)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the journal is not in the data directory: %v", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".gw.new-*"))
	if len(leftovers) > 0 {
		t.Fatalf("first start left %v", leftovers)
	}

	cfg := testConfig(dir, protocol.Hardened)
	cfg.CoAPAddr = coapAddr
	tg = startGateway(t, cfg)
	tg.mustLogin(alice, cred)
	if page := tg.auditPage("?kind=verify&outcome=ok"); len(page.Records) != 2 {
		t.Fatalf("%d successful logins recorded over two starts, want 2", len(page.Records))
	}
	tg.stop()

	if err := os.Chmod(jdir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := openErr(t, testConfig(dir, protocol.Hardened)); !errors.Is(err, gateway.ErrDataDirInsecure) || !strings.Contains(err.Error(), jdir) {
		t.Fatalf("journal directory 0777: %v, want ErrDataDirInsecure naming it", err)
	}
}

// unwritableParent makes dir's parent refuse new entries, as /var/lib is
// for a gateway that runs as its own user (or under ProtectSystem=strict)
// with a data directory made for it.
func unwritableParent(t *testing.T, dir string) {
	t.Helper()
	parent := filepath.Dir(dir)
	if os.Geteuid() != 0 {
		if err := os.Chmod(parent, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(parent, 0o700) })
		return
	}
	// Root writes any directory whatever its mode, but not an immutable
	// one.
	if out, err := exec.Command("chattr", "+i", parent).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("chattr +i %s failed (%v: %s): as root, an unwritable directory needs chattr (e2fsprogs) on ext4, xfs or btrfs; or run the test as another user", parent, err, out))
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", parent).Run() })
}

// TestFirstStartUnwritableParent: an empty data directory made for the
// gateway in a directory it may not write (the documented systemd unit:
// /var/lib/tagauth owned by the tagauth user) is filled in place; a
// failed first start leaves it empty.
func TestFirstStartUnwritableParent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gw")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// What a crashed first start left in place does not make it used.
	if err := os.MkdirAll(filepath.Join(dir, ".new-crashed", "audit-journal"), 0o700); err != nil {
		t.Fatal(err)
	}
	unwritableParent(t, dir)

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir, protocol.Hardened)
	cfg.AdminAddr = tcp.Addr().String()
	openErr(t, cfg)
	tcp.Close()
	if got := listDir(t, dir); len(got) != 0 {
		t.Fatalf("a failed first start left %v", got)
	}

	tg := startGateway(t, testConfig(dir, protocol.Hardened))
	alice := tg.enrol("alice")
	cred := tg.provision("d1", "g")
	tg.grant("alice", "g")
	tg.mustLogin(alice, cred)
	coapAddr := tg.g.CoAPAddr().String() // in the credential
	tg.stop()
	got := listDir(t, dir)
	for _, want := range []string{gateway.KeyFileName, gateway.StoreFileName, adminapi.TokenFileName, gateway.JournalDirName} {
		if !slices.Contains(got, want) {
			t.Errorf("data directory %v lacks %s", got, want)
		}
	}
	for _, name := range got {
		if strings.HasPrefix(name, ".") {
			t.Errorf("first start left %s in the data directory", name)
		}
	}
	cfg = testConfig(dir, protocol.Hardened)
	cfg.CoAPAddr = coapAddr
	tg = startGateway(t, cfg)
	tg.mustLogin(alice, cred)
}
