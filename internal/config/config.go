// Package config reads the gateway's configuration file (TOML).
//
// The file is another way to give the flags of "tagauth gateway serve":
// every setting has the name of a flag, and a flag given on the command
// line overrides the file. So the file needs no semantics of its own, and
// docs/OPERATIONS.md documents each setting once, with its flag.
//
// Reading is strict: an unknown key, a value of the wrong type or a
// duration that does not parse is an error naming the file, line and key,
// so that a typo never leaves a setting silently at its default. Secrets
// do not belong in the file: the admin and metrics tokens are read from
// their own files (or the environment).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Gateway is the configuration file of "tagauth gateway serve". A nil
// field is absent from the file. The flag tag names the serve flag the
// setting stands for.
type Gateway struct {
	Data       *string   `toml:"data" flag:"data"`
	Profile    *string   `toml:"profile" flag:"profile"`
	CoAP       *string   `toml:"coap" flag:"coap"`
	Admin      *string   `toml:"admin" flag:"admin"`
	Advertise  *string   `toml:"advertise" flag:"advertise"`
	Cert       *string   `toml:"cert" flag:"cert"`
	Key        *string   `toml:"key" flag:"key"`
	Window     *Duration `toml:"window" flag:"window"`
	ReplaySize *int      `toml:"replay_size" flag:"replay-size"`
	AllowAll   *bool     `toml:"allow_all" flag:"allow-all"`
	LogLevel   *string   `toml:"log_level" flag:"log-level"`
	AuditLog   *string   `toml:"audit_log" flag:"audit-log"`
	// Store and Replay are the shared backends of replicas
	// (docs/OPERATIONS.md#replicas).
	Store  *string `toml:"store" flag:"store"`
	Replay *string `toml:"replay" flag:"replay"`
	// MetricsTokenFile names a file holding the read-only metrics token.
	MetricsTokenFile *string `toml:"metrics_token_file" flag:"metrics-token-file"`
	// KDFMinT and KDFMinMKiB are the enrolment floor on the Argon2id
	// parameters of hardened cards.
	KDFMinT    *int `toml:"kdf_min_t" flag:"kdf-min-t"`
	KDFMinMKiB *int `toml:"kdf_min_m_kib" flag:"kdf-min-m"`

	Lockout   Lockout   `toml:"lockout"`
	RateLimit RateLimit `toml:"rate_limit"`
	Audit     Audit     `toml:"audit"`
}

// Audit is the [audit] table: retention, journal fsync policy and the
// sampling of refusal records (docs/OPERATIONS.md#audit).
type Audit struct {
	Keep   *Duration `toml:"keep" flag:"audit-keep"`
	Fsync  *string   `toml:"fsync" flag:"audit-fsync"`
	Sample *Duration `toml:"sample" flag:"audit-sample"`
}

// Lockout is the [lockout] table.
type Lockout struct {
	Off         *bool     `toml:"off" flag:"lockout-off"`
	MaxFailures *int      `toml:"max_failures" flag:"lockout-failures"`
	Window      *Duration `toml:"window" flag:"lockout-window"`
	LockFor     *Duration `toml:"lock_for" flag:"lockout-for"`
	// Sources (smart lockout): see docs/OPERATIONS.md.
	UnfamiliarFailures *int      `toml:"unfamiliar_failures" flag:"lockout-unfamiliar-failures"`
	FamiliarFor        *Duration `toml:"familiar_for" flag:"lockout-familiar-for"`
	MaxFamiliar        *int      `toml:"max_familiar" flag:"lockout-max-familiar"`
}

// RateLimit is the [rate_limit] table.
type RateLimit struct {
	SourceRate  *float64 `toml:"source_rate" flag:"rate-source"`
	SourceBurst *int     `toml:"source_burst" flag:"rate-source-burst"`
	DeviceRate  *float64 `toml:"device_rate" flag:"rate-device"`
	DeviceBurst *int     `toml:"device_burst" flag:"rate-device-burst"`
}

