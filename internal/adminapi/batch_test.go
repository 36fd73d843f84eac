package adminapi

import (
	"bytes"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestParseDevicesCSV(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []DeviceRow
	}{
		{"header", "id,group\na,g\nb\n", []DeviceRow{{2, "a", "g"}, {3, "b", ""}}},
		{"id header, BOM, CRLF", "\ufeffid\r\na,g\r\n", []DeviceRow{{2, "a", "g"}}},
		{"no header", "a,\n\n b , c \n", []DeviceRow{{1, "a", ""}, {3, " b ", " c "}}},
		{"a later id row is a device", "x\nid,group\n", []DeviceRow{{1, "x", ""}, {2, "id", "group"}}},
		{"quoted", "\"a,\"\"b\"\"\nc\",g\n#x,y\nlast", []DeviceRow{{1, "a,\"b\"\nc", "g"}, {3, "#x", "y"}, {4, "last", ""}}},
	} {
		got, err := ParseDevicesCSV(strings.NewReader(tc.in))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name, in string
		line     int
		msg      string
	}{
		{"empty", "", 1, "no devices"},
		{"header only", "id,group\n", 1, "no devices"},
		{"three fields", "a,b\n\nc,d,e\n", 3, "3 fields"},
		{"bare quote", "a\nb\"c,d\n", 2, "not valid CSV"},
		{"open quote", "a\n\"b\nc\n", 2, "not valid CSV"},
		{"too many", strings.Repeat("d\n", MaxBatchRows) + "e\n", MaxBatchRows + 1, "more than 10000 devices"},
	} {
		_, err := ParseDevicesCSV(strings.NewReader(tc.in))
		var ce *CSVError
		if !errors.As(err, &ce) || ce.Line != tc.line || !strings.Contains(ce.Msg, tc.msg) {
			t.Errorf("%s: %v; want line %d: ...%s...", tc.name, err, tc.line, tc.msg)
		}
	}
}

func TestCredentialFileName(t *testing.T) {
	for id, want := range map[string]string{
		"sensor-7_A.b": "sensor-7_A.b.json",
		".hidden":      "%2Ehidden.json",
		"..":           "%2E..json",
		"a/b\\c":       "a%2Fb%5Cc.json",
		"50%":          "50%25.json",
		"ü \x01":       "%C3%BC%20%01.json",
	} {
		if got := CredentialFileName(id); got != want {
			t.Errorf("CredentialFileName(%q) = %q, want %q", id, got, want)
		}
	}
	// Decoding the name gives the id back: no two ids share a name.
	for _, id := range []string{"a b", "a%20b", "x/../y", ".", "Ω∑", strings.Repeat("\x7f", 64)} {
		name := CredentialFileName(id)
		if strings.ContainsAny(name, "/\\ \x00") || strings.HasPrefix(name, ".") || len(name) > 255 {
			t.Errorf("%q: unsafe name %q", id, name)
		}
		back, err := url.PathUnescape(strings.TrimSuffix(name, ".json"))
		if err != nil || back != id {
			t.Errorf("%q: name %q decodes to %q, %v", id, name, back, err)
		}
	}
}

// FuzzParseDevicesCSV: a batch file is untrusted input to the admin API
// (POST /v1/devices/batch) and the CLI. Whatever its bytes, parsing never
// panics; what it accepts is one or two fields a row, within the row
// limit, with lines that only go forward, and distinct ids get distinct
// credential file names.
func FuzzParseDevicesCSV(f *testing.F) {
	for _, s := range []string{"id,group\ncam-1,door\n\"cam/2\",door\n", "\xef\xbb\xbfa\nb,c\n", "\"a,b\",g\r\n", "x,y,z\n", "\"unterminated\n", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := ParseDevicesCSV(bytes.NewReader(b))
		if err != nil {
			var ce *CSVError
			if !errors.As(err, &ce) || ce.Line < 1 {
				t.Fatalf("error %v is not a CSVError with a line", err)
			}
			return
		}
		if len(rows) == 0 || len(rows) > MaxBatchRows {
			t.Fatalf("%d rows accepted", len(rows))
		}
		names := map[string]string{}
		for i, r := range rows {
			if i > 0 && r.Line <= rows[i-1].Line {
				t.Fatalf("row %d on line %d after line %d", i, r.Line, rows[i-1].Line)
			}
			n := CredentialFileName(r.ID)
			if other, ok := names[n]; ok && other != r.ID {
				t.Fatalf("ids %q and %q share the file name %q", other, r.ID, n)
			}
			names[n] = r.ID
		}
	})
}
