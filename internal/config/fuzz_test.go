package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tagauth/tagauth/internal/config"
)

// FuzzParse: a configuration file of any content either parses or gives
// an error; never a panic. Seeded with the files in testdata.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*"))
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("profile = \"hardened\"\nwindow = \"10s\"\n[lockout]\nmax_failures = 5\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := config.Parse(b)
		if (g == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", g, err)
		}
		if g != nil {
			g.Settings() // every parsed config can be listed
		}
	})
}
