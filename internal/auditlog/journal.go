// Package auditlog is the gateway's audit journal: an append-only,
// write-ahead file of audit records in the data directory, so that no
// login or admin action is acknowledged before its record has reached the
// kernel (and, with a sync policy, the disk).
//
// The gateway appends the records of one CoAP receive batch (or one admin
// action) with one write(2) before the answers leave; its store writer
// then copies them into the store in batches, and tells the journal how
// far it got (Ingested), which deletes the segments wholly copied. At the
// next start, the records the store does not have yet (their sequence
// numbers are above the store's journal mark, store.AuditJournaled) are
// copied again: each exactly once, since the mark is written in the
// transaction that stores them.
//
// # Files
//
// DIR/id holds the journal's id (32 hex digits, made once), which names
// its mark in the store. DIR/<16 hex digits>.seg are segments, named by
// the sequence number of their first record; a segment is at most
// SegmentSize bytes plus one batch. See codec.go for the frames.
package auditlog

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SegmentSize is the size past which the journal starts a new segment.
const SegmentSize = 4 << 20

// Errors of Append and Open, tested with errors.Is.
var (
	// ErrFull: the disk holding the journal is full (or over quota).
	// Nothing was appended.
	ErrFull = errors.New("auditlog: no space left on the device holding the audit journal")
	// ErrClosed: the journal is closed.
	ErrClosed = errors.New("auditlog: journal closed")
	// ErrNotResumed: Append before Resume.
	ErrNotResumed = errors.New("auditlog: journal not resumed")
)

// SyncMode says when appended records are flushed to the disk.
type SyncMode uint8

// Sync modes.
const (
	// SyncOff leaves flushing to the kernel: records survive a crash of
	// the process, not of the machine.
	SyncOff SyncMode = iota
	// SyncAlways flushes (fdatasync) before Append returns; concurrent
	// appends share a flush (group commit).
	SyncAlways
	// SyncInterval is SyncAlways with each flush delayed by the interval
	// so that more appends share it: Append may wait up to about twice
	// the interval.
	SyncInterval
)

// Sync is a sync policy.
type Sync struct {
	Mode     SyncMode
	Interval time.Duration // for SyncInterval
}

// ParseSync reads a policy as the configuration spells it: "off",
// "always", or a duration with a unit between 100us and 1s (group commit
// every so often).
func ParseSync(s string) (Sync, error) {
	switch s {
	case "off", "":
		return Sync{Mode: SyncOff}, nil
	case "always":
		return Sync{Mode: SyncAlways}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return Sync{}, fmt.Errorf("audit fsync policy %q: want off, always or a duration such as 10ms", s)
	}
	if d < 100*time.Microsecond || d > time.Second {
		return Sync{}, fmt.Errorf("audit fsync interval %v: want 100us to 1s", d)
	}
	return Sync{Mode: SyncInterval, Interval: d}, nil
}

// String is the policy as ParseSync reads it.
func (s Sync) String() string {
	switch s.Mode {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return s.Interval.String()
	}
	return "off"
}

type segment struct {
	first uint64 // sequence number of its first record
	path  string
}

// Journal is an open audit journal. It is safe for concurrent use.
type Journal struct {
	dir  string
	id   string
	sync Sync

	// mu serializes appends and guards the current segment.
	mu      sync.Mutex
	f       *os.File
	size    int64  // bytes of the current segment
	next    uint64 // sequence number of the next record
	written int64  // bytes appended over the journal's life (logical offset)
	closed  bool
	resumed bool

	// syncMu serializes flushes; synced is the logical offset known to be
	// on disk.
	syncMu sync.Mutex
	synced int64

	// segMu guards segs (closed segments, oldest first); Ingested takes
	// only this lock, never mu.
	segMu sync.Mutex
	segs  []segment

	// onAppend, when set, is called under mu after each append (see
	// SetOnAppend).
	onAppend func(frames []byte, first, last uint64)
}

