// Package pgtest finds the PostgreSQL server that tests use and hands out
// fresh schemas in it, one per test, dropped when the test ends.
//
// The server is TAGAUTH_TEST_POSTGRES when set, else
// postgres://root@127.0.0.1:5432/test, else the same as user postgres.
// When none answers, tests fail under CI=true and skip otherwise, with a
// message saying how to start it.
package pgtest

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

	"github.com/jackc/pgx/v5"
)

// Env names the variable that overrides the server URL.
const Env = "TAGAUTH_TEST_POSTGRES"

// Candidates are the URLs tried, in order, when Env is not set.
var Candidates = []string{
	"postgres://root@127.0.0.1:5432/test?sslmode=disable",
	"postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
}

var (
	once    sync.Once
	baseURL string
	findErr error
)

func find() {
	urls := Candidates
	if u := os.Getenv(Env); u != "" {
		urls = []string{u}
	}
	for _, u := range urls {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := pgx.Connect(ctx, u)
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			baseURL = u
			return
		}
		findErr = fmt.Errorf("%s: %w", redacted(u), err)
	}
}

func redacted(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "the URL"
	}
	return p.Redacted()
}

// URL returns the test server's URL (without a schema), or ends the test:
// Fatal under CI=true, Skip otherwise.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(find)
	if baseURL == "" {
		msg := fmt.Sprintf("PostgreSQL is not reachable (%v): start it with "+
			"`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "+
			"(trust auth, database test), or set %s", findErr, Env)
		testenv.SkipOrFail(t, msg)
	}
	return baseURL
}

// Schema returns the URL of a new, empty schema (name "tagauth_test_"
// and random hex, in the URL's "schema" parameter) and drops the schema
// with everything in it when the test ends. The schema itself is created
// by whoever opens the store first.
func Schema(t testing.TB) (rawURL, schema string) {
	t.Helper()
	base := URL(t)
	var b [6]byte
	rand.Read(b[:])
	schema = "tagauth_test_" + hex.EncodeToString(b[:])
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("schema", schema)
	u.RawQuery = q.Encode()
	t.Cleanup(func() { Drop(t, schema) })
	return u.String(), schema
}

// Drop drops a schema and everything in it.
func Drop(t testing.TB, schema string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, URL(t))
	if err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
		return
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
	}
}

// Exec runs SQL on the test server with search_path set to schema, for
// tests that change the database behind a store's back.
func Exec(t testing.TB, schema, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SET search_path TO "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
