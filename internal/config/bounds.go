package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/tagauth/tagauth/internal/auditlog"
	"github.com/tagauth/tagauth/internal/lockout"
)

// bound is the range of a numeric or duration setting, both ends
// included. The ranges are wide enough for any deployment we know of and
// narrow enough that a slip of the finger (10 for 10s, an extra three
// zeros) is caught instead of served.
type bound struct {
	dur      bool // a duration; min and max are nanoseconds
	min, max float64
	integer  bool
	zero     bool // 0 is allowed too, meaning "off" or "forever"
}

// bounds are keyed by flag name, so that the file and the command line
// share them.
var bounds = map[string]bound{
	// dT below 1 s makes every login stale on a real network; above an
	// hour the replay cache and T1's freshness mean little.
	"window":            {dur: true, min: float64(time.Second), max: float64(time.Hour)},
	"replay-size":       {integer: true, min: 1, max: 1 << 26},
	"lockout-failures":  {integer: true, min: 1, max: lockout.MaxTracked},
	"lockout-window":    {dur: true, min: float64(time.Second), max: float64(24 * time.Hour)},
	"lockout-for":       {dur: true, min: float64(time.Second), max: float64(30 * 24 * time.Hour)},
	"rate-source":       {min: 0, max: 1e6},
	"rate-source-burst": {integer: true, min: 0, max: 1e7},
	"rate-device":       {min: 0, max: 1e6},
	"rate-device-burst": {integer: true, min: 0, max: 1e7},
	// The KDF floor may be set anywhere in the spec's range of Argon2id
	// parameters (PROTOCOL.md: 1 <= t <= 64, 8p <= m_kib <= 1048576).
	"kdf-min-t": {integer: true, min: 1, max: 64},
	"kdf-min-m": {integer: true, min: 8, max: 1 << 20},
	// Smart lockout (internal/lockout).
	"lockout-unfamiliar-failures": {integer: true, min: 1, max: lockout.MaxTracked},
	"lockout-max-familiar":        {integer: true, min: 1, max: lockout.MaxFamiliarLimit},
	"lockout-familiar-for":        {dur: true, min: float64(time.Minute), max: float64(365 * 24 * time.Hour)},
	// Audit: a retention under an hour would prune records before an
	// operator could read them; 0 keeps them forever.
	"audit-keep":   {dur: true, zero: true, min: float64(time.Hour), max: float64(100 * 365 * 24 * time.Hour)},
	"audit-sample": {dur: true, min: float64(100 * time.Millisecond), max: float64(time.Hour)},
}

// policies are settings checked by their own parser rather than a range.
var policies = map[string]func(string) error{
	"audit-fsync": func(s string) error { _, err := auditlog.ParseSync(s); return err },
}

// ErrOutOfRange is the error of a setting outside its bounds.
var ErrOutOfRange = errors.New("out of range")

// Check tells whether value, in the syntax of the serve flag named flag,
// is within that setting's bounds. Settings without bounds (addresses,
// paths, switches) always pass. The error does not name the setting: the
// caller knows whether it is a key in the file or a flag.
func Check(flag, value string) error {
	if p, ok := policies[flag]; ok {
		return p(value)
	}
	b, ok := bounds[flag]
	if !ok {
		return nil
	}
	var v float64
	show := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	if b.dur {
		d, err := ParseDuration(value)
		if err != nil {
			return err
		}
		v = float64(d)
		show = func(x float64) string { return time.Duration(x).String() }
	} else {
		var err error
		v, err = strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || b.integer && v != math.Trunc(v) {
			return fmt.Errorf("%q is not a number", value)
		}
	}
	if b.zero && v == 0 {
		return nil
	}
	if v < b.min || v > b.max {
		if b.zero {
			return fmt.Errorf("%w: %s is neither 0 nor from %s to %s", ErrOutOfRange, show(v), show(b.min), show(b.max))
		}
		return fmt.Errorf("%w: %s is not from %s to %s", ErrOutOfRange, show(v), show(b.min), show(b.max))
	}
	return nil
}

// Bounded lists the flags that have bounds (or a policy syntax), for the
// command line to check each.
func Bounded() []string {
	out := slices.AppendSeq(slices.Collect(maps.Keys(bounds)), maps.Keys(policies))
	slices.Sort(out)
	return out
}
