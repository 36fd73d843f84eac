package bolt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tagauth/tagauth/internal/store"
)

// # Audit values
//
// The gateway appends an audit record for every verify, in batches of up
// to 512. Stored as one JSON value per key, that cost about 2 us of CPU
// per record: JSON encoding, a B-tree search and several allocations in
// bbolt per Put, and values that the commit paid for again in page writes
// and fsync. So a batch is now stored in runs: one key per run of
// consecutive records, in a binary form in which a record that repeats
// the strings of the one before it (the same user, device and source
// verifying again) takes about a dozen bytes.
//
// A key is the 8-byte big-endian sequence number of the first record of
// its value. The value, by its first byte, is
//
//	'{'   one record in JSON (auditRec), as tagauth wrote them before
//	      runs; read, never written
//	0x01  a run: uvarint count >= 1, then count binary records, whose
//	      sequence numbers are the key's and those that follow it;
//	      written by schema version 2, read, no longer written
//	0x02  a run as 0x01 whose records also carry an event count (the
//	      record's Count, for aggregated refusals): schema version 3
//
// A binary record is
//
//	time        varint (zig-zag, encoding/binary): microseconds since
//	            the previous record of the run, or for the first since
//	            the Unix epoch; always within the years 0 to 9999, UTC
//	kv_user     1 byte
//	kv_device   1 byte
//	latency_us  varint
//	count       uvarint, the record's Count (0x02 runs only; absent in
//	            0x01 runs, where it is 0)
//	lengths     7 uvarints for kind, outcome, reason, user, device,
//	            source, detail: 0 when the string is that of the previous
//	            record of the run (for the first, when it is empty), else
//	            its byte length + 1
//	strings     the strings that have a length, back to back
//
// Lengths come before the strings so that the reader makes one string of
// all that are new in a record: one allocation at most per record.
//
// QueryAudit is the only reader of the bucket; whatever reads it next
// must read runs (runReader).
const (
	auditJSON     = '{'
	auditRun      = 0x01
	auditRunCount = 0x02
)

// maxRunBytes closes a run once its records reach this size (so a run is
// at most this and one record), so that a reader that starts inside a run
// (QueryAudit's After) reads little before the record it wants, and a run
// stays within a few pages.
const maxRunBytes = 8192

// runGap is room left before the records of a run for its header (format
// byte, count), which is written once the count is known.
const runGap = 1 + binary.MaxVarintLen64

// auditStrings is the number of string fields of a record.
const auditStrings = 7

func strs(r *store.AuditRecord) [auditStrings]string {
	return [auditStrings]string{r.Kind, r.Outcome, r.Reason, r.User, r.Device, r.Source, r.Detail}
}

// Audit times must be in the years 0 to 9999, UTC: all that the JSON form
// could hold (RFC 3339), which AppendAudit keeps refusing the others for.
// The reader checks them too, so damage to a time delta shows.
var (
	minAuditTime  = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	endAuditTime  = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	minAuditSec   = minAuditTime.Unix()
	endAuditSec   = endAuditTime.Unix()
	minAuditMicro = minAuditTime.UnixMicro()
	endAuditMicro = endAuditTime.UnixMicro()
)

// encodedRun is one value of an encoded batch: buf[start:end] holds count
// records.
type encodedRun struct {
	count, start, end int
}

// An auditEncoder encodes the batches of AppendAudit. Encoders are reused
// (auditEncoders) once the transaction that used their bytes is over:
// bbolt keeps the value slices of a transaction until its commit.
type auditEncoder struct {
	buf  []byte
	runs []encodedRun
}

var auditEncoders = sync.Pool{New: func() any { return new(auditEncoder) }}

// maxKeptEncoder is the largest buffer kept for reuse, so that one huge
// batch does not pin its memory.
const maxKeptEncoder = 1 << 20

func putAuditEncoder(e *auditEncoder) {
	if cap(e.buf) <= maxKeptEncoder {
		auditEncoders.Put(e)
	}
}

