package protocol

import "testing"

// States print by name, so that a log line or a failed test says where a
// login stood; an unknown value still prints as a number, never as "".
func TestStateString(t *testing.T) {
	for _, tc := range []struct {
		s    interface{ String() string }
		want string
	}{
		{devWaitM3, "wait-m3"},
		{devWaitM5, "wait-m5"},
		{devDone, "done"},
		{devDead, "dead"},
		{devState(9), "devState(9)"},
		{loginSent, "sent-m1"},
		{loginDone, "done"},
		{loginDead, "dead"},
		{loginState(7), "loginState(7)"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
