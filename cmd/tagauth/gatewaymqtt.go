package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tagauth/tagauth/internal/gateway"
	"github.com/tagauth/tagauth/internal/mqttbind"
)

// gatewayMQTT serves /tagauth/verify through the broker on the gateways'
// shared subscription (spec section 12), with the same handler as CoAP.
// Replicas that share a replay cache (--replay redis://...) share the
// answer cache there too, so that a QoS 1 duplicate delivered to another
// replica is answered from it; otherwise it is in memory.
func gatewayMQTT(ctx context.Context, g *gateway.Gateway, mf *mqttFlags, replayURL string, window time.Duration, log *slog.Logger, stdout io.Writer) (func(), error) {
	conn, err := mf.dial(ctx, log.With("part", "mqtt"))
	if err != nil {
		return nil, err
	}
	rcfg := mqttbind.ResponderConfig{
		Handler: g.VerifyHandler(),
		Routes:  mqttbind.GatewayRoutes(conn.Root()),
		Shared:  true,
		Keep:    2 * window,
		Logger:  log.With("part", "mqtt"),
	}
	var rdb *redis.Client
	if replayURL != "" {
		rdb, rcfg.Cache, err = redisAnswerCache(replayURL)
		if err != nil {
			conn.Close()
			return nil, err
		}
	}
	if _, err := mqttbind.NewResponder(ctx, conn, rcfg); err != nil {
		conn.Close()
		return nil, err
	}
	fmt.Fprintf(stdout, "  MQTT verify:  %s on %s (client %s)\n", conn.URL(), mqttbind.VerifyFilter(conn.Root()), conn.ClientID())
	return func() {
		conn.Close()
		if rdb != nil {
			rdb.Close()
		}
	}, nil
}

// redisAnswerCache opens the answer cache in the replay cache's Redis,
// under its prefix (?prefix=P) followed by "mqtt-answer:".
func redisAnswerCache(raw string) (*redis.Client, mqttbind.AnswerCache, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("--replay: %w", err)
	}
	q := u.Query()
	prefix := q.Get("prefix")
	if prefix == "" {
		prefix = "tagauth:"
	}
	q.Del("prefix")
	u.RawQuery = q.Encode()
	opt, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, nil, fmt.Errorf("--replay: %w", err)
	}
	rdb := redis.NewClient(opt)
	return rdb, mqttbind.NewRedisCache(rdb, prefix+"mqtt-answer:"), nil
}