// Duration is a duration written as Go writes one, as a string with a
// unit: "10s", "5m", "1h30m". A bare number is refused: "window = 10"
// would otherwise be 10 ns.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ErrNoUnit is the error of a duration written without a unit.
var ErrNoUnit = errors.New(`a duration needs a unit, e.g. "10s"`)

// ParseDuration parses a duration as the file and the flags write it. A
// number without a unit is ErrNoUnit, even "0", so that no setting is
// read in an unit its writer did not mean.
func ParseDuration(s string) (time.Duration, error) {
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, ErrNoUnit
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (write it like 10s, 5m or 1h30m)", s)
	}
	return v, nil
}

// String formats d as time.Duration does, which the flag parses back.
func (d Duration) String() string { return time.Duration(d).String() }

// Load reads and checks a configuration file.
func Load(path string) (*Gateway, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	g, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return g, nil
}

// Parse reads a configuration file's content.
func Parse(b []byte) (*Gateway, error) {
	var g Gateway
	if err := durationsHaveUnits(b); err != nil {
		return nil, err
	}
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		return nil, explain(err)
	}
	var errs []error
	for _, s := range g.Settings() {
		if err := Check(s.Flag, s.Value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Key, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &g, nil
}

// durationsHaveUnits refuses a duration setting written as a TOML number:
// go-toml decodes an integer straight into Duration's int64, which would
// make "window = 10" ten nanoseconds.
func durationsHaveUnits(b []byte) error {
	var raw map[string]any
	if err := toml.Unmarshal(b, &raw); err != nil {
		return explain(err)
	}
	var errs []error
	var visit func(t reflect.Type, m map[string]any, prefix string)
	visit = func(t reflect.Type, m map[string]any, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			key := f.Tag.Get("toml")
			v, ok := m[key]
			if !ok {
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				if sub, ok := v.(map[string]any); ok {
					visit(f.Type, sub, prefix+key+".")
				}
				continue
			}
			if f.Type.Elem() != reflect.TypeFor[Duration]() {
				continue
			}
			if _, isString := v.(string); !isString {
				errs = append(errs, fmt.Errorf("%s%s: %w", prefix, key, ErrNoUnit))
			}
		}
	}
	visit(reflect.TypeFor[Gateway](), raw, "")
	return errors.Join(errs...)
}

// explain turns go-toml's errors into one line per problem with its
// position.
func explain(err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var errs []error
		for _, e := range strict.Errors {
			row, col := e.Position()
			errs = append(errs, fmt.Errorf("line %d column %d: unknown setting %q (see docs/OPERATIONS.md for the settings)", row, col, keyName(e.Key())))
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf("line %d column %d: %s: %s", row, col, keyName(k), strings.TrimPrefix(de.Error(), "toml: "))
		}
		return fmt.Errorf("line %d column %d: %s", row, col, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return err
}

func keyName(k toml.Key) string {
	s := ""
	for i, p := range k {
		if i > 0 {
			s += "."
		}
		s += p
	}
	return s
}

// Setting is one setting present in the file, as a flag and its value.
type Setting struct {
	Key   string // as in the file, such as "lockout.max_failures"
	Flag  string // the serve flag, such as "lockout-failures"
	Value string // in the flag's syntax
}

// Settings lists the settings present in the file, in the order of the
// Gateway type.
func (g *Gateway) Settings() []Setting {
	var out []Setting
	walk(reflect.ValueOf(g).Elem(), "", &out)
	return out
}

func walk(v reflect.Value, prefix string, out *[]Setting) {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		key := prefix + f.Tag.Get("toml")
		if f.Type.Kind() == reflect.Struct {
			walk(fv, key+".", out)
			continue
		}
		if fv.IsNil() {
			continue
		}
		*out = append(*out, Setting{Key: key, Flag: f.Tag.Get("flag"), Value: format(fv.Elem())})
	}
}

func format(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}

// Flags lists every flag a setting can stand for, for tests that check
// each one exists.
func Flags() []string {
	var out []string
	var visit func(t reflect.Type)
	visit = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Type.Kind() == reflect.Struct {
				visit(f.Type)
				continue
			}
			out = append(out, f.Tag.Get("flag"))
		}
	}
	visit(reflect.TypeFor[Gateway]())
	return out
}
