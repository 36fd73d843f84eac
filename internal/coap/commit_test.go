package coap

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// testCommitter records the requests of each batch as the handler sees
// them (through the worker's context) and commits them, or fails.
type testCommitter struct {
	mu        sync.Mutex
	pending   []string // payloads handled, not committed
	committed []string
	commits   int
	fail      bool
	need      map[int]bool // Request.Index of the batch's handled requests
}

type committerKey struct{}

func (c *testCommitter) Commit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commits++
	if !c.fail {
		clear(c.need)
	}
	if c.fail {
		c.pending = c.pending[:0]
		return errors.New("disk full")
	}
	c.committed = append(c.committed, c.pending...)
	c.pending = c.pending[:0]
	return nil
}

func (c *testCommitter) Replace(i int, dst []byte) (Code, []byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := c.need[i]
	delete(c.need, i)
	return ServiceUnavailable, append(dst, "busy"...), ok
}

func (c *testCommitter) wasCommitted(p string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.committed {
		if q == p {
			return true
		}
	}
	return false
}

func commitServer(t *testing.T, batch int, fail bool) (*Server, *testCommitter, *atomic.Int64) {
	c := &testCommitter{fail: fail, need: map[int]bool{}}
	var calls atomic.Int64
	mux := NewMux()
	mux.Handle("/tagauth/verify", HandlerFunc(func(ctx context.Context, req *Request, dst []byte) (Code, []byte) {
		calls.Add(1)
		tc := ctx.Value(committerKey{}).(*testCommitter)
		tc.mu.Lock()
		tc.pending = append(tc.pending, string(req.Payload))
		tc.need[req.Index] = true
		tc.mu.Unlock()
		return Changed, append(dst, req.Payload...)
	}))
	s := &Server{Handler: mux, Workers: 1, Batch: batch,
		Commit: func(ctx context.Context) (context.Context, Committer) {
			return context.WithValue(ctx, committerKey{}, c), c
		}}
	return s, c, &calls
}

// With Server.Commit, a response leaves only after the commit of its
// batch: whoever sees an answer finds its request committed.
func TestCommitBeforeSend(t *testing.T) {
	for _, batch := range []int{0, 8} {
		s, c, _ := commitServer(t, batch, false)
		conn := dial(t, serve(t, s))
		for i := range 20 {
			p := string(rune('a'+i%26)) + "-payload"
			m := decode(t, exchange(t, conn, post(t, uint16(100+i), "/tagauth/verify", []byte(p))))
			if Code(m.Code) != Changed || string(m.Payload) != p {
				t.Fatalf("batch %d: answer %v %q", batch, Code(m.Code), m.Payload)
			}
			if !c.wasCommitted(p) {
				t.Fatalf("batch %d: answer to %q arrived before its commit", batch, p)
			}
		}
	}
}

// When the commit fails, the batch's handled requests get the committer's
// replacement, and a retransmission gets the same from the cache without
// running the handler again.
func TestCommitFailureReplaces(t *testing.T) {
	for _, batch := range []int{0, 8} {
		s, c, calls := commitServer(t, batch, true)
		conn := dial(t, serve(t, s))
		req := post(t, 7, "/tagauth/verify", []byte("m2"))
		for try := range 2 {
			m := decode(t, exchange(t, conn, req))
			if Code(m.Code) != ServiceUnavailable || string(m.Payload) != "busy" || m.MessageID != 7 {
				t.Fatalf("batch %d, try %d: answer %v %q mid %d, want 5.03 busy", batch, try, Code(m.Code), m.Payload, m.MessageID)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("batch %d: handler ran %d times, want once", batch, n)
		}
		// A request the committer did not note keeps its answer.
		m := decode(t, exchange(t, conn, post(t, 8, "/nothing", nil)))
		if Code(m.Code) != NotFound {
			t.Fatalf("batch %d: unrouted request answered %v", batch, Code(m.Code))
		}
		c.mu.Lock()
		commits := c.commits
		c.mu.Unlock()
		if commits < 1 {
			t.Fatalf("batch %d: no commit", batch)
		}
	}
}