// encode encodes recs as runs into e. Nothing refers to e.buf while it
// grows: the runs are sliced from it once it is complete.
func (e *auditEncoder) encode(recs []store.AuditRecord) error {
	e.buf, e.runs = e.buf[:0], e.runs[:0]
	if len(recs) == 0 {
		return nil // no run: a run holds at least one record
	}
	var (
		zero      store.AuditRecord
		prev      = &zero
		prevMicro int64
		run       = -1 // start of the current run's gap
		count     int
	)
	for i := range recs {
		r := &recs[i]
		if sec := r.Time.Unix(); sec < minAuditSec || sec >= endAuditSec {
			return fmt.Errorf("audit record time %v: year outside of range [0,9999]", r.Time)
		}
		if count > 0 && len(e.buf)-run-runGap >= maxRunBytes {
			e.closeRun(run, count)
			count = 0
		}
		if count == 0 {
			run = len(e.buf)
			e.buf = append(e.buf, make([]byte, runGap)...)
			prev, prevMicro = &zero, 0
		}
		// UnixMicro rounds down, as norm does.
		micro := r.Time.UnixMicro()
		e.buf = binary.AppendVarint(e.buf, micro-prevMicro)
		e.buf = append(e.buf, r.KVUser, r.KVDevice)
		e.buf = binary.AppendVarint(e.buf, r.LatencyUS)
		if r.Count > 1 {
			e.buf = binary.AppendUvarint(e.buf, uint64(r.Count))
		} else {
			e.buf = append(e.buf, 0)
		}
		cur, old := strs(r), strs(prev)
		const same, valid, invalid = 0, 1, 2
		var how [auditStrings]uint8
		for j, s := range cur {
			switch {
			case s == old[j]:
				// An invalid string repeated reads back replaced as the
				// first was.
				e.buf = append(e.buf, 0)
			case utf8.ValidString(s):
				how[j] = valid
				e.buf = binary.AppendUvarint(e.buf, uint64(len(s))+1)
			default:
				how[j] = invalid
				e.buf = binary.AppendUvarint(e.buf, uint64(utf8Len(s))+1)
			}
		}
		for j, s := range cur {
			switch how[j] {
			case valid:
				e.buf = append(e.buf, s...)
			case invalid:
				e.buf = appendUTF8(e.buf, s)
			}
		}
		prev, prevMicro = r, micro
		count++
	}
	e.closeRun(run, count)
	return nil
}

// closeRun writes the header of the run whose gap starts at run, right
// before its records.
func (e *auditEncoder) closeRun(run, count int) {
	var hdr [runGap]byte
	h := binary.AppendUvarint(append(hdr[:0], auditRunCount), uint64(count))
	start := run + runGap - len(h)
	copy(e.buf[start:], h)
	e.runs = append(e.runs, encodedRun{count: count, start: start, end: len(e.buf)})
}

// A runReader reads the records of one stored value, in either form.
// Its errors describe the damage; the caller reports them as corruption.
// Every length is checked against what is left before it is used, so
// damaged bytes give an error, never a panic or a huge allocation.
type runReader struct {
	json  []byte // a JSON record not yet read, or nil
	b     []byte // the binary records not yet read
	count uint64 // records left
	// counted: the records carry a count (format 0x02).
	counted bool

	// The previous binary record, which the next refers to.
	micro int64
	prev  [auditStrings]string
}

// readRun starts reading value v.
func readRun(v []byte) (runReader, error) {
	if len(v) == 0 {
		return runReader{}, errors.New("empty value")
	}
	switch v[0] {
	case auditJSON:
		return runReader{json: v, count: 1}, nil
	case auditRun, auditRunCount:
		n, l := binary.Uvarint(v[1:])
		switch {
		case l <= 0:
			return runReader{}, errors.New("bad record count")
		case n == 0:
			return runReader{}, errors.New("run of no records")
		case n > uint64(len(v)):
			// Every record takes more than a byte.
			return runReader{}, fmt.Errorf("run of %d records in %d bytes", n, len(v))
		}
		return runReader{b: v[1+l:], count: n, counted: v[0] == auditRunCount}, nil
	}
	return runReader{}, fmt.Errorf("unknown format 0x%02x", v[0])
}

