package adminsvc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tagauth/tagauth/internal/adminapi"
	"github.com/tagauth/tagauth/internal/store"
	"github.com/tagauth/tagauth/protocol"
)

// enrolment codes: 15 random bytes, base32 in groups of four, so that
// they can be read out and typed. Separators and case do not matter.
const codeBytes = 15

func newEnrolCode() (string, error) {
	var raw [codeBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:])
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String(), nil
}

// hashCode is the stored form of an enrolment code: SHA-256 of its
// canonical spelling (upper case, no separators).
func hashCode(code string) [32]byte {
	c := strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return -1
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		}
		return r
	}, code)
	return sha256.Sum256([]byte(c))
}

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

// EnrolCode draws a one-time enrolment code for a user id that is free.
// The code is returned once and stored only as a hash.
func (s *Service) EnrolCode(ctx context.Context, source string, req adminapi.EnrolCodeRequest) (adminapi.EnrolCode, error) {
	if err := store.CheckID(req.User); err != nil {
		return adminapi.EnrolCode{}, failWith(Invalid, err, "user: %v", err)
	}
	ttl := adminapi.DefaultCodeTTL
	if req.TTLs != 0 {
		ttl = time.Duration(req.TTLs) * time.Second
	}
	if ttl <= 0 || ttl > adminapi.MaxCodeTTL {
		return adminapi.EnrolCode{}, fail(Invalid, "ttl_s must be between 1 and %d seconds", int(adminapi.MaxCodeTTL/time.Second))
	}
	if err := s.taken(false, req.User); err != nil {
		return adminapi.EnrolCode{}, err
	}
	code, err := newEnrolCode()
	if err != nil {
		return adminapi.EnrolCode{}, failWith(Internal, err, "drawing a code failed")
	}
	expires := s.now().Add(ttl).UTC().Truncate(time.Second)
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.auditReady(); err != nil {
		return adminapi.EnrolCode{}, err
	}
	if err := s.c.Store.PutEnrolCode(ctx, hashCode(code), req.User, expires); err != nil {
		return adminapi.EnrolCode{}, s.storeError("enrolment code", err)
	}
	if err := s.audited(ctx, store.AuditRecord{Time: s.now(), Kind: adminapi.KindEnrol, Outcome: adminapi.OutcomeOK, Reason: "code issued",
		User: req.User, Source: source, Detail: "enrolment code valid until " + expires.Format(time.RFC3339)}, "the code was stored"); err != nil {
		return adminapi.EnrolCode{}, err
	}
	return adminapi.EnrolCode{Code: code, Expires: expires}, nil
}

