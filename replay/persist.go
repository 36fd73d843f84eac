package replay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
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

// snapshotMagic starts a snapshot: format version 1, then records of
// expires (8 bytes, big-endian) || key.
const snapshotMagic = "tagauth-replay-1\n"

// Fence makes Insert refuse, with ErrFenced, every key that expires at or
// before until (ms since the Unix epoch). After a crash at time s with
// window dT, a predecessor may have accepted any login with T1 <= s + dT,
// whose entry expires at T1 + dT <= s + 2 dT: fence until s + 2 dT. Fresh
// logins are then refused for about dT after the start.
func (c *Cache) Fence(until uint64) {
	c.fence.Store(until)
}

// Save writes the entries still live at now, so that Restore in the next
// process can restore them. Call it after the last Insert.
func (c *Cache) Save(w io.Writer, now uint64) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(snapshotMagic)
	var rec [8 + protocol.ReplayKeySize]byte
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, exp := range s.m {
			if exp < now {
				continue
			}
			binary.BigEndian.PutUint64(rec[:8], exp)
			copy(rec[8:], k[:])
			bw.Write(rec[:])
		}
		s.mu.Unlock()
	}
	return bw.Flush()
}

// Restore restores entries written by Save, dropping those expired at
// now. A snapshot that is truncated or not one is an error, and the
// caller should then Fence instead.
func (c *Cache) Restore(r io.Reader, now uint64) error {
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return errors.New("replay snapshot: not a snapshot or truncated")
	}
	var rec [8 + protocol.ReplayKeySize]byte
	for {
		_, err := io.ReadFull(br, rec[:])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errors.New("replay snapshot: truncated record")
		}
		exp := binary.BigEndian.Uint64(rec[:8])
		if exp < now {
			continue
		}
		var k protocol.ReplayKey
		copy(k[:], rec[8:])
		s := c.shard(&k)
		s.mu.Lock()
		if len(s.m) < s.max {
			s.add(k, exp)
		}
		s.mu.Unlock()
	}
}
