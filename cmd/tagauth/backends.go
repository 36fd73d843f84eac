package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/redisstate"
	"github.com/tagauth/tagauth/internal/store/postgres"
	"github.com/tagauth/tagauth/protocol"
)

// The gateway's backends are chosen here, from --store and --replay: the
// gateway package sees only their interfaces (store.Store,
// protocol.ReplayCache, lockout.Store, gateway.SharedState).

// backendOpenTimeout bounds opening the shared backends at start.
const backendOpenTimeout = 30 * time.Second

// openBackends opens the store named by storeURL (postgres://...; "" or
// "bolt": the embedded store the gateway opens in its data directory) and
// the replay cache named by replayURL (redis://...; "" or "memory": in
// the gateway's memory) into cfg. It returns a function that closes what
// it opened, for when the gateway does not start (a gateway that started
// closes them itself; closing twice is harmless).
func openBackends(cfg *gateway.Config, storeURL, replayURL string) (func(), error) {
	log := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), backendOpenTimeout)
	defer cancel()
	var closers []func() error
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	var st *postgres.Store
	if storeURL != "" && storeURL != "bolt" {
		if !strings.HasPrefix(storeURL, "postgres://") && !strings.HasPrefix(storeURL, "postgresql://") {
			return nil, fmt.Errorf("--store %q: want postgres://... (or leave it out for the embedded store in the data directory)", storeURL)
		}
		var err error
		if st, err = postgres.Open(ctx, storeURL, postgres.Options{Logger: log.With("part", "postgres")}); err != nil {
			return nil, err
		}
		closers = append(closers, st.Close)
	}
	var rs *redisstate.State
	if replayURL != "" && replayURL != "memory" {
		if st == nil {
			// A shared replay cache with a private registry would let
			// replicas disagree on revocations: refuse the mix.
			return nil, errors.New("--replay redis://... needs --store postgres://... (replicas share both)")
		}
		var err error
		rs, err = redisstate.Open(ctx, replayURL, redisstate.Options{Window: cmp.Or(cfg.Window, protocol.DefaultWindow), Logger: log.With("part", "redis")})
		if err != nil {
			closeAll()
			return nil, err
		}
		closers = append(closers, rs.Close)
	}
	if st != nil {
		cfg.Store = st
	}
	if rs != nil {
		cfg.SharedState, cfg.Replay = rs, rs.Replay()
		if cfg.LockoutStore == nil {
			cfg.LockoutStore = rs.Lockout()
		}
	}
	return closeAll, nil
}