// lastSeq is the sequence number of the last record of the run, whose
// first is first.
func (rr *runReader) lastSeq(first uint64) (uint64, error) {
	if rr.count-1 > math.MaxUint64-first {
		return 0, fmt.Errorf("run of %d records from sequence number %d", rr.count, first)
	}
	return first + rr.count - 1, nil
}

// next returns the next record. The caller calls it count times.
func (rr *runReader) next() (store.AuditRecord, error) {
	rr.count--
	if rr.json != nil {
		var r auditRec
		err := json.Unmarshal(rr.json, &r)
		rr.json = nil
		if err != nil {
			return store.AuditRecord{}, err
		}
		return store.AuditRecord{
			Time: r.Time, Kind: r.Kind, Outcome: r.Outcome, Reason: r.Reason,
			User: r.User, Device: r.Device, Source: r.Source, KVUser: r.KVUser, KVDevice: r.KVDevice,
			LatencyUS: r.LatencyUS, Detail: r.Detail,
		}, nil
	}
	r, err := rr.decode()
	if err != nil {
		return store.AuditRecord{}, err
	}
	if rr.count == 0 && len(rr.b) > 0 {
		return store.AuditRecord{}, fmt.Errorf("%d bytes after the last record", len(rr.b))
	}
	return r, nil
}

func (rr *runReader) decode() (store.AuditRecord, error) {
	var r store.AuditRecord
	b := rr.b
	delta, n := binary.Varint(b)
	if n <= 0 {
		return r, errors.New("record truncated or bad time")
	}
	b = b[n:]
	// Wrapping is harmless: the result is checked.
	micro := rr.micro + delta
	if micro < minAuditMicro || micro >= endAuditMicro {
		return r, fmt.Errorf("record time %d us out of range", micro)
	}
	if len(b) < 2 {
		return r, errors.New("record truncated")
	}
	r.KVUser, r.KVDevice = b[0], b[1]
	b = b[2:]
	if r.LatencyUS, n = binary.Varint(b); n <= 0 {
		return r, errors.New("record truncated or bad latency")
	}
	b = b[n:]
	if rr.counted {
		c, n := binary.Uvarint(b)
		switch {
		case n <= 0:
			return r, errors.New("record truncated or bad count")
		case c > math.MaxUint32:
			return r, fmt.Errorf("record count %d out of range", c)
		case c > 1:
			r.Count = uint32(c)
		}
		b = b[n:]
	}
	var lens [auditStrings]int
	total := uint64(0)
	for j := range lens {
		l, n := binary.Uvarint(b)
		if n <= 0 {
			return r, errors.New("record truncated or bad string length")
		}
		b = b[n:]
		if l == 0 {
			lens[j] = -1
			continue
		}
		// Each length is bounded before it becomes an int, so that the
		// sum of the seven cannot overflow either.
		if l-1 > uint64(len(b)) {
			return r, errors.New("record truncated: string past the end")
		}
		lens[j] = int(l - 1)
		total += l - 1
	}
	if total > uint64(len(b)) {
		return r, errors.New("record truncated: strings past the end")
	}
	all := string(b[:total])
	f := rr.prev
	for j, l := range lens {
		if l >= 0 {
			f[j], all = all[:l], all[l:]
		}
	}
	rr.b, rr.micro, rr.prev = b[total:], micro, f
	r.Time = time.UnixMicro(micro).UTC()
	r.Kind, r.Outcome, r.Reason, r.User, r.Device, r.Source, r.Detail = f[0], f[1], f[2], f[3], f[4], f[5], f[6]
	return r, nil
}

// Invalid UTF-8 is stored as JSON stored it, each bad byte replaced by
// U+FFFD, so that a record reads back the same whichever form holds it.
// Valid strings (all of them, in practice) are kept as they are.

const replacement = "\uFFFD"

// utf8Len is the length of s once its bad bytes are replaced.
func utf8Len(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += len(replacement)
		} else {
			n += size
		}
		i += size
	}
	return n
}

// appendUTF8 appends s with its bad bytes replaced: utf8Len(s) bytes.
func appendUTF8(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, replacement...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}
