package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tagauth/tagauth/protocol"
)

func TestCheckID(t *testing.T) {
	for _, id := range []string{"a", "alice", "sensor-7", strings.Repeat("x", protocol.MaxIDLen), strings.Repeat("é", 32), "*"} {
		if err := CheckID(id); err != nil {
			t.Errorf("CheckID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("x", protocol.MaxIDLen+1), strings.Repeat("é", 32) + "x", "a\x00", "\xc3"} {
		if err := CheckID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckID(%q): %v, want ErrInvalid", id, err)
		}
	}
	if CheckGroup("", false) != nil || CheckGroup("", true) == nil {
		t.Error("an empty group is fine on a device, not in a grant")
	}
	if CheckGroup(AllGroups, true) != nil || CheckGroup(AllGroups, false) == nil {
		t.Error(`"*" is fine in a grant, not on a device`)
	}
	if err := CheckProfile(protocol.Profile(3)); !errors.Is(err, ErrInvalid) {
		t.Errorf("CheckProfile(3): %v", err)
	}
}

func TestAuditFilter(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r := AuditRecord{Time: t0, Kind: "verify", Outcome: "ok", User: "alice", Device: "d"}
	for _, c := range []struct {
		f    AuditFilter
		want bool
	}{
		{AuditFilter{}, true},
		{AuditFilter{Kind: "verify", User: "alice", Device: "d", Outcome: "ok"}, true},
		{AuditFilter{Kind: "enrol"}, false},
		{AuditFilter{User: "bob"}, false},
		{AuditFilter{Device: "e"}, false},
		{AuditFilter{Outcome: "refused"}, false},
		{AuditFilter{Since: t0}, true},
		{AuditFilter{Since: t0.Add(time.Microsecond)}, false},
		{AuditFilter{Until: t0}, false},
		{AuditFilter{Until: t0.Add(time.Microsecond)}, true},
		{AuditFilter{After: 1 << 60, Limit: 1}, true}, // cursor fields are not Match's business
	} {
		if got := c.f.Match(&r); got != c.want {
			t.Errorf("%+v.Match = %v, want %v", c.f, got, c.want)
		}
	}
	for limit, want := range map[int]int{-5: DefaultAuditLimit, 0: DefaultAuditLimit, 1: 1, MaxAuditLimit: MaxAuditLimit, MaxAuditLimit + 1: MaxAuditLimit} {
		if got := (AuditFilter{Limit: limit}).PageSize(); got != want {
			t.Errorf("Limit %d: PageSize %d, want %d", limit, got, want)
		}
	}
}
