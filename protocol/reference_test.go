package protocol_test

// A deliberately naive reference implementation of PROTOCOL.md sections 2,
// 4, 5, 6 and 9, written from the spec text alone: it builds every byte
// string by hand and calls only the standard library and x/crypto, never
// the protocol package. TestReferenceMatchesVectors recomputes every output
// of testdata/vectors from its inputs, which is what shows the vectors (and
// so the package that generated them) follow the spec. refJudge, a naive
// receiver of sections 7, 9 and 10.1, judges the rejection vectors the same
// way (TestReferenceJudgesRejectVectors).

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/text/unicode/norm"
)

// refH is h(x) = SHA-256 of the concatenation.
func refH(parts ...[]byte) []byte {
	d := sha256.New()
	for _, p := range parts {
		d.Write(p)
	}
	return d.Sum(nil)
}

// refLbl is lbl(s): one length byte, then the ASCII bytes.
func refLbl(s string) []byte { return append([]byte{byte(len(s))}, s...) }

// refM is M(k, s, x) = HMAC-SHA256(key = k, message = lbl(s) || x).
func refM(k []byte, s string, x ...[]byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write(refLbl(s))
	for _, p := range x {
		m.Write(p)
	}
	return m.Sum(nil)
}

// refID8 is id8(x): one length byte, then the UTF-8 bytes.
func refID8(x string) []byte { return append([]byte{byte(len(x))}, x...) }

// refTS is ts(T): 8 bytes, big-endian.
func refTS(t uint64) []byte { return binary.BigEndian.AppendUint64(nil, t) }