// Open opens (creating) the journal in dir and reads what it holds: the
// records of every segment, in order, up to the first torn frame of each.
// damaged describes torn or damaged frames found (normal after a crash,
// for the last segment). Call Resume before appending.
func Open(dir string, sync Sync) (j *Journal, recovered []Entry, damaged []string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("auditlog: creating %s: %w", dir, mapErr(err))
	}
	id, err := readID(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	j = &Journal{dir: dir, id: id, sync: sync}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("auditlog: %w", err)
	}
	for _, de := range names {
		first, ok := segName(de.Name())
		if !ok {
			continue
		}
		j.segs = append(j.segs, segment{first: first, path: filepath.Join(dir, de.Name())})
	}
	slices.SortFunc(j.segs, func(a, b segment) int { return cmpU64(a.first, b.first) })
	for _, s := range j.segs {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("auditlog: reading %s: %w", s.path, err)
		}
		if len(b) < len(segMagic) || string(b[:len(segMagic)]) != segMagic {
			if len(b) < len(segMagic) && segMagic[:len(b)] == string(b) {
				continue // created, its magic torn: no record in it
			}
			return nil, nil, nil, fmt.Errorf("auditlog: %s is not an audit journal segment: move it out of %s", s.path, dir)
		}
		_, err = Scan(b[len(segMagic):], func(e Entry) {
			recovered = append(recovered, e)
			j.next = max(j.next, e.Seq+1)
		})
		if err != nil {
			damaged = append(damaged, fmt.Sprintf("%s: %v", filepath.Base(s.path), err))
		}
	}
	return j, recovered, damaged, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func segName(name string) (uint64, bool) {
	hexSeq, ok := strings.CutSuffix(name, ".seg")
	if !ok || len(hexSeq) != 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(hexSeq, 16, 64)
	return v, err == nil
}

