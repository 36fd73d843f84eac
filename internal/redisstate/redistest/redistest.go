// Package redistest finds the Redis that tests use and hands out fresh key
// prefixes in it, deleted when the test ends.
//
// The server is TAGAUTH_TEST_REDIS when set, else redis://127.0.0.1:6379/0.
// When it does not answer, tests fail under CI=true and skip otherwise,
// with a message saying how to start it.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/tagauth/tagauth/internal/testenv"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Env names the variable that overrides the server URL.
const Env = "TAGAUTH_TEST_REDIS"

// DefaultURL is the server tried when Env is not set.
const DefaultURL = "redis://127.0.0.1:6379/0"

var (
	once    sync.Once
	baseURL string
	findErr error
)

func find() {
	u := DefaultURL
	if e := os.Getenv(Env); e != "" {
		u = e
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		findErr = err
		return
	}
	c := redis.NewClient(o)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		findErr = fmt.Errorf("%s: %w", o.Addr, err)
		return
	}
	baseURL = u
}

// URL returns the test server's URL, or ends the test: Fatal under
// CI=true, Skip otherwise.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(find)
	if baseURL == "" {
		msg := fmt.Sprintf("Redis is not reachable (%v): start it with "+
			"`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`, or set %s", findErr, Env)
		testenv.SkipOrFail(t, msg)
	}
	return baseURL
}

// Client returns a go-redis client on the test server, closed at the end
// of the test.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(URL(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// Prefix returns a new key prefix ("tagauth-test-" and random hex, then
// ":") and the server URL carrying it as its "prefix" parameter. Every key
// under the prefix is deleted when the test ends.
func Prefix(t testing.TB) (rawURL, prefix string) {
	t.Helper()
	base := URL(t)
	var b [6]byte
	rand.Read(b[:])
	prefix = "tagauth-test-" + hex.EncodeToString(b[:]) + ":"
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("prefix", prefix)
	u.RawQuery = q.Encode()
	c := Client(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return u.String(), prefix
}

// MarkFresh declares that nothing was ever recorded under prefix, so the
// replay cache needs no quarantine: only true of a prefix that Prefix just
// made. It saves tests the 2 dT wait of a new cache.
func MarkFresh(t testing.TB, prefix string) {
	t.Helper()
	if err := Client(t).Set(context.Background(), prefix+"epoch", "0", 0).Err(); err != nil {
		t.Fatal(err)
	}
}
