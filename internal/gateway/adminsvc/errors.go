package adminsvc

import (
	"errors"
	"fmt"
)

// Kind classifies a refusal of the service, so that each adapter maps it
// once: the HTTPS admin API to a status code, the console to a message.
type Kind int

// Kinds of refusal.
const (
	Internal     Kind = iota // the gateway failed (a store, the clock, the random source)
	Invalid                  // the request is malformed or out of range
	CodeRejected             // the enrolment code is missing, unknown, used or expired
	Forbidden                // the request is well formed but not allowed (code of another user)
	NotFound                 // no such identity, grant or key version
	Conflict                 // the identity is taken, the key is in use, the key file refused
	Unavailable              // audit records cannot be written now: nothing was done
	Full                     // the store's disk is full: nothing was changed
)

// Error is every refusal of the service. Msg is written for operators
// (the CLI and the console show it as is) and never holds a secret.
type Error struct {
	Kind Kind
	Msg  string
	Err  error // the cause, for errors.Is (store.ErrExists, ErrKeyInUse, ...)
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// KindOf is the Kind of err: Internal unless err is (or wraps) an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

func fail(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

func failWith(k Kind, cause error, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// ErrKeyInUse is the cause of retiring a key version that active users or
// devices still hold, without force.
var ErrKeyInUse = errors.New("key version still in use")
