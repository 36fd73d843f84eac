package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWithMode0600(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "new" || st.Mode().Perm() != 0o600 {
		t.Fatalf("got %q mode %v", b, st.Mode())
	}
	assertNoTemp(t, dir)
}

func TestWriteNewRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteNew(p, []byte("first")); err != nil {
		t.Fatal(err)
	}
	err := WriteNew(p, []byte("second"))
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteNew: %v, want fs.ErrExist", err)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "first" {
		t.Fatalf("existing file changed to %q", b)
	}
	assertNoTemp(t, dir)
}

func TestWriteMissingDir(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "no", "f"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want fs.ErrNotExist", err)
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	es, _ := os.ReadDir(dir)
	if len(es) != 1 {
		t.Fatalf("directory holds %d entries, want only the file", len(es))
	}
}

func TestWritePermSetsTheModeGiven(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WritePerm(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	st, _ := os.Stat(p)
	if string(b) != "new" || st.Mode().Perm() != 0o644 {
		t.Fatalf("got %q mode %v, want \"new\" mode 0644", b, st.Mode())
	}
	assertNoTemp(t, dir)
}

// TestWriteNewFrom: streamed content lands whole, a fill that fails
// leaves nothing, and an existing file is kept.
func TestWriteNewFrom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backup")
	if err := WriteNewFrom(path, func(w io.Writer) error { _, err := w.Write([]byte("v1")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewFrom(path, func(w io.Writer) error { _, err := w.Write([]byte("v2")); return err }); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("over an existing file: %v, want fs.ErrExist", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "v1" {
		t.Fatalf("the existing file: %q %v", b, err)
	}
	other := filepath.Join(filepath.Dir(path), "cut")
	if err := WriteNewFrom(other, func(w io.Writer) error { w.Write([]byte("half")); return errors.New("cut") }); err == nil {
		t.Fatal("a failed fill reported success")
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("after a failed fill the directory holds %d entries, want the first file only", len(ents))
	}
}
