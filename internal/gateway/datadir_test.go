package gateway_test

import (
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/keyfile"
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
				t.Skip("changing a file's owner needs root: run as root (or in a container) to test ownership")
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
