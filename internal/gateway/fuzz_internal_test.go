package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

// FuzzRegister feeds arbitrary bodies to POST /v1/register, the one admin
// endpoint that needs no token: whatever arrives, the answer is a 4xx with
// a JSON error (never a card: no valid code exists), never a 5xx, never a
// panic.
func FuzzRegister(f *testing.F) {
	g, err := Open(Config{DataDir: filepath.Join(f.TempDir(), "gw"), CoAPAddr: "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0", AdminToken: "0123456789abcdef0123456789abcdef", AuditOut: io.Discard})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { g.Close() })
	h := g.adminHandler()
	for _, seed := range []string{
		`{"code":"ABCD-EFGH","profile":"hardened","id":"alice","w":"` + hex64 + `","r":"` + hex64 + `","t":1760000000000,"kdf":{"t":2,"m_kib":19456,"p":1}}`,
		`{"code":"x","profile":"classic","id":"bob","w":"00","r":"00","t":0}`,
		`{"profile":"hardened","id":"\u0000"}`,
		`{}`, `[]`, `null`, `{"code":1}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/register", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("status %d for body %q: want a 4xx refusal", rec.Code, body)
		}
		if !bytes.Contains(rec.Body.Bytes(), []byte(`"error"`)) {
			t.Fatalf("refusal without a JSON error: %q", rec.Body.String())
		}
	})
}

const hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
