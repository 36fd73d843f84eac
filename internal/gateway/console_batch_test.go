package gateway_test

import (
	"archive/zip"
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tagauth/tagauth/internal/credfile"
	"github.com/tagauth/tagauth/protocol"
)

// upload posts a multipart form with a CSV file to the console.
func (c *consoleClient) upload(path, csrf, csv string) (*http.Response, []byte) {
	c.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if csrf != "" {
		mw.WriteField("csrf", csrf)
	}
	fw, _ := mw.CreateFormFile("csv", "devices.csv")
	fw.Write([]byte(csv))
	mw.Close()
	req, err := http.NewRequest(http.MethodPost, c.tg.url(path), &body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestConsoleProvisionBatch: the console's CSV upload provisions every
// device and hands their credentials out once, as a zip of 0600 files
// named as the CLI names them; a bad file provisions nothing.
func TestConsoleProvisionBatch(t *testing.T) {
	tg := startGateway(t, testConfig(t.TempDir(), protocol.Hardened))
	c := newConsoleClient(tg)
	c.login(tg.token)
	c.do(http.MethodGet, "/console/devices", nil, "")
	if c.csrf == "" {
		t.Fatal("no CSRF token on the devices page")
	}
	if resp, _ := c.upload("/console/devices/batch", "", "x\n"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upload without the CSRF token: %d", resp.StatusCode)
	}
	resp, _ := c.upload("/console/devices/batch", c.csrf, "ok\nok\n")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a bad batch: %d", resp.StatusCode)
	}
	if _, page := c.do(http.MethodGet, "/console/devices", nil, ""); !strings.Contains(page, "line 2: device &#34;ok&#34; is also on line 1") || strings.Contains(page, ">ok<") {
		t.Fatalf("the devices page after a bad batch does not name line 2, or lists the device:\n%s", page)
	}

	resp, page := c.upload("/console/devices/batch", c.csrf, "id,group\ncam-1,door\n\"cam/2\",door\n")
	if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte(`<strong>2</strong> devices are provisioned`)) {
		t.Fatalf("batch upload: %d\n%s", resp.StatusCode, page)
	}
	m := regexp.MustCompile(`name="nonce" value="([0-9a-f]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("no download form:\n%s", page)
	}
	form := url.Values{"csrf": {c.csrf}, "nonce": {string(m[1])}}
	req, _ := http.NewRequest(http.MethodPost, tg.url("/console/devices/credential"), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	dl, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	z, _ := io.ReadAll(dl.Body)
	dl.Body.Close()
	if dl.StatusCode != http.StatusOK || dl.Header.Get("Content-Type") != "application/zip" {
		t.Fatalf("download: %d %s", dl.StatusCode, dl.Header.Get("Content-Type"))
	}
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cam-1.json": "cam-1", "cam%2F2.json": "cam/2"}
	if len(zr.File) != len(want) {
		t.Fatalf("%d files in the zip", len(zr.File))
	}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		cred, err := credfile.Unmarshal(b)
		if err != nil || cred.ID != want[f.Name] || f.Mode().Perm() != 0o600 {
			t.Fatalf("zip entry %s (mode %v): %+v %v", f.Name, f.Mode(), cred, err)
		}
	}
	// Once only.
	if resp, _ := c.do(http.MethodPost, "/console/devices/credential", form, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("second download: %d", resp.StatusCode)
	}
}
