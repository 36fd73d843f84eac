package adminapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Bulk provisioning: POST /v1/devices/batch takes a CSV file of devices
// and answers with the credential of every one, or, when any row is
// refused, with the refusal of every bad row and nothing created.
//
// # The CSV format
//
// RFC 4180, as encoding/csv reads it, UTF-8 (a leading byte order mark
// is skipped): one row per device, the id in the first field and its
// policy group, which may be empty or missing, in the second. A first
// row that reads exactly "id,group" (or "id") is a header and is
// skipped. Fields are taken as they are: spaces are part of an id, '#'
// starts no comment, and a field holding a comma, a double quote or a
// line break is quoted ("a,""b""" is the id a,"b"). Blank lines are
// skipped. encoding/csv turns a quoted CR LF into LF, so an id holding a
// CR cannot be written in the file. Ids and groups follow the rules of
// every identity (1 to 64 bytes of UTF-8, no NUL); rows are named by the
// line they start on.
//
// # Credential file names
//
// The credentials of a batch are written one file per device, named by
// CredentialFileName: the id with every byte other than A-Z, a-z, 0-9,
// '-', '_' and '.' (and a leading '.') written as %XX, the byte in
// upper-case hex, then ".json". Two ids never share a name, and the id
// is the name percent-decoded; no name is ".", "..", hidden, or holds a
// path separator. On a file system that ignores case (macOS, Windows)
// ids that differ only in case would clash: the CLI refuses such a
// batch before anything is provisioned.

// PathDevicesBatch is POST: provision every device of a CSV body
// (Content-Type text/csv), all or none.
const PathDevicesBatch = "/v1/devices/batch"

// Bulk provisioning limits. A bigger file is refused (split it: each
// part is provisioned all or none on its own).
const (
	MaxBatchRows  = 10000
	MaxBatchBytes = 4 << 20 // a full row is at most ~270 bytes
	// maxBatchAnswer bounds the answer the client reads: a credential
	// with the longest escaped id is about 1.2 KB.
	maxBatchAnswer = 64 << 20
)

// DeviceRow is one device of a batch, with the line of the CSV file its
// row starts on.
type DeviceRow struct {
	Line  int
	ID    string
	Group string
}

// CSVError is a CSV file that cannot be read: its line and the problem.
type CSVError struct {
	Line int
	Msg  string
}

func (e *CSVError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ParseDevicesCSV reads a batch in the CSV format above. It checks the
// shape (one or two fields a row, at most MaxBatchRows rows), not the
// ids: the gateway does, naming every bad row. Errors are *CSVError.
func ParseDevicesCSV(r io.Reader) ([]DeviceRow, error) {
	br := bufio.NewReader(r)
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	var rows []DeviceRow
	for first := true; ; first = false {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				msg := "not valid CSV (RFC 4180): " + pe.Err.Error()
				if pe.Line != pe.StartLine {
					msg += fmt.Sprintf(" (the row starts here; the error is on line %d)", pe.Line)
				}
				return nil, &CSVError{Line: pe.StartLine, Msg: msg}
			}
			return nil, err
		}
		line, _ := cr.FieldPos(0)
		if first && rec[0] == "id" && (len(rec) == 1 || len(rec) == 2 && rec[1] == "group") {
			continue
		}
		if len(rec) > 2 {
			return nil, &CSVError{Line: line, Msg: fmt.Sprintf("%d fields; a row is id,group (quote a field that holds a comma)", len(rec))}
		}
		if len(rows) == MaxBatchRows {
			return nil, &CSVError{Line: line, Msg: fmt.Sprintf("more than %d devices: split the file (each part is provisioned all or none)", MaxBatchRows)}
		}
		row := DeviceRow{Line: line, ID: rec[0]}
		if len(rec) == 2 {
			row.Group = rec[1]
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, &CSVError{Line: 1, Msg: "no devices in the file"}
	}
	return rows, nil
}

// CredentialFileName is the file name of id's credential in a batch (see
// the package's notes on bulk provisioning).
func CredentialFileName(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' && i > 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String() + ".json"
}

// BatchDevice is one provisioned device of a batch: its row's line, the
// name of its credential file and the credential (internal/credfile's
// JSON), which holds the device's secret tag.
type BatchDevice struct {
	Line       int             `json:"line"`
	ID         string          `json:"id"`
	File       string          `json:"file"`
	KV         uint8           `json:"kv"`
	Credential json.RawMessage `json:"credential"`
}

// BatchResult is the answer of POST /v1/devices/batch: every device of
// the file, in its order.
type BatchResult struct {
	Devices []BatchDevice `json:"devices"`
}

// Clear overwrites the credentials, which hold the devices' secrets.
func (r *BatchResult) Clear() {
	for i := range r.Devices {
		clear(r.Devices[i].Credential)
	}
}

// ProvisionBatch is POST /v1/devices/batch with a CSV file (the format
// above, at most MaxBatchBytes). The caller clears the result once the
// credentials are written (BatchResult.Clear).
func (c *Client) ProvisionBatch(ctx context.Context, csvFile []byte) (BatchResult, error) {
	var out BatchResult
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+PathDevicesBatch, bytes.NewReader(csvFile))
	if err != nil {
		return out, err
	}
	hr.Header.Set("Authorization", "Bearer "+c.Token)
	hr.Header.Set("Content-Type", "text/csv; charset=utf-8")
	// A big batch outlasts a plain call's timeout: ctx bounds it.
	hc := *c.HTTP
	hc.Timeout = 0
	resp, err := hc.Do(hr)
	if err != nil {
		return out, fmt.Errorf("cannot reach gateway admin API at %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBatchAnswer))
	if err != nil {
		return out, err
	}
	defer clear(data)
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return out, &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return BatchResult{}, fmt.Errorf("gateway answer is not the expected JSON: %w", err)
	}
	return out, nil
}