func readID(dir string) (string, error) {
	path := filepath.Join(dir, "id")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if _, err := hex.DecodeString(id); err != nil || len(id) != 32 {
			return "", fmt.Errorf("auditlog: %s does not hold a journal id (32 hex digits): restore it or move the directory away", path)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("auditlog: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("auditlog: writing %s: %w", path, mapErr(err))
	}
	if err := syncFile(tmp); err != nil {
		return "", fmt.Errorf("auditlog: writing %s: %w", path, mapErr(err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("auditlog: writing %s: %w", path, err)
	}
	return id, syncDir(dir)
}

// ID is the journal's id, which names its mark in the store.
func (j *Journal) ID() string { return j.id }

// Dir is the journal's directory.
func (j *Journal) Dir() string { return j.dir }

// Resume starts a new segment for appends, numbering records after both
// what the journal holds and mark (the store's journal mark: a journal
// whose segments were removed must not reuse numbers the store has seen).
func (j *Journal) Resume(mark uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	j.next = max(j.next, mark+1, 1)
	if err := j.startSegment(); err != nil {
		return err
	}
	j.resumed = true
	return nil
}

// startSegment makes a new current segment, numbered j.next. Called with
// mu held.
func (j *Journal) startSegment() error {
	path := filepath.Join(j.dir, fmt.Sprintf("%016x.seg", j.next))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("auditlog: creating segment %s: %w", path, mapErr(err))
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("auditlog: writing segment %s: %w", path, mapErr(err))
	}
	if j.sync.Mode != SyncOff {
		// The new file's name must survive a power loss with its records.
		if err := syncDir(j.dir); err != nil {
			f.Close()
			os.Remove(path)
			return fmt.Errorf("auditlog: %w", mapErr(err))
		}
	}
	old := j.f
	j.f, j.size = f, int64(len(segMagic))
	j.written += int64(len(segMagic))
	j.segMu.Lock()
	// An empty segment left by the last run has this name: it is this
	// file now, listed once.
	j.segs = slices.DeleteFunc(j.segs, func(s segment) bool { return s.path == path })
	j.segs = append(j.segs, segment{first: j.next, path: path})
	j.segMu.Unlock()
	if old != nil {
		if j.sync.Mode != SyncOff {
			// Flush the old segment before it is left behind: Append's
			// later flushes only see the new one.
			_ = old.Sync()
		}
		old.Close()
	}
	return nil
}

// SetOnAppend sets a function called after every successful append, with
// the journal's lock held, so that it sees appends in sequence order: the
// gateway hands the frames to its store writer there. frames is valid
// only during the call. Set it before the first Append.
func (j *Journal) SetOnAppend(fn func(frames []byte, first, last uint64)) { j.onAppend = fn }

// Append writes the batch's records with one write, numbering them, and
// returns once they are in the kernel (and, per the sync policy, on the
// disk). A failed write leaves the journal as it was (the segment is
// truncated back), so a later Append can succeed once space returns.
func (j *Journal) Append(b *Batch) (first, last uint64, err error) {
	if b.n == 0 {
		return 0, 0, nil
	}
	j.mu.Lock()
	if j.closed || !j.resumed {
		j.mu.Unlock()
		if j.closed {
			return 0, 0, ErrClosed
		}
		return 0, 0, ErrNotResumed
	}
	if j.size >= SegmentSize {
		if err := j.startSegment(); err != nil {
			j.mu.Unlock()
			return 0, 0, err
		}
	}
	first = j.next
	last = b.seal(first)
	if err := j.write(b.buf); err != nil {
		j.mu.Unlock()
		return 0, 0, err
	}
	j.next = last + 1
	j.size += int64(len(b.buf))
	j.written += int64(len(b.buf))
	target := j.written
	if j.onAppend != nil {
		j.onAppend(b.buf, first, last)
	}
	j.mu.Unlock()
	if j.sync.Mode != SyncOff {
		if err := j.flush(target); err != nil {
			return first, last, err
		}
	}
	return first, last, nil
}

// write writes p at the end of the current segment, undoing a short write.
func (j *Journal) write(p []byte) error {
	n, err := j.f.Write(p)
	if err == nil {
		return nil
	}
	if n > 0 {
		// A torn frame in the middle would hide every later one from the
		// reader: cut it off.
		if terr := j.f.Truncate(j.size); terr != nil {
			// The segment cannot be repaired: later appends go to a new
			// one (which needs space too).
			j.size = SegmentSize
		}
	}
	return fmt.Errorf("auditlog: appending %d records: %w", len(p), mapErr(err))
}

// flush makes sure everything up to the logical offset target is on disk,
// sharing one fdatasync among concurrent callers.
func (j *Journal) flush(target int64) error {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.synced >= target {
		return nil // another caller's flush covered it
	}
	if j.sync.Mode == SyncInterval {
		time.Sleep(j.sync.Interval) // let more appends join this flush
	}
	j.mu.Lock()
	f, upTo := j.f, j.written
	j.mu.Unlock()
	if err := fdatasync(f); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("auditlog: flushing: %w", mapErr(err))
	}
	// A segment closed meanwhile was flushed by startSegment.
	j.synced = upTo
	return nil
}

// Ingested says that the store holds every record up to seq: segments
// whose records are all at or below it are deleted. It never waits for
// Append.
func (j *Journal) Ingested(seq uint64) error {
	j.segMu.Lock()
	defer j.segMu.Unlock()
	// The last segment is the current one (or, before Resume, the newest
	// recovered): a segment is done when the next one starts after seq+1.
	keep := 0
	var errs []error
	for i := 0; i+1 < len(j.segs) && j.segs[i+1].first <= seq+1; i++ {
		if err := os.Remove(j.segs[i].path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			break
		}
		keep = i + 1
	}
	j.segs = j.segs[keep:]
	return errors.Join(errs...)
}

// Segments is the number of segment files, for tests and metrics.
func (j *Journal) Segments() int {
	j.segMu.Lock()
	defer j.segMu.Unlock()
	return len(j.segs)
}

// Close flushes (per the policy) and closes the current segment.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	if j.f == nil {
		return nil
	}
	var err error
	if j.sync.Mode != SyncOff {
		err = j.f.Sync()
	}
	return errors.Join(err, j.f.Close())
}

func mapErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w (%v)", ErrFull, err)
	}
	return err
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// ReadAll reads every record of the segment file at path, up to the first
// torn frame: for tools and tests.
func ReadAll(r io.Reader) ([]Entry, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if len(b) < len(segMagic) || string(b[:len(segMagic)]) != segMagic {
		return nil, errors.New("auditlog: not a journal segment")
	}
	var out []Entry
	_, err = Scan(b[len(segMagic):], func(e Entry) { out = append(out, e) })
	return out, err
}
