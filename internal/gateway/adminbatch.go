package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tagauth/tagauth/internal/adminapi"
)

// POST /v1/devices/batch: bulk provisioning (adminsvc.ProvisionBatch).
// The body is the CSV file itself (adminapi's format), so that the API,
// the CLI and the console read it with one parser and name the same
// lines.

func (a *adminHTTP) provisionBatch(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		writeError(w, http.StatusUnsupportedMediaType, "request body must be a CSV file (Content-Type: text/csv): one row per device, id,group")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, adminapi.MaxBatchBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("CSV file over %d bytes: split it (at most %d devices a batch)", adminapi.MaxBatchBytes, adminapi.MaxBatchRows))
			return
		}
		writeError(w, http.StatusBadRequest, "reading the CSV file: "+err.Error())
		return
	}
	rows, err := adminapi.ParseDevicesCSV(bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusBadRequest, "nothing was provisioned: "+err.Error())
		return
	}
	res, err := a.svc.ProvisionBatch(r.Context(), r.RemoteAddr, rows)
	if err != nil {
		answer(w, nil, err)
		return
	}
	defer res.Clear()
	b, err := json.Marshal(res)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the answer failed (the devices are provisioned: revoke them)")
		return
	}
	defer clear(b)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	w.Write([]byte{'\n'})
}