func refXOR(a, b []byte) []byte {
	if len(a) != 32 || len(b) != 32 {
		panic("refXOR: operands must be 32 bytes")
	}
	out := make([]byte, 32)
	for i := range out {
		out[i] = a[i] ^ b[i]
	}
	return out
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// refCase is one vector case as raw JSON values, read by key.
type refCase struct {
	t    *testing.T
	name string
	raw  map[string]json.RawMessage
}

func (c refCase) has(key string) bool { _, ok := c.raw[key]; return ok }

func (c refCase) str(key string) string {
	c.t.Helper()
	var s string
	if err := json.Unmarshal(c.raw[key], &s); err != nil {
		c.t.Fatalf("case %s: key %s: not a JSON string: %v", c.name, key, err)
	}
	return s
}

func (c refCase) num(key string) uint64 {
	c.t.Helper()
	var n uint64
	if err := json.Unmarshal(c.raw[key], &n); err != nil {
		c.t.Fatalf("case %s: key %s: not a JSON integer: %v", c.name, key, err)
	}
	return n
}

// bytes reads a lowercase hex field; size -1 accepts any length.
func (c refCase) bytes(key string, size int) []byte {
	c.t.Helper()
	s := c.str(key)
	b, err := hex.DecodeString(s)
	if err != nil || hex.EncodeToString(b) != s || (size >= 0 && len(b) != size) {
		c.t.Fatalf("case %s: key %s: want %d bytes of lowercase hex, got %q", c.name, key, size, s)
	}
	return b
}

// identity reads an identity and checks section 2: 1 to 64 bytes of UTF-8,
// no NUL.
func (c refCase) identity(key string) string {
	c.t.Helper()
	s := c.str(key)
	if len(s) < 1 || len(s) > 64 || !utf8.ValidString(s) || bytes.IndexByte([]byte(s), 0) >= 0 {
		c.t.Fatalf("case %s: key %s: %q is not a valid identity", c.name, key, s)
	}
	return s
}

// refFresh is the freshness check of section 7 with the default dT.
func refFresh(t, now uint64) bool {
	const dT = 10000
	if t > now {
		return t-now <= dT
	}
	return now-t <= dT
}

// refOutputs computes the outputs of one case, keyed as in section 10.
func refOutputs(t *testing.T, profile string, c refCase) map[string][]byte {
	t.Helper()
	id, did := c.identity("id_i"), c.identity("did_j")
	pw := norm.NFC.Bytes([]byte(c.str("pw_i")))
	kgtw, r := c.bytes("k_gtw", 32), c.bytes("r_i", 32)
	ki, kj := c.bytes("k_i", 32), c.bytes("k_j", 32)
	t1, t2, t3, t4 := c.num("t1"), c.num("t2"), c.num("t3"), c.num("t4")
	pt := c.bytes("plaintext", -1)

	// Section 10 schedule: registration and m1 at t1, m2 at t2, m3 at t3,
	// m4 at t4. Every check the parties make must pass for the vector to
	// describe a successful login.
	if !refFresh(t1, t2) || !refFresh(t2, t3) || !refFresh(t1, t3) || !refFresh(t3, t4) {
		t.Fatalf("case %s: timestamps %d %d %d %d fail the freshness checks", c.name, t1, t2, t3, t4)
	}
	out := map[string][]byte{}
	var pbyte byte
	var e, sk []byte

	switch profile {
	case "classic":
		pbyte = 0x01
		if id == did {
			t.Fatalf("case %s: classic user and device identities share one namespace", c.name)
		}
		// Section 4.
		w := refH(r, pw)
		tagI := refH(refID8(id), kgtw)
		tagJ := refH(refID8(did), kgtw)
		alpha := refXOR(w, tagI)
		out["w_i"], out["tag_i"], out["tag_j"], out["alpha_i"] = w, tagI, tagJ, alpha

		// Section 5, card (step 502).
		cTag := refXOR(w, alpha)
		beta := refH(cTag, refTS(t1))
		theta := refXOR(ki, beta)
		e = refH(beta, refID8(id), refID8(did))
		out["m1"] = cat([]byte{0x01, 0x01}, refID8(id), e, theta, refTS(t1))

		// Device (step 504).
		i := refH(tagJ, e)
		out["m2"] = cat([]byte{0x01, 0x02}, refID8(id), e, refID8(did), i, refTS(t1), refTS(t2))

		// Gateway (step 506), with the errata: Tag_i' in beta_i' and gamma_i.
		gBeta := refH(tagI, refTS(t1))
		if !bytes.Equal(refH(gBeta, refID8(id), refID8(did)), e) || !bytes.Equal(refH(tagJ, e), i) {
			t.Fatalf("case %s: gateway checks fail", c.name)
		}
		f := refXOR(gBeta, refH(tagJ, refTS(t3)))
		gamma := refH(tagI, refID8(did))
		out["m3"] = cat([]byte{0x01, 0x03}, f, gamma, refTS(t3))

		// Device (step 508).
		dBeta := refXOR(f, refH(tagJ, refTS(t3)))
		if !bytes.Equal(refH(dBeta, refID8(id), refID8(did)), e) {
			t.Fatalf("case %s: device check of m3 fails", c.name)
		}
		dKi := refXOR(theta, dBeta)
		x := refXOR(refH(dKi, refTS(t4)), kj)
		sk = refH(refXOR(dKi, kj))
		out["m4"] = cat([]byte{0x01, 0x04}, x, gamma, refTS(t4))

		// Card (step 510), with the errata: h(Tag_i || DID_j), h(K_i || T4).
		if !bytes.Equal(refH(cTag, refID8(did)), gamma) {
			t.Fatalf("case %s: card check of gamma fails", c.name)
		}
		cKj := refXOR(refH(ki, refTS(t4)), x)
		if !bytes.Equal(refH(refXOR(ki, cKj)), sk) {
			t.Fatalf("case %s: card and device session keys differ", c.name)
		}

	case "hardened":
		pbyte = 0x02
		ni := c.bytes("n_i", 16)
		kvi, kvj := c.num("kv_i"), c.num("kv_j")
		kgtwj := c.bytes("k_gtw_j", 32)
		at, am, ap := c.num("argon2_t"), c.num("argon2_m_kib"), c.num("argon2_p")
		if kvi < 1 || kvi > 255 || kvj < 1 || kvj > 255 {
			t.Fatalf("case %s: key versions must be 1-255", c.name)
		}
		if kvi == kvj && !bytes.Equal(kgtw, kgtwj) {
			t.Fatalf("case %s: kv_i == kv_j but k_gtw_j != k_gtw", c.name)
		}
		if at < 1 || at > 64 || ap < 1 || ap > 16 || am < 8*ap || am > 1048576 {
			t.Fatalf("case %s: Argon2id parameters out of range", c.name)
		}
		if !refFresh(t3, t4) {
			t.Fatalf("case %s: T3 not within dT of T4", c.name)
		}

		// Section 4.
		w := argon2.IDKey(pw, r, uint32(at), uint32(am), uint8(ap), 32)
		tagI := refM(kgtw, "tagauth/user-tag", refID8(id))
		tagJ := refM(kgtwj, "tagauth/device-tag", refID8(did))
		alpha := refXOR(w, tagI)
		out["w_i"], out["tag_i"], out["tag_j"], out["alpha_i"] = w, tagI, tagJ, alpha
		out["fuzzy_v"] = refM(w, "tagauth/fuzzy")[:1]

		// Section 6, card.
		cTag := refXOR(w, alpha)
		beta := refM(cTag, "tagauth/beta", refID8(did), ni, refTS(t1))
		theta := refXOR(ki, beta)
		e = refM(beta, "tagauth/E", refID8(id), refID8(did))
		out["m1"] = cat([]byte{0x02, 0x01}, refID8(id), []byte{byte(kvi)}, ni, e, theta, refTS(t1))

		// Device.
		i := refM(tagJ, "tagauth/I", e, refID8(did), refTS(t2))
		out["m2"] = cat([]byte{0x02, 0x02}, refID8(id), []byte{byte(kvi)}, ni, e, refID8(did), []byte{byte(kvj)}, i, refTS(t1), refTS(t2))

		// Gateway.
		gBeta := refM(tagI, "tagauth/beta", refID8(did), ni, refTS(t1))
		if !bytes.Equal(refM(gBeta, "tagauth/E", refID8(id), refID8(did)), e) ||
			!bytes.Equal(refM(tagJ, "tagauth/I", e, refID8(did), refTS(t2)), i) {
			t.Fatalf("case %s: gateway checks fail", c.name)
		}
		f := refXOR(gBeta, refM(tagJ, "tagauth/F", e, refTS(t3)))
		gamma := refM(tagI, "tagauth/gamma", refID8(did), e, refTS(t3))
		out["m3"] = cat([]byte{0x02, 0x03}, f, gamma, refTS(t3))

		// Device.
		dBeta := refXOR(f, refM(tagJ, "tagauth/F", e, refTS(t3)))
		if !bytes.Equal(refM(dBeta, "tagauth/E", refID8(id), refID8(did)), e) {
			t.Fatalf("case %s: device check of m3 fails", c.name)
		}
		dKi := refXOR(theta, dBeta)
		x := refXOR(refM(dKi, "tagauth/X", e, refTS(t4)), kj)
		sk = refM(cat(dKi, kj), "tagauth/SK", e, x)
		tauJ := refM(sk, "tagauth/confirm-device", e, x, refTS(t3), refTS(t4))
		out["m4"] = cat([]byte{0x02, 0x04}, x, gamma, refTS(t3), refTS(t4), tauJ)

		// Card.
		if !bytes.Equal(refM(cTag, "tagauth/gamma", refID8(did), e, refTS(t3)), gamma) {
			t.Fatalf("case %s: card check of gamma fails", c.name)
		}
		cKj := refXOR(refM(ki, "tagauth/X", e, refTS(t4)), x)
		cSK := refM(cat(ki, cKj), "tagauth/SK", e, x)
		if !bytes.Equal(cSK, sk) || !bytes.Equal(refM(cSK, "tagauth/confirm-device", e, x, refTS(t3), refTS(t4)), tauJ) {
			t.Fatalf("case %s: card check of tau_j fails", c.name)
		}
		out["m5"] = cat([]byte{0x02, 0x05}, refM(cSK, "tagauth/confirm-user", e, x))

	default:
		t.Fatalf("unknown profile %q", profile)
	}
	out["sk"] = sk

	// Section 9.
	kud, err := hkdf.Key(sha256.New, sk, e, "tagauth/channel user->device", 32)
	if err != nil {
		t.Fatal(err)
	}
	kdu, err := hkdf.Key(sha256.New, sk, e, "tagauth/channel device->user", 32)
	if err != nil {
		t.Fatal(err)
	}
	sid := refH(refLbl("tagauth/sid"), e)[:8]
	out["k_ud"], out["k_du"], out["sid"] = kud, kdu, sid
	seq := refTS(1)
	hdr := cat([]byte{pbyte, 0x10}, sid, seq)
	aead, err := chacha20poly1305.New(kud)
	if err != nil {
		t.Fatal(err)
	}
	nonce := cat([]byte{0, 0, 0, 0}, seq)
	out["record"] = cat(hdr, aead.Seal(nil, nonce, pt, hdr))
	return out
}

// refOutputKeys are the output keys of section 10 for each profile.
var refOutputKeys = map[string][]string{
	"classic": {"w_i", "tag_i", "tag_j", "alpha_i", "m1", "m2", "m3", "m4",
		"sk", "k_ud", "k_du", "sid", "record"},
	"hardened": {"w_i", "tag_i", "tag_j", "alpha_i", "m1", "m2", "m3", "m4", "m5",
		"sk", "k_ud", "k_du", "sid", "record", "fuzzy_v"},
}

// refInputKeys are the input keys of section 10 for each profile.
var refInputKeys = map[string][]string{
	"classic": {"name", "k_gtw", "id_i", "pw_i", "r_i", "did_j", "t1", "t2", "t3", "t4",
		"k_i", "k_j", "plaintext"},
	"hardened": {"name", "k_gtw", "id_i", "pw_i", "r_i", "did_j", "t1", "t2", "t3", "t4",
		"k_i", "k_j", "n_i", "kv_i", "kv_j", "k_gtw_j", "argon2_t", "argon2_m_kib", "argon2_p", "plaintext"},
}

func TestReferenceMatchesVectors(t *testing.T) {
	for _, profile := range []string{"classic", "hardened"} {
		t.Run(profile, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "testdata", "vectors", profile+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var file struct {
				Profile string                       `json:"profile"`
				Cases   []map[string]json.RawMessage `json:"cases"`
			}
			if err := json.Unmarshal(b, &file); err != nil {
				t.Fatal(err)
			}
			if file.Profile != profile {
				t.Fatalf("profile %q, want %q", file.Profile, profile)
			}
			if len(file.Cases) < 3 {
				t.Errorf("%d cases, section 10 asks for at least 3", len(file.Cases))
			}
			var oneByte, maxID, maxDID, nonASCII, nonNFC, rotated bool
			for n, raw := range file.Cases {
				c := refCase{t: t, name: string(raw["name"]), raw: raw}
				for _, k := range append(refInputKeys[profile], refOutputKeys[profile]...) {
					if !c.has(k) {
						t.Fatalf("case %d (%s): key %s missing", n, c.name, k)
					}
				}
				if profile == "classic" && (c.has("m5") || c.has("fuzzy_v")) {
					t.Errorf("case %s: classic has no m5 and no fuzzy verifier", c.name)
				}
				c.name = c.str("name")
				want := refOutputs(t, profile, c)
				for _, k := range refOutputKeys[profile] {
					if got := c.str(k); got != hex.EncodeToString(want[k]) {
						t.Errorf("case %s: field %s:\n file      %s\n reference %x", c.name, k, got, want[k])
					}
				}

				id, did, pw := c.str("id_i"), c.str("did_j"), c.str("pw_i")
				oneByte = oneByte || len(id) == 1 || len(did) == 1
				maxID = maxID || len(id) == 64
				maxDID = maxDID || len(did) == 64
				for _, r := range pw {
					nonASCII = nonASCII || r >= utf8.RuneSelf
				}
				nonNFC = nonNFC || !norm.NFC.IsNormalString(pw)
				if profile == "hardened" {
					rotated = rotated || (c.num("kv_i") != c.num("kv_j") && c.str("k_gtw") != c.str("k_gtw_j"))
				}
			}
			// Section 10 asks for these; the last two show normalisation and
			// key rotation, which a vector set can otherwise silently miss.
			if !oneByte || !maxID || !maxDID || !nonASCII || !nonNFC {
				t.Errorf("coverage: 1-byte identity %v, 64-byte ID_i %v, 64-byte DID_j %v, non-ASCII password %v, non-NFC password %v",
					oneByte, maxID, maxDID, nonASCII, nonNFC)
			}
			if profile == "hardened" && !rotated {
				t.Error("coverage: no hardened case with kv_i != kv_j and a different k_gtw_j")
			}
		})
	}
}

