package mqttbind

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/internal/coap"
	"github.com/tagauth/tagauth/internal/coapbind"
	"github.com/tagauth/tagauth/protocol"
)

// TestEchoer: the MQTT binding's Echo values are package echo's, as hex
// text, keyed by the requester's name.
func TestEchoer(t *testing.T) {
	e, err := NewEchoer(2)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0) // a minute boundary
	v := e.Mint("client-a", now)
	switch {
	case !e.Valid(v, "client-a", now.Add(119*time.Second)):
		t.Fatal("a value refused in the minute after its own")
	case e.Valid(v, "client-b", now):
		t.Fatal("a value minted for another client accepted")
	case e.Valid(v, "client-a", now.Add(2*time.Minute)):
		t.Fatal("an expired value accepted")
	case e.Valid(v, "client-a", now.Add(-time.Millisecond)):
		t.Fatal("a value from the future accepted")
	case e.Valid(strings.ToUpper(v[:2])+"zz"+v[4:], "client-a", now):
		t.Fatal("a value that is not hex accepted")
	case e.Valid(v[:len(v)-2], "client-a", now):
		t.Fatal("a truncated value accepted")
	}
	b := []byte(v)
	b[len(b)-1] ^= 1
	if e.Valid(string(b), "client-a", now) {
		t.Fatal("a value with a flipped MAC bit accepted")
	}
	other, _ := NewEchoer(0)
	if other.Valid(v, "client-a", now) {
		t.Fatal("a value minted under another key accepted")
	}

	// The verified table: remembered for VerifiedFor, bounded, the
	// oldest forgotten first.
	e.Remember("a", now)
	e.Remember("b", now)
	e.Remember("c", now)
	if e.Verified("a", now) || !e.Verified("b", now) || !e.Verified("c", now) {
		t.Fatal("table bound not kept")
	}
	if e.Verified("b", now.Add(VerifiedFor)) {
		t.Fatal("a verification outlived VerifiedFor")
	}
}

func TestMemoryCache(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	c := NewMemoryCache(2, func() time.Time { return now })
	ctx := context.Background()
	k1, k2, k3 := cacheKey("r/1", []byte("a")), cacheKey("r/1", []byte("b")), cacheKey("r/2", []byte("a"))
	s1, s2 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
	keep := 20 * time.Second

	if cl, _, err := c.Claim(ctx, k1, s1, keep); err != nil || cl != ClaimNew {
		t.Fatalf("first claim: %v %v", cl, err)
	}
	// A duplicate while the first is handled waits for its answer.
	got := make(chan []byte)
	go func() {
		cl, a, _ := c.Claim(ctx, k1, s1, keep)
		if cl != ClaimDone {
			a = nil
		}
		got <- a
	}()
	c.Store(ctx, k1, s1, []byte("m4"), keep)
	if a := <-got; string(a) != "m4" {
		t.Fatalf("waiting duplicate got %q", a)
	}
	if cl, _, _ := c.Claim(ctx, k1, s2, keep); cl != ClaimMismatch {
		t.Fatalf("same key, other payload: %v", cl)
	}
	// A duplicate that gives up waiting is dropped.
	c.Claim(ctx, k2, s1, keep)
	short, cancel := context.WithCancel(ctx)
	cancel()
	if cl, _, _ := c.Claim(short, k2, s1, keep); cl != ClaimBusy {
		t.Fatalf("duplicate of a request in progress: %v", cl)
	}
	// Full: refuse rather than forget.
	if _, _, err := c.Claim(ctx, k3, s1, keep); err != ErrCacheFull {
		t.Fatalf("claim on a full cache: %v", err)
	}
	// An empty success (confirm) is an answer, not "none".
	now = now.Add(keep)
	if cl, _, err := c.Claim(ctx, k3, s1, keep); err != nil || cl != ClaimNew {
		t.Fatalf("claim after expiry: %v %v", cl, err)
	}
	c.Store(ctx, k3, s1, []byte{}, keep)
	if cl, a, _ := c.Claim(ctx, k3, s1, keep); cl != ClaimDone || a == nil {
		t.Fatalf("empty answer: %v %v", cl, a)
	}
	if c.Len() != 1 {
		t.Fatalf("expired keys kept: %d", c.Len())
	}
}

