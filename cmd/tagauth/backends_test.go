package main

import (
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/gateway"
)

// TestOpenBackendsRefusals: --store takes postgres:// only, --replay needs
// a shared store, and an unreachable database fails the start.
func TestOpenBackendsRefusals(t *testing.T) {
	for _, c := range []struct {
		store, replay, want string
	}{
		{"mysql://x", "", "postgres://"},
		{"", "redis://127.0.0.1:6379/0", "--store"},
		{"bolt", "redis://127.0.0.1:6379/0", "--store"},
		{"postgres://root@127.0.0.1:1/test?connect_timeout=1", "", "127.0.0.1:1"},
	} {
		var cfg gateway.Config
		if _, err := openBackends(&cfg, c.store, c.replay); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--store %q --replay %q: %v, want an error saying %q", c.store, c.replay, err, c.want)
		}
		if cfg.Store != nil || cfg.SharedState != nil || cfg.Replay != nil {
			t.Errorf("--store %q --replay %q: a refused backend left %+v in the configuration", c.store, c.replay, cfg)
		}
	}
	// The defaults leave everything to the gateway: the embedded store and
	// the in-memory cache.
	for _, c := range [][2]string{{"", ""}, {"bolt", "memory"}} {
		var cfg gateway.Config
		closeAll, err := openBackends(&cfg, c[0], c[1])
		if err != nil || cfg.Store != nil || cfg.SharedState != nil || cfg.Replay != nil || cfg.LockoutStore != nil {
			t.Errorf("--store %q --replay %q: %v, %+v; want nothing opened", c[0], c[1], err, cfg)
		}
		closeAll()
	}
}
