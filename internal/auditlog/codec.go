package auditlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"net/netip"
	"time"

	"github.com/tagauth/tagauth/internal/store"
)

// # Frames
//
// A segment file is the 8-byte magic segMagic followed by frames:
//
//	length   4 bytes, little endian: the payload's length, 9 to maxPayload
//	crc      4 bytes, little endian: CRC-32C (Castagnoli) of the payload
//	payload  seq (8 bytes, big endian, the record's journal sequence
//	         number), then the record:
//	           time        varint: microseconds since the Unix epoch
//	           count       uvarint: the record's Count
//	           kv_user     1 byte
//	           kv_device   1 byte
//	           latency_us  varint
//	           strings     7 times uvarint length and bytes: kind,
//	                       outcome, reason, user, device, source, detail
//
// A crash can leave the last frame of the last segment torn (a short
// write, or pages of it never written): its length runs past the end of
// the file or its CRC does not match. The reader stops at the first such
// frame of a segment and drops the rest of that segment, which only ever
// holds records whose answers never left (see Journal.Append).

const (
	segMagic   = "TAJRNL01"
	frameHead  = 8 // length and CRC
	seqLen     = 8
	minPayload = seqLen + 1
	// maxPayload bounds one record: far more than a record holds (ids
	// are at most 255 bytes, details a line), so that a damaged length
	// cannot make the reader allocate much.
	maxPayload = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of the decoder; Scan wraps them with the offset.
var (
	// ErrTorn: a frame runs past the end of the data or fails its CRC.
	ErrTorn = errors.New("auditlog: torn or damaged frame")
	// ErrBadRecord: a frame's CRC matches but its record does not decode
	// (a bug or deliberate tampering, not a crash).
	ErrBadRecord = errors.New("auditlog: malformed record")
)

// A Batch collects encoded records for one Journal.Append: one write for
// all of them. The zero Batch is empty and ready; Reset empties it for
// reuse without giving back its memory.
type Batch struct {
	buf []byte
	n   int
}

// Len is the number of records in the batch.
func (b *Batch) Len() int { return b.n }

// Reset empties the batch.
func (b *Batch) Reset() {
	if cap(b.buf) > 1<<20 {
		b.buf = nil // one huge batch should not pin its memory
	}
	b.buf, b.n = b.buf[:0], 0
}

// Add appends r. Its sequence number is given by Append.
func (b *Batch) Add(r *store.AuditRecord) {
	start := b.begin(r)
	for _, s := range [...]string{r.Kind, r.Outcome, r.Reason, r.User, r.Device, r.Source, r.Detail} {
		b.buf = appendString(b.buf, s)
	}
	b.end(start)
}

// AddRaw appends r with user and device given as bytes, and its source as
// an address (r's User, Device and Source are ignored), so that the
// verify path encodes a record without making strings. user and device
// must already be what the record should hold (sanitized).
func (b *Batch) AddRaw(r *store.AuditRecord, user, device []byte, source netip.AddrPort) {
	start := b.begin(r)
	b.buf = appendString(b.buf, r.Kind)
	b.buf = appendString(b.buf, r.Outcome)
	b.buf = appendString(b.buf, r.Reason)
	b.buf = appendBytes(b.buf, cut(user))
	b.buf = appendBytes(b.buf, cut(device))
	if source.IsValid() {
		var tmp [64]byte
		b.buf = appendBytes(b.buf, source.AppendTo(tmp[:0]))
	} else {
		b.buf = append(b.buf, 0)
	}
	b.buf = appendString(b.buf, r.Detail)
	b.end(start)
}

func cut(p []byte) []byte {
	if len(p) > maxString {
		return p[:maxString]
	}
	return p
}

// maxString bounds one string of a record, so that a frame stays within
// maxPayload whatever a caller passes (7 strings).
const maxString = 8 << 10

func (b *Batch) begin(r *store.AuditRecord) int {
	start := len(b.buf)
	b.buf = append(b.buf, make([]byte, frameHead+seqLen)...)
	b.buf = binary.AppendVarint(b.buf, r.Time.UnixMicro())
	b.buf = binary.AppendUvarint(b.buf, uint64(r.Count))
	b.buf = append(b.buf, r.KVUser, r.KVDevice)
	b.buf = binary.AppendVarint(b.buf, r.LatencyUS)
	return start
}

func (b *Batch) end(start int) {
	binary.LittleEndian.PutUint32(b.buf[start:], uint32(len(b.buf)-start-frameHead))
	b.n++
}

func appendString(dst []byte, s string) []byte {
	if len(s) > maxString {
		s = s[:maxString]
	}
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, p []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(p)))
	return append(dst, p...)
}