func unhex32(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

// Register is the gateway's side of FIG. 4: the one-time code
// authenticates the request, and W_i and r_i are used once and forgotten
// (never stored, never logged). Every refusal is audited.
func (s *Service) Register(ctx context.Context, source string, body adminapi.RegisterRequest) (adminapi.Card, error) {
	req := protocol.RegistrationRequest{ID: body.ID, T: body.T,
		KDF: protocol.KDFParams{Time: body.KDF.T, MemoryKiB: body.KDF.MKiB, Threads: body.KDF.P}}
	defer req.Wipe()
	refuse := func(k Kind, reason string, cause error, msg string) error {
		s.c.Audit.Refused(store.AuditRecord{Time: s.now(), Kind: adminapi.KindEnrol, Outcome: adminapi.OutcomeRefused, Reason: reason,
			User: s.c.SanitizeID([]byte(body.ID)), Source: source})
		return &Error{Kind: k, Msg: msg, Err: cause}
	}
	p, err := protocol.ParseProfile(body.Profile)
	if err != nil || body.Profile == "" {
		return adminapi.Card{}, refuse(Invalid, "bad request", err, `profile must be "classic" or "hardened"`)
	}
	if p != s.c.Profile {
		return adminapi.Card{}, refuse(Invalid, "profile mismatch", nil, fmt.Sprintf("this gateway serves the %v profile, the request is for %v: enrol with --profile %v", s.c.Profile, p, s.c.Profile))
	}
	req.Profile = p
	if err := store.CheckID(body.ID); err != nil {
		return adminapi.Card{}, refuse(Invalid, "bad request", err, "id: "+err.Error())
	}
	if !unhex32(req.W[:], body.W) || !unhex32(req.R[:], body.R) {
		return adminapi.Card{}, refuse(Invalid, "bad request", nil, "w and r must each be 64 hex digits")
	}
	if p == protocol.Hardened && !req.KDF.Valid() {
		return adminapi.Card{}, refuse(Invalid, "bad request", nil, "kdf: Argon2id parameters out of range (1<=t<=64, 1<=p<=16, 8p<=m_kib<=1048576)")
	}
	if p == protocol.Hardened && !s.c.InsecureTestKDF && belowFloor(req.KDF, s.c.KDFFloor) {
		return adminapi.Card{}, refuse(Invalid, "kdf below floor", nil, kdfFloorMessage(req.KDF, s.c.KDFFloor))
	}
	if body.Code == "" {
		return adminapi.Card{}, refuse(CodeRejected, "no enrolment code", nil, "code: an enrolment code from the operator is required")
	}
	// Cheap refusals first, so that a clock or id problem does not burn
	// the one-time code.
	if err := s.taken(false, body.ID); err != nil {
		return adminapi.Card{}, refuse(Conflict, "id taken", errors.Unwrap(err), err.Error())
	}
	mk := s.c.Keys.Newest()
	card, err := protocol.IssueCard(&req, mk, s.c.Proto)
	clear(mk.Key[:])
	if err != nil {
		if protocol.CodeOf(err) == protocol.ErrStaleTimestamp {
			return adminapi.Card{}, refuse(Invalid, reasonOf(err), err, "registration timestamp "+detailOf(err)+": check that this computer's clock and the gateway's are in sync")
		}
		return adminapi.Card{}, refuse(Invalid, reasonOf(err), err, "registration refused: "+detailOf(err))
	}
	defer func() { clear(card.Alpha[:]); clear(card.R[:]) }()

	s.c.Mu.Lock()
	defer s.c.Mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, CallBudget)
	defer cancel()
	if err := s.auditReady(); err != nil { // before the code is used up
		return adminapi.Card{}, err
	}
	user, err := s.c.Store.TakeEnrolCode(ctx, hashCode(body.Code), s.now())
	if err != nil {
		if errors.Is(err, store.ErrCodeInvalid) {
			return adminapi.Card{}, refuse(CodeRejected, "enrolment code invalid", err, "enrolment code is unknown, used or expired: ask the operator for a new one")
		}
		return adminapi.Card{}, s.storeError("enrolment", err)
	}
	if user != body.ID {
		return adminapi.Card{}, refuse(Forbidden, "code for another user", nil, "this enrolment code was issued for another user id; it is now used up: ask the operator for a new one for your id")
	}
	kv := card.KV
	if p == protocol.Classic {
		kv = protocol.ClassicKeyVersion
	}
	if err := s.c.Store.CreateUser(ctx, store.User{ID: body.ID, KV: kv, Created: s.now()}, s.c.Profile); err != nil {
		s.c.Audit.Refused(store.AuditRecord{Time: s.now(), Kind: adminapi.KindEnrol, Outcome: adminapi.OutcomeRefused, Reason: "store refused",
			User: body.ID, Source: source, Detail: err.Error()})
		return adminapi.Card{}, s.storeError("registering user", err)
	}
	s.c.Applied(ctx, Change{Op: AddUser, ID: body.ID})
	if err := s.audited(ctx, store.AuditRecord{Time: s.now(), Kind: adminapi.KindEnrol, Outcome: adminapi.OutcomeOK, Reason: "registered",
		User: body.ID, Source: source, KVUser: kv}, "the user was registered"); err != nil {
		return adminapi.Card{}, err
	}
	return adminapi.CardToJSON(card), nil
}

// reasonOf names the precise cause of a refused registration, for its
// audit record (as the gateway's verify records name theirs).
func reasonOf(err error) string {
	if r := protocol.ReasonOf(err); r != nil {
		return r.Name()
	}
	var c protocol.Code
	if errors.As(err, &c) {
		return c.String()
	}
	return "internal error"
}

// detailOf is a protocol error's text without the library's prefix, or ""
// when it only repeats the reason.
func detailOf(err error) string {
	msg := err.Error()
	if r := protocol.ReasonOf(err); r != nil && msg == r.Error() {
		return ""
	}
	return strings.TrimPrefix(msg, "tagauth: ")
}
