package replay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"

	"github.com/tagauth/tagauth/protocol"
)

// A cache lives in memory, so a process that restarts forgets which logins
// it saw. Any login whose T1 is within dT of the restart could then be
// replayed once. Two remedies: a clean shutdown writes the live entries
// (Save) and the next start reads them back (Restore); after a crash,
// the new cache refuses logins it cannot vouch for (Fence).

// ErrFenced is returned by Insert for a key whose login may have been seen
// by a previous process before a crash.
var ErrFenced = fmt.Errorf("replay cache restarted without its predecessor's entries (refusing logins from before the restart): %w", protocol.ErrBusy)

// Snapshot format, version 2:
//
//	magic || secret (16 bytes) || records || count (8) || check (8)
//
// A record is expires (8) || digest (lo 8, hi 8); integers are big-endian.
// The digests are only good with the secret that made them, so the
// snapshot carries it and Restore adopts it. count is the number of
// records and check the CRC-64 (ECMA) of every byte before check: a snapshot cut
// short, even at a record boundary, or garbled is refused as a whole.
// Version 1 held the keys themselves; Restore refuses it too.
const (
	snapshotMagic   = "tagauth-replay-2\n"
	snapshotMagicV1 = "tagauth-replay-1\n"
	recordSize      = 24
	trailerSize     = 16
	headerSize      = len(snapshotMagic) + secretSize
)

// Fence makes Insert refuse, with ErrFenced, every key that expires at or
// before until (ms since the Unix epoch). After a crash at time s with
// window dT, a predecessor may have accepted any login with T1 <= s + dT,
// whose entry expires at T1 + dT <= s + 2 dT: fence until s + 2 dT. Fresh
// logins are then refused for about dT after the start.
func (c *Cache) Fence(until uint64) {
	c.fence.Store(until)
}

// Save writes the entries still live at now, so that Restore in the next
// process can restore them. Call it after the last Insert. The snapshot
// holds the cache's digest secret: keep it as private as the cache.
func (c *Cache) Save(w io.Writer, now uint64) error {
	bw := bufio.NewWriter(w)
	h := crc64.New(crcTable)
	put := func(b []byte) {
		bw.Write(b)
		h.Write(b)
	}
	put([]byte(snapshotMagic))
	put(c.secret[:])
	var rec [recordSize]byte
	var count uint64
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for _, e := range s.slots {
			if e.expires == 0 || e.expires < now {
				continue
			}
			binary.BigEndian.PutUint64(rec[0:], e.expires)
			binary.BigEndian.PutUint64(rec[8:], e.lo)
			binary.BigEndian.PutUint64(rec[16:], e.hi)
			put(rec[:])
			count++
		}
		s.mu.Unlock()
	}
	var trailer [trailerSize]byte
	binary.BigEndian.PutUint64(trailer[0:], count)
	put(trailer[:8])
	binary.BigEndian.PutUint64(trailer[8:], h.Sum64())
	bw.Write(trailer[8:])
	return bw.Flush()
}

var crcTable = crc64.MakeTable(crc64.ECMA)

func checksum(b []byte) uint64 {
	return crc64.Checksum(b, crcTable)
}

// Restore restores entries written by Save, dropping those expired at
// now. It must run on a cache that no Insert or Restore has used yet, and
// before the cache is shared: it adopts the snapshot's digest secret,
// which would orphan entries made with the cache's own. A snapshot that
// is truncated, garbled or of another format version is an error, and
// nothing is restored. A snapshot with more live entries than the cache
// holds is an error too, once those that fit are restored. After an
// error the caller should Fence.
func (c *Cache) Restore(r io.Reader, now uint64) error {
	if c.used.Swap(true) {
		return errors.New("replay snapshot: Restore needs a cache no Insert or Restore has used")
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("replay snapshot: %w", err)
	}
	if bytes.HasPrefix(data, []byte(snapshotMagicV1)) {
		return errors.New("replay snapshot: format version 1 (from an older tagauth) is not readable")
	}
	if len(data) < headerSize+trailerSize || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return errors.New("replay snapshot: not a snapshot or truncated")
	}
	body := data[headerSize : len(data)-trailerSize]
	trailer := data[len(data)-trailerSize:]
	count := binary.BigEndian.Uint64(trailer[0:])
	if len(body)%recordSize != 0 || uint64(len(body)/recordSize) != count ||
		binary.BigEndian.Uint64(trailer[8:]) != checksum(data[:len(data)-8]) {
		return errors.New("replay snapshot: truncated or garbled")
	}
	for rec := body; len(rec) > 0; rec = rec[recordSize:] {
		if binary.BigEndian.Uint64(rec) == 0 {
			return errors.New("replay snapshot: garbled record")
		}
	}
	c.setSecret((*[secretSize]byte)(data[len(snapshotMagic):headerSize]))
	full := 0
	for rec := body; len(rec) > 0; rec = rec[recordSize:] {
		exp := binary.BigEndian.Uint64(rec[0:])
		if exp < now {
			continue
		}
		lo := binary.BigEndian.Uint64(rec[8:])
		hi := binary.BigEndian.Uint64(rec[16:])
		s := &c.shards[hi>>shardShift]
		s.mu.Lock()
		if !s.restore(lo, hi, exp) {
			full++
		}
		s.mu.Unlock()
	}
	if full > 0 {
		return fmt.Errorf("replay snapshot: %d live entries more than the cache holds: %w", full, protocol.ReasonCacheFull)
	}
	return nil
}
