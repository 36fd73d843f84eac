package credfile

import (
	"strings"
	"testing"

	"github.com/tagauth/tagauth/protocol"
)

// FuzzUnmarshal: no input panics; whatever parses is valid, marshals, and
// parses back to the same credential; no error quotes a 32-digit run of
// hex digits from the input (that is, a piece of a tag).
func FuzzUnmarshal(f *testing.F) {
	for _, p := range []protocol.Profile{protocol.Classic, protocol.Hardened} {
		b, err := Marshal(provisioned(f, p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(goodJSON))
	f.Add([]byte(goodJSON + " {}"))
	f.Add([]byte(strings.Replace(goodJSON, `"kv":1`, `"kv":1,"kv":1`, 1)))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"profile":"classic","id":"d","tag":"` + tagHex + `","gateway":"[::1]:1"}`))

	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Unmarshal(b)
		if err != nil {
			msg := strings.ToLower(err.Error())
			for _, run := range hexRuns(string(b), 32) {
				run = strings.ToLower(run)
				for i := 0; i+32 <= len(run); i++ {
					if strings.Contains(msg, run[i:i+32]) {
						t.Fatalf("error %q quotes hex from the input", err)
					}
				}
			}
			return
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("parsed %+v but Marshal refuses it: %v", c, err)
		}
		c2, err := Unmarshal(out)
		if err != nil {
			t.Fatalf("Marshal output does not parse: %v\n%s", err, out)
		}
		if c2 != c {
			t.Fatalf("round trip changed %+v into %+v", c, c2)
		}
	})
}

// hexRuns returns the maximal runs of at least n hex digits in s.
func hexRuns(s string, n int) []string {
	var runs []string
	start := -1
	for i := 0; i <= len(s); i++ {
		isHex := i < len(s) && strings.IndexByte("0123456789abcdefABCDEF", s[i]) >= 0
		switch {
		case isHex && start < 0:
			start = i
		case !isHex && start >= 0:
			if i-start >= n {
				runs = append(runs, s[start:i])
			}
			start = -1
		}
	}
	return runs
}