// refJudge is a receiver written from sections 5, 6, 7, 9 and 10.1 alone:
// it is set up from a success case (base) the way section 10.1 says, takes
// messages at a clock, and answers "" (accepted) or the code's name.
type refJudge struct {
	t       *testing.T
	profile string
	pbyte   byte
	out     map[string][]byte // the base's outputs, recomputed by refOutputs
	c       refCase
	party   string
	step    string
	now     uint64

	seen    map[string]bool // replay caches (gateway, device m1)
	done    bool            // the login has passed the step (m3, m4, m5)
	lastSeq uint64          // records
}

const refDT = 10000

func newRefJudge(t *testing.T, profile string, c refCase, party, step string) *refJudge {
	j := &refJudge{t: t, profile: profile, pbyte: 0x01, c: c, party: party, step: step, seen: map[string]bool{}}
	if profile == "hardened" {
		j.pbyte = 0x02
	}
	j.out = refOutputs(t, profile, c)
	return j
}

// refReader reads fields off a message; ok turns false at the first
// missing byte.
type refReader struct {
	b  []byte
	ok bool
}

func (r *refReader) take(n int) []byte {
	if !r.ok || len(r.b) < n {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *refReader) id() []byte {
	n := r.take(1)
	if n == nil {
		return nil
	}
	v := r.take(int(n[0]))
	if !r.ok || len(v) < 1 || len(v) > 64 || !utf8.Valid(v) || bytes.IndexByte(v, 0) >= 0 {
		r.ok = false
	}
	return v
}

func (r *refReader) kv() byte {
	v := r.take(1)
	if v == nil || v[0] == 0 {
		r.ok = false
		return 0
	}
	return v[0]
}

func (r *refReader) ts() uint64 {
	v := r.take(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (r *refReader) end() bool { return r.ok && len(r.b) == 0 }

func refFreshDT(t, now uint64) bool {
	if t > now {
		return t-now <= refDT
	}
	return now-t <= refDT
}

// receive judges one message at j.now.
func (j *refJudge) receive(m []byte) string {
	// Section 7: the first checks, at every endpoint.
	if len(m) == 0 {
		return "malformed"
	}
	if m[0] != j.pbyte {
		return "unsupported_profile"
	}
	hard := j.profile == "hardened"
	c := j.c
	id, did := []byte(c.str("id_i")), []byte(c.str("did_j"))
	if j.step == "record" {
		// Section 9's order.
		if len(m) < 34 || m[1] != 0x10 {
			return "malformed"
		}
		key := j.out["k_ud"] // the device receives the card's records
		if j.party == "card" {
			key = j.out["k_du"]
		}
		if !bytes.Equal(m[2:10], j.out["sid"]) {
			return "rejected"
		}
		aead, err := chacha20poly1305.New(key)
		if err != nil {
			j.t.Fatal(err)
		}
		seq := binary.BigEndian.Uint64(m[10:18])
		if _, err := aead.Open(nil, cat([]byte{0, 0, 0, 0}, m[10:18]), m[18:], m[:18]); err != nil {
			return "rejected"
		}
		if seq <= j.lastSeq {
			return "replayed"
		}
		j.lastSeq = seq
		return ""
	}
	types := map[string]byte{"m1": 1, "m2": 2, "m3": 3, "m4": 4, "m5": 5}
	if len(m) < 2 || m[1] != types[j.step] {
		return "malformed"
	}
	r := &refReader{b: m[2:], ok: true}
	m1 := j.out["m1"]
	e := m1[len(m1)-8-64 : len(m1)-8-32] // m1 ends E_i || theta_i || T1
	switch j.party + "/" + j.step {
	case "gateway/m2":
		mid := r.id()
		var kvi, kvj byte = 1, 1
		var ni []byte
		if hard {
			kvi, ni = r.kv(), r.take(16)
		}
		me := r.take(32)
		mdid := r.id()
		if hard {
			kvj = r.kv()
		}
		mi := r.take(32)
		t1, t2 := r.ts(), r.ts()
		if !r.end() {
			return "malformed"
		}
		if !refFreshDT(t2, j.now) || !refFreshDT(t1, j.now) {
			return "stale_timestamp"
		}
		disc := refTS(t1)
		if hard {
			disc = ni
		}
		rk := string(cat(refID8(string(mid)), disc))
		if j.seen[rk] {
			return "replayed"
		}
		j.seen[rk] = true
		if !bytes.Equal(mid, id) || !bytes.Equal(mdid, did) {
			return "rejected" // unknown identity: the registry holds the base's two
		}
		keys := map[byte][]byte{1: c.bytes("k_gtw", 32)}
		if hard {
			keys = map[byte][]byte{byte(c.num("kv_i")): c.bytes("k_gtw", 32), byte(c.num("kv_j")): c.bytes("k_gtw_j", 32)}
		}
		ki, kj := keys[kvi], keys[kvj]
		if ki == nil || kj == nil {
			return "rejected"
		}
		if !hard {
			tagI, tagJ := refH(refID8(string(mid)), ki), refH(refID8(string(mdid)), kj)
			if !bytes.Equal(refH(tagJ, me), mi) || !bytes.Equal(refH(refH(tagI, refTS(t1)), refID8(string(mid)), refID8(string(mdid))), me) {
				return "rejected"
			}
			return ""
		}
		tagI := refM(ki, "tagauth/user-tag", refID8(string(mid)))
		tagJ := refM(kj, "tagauth/device-tag", refID8(string(mdid)))
		beta := refM(tagI, "tagauth/beta", refID8(string(mdid)), ni, refTS(t1))
		if !bytes.Equal(refM(tagJ, "tagauth/I", me, refID8(string(mdid)), refTS(t2)), mi) ||
			!bytes.Equal(refM(beta, "tagauth/E", refID8(string(mid)), refID8(string(mdid))), me) {
			return "rejected"
		}
		return ""

	case "device/m1":
		mid := r.id()
		if hard {
			r.kv()
			r.take(16)
		}
		me := r.take(32)
		r.take(32)
		t1 := r.ts()
		if !r.end() {
			return "malformed"
		}
		if !refFreshDT(t1, j.now) {
			return "stale_timestamp"
		}
		rk := string(cat(refID8(string(mid)), me))
		if j.seen[rk] {
			return "replayed"
		}
		j.seen[rk] = true
		return ""

	case "device/m3":
		f := r.take(32)
		r.take(32)
		t3 := r.ts()
		if !r.end() {
			return "malformed"
		}
		if j.done {
			return "replayed"
		}
		if !refFreshDT(t3, j.now) {
			return "stale_timestamp"
		}
		tagJ := j.out["tag_j"]
		var beta []byte
		if hard {
			beta = refXOR(f, refM(tagJ, "tagauth/F", e, refTS(t3)))
			if !bytes.Equal(refM(beta, "tagauth/E", refID8(string(id)), refID8(string(did))), e) {
				return "rejected"
			}
		} else {
			beta = refXOR(f, refH(tagJ, refTS(t3)))
			if !bytes.Equal(refH(beta, refID8(string(id)), refID8(string(did))), e) {
				return "rejected"
			}
		}
		j.done = true
		return ""

	case "device/m5":
		tau := r.take(32)
		if !hard || !r.end() {
			return "malformed"
		}
		if j.done {
			return "replayed"
		}
		if j.now > c.num("t4")+refDT {
			return "rejected" // the pending login was dropped dT after m4
		}
		x := j.out["m4"][2:34]
		if !bytes.Equal(refM(j.out["sk"], "tagauth/confirm-user", e, x), tau) {
			return "rejected"
		}
		j.done = true
		return ""

	case "card/m4":
		x, gamma := r.take(32), r.take(32)
		var t3 uint64
		if hard {
			t3 = r.ts()
		}
		t4 := r.ts()
		var tau []byte
		if hard {
			tau = r.take(32)
		}
		if !r.end() {
			return "malformed"
		}
		if j.done {
			return "replayed"
		}
		if !refFreshDT(t4, j.now) || (hard && !refFreshDT(t3, t4)) {
			return "stale_timestamp"
		}
		tagI, ki := j.out["tag_i"], c.bytes("k_i", 32)
		if !hard {
			if !bytes.Equal(refH(tagI, refID8(string(did))), gamma) {
				return "rejected"
			}
			j.done = true
			return ""
		}
		if !bytes.Equal(refM(tagI, "tagauth/gamma", refID8(string(did)), e, refTS(t3)), gamma) {
			return "rejected"
		}
		kj := refXOR(refM(ki, "tagauth/X", e, refTS(t4)), x)
		sk := refM(cat(ki, kj), "tagauth/SK", e, x)
		if !bytes.Equal(refM(sk, "tagauth/confirm-device", e, x, refTS(t3), refTS(t4)), tau) {
			return "rejected"
		}
		j.done = true
		return ""
	}
	j.t.Fatalf("no party %s receives %s", j.party, j.step)
	return ""
}

// refRejectKeys are the keys of a rejection case, in the order of section
// 10.1.
var refRejectKeys = []string{"name", "base", "party", "step", "prior", "message", "now", "expect"}

// TestReferenceJudgesRejectVectors judges every rejection case with
// refJudge: the priors must be accepted and the message refused with the
// expected code. It also checks the file format of section 10.1 and that
// the cases cover what it lists.
func TestReferenceJudgesRejectVectors(t *testing.T) {
	codes := map[string]bool{"malformed": true, "unsupported_profile": true, "stale_timestamp": true,
		"replayed": true, "rejected": true, "busy": true, "internal": true}
	for _, profile := range []string{"classic", "hardened"} {
		t.Run(profile, func(t *testing.T) {
			var succ struct {
				Cases []map[string]json.RawMessage `json:"cases"`
			}
			b, err := os.ReadFile(filepath.Join("..", "testdata", "vectors", profile+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &succ); err != nil {
				t.Fatal(err)
			}
			b, err = os.ReadFile(filepath.Join("..", "testdata", "vectors", profile+"-reject.json"))
			if err != nil {
				t.Fatal(err)
			}
			var file struct {
				Profile string                       `json:"profile"`
				Cases   []map[string]json.RawMessage `json:"cases"`
			}
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&file); err != nil {
				t.Fatal(err)
			}
			if file.Profile != profile {
				t.Fatalf("profile %q, want %q", file.Profile, profile)
			}
			// cover[party/step] collects what section 10.1 asks each
			// receiver's cases to include.
			cover := map[string]map[string]bool{}
			for n, raw := range file.Cases {
				if len(raw) != len(refRejectKeys) {
					t.Fatalf("case %d: %d keys, want exactly %v", n, len(raw), refRejectKeys)
				}
				rc := refCase{t: t, name: fmt.Sprint(n), raw: raw}
				for _, k := range refRejectKeys {
					if !rc.has(k) {
						t.Fatalf("case %d: key %s missing", n, k)
					}
				}
				rc.name = rc.str("name")
				var prior []string
				if err := json.Unmarshal(raw["prior"], &prior); err != nil || prior == nil {
					t.Fatalf("case %s: prior must be an array of hex strings", rc.name)
				}
				base := int(rc.num("base"))
				if base >= len(succ.Cases) {
					t.Fatalf("case %s: base %d out of range", rc.name, base)
				}
				party, step, expect := rc.str("party"), rc.str("step"), rc.str("expect")
				if !codes[expect] {
					t.Fatalf("case %s: expect %q is no code of section 7", rc.name, expect)
				}
				if profile == "classic" && step == "m5" {
					t.Fatalf("case %s: classic has no m5", rc.name)
				}
				bc := refCase{t: t, name: fmt.Sprint("base ", base), raw: succ.Cases[base]}
				j := newRefJudge(t, profile, bc, party, step)
				j.now = rc.num("now")
				for i, p := range prior {
					pc := refCase{t: t, name: rc.name, raw: map[string]json.RawMessage{"p": json.RawMessage(strconv.Quote(p))}}
					if got := j.receive(pc.bytes("p", -1)); got != "" {
						t.Errorf("case %s: prior %d refused by the reference: %s", rc.name, i, got)
					}
				}
				msg := rc.bytes("message", -1)
				if got := j.receive(msg); got != expect {
					t.Errorf("case %s: reference says %q, file says %s", rc.name, got, expect)
				}

				key := party + "/" + step
				if cover[key] == nil {
					cover[key] = map[string]bool{}
				}
				cv := cover[key]
				var genuine []byte
				switch key {
				case "gateway/m2", "device/m1", "device/m3", "device/m5":
					genuine = j.out[step]
				case "card/m4":
					genuine = j.out["m4"]
				case "device/record":
					genuine = j.out["record"]
				}
				other := byte(0x03) ^ j.pbyte
				switch {
				case len(msg) == 0:
					cv["empty"] = true
				case len(prior) > 0 && expect == "replayed":
					cv["replay"] = true
				case msg[0] == other && genuine != nil && bytes.Equal(msg[1:], genuine[1:]):
					cv["other profile"] = true
				case msg[0] == other && genuine != nil && len(msg) < len(genuine):
					cv["other profile, truncated"] = true
				case genuine != nil && len(msg) < len(genuine) && bytes.HasPrefix(genuine, msg):
					cv["truncated"] = true
				case genuine != nil && len(msg) > len(genuine) && bytes.HasPrefix(msg, genuine):
					cv["extended"] = true
				case genuine != nil && bytes.Equal(msg, genuine) && (expect == "stale_timestamp" || step == "m5"):
					cv["dT + 1"] = true
				case genuine != nil && len(msg) == len(genuine) && expect != "malformed" && expect != "unsupported_profile":
					cv["flipped byte"] = true
				}
			}
			want := map[string][]string{
				"gateway/m2":    {"empty", "truncated", "extended", "other profile", "other profile, truncated", "dT + 1", "replay", "flipped byte"},
				"device/m1":     {"empty", "truncated", "extended", "other profile", "other profile, truncated", "dT + 1", "replay"},
				"device/m3":     {"empty", "truncated", "extended", "other profile", "other profile, truncated", "dT + 1", "replay", "flipped byte"},
				"card/m4":       {"empty", "truncated", "extended", "other profile", "other profile, truncated", "dT + 1", "replay", "flipped byte"},
				"device/record": {"empty", "truncated", "extended", "other profile", "other profile, truncated", "replay", "flipped byte"},
				"card/record":   {"empty", "replay"},
			}
			if profile == "hardened" {
				want["device/m5"] = []string{"empty", "truncated", "extended", "other profile", "other profile, truncated", "dT + 1", "replay", "flipped byte"}
			}
			for key, kinds := range want {
				for _, k := range kinds {
					if !cover[key][k] {
						t.Errorf("coverage: no %s case for %s", k, key)
					}
				}
			}
		})
	}
}
