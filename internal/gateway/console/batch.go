package console

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// Bulk provisioning in the console: a CSV file uploaded (adminapi's
// format) goes to the admin service's ProvisionBatch, and the
// credentials come back as one zip file, downloaded once like a single
// device's credential. The zip's entries are named as the CLI names its
// files (adminapi.CredentialFileName) and carry mode 0600.

// maxUpload bounds a console form's body: the CSV file and the form's
// few fields.
const maxUpload = adminapi.MaxBatchBytes + 64<<10

// parseForm reads a POST's form: url-encoded, or multipart for the CSV
// upload, whose fields then count as the form's (the CSRF token).
func parseForm(w http.ResponseWriter, r *http.Request) error {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseForm()
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxUpload)
	return r.ParseMultipartForm(maxUpload)
}

func (c *Console) provisionBatch(w http.ResponseWriter, r *http.Request, s *session) {
	back := "/console/devices"
	f, _, err := r.FormFile("csv")
	if err != nil {
		c.addFlash(s, true, "Choose a CSV file of devices (rows id,group) to upload.")
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	rows, err := adminapi.ParseDevicesCSV(io.LimitReader(f, adminapi.MaxBatchBytes))
	f.Close()
	if err != nil {
		c.addFlash(s, true, "The CSV file: %v. Nothing was provisioned.", err)
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	res, err := c.admin.ProvisionBatch(r.Context(), r.RemoteAddr, rows)
	if err != nil {
		c.fail(w, r, s, back, err)
		return
	}
	defer res.Clear()
	z, err := zipCredentials(res, c.now())
	if err != nil {
		c.log.Error("console: zipping the credentials of a batch failed", "err", err)
		c.render(w, r, s, http.StatusInternalServerError, "error", "Error",
			fmt.Sprintf("The %d devices are provisioned, but their credentials could not be packed (see the gateway log): revoke them and provision other ids.", len(res.Devices)))
		return
	}
	nonce := randomHex(16)
	now := c.now()
	c.mu.Lock()
	for k, p := range s.pending {
		if now.After(p.expires) {
			clear(p.data)
			delete(s.pending, k)
		}
	}
	s.pending[nonce] = &pendingCred{device: fmt.Sprintf("%d devices", len(res.Devices)), data: z, zip: true, expires: now.Add(CredentialTTL)}
	c.mu.Unlock()
	ids := make([]string, 0, min(len(res.Devices), shownIDs))
	for _, d := range res.Devices[:min(len(res.Devices), shownIDs)] {
		ids = append(ids, d.ID)
	}
	c.render(w, r, s, http.StatusOK, "batch", "Devices provisioned", struct {
		Count   int
		IDs     []string
		More    int
		Nonce   string
		Expires time.Time
	}{len(res.Devices), ids, len(res.Devices) - len(ids), nonce, now.Add(CredentialTTL)})
}

// shownIDs is how many of a batch's ids its page lists.
const shownIDs = 50

// zipCredentials packs a batch's credentials, one 0600 file per device.
func zipCredentials(res adminapi.BatchResult, now time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, d := range res.Devices {
		h := &zip.FileHeader{Name: adminapi.CredentialFileName(d.ID), Method: zip.Deflate, Modified: now}
		h.SetMode(0o600)
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := fw.Write(d.Credential); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if buf.Len() == 0 {
		return nil, errors.New("empty zip")
	}
	return buf.Bytes(), nil
}