func TestToAnswer(t *testing.T) {
	hard := []byte{byte(protocol.Hardened), 0x01, 9}
	for _, tc := range []struct {
		code    coap.Code
		payload []byte
		want    protocol.Code // 0: success, payload as it is
	}{
		{coap.Changed, []byte{2, 4, 1}, 0},
		{coap.NotFound, nil, protocol.ErrMalformed},
		{coap.Unauthorized, nil, protocol.ErrRejected},
		{coap.ServiceUnavailable, nil, protocol.ErrBusy},
		{coap.InternalServerError, nil, protocol.ErrInternal},
		{coap.Unauthorized, protocol.AppendError(nil, protocol.Hardened, protocol.ErrStaleTimestamp), protocol.ErrStaleTimestamp},
	} {
		out := toAnswer(tc.code, tc.payload, hard)
		code, back := Answer(out)
		if tc.want == 0 {
			if code != coap.Changed || string(back) != string(tc.payload) {
				t.Errorf("%s: %x -> %s %x", tc.code, tc.payload, code, back)
			}
			continue
		}
		p, c, err := protocol.ParseError(out)
		if err != nil || c != tc.want || p != protocol.Hardened || code != coapbind.Code(tc.want) {
			t.Errorf("%s: answer %x (%v %v %v), code %s", tc.code, out, p, c, err, code)
		}
	}
	if out := toAnswer(coap.Changed, nil, hard); out == nil || len(out) != 0 {
		t.Errorf("an empty success must be an empty, non-nil answer: %v", out)
	}
}

func FuzzEchoValid(f *testing.F) {
	e, _ := NewEchoer(0)
	now := time.Unix(1_800_000_000, 0)
	f.Add(e.Mint("c", now), "c")
	f.Add("", "")
	f.Add("zz", "c")
	f.Fuzz(func(t *testing.T, v, name string) {
		if !e.Valid(v, name, now) {
			return
		}
		// Only a value this Echoer minted for name in this minute or the
		// previous one may pass (hex in either case).
		if lv := strings.ToLower(v); lv != e.Mint(name, now) && lv != e.Mint(name, now.Add(-time.Minute)) {
			t.Fatalf("accepted %q for %q", v, name)
		}
	})
}

func FuzzReplyClient(f *testing.F) {
	f.Add("tagauth/v1/reply/abc")
	f.Add("tagauth/v1/reply/abc/x")
	f.Add("tagauth/v1/reply/")
	f.Add("tagauth/v1/replyx/a")
	f.Fuzz(func(t *testing.T, topic string) {
		id, ok := replyClient(DefaultRoot, topic)
		if !ok {
			return
		}
		if id == "" || strings.ContainsAny(topic, "+#\x00") || !strings.HasPrefix(topic, DefaultRoot+"/reply/"+id) ||
			strings.Contains(id, "/") {
			t.Fatalf("%q gave client %q", topic, id)
		}
	})
}

func FuzzAnswer(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 0x7f, 5})
	f.Add([]byte{2, 0x7f})
	f.Add([]byte{2, 4, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		code, out := Answer(b)
		if string(out) != string(b) {
			t.Fatal("Answer changed the payload")
		}
		isErr := len(b) >= 2 && b[1] == errorType
		if isErr == (code == coap.Changed) {
			t.Fatalf("%x: code %s", b, code)
		}
	})
}

func TestSourceNameNeverAnAddress(t *testing.T) {
	for _, id := range []string{"a", "abcdefghijk", "tagauth-0123456789abcdef0123456789abcdef", strings.Repeat("x", 59), strings.Repeat("x", 60)} {
		n := SourceName(id)
		if len(n) == 4 || len(n) == 16 || len(n) > 64 || len(n) == 0 {
			t.Errorf("client %q: source name %q has the length of an address or is too long", id, n)
		}
	}
	if string(SourceName("a")) == string(SourceName("b")) {
		t.Error("two clients share a source name")
	}
}

func TestDialTakesCredentialsFromTheURL(t *testing.T) {
	c, err := Dial(t.Context(), Config{URL: "tcp://dev:s3cret@127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if strings.Contains(c.URL(), "s3cret") || strings.Contains(c.URL(), "dev@") {
		t.Fatalf("URL keeps the credentials: %s", c.URL())
	}
	for _, bad := range []string{"http://x:1", "tcp://", "tcp://h:1 x", "mqtts:/nohost"} {
		if c, err := Dial(t.Context(), Config{URL: bad}); err == nil {
			c.Close()
			t.Errorf("Dial accepted %q", bad)
		}
	}
	if _, err := Dial(t.Context(), Config{URL: "tcp://h:1", CAFile: "ca.pem"}); err == nil {
		t.Error("a CA file on a plain TCP URL accepted")
	}
	if _, err := Dial(t.Context(), Config{URL: "tcp://h:1", Root: "$SYS/x"}); err == nil {
		t.Error("a topic prefix starting with $ accepted")
	}
}