// seal numbers the batch's records from first on and computes their CRCs.
// It returns the last sequence number.
func (b *Batch) seal(first uint64) uint64 {
	seq := first
	for off := 0; off < len(b.buf); {
		n := int(binary.LittleEndian.Uint32(b.buf[off:]))
		p := b.buf[off+frameHead : off+frameHead+n]
		binary.BigEndian.PutUint64(p, seq)
		binary.LittleEndian.PutUint32(b.buf[off+4:], crc32.Checksum(p, castagnoli))
		off += frameHead + n
		seq++
	}
	return seq - 1
}

// Entry is one record read back from the journal.
type Entry struct {
	Seq uint64
	Rec store.AuditRecord
}

// Scan decodes the frames in b (no segment magic) and calls fn for each.
// It returns how many bytes it consumed: all of b, or up to the first
// frame that is torn (err wraps ErrTorn) or malformed (ErrBadRecord).
func Scan(b []byte, fn func(Entry)) (int, error) { return ScanInterned(b, nil, fn) }

// ScanInterned is Scan with the strings of kind, outcome, reason, user
// and device made by intern (which may return a string it made before for
// the same bytes), so that a reader seeing the same few again and again
// does not allocate them each time. A nil intern makes new strings.
func ScanInterned(b []byte, intern func([]byte) string, fn func(Entry)) (int, error) {
	off := 0
	for off < len(b) {
		if len(b)-off < frameHead {
			return off, fmt.Errorf("%w at byte %d: %d bytes left, a frame header takes %d", ErrTorn, off, len(b)-off, frameHead)
		}
		n := binary.LittleEndian.Uint32(b[off:])
		if n < minPayload || n > maxPayload {
			return off, fmt.Errorf("%w at byte %d: payload length %d", ErrTorn, off, n)
		}
		if uint64(len(b)-off-frameHead) < uint64(n) {
			return off, fmt.Errorf("%w at byte %d: payload of %d bytes past the end", ErrTorn, off, n)
		}
		p := b[off+frameHead : off+frameHead+int(n)]
		if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(b[off+4:]) {
			return off, fmt.Errorf("%w at byte %d: CRC mismatch", ErrTorn, off)
		}
		e, err := decodePayload(p, intern)
		if err != nil {
			return off, fmt.Errorf("%w at byte %d: %v", ErrBadRecord, off, err)
		}
		fn(e)
		off += frameHead + int(n)
	}
	return off, nil
}

// Audit times are kept within the years 0 to 9999, as the stores keep
// them.
var (
	minMicro = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	endMicro = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
)

func decodePayload(p []byte, intern func([]byte) string) (Entry, error) {
	var e Entry
	e.Seq = binary.BigEndian.Uint64(p)
	b := p[seqLen:]
	micro, n := binary.Varint(b)
	if n <= 0 {
		return e, errors.New("bad time")
	}
	if micro < minMicro || micro >= endMicro {
		return e, fmt.Errorf("time %d us out of range", micro)
	}
	b = b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > math.MaxUint32 {
		return e, errors.New("bad count")
	}
	b = b[n:]
	if len(b) < 2 {
		return e, errors.New("truncated")
	}
	r := &e.Rec
	r.Time = time.UnixMicro(micro).UTC()
	r.Count = uint32(count)
	r.KVUser, r.KVDevice = b[0], b[1]
	b = b[2:]
	if r.LatencyUS, n = binary.Varint(b); n <= 0 {
		return e, errors.New("bad latency")
	}
	b = b[n:]
	strs := [7]*string{&r.Kind, &r.Outcome, &r.Reason, &r.User, &r.Device, &r.Source, &r.Detail}
	for i, s := range strs {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return e, errors.New("string past the end")
		}
		if l > maxString {
			return e, fmt.Errorf("string of %d bytes (at most %d)", l, maxString)
		}
		if intern != nil && i < 5 {
			*s = intern(b[n : n+int(l)])
		} else {
			*s = string(b[n : n+int(l)])
		}
		b = b[n+int(l):]
	}
	if len(b) != 0 {
		return e, fmt.Errorf("%d bytes after the record", len(b))
	}
	return e, nil
}
