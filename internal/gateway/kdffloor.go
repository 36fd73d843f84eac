package gateway

import (
	"fmt"

	"github.com/tagauth/tagauth/protocol"
)

// The enrolment floor on Argon2id parameters. A card's W_i is what an
// offline guesser of its password computes per guess, so the gateway
// refuses cards made cheaper than the floor (by default the spec's
// defaults): t=1, m=8 KiB would make guessing ~700 times faster. The
// thread count is not floored: the work is t times m whatever the lanes.

// belowFloor reports whether kdf is cheaper than floor in time or memory.
func belowFloor(kdf, floor protocol.KDFParams) bool {
	return kdf.Time < floor.Time || kdf.MemoryKiB < floor.MemoryKiB
}

// kdfFloorMessage is the refusal's text, which the enrolling CLI shows.
func kdfFloorMessage(kdf, floor protocol.KDFParams) string {
	return fmt.Sprintf("kdf: Argon2id t=%d m=%d KiB is below this gateway's floor (t>=%d, m>=%d KiB): enrol with at least --kdf-t %d --kdf-m %d",
		kdf.Time, kdf.MemoryKiB, floor.Time, floor.MemoryKiB, floor.Time, floor.MemoryKiB)
}
