/*
 * Replays testdata/vectors (spec sections 10 and 10.1) through the device
 * role: every success case of both profiles and every device rejection
 * case. Shared by the host runner and the emulated board.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "json.h"
#include "tagauth.h"
#include "vectors.h"

#define BIG 512

/* The vectors' clock and K_j: each party's now is the timestamp it writes
 * (section 10). */
typedef struct fake {
	uint64_t now;
	uint8_t kj[TA_SIZE];
} fake;

static uint64_t fake_now(void *ctx)
{
	return ((fake *)ctx)->now;
}

static int fake_random(void *ctx, uint8_t *out, size_t n)
{
	if (n != TA_SIZE) {
		return -1;
	}
	memcpy(out, ((fake *)ctx)->kj, n);
	return 0;
}

/* A success case, decoded. */
typedef struct vcase {
	char name[80];
	uint8_t profile;
	uint8_t did[TA_MAX_ID], tag_j[TA_SIZE], k_gtw_j[TA_SIZE], kj[TA_SIZE];
	uint8_t m1[BIG], m2[BIG], m3[BIG], m4[BIG], m5[BIG], rec[BIG], pt[BIG];
	uint8_t sk[TA_SIZE], k_ud[TA_SIZE], k_du[TA_SIZE], sid[TA_SID_SIZE];
	size_t did_n, m1_n, m2_n, m3_n, m4_n, m5_n, rec_n, pt_n;
	uint64_t t2, t4, kv_j;
} vcase;

/* Everything one device needs for one case: caller-provided storage. */
typedef struct rig {
	fake f;
	ta_port port;
	ta_replay_entry entries[8];
	ta_replay replay;
	ta_device dev;
	ta_login logins[4];
	ta_session sessions[2];
} rig;

static int decode_case(const json_obj *o, uint8_t profile, vcase *v)
{
	json_span s;
	size_t n;
	int bad = 0;
	memset(v, 0, sizeof *v);
	v->profile = profile;
	if (json_str(o, "name", &s) == 0) {
		n = s.n < sizeof v->name - 1 ? s.n : sizeof v->name - 1;
		memcpy(v->name, s.p, n);
	}
	bad |= json_str(o, "did_j", &s) || s.n > TA_MAX_ID;
	if (!bad) {
		memcpy(v->did, s.p, s.n);
		v->did_n = s.n;
	}
	bad |= json_hexf(o, "tag_j", v->tag_j, TA_SIZE, &n) || n != TA_SIZE;
	bad |= json_hexf(o, "k_j", v->kj, TA_SIZE, &n) || n != TA_SIZE;
	bad |= json_hexf(o, "m1", v->m1, BIG, &v->m1_n);
	bad |= json_hexf(o, "m2", v->m2, BIG, &v->m2_n);
	bad |= json_hexf(o, "m3", v->m3, BIG, &v->m3_n);
	bad |= json_hexf(o, "m4", v->m4, BIG, &v->m4_n);
	bad |= json_hexf(o, "record", v->rec, BIG, &v->rec_n);
	bad |= json_hexf(o, "plaintext", v->pt, BIG, &v->pt_n);
	bad |= json_hexf(o, "sk", v->sk, TA_SIZE, &n) || n != TA_SIZE;
	bad |= json_hexf(o, "k_ud", v->k_ud, TA_SIZE, &n) || n != TA_SIZE;
	bad |= json_hexf(o, "k_du", v->k_du, TA_SIZE, &n) || n != TA_SIZE;
	bad |= json_hexf(o, "sid", v->sid, TA_SID_SIZE, &n) || n != TA_SID_SIZE;
	bad |= json_u64(o, "t2", &v->t2) || json_u64(o, "t4", &v->t4);
	if (profile == TA_HARDENED) {
		bad |= json_hexf(o, "m5", v->m5, BIG, &v->m5_n);
		bad |= json_hexf(o, "k_gtw_j", v->k_gtw_j, TA_SIZE, &n) || n != TA_SIZE;
		bad |= json_u64(o, "kv_j", &v->kv_j) || v->kv_j == 0 || v->kv_j > 255;
	}
	return bad ? -1 : 0;
}

static int rig_init(rig *r, const ta_crypto *c, const vcase *v)
{
	ta_credential cred;
	memset(r, 0, sizeof *r);
	memcpy(r->f.kj, v->kj, TA_SIZE);
	r->port.now_ms = fake_now;
	r->port.random = fake_random;
	r->port.ctx = &r->f;
	ta_replay_init(&r->replay, r->entries, sizeof r->entries / sizeof r->entries[0]);
	memset(&cred, 0, sizeof cred);
	cred.profile = v->profile;
	cred.kv = (uint8_t)v->kv_j;
	cred.did_len = (uint8_t)v->did_n;
	memcpy(cred.did, v->did, v->did_n);
	memcpy(cred.tag, v->tag_j, TA_SIZE);
	return ta_device_init(&r->dev, c, &r->port, &cred, &r->replay);
}

/* The steps of the login up to the given step, as the vectors define them:
 * m1 at t2, m3 and m5 at t4. Returns 0 when every step succeeded. */
enum { UPTO_NONE, UPTO_M1, UPTO_M3, UPTO_SESSION };

static int rig_login(rig *r, const vcase *v, int upto)
{
	uint8_t out[BIG], payload[TA_SID_SIZE + BIG];
	size_t n;
	if (upto >= UPTO_M1) {
		r->f.now = v->t2;
		if (ta_device_start(&r->dev, &r->logins[0], v->m1, v->m1_n, out, sizeof out, &n) !=
		    TA_OK) {
			return -1;
		}
	}
	if (upto >= UPTO_M3) {
		r->f.now = v->t4;
		if (ta_device_respond(&r->dev, &r->logins[0], v->m3, v->m3_n, out, sizeof out, &n,
		                      &r->sessions[0]) != TA_OK) {
			return -1;
		}
	}
	if (upto >= UPTO_SESSION && v->profile == TA_HARDENED) {
		memcpy(payload, v->sid, TA_SID_SIZE);
		memcpy(payload + TA_SID_SIZE, v->m5, v->m5_n);
		if (ta_device_confirm(&r->dev, r->logins, 1, payload, TA_SID_SIZE + v->m5_n,
		                      &r->sessions[0], NULL) != TA_OK) {
			return -1;
		}
	}
	return 0;
}

static void success_case(const ta_crypto *c, const vcase *v)
{
	static rig r;
	uint8_t out[BIG], pt[BIG], payload[TA_SID_SIZE + BIG], nonce[TA_AEAD_NONCE], sid[8];
	size_t n, which = 99;
	int rc;
	char name[160];
	snprintf(name, sizeof name, "%s/success/%s/%s", v->profile == TA_CLASSIC ? "classic" : "hardened",
	         v->name, c->name);
	t_begin(name);
	t_expect_rc(rig_init(&r, c, v), TA_OK, "device init");

	r.f.now = v->t2;
	rc = ta_device_start(&r.dev, &r.logins[0], v->m1, v->m1_n, out, sizeof out, &n);
	t_expect_rc(rc, TA_OK, "m1");
	t_expect_eq(out, rc == TA_OK ? n : 0, v->m2, v->m2_n, "m2 differs from the vector");

	r.f.now = v->t4;
	rc = ta_device_respond(&r.dev, &r.logins[0], v->m3, v->m3_n, out, sizeof out, &n,
	                       &r.sessions[0]);
	t_expect_rc(rc, TA_OK, "m3");
	t_expect_eq(out, rc == TA_OK ? n : 0, v->m4, v->m4_n, "m4 differs from the vector");

	if (v->profile == TA_HARDENED) {
		t_expect(!r.sessions[0].open, "hardened session open before m5");
		memcpy(payload, v->sid, TA_SID_SIZE);
		memcpy(payload + TA_SID_SIZE, v->m5, v->m5_n);
		/* the pending login is found by sid, wherever it sits */
		r.logins[2] = r.logins[0];
		memset(&r.logins[0], 0, sizeof r.logins[0]);
		rc = ta_device_confirm(&r.dev, r.logins, 4, payload, TA_SID_SIZE + v->m5_n,
		                       &r.sessions[0], &which);
		t_expect_rc(rc, TA_OK, "confirm");
		t_expect(which == 2, "confirm found the wrong login");
	}
	t_expect(r.sessions[0].open, "session established");
	t_expect_eq(r.sessions[0].k_recv, TA_SIZE, v->k_ud, TA_SIZE, "k_ud");
	t_expect_eq(r.sessions[0].k_send, TA_SIZE, v->k_du, TA_SIZE, "k_du");
	t_expect_eq(r.sessions[0].sid, TA_SID_SIZE, v->sid, TA_SID_SIZE, "sid");
	t_expect(ta_sid(c, v->m1 + v->m1_n - 8 - 2 * TA_SIZE, sid) == 0 &&
	             memcmp(sid, v->sid, TA_SID_SIZE) == 0,
	         "ta_sid of E_i");

	/* The card's first record, found by sid among two sessions. */
	r.sessions[1] = r.sessions[0];
	memset(&r.sessions[0], 0, sizeof r.sessions[0]);
	rc = ta_device_open(&r.dev, r.sessions, 2, v->rec, v->rec_n, pt, sizeof pt, &n, &which);
	t_expect_rc(rc, TA_OK, "open record");
	t_expect(which == 1, "open found the wrong session");
	t_expect_eq(pt, rc == TA_OK ? n : 0, v->pt, v->pt_n, "record plaintext");

	/* The answer: a device->user record, seq 1, that k_du opens. */
	rc = ta_session_seal(&r.dev, &r.sessions[1], v->pt, v->pt_n, out, sizeof out, &n);
	t_expect_rc(rc, TA_OK, "seal");
	t_expect(rc == TA_OK && n == v->pt_n + TA_RECORD_OVERHEAD && out[0] == v->profile &&
	             out[1] == TA_RECORD && memcmp(out + 2, v->sid, TA_SID_SIZE) == 0 &&
	             out[17] == 1 && out[16] == 0,
	         "sealed header");
	memset(nonce, 0, sizeof nonce);
	nonce[11] = 1;
	t_expect(rc == TA_OK && c->aead_open(v->k_du, nonce, out, TA_RECORD_HEADER,
	                                     out + TA_RECORD_HEADER, v->pt_n,
	                                     out + n - TA_AEAD_TAG, pt) == 0 &&
	             memcmp(pt, v->pt, v->pt_n) == 0,
	         "k_du opens the sealed answer");

	/* Tag_j as the gateway provisions it (section 4), from K_GTW[kv_j]. */
	if (v->profile == TA_HARDENED) {
		uint8_t m[1 + 18 + 1 + TA_MAX_ID], tag[TA_SIZE];
		m[0] = 18;
		memcpy(m + 1, "tagauth/device-tag", 18);
		m[19] = (uint8_t)v->did_n;
		memcpy(m + 20, v->did, v->did_n);
		t_expect(ta_hmac(c, v->k_gtw_j, TA_SIZE, m, 20 + v->did_n, tag) == 0 &&
		             memcmp(tag, v->tag_j, TA_SIZE) == 0,
		         "Tag_j = M(K_GTW, device-tag, id8(DID_j))");
	}
	ta_device_wipe(&r.dev);
	t_end();
}

static int code_of(const json_span *s)
{
	static const char *names[] = {"", "malformed", "unsupported_profile", "stale_timestamp",
	                              "replayed", "rejected", "busy", "internal"};
	int i;
	for (i = 1; i < 8; i++) {
		if (strlen(names[i]) == s->n && memcmp(names[i], s->p, s->n) == 0) {
			return i;
		}
	}
	return -100;
}

static int span_is(const json_span *s, const char *lit)
{
	return strlen(lit) == s->n && memcmp(lit, s->p, s->n) == 0;
}

/* Delivers msg at step to the rig, as the device would at its endpoint. */
static int deliver(rig *r, const vcase *v, const json_span *step, const uint8_t *msg, size_t n,
                   int *slot)
{
	static uint8_t out[BIG + 64], payload[TA_SID_SIZE + BIG];
	size_t outn;
	if (span_is(step, "m1")) {
		/* each m1 is a new login */
		int i = (*slot)++;
		return i < 4 ? ta_device_start(&r->dev, &r->logins[i], msg, n, out, sizeof out, &outn)
		             : TA_E_STATE;
	}
	if (span_is(step, "m3")) {
		return ta_device_respond(&r->dev, &r->logins[0], msg, n, out, sizeof out, &outn,
		                         &r->sessions[0]);
	}
	if (span_is(step, "m5")) {
		/* The vectors give m5 alone; the confirm request puts sid first. */
		memcpy(payload, v->sid, TA_SID_SIZE);
		memcpy(payload + TA_SID_SIZE, msg, n);
		return ta_device_confirm(&r->dev, r->logins, 4, payload, TA_SID_SIZE + n,
		                         &r->sessions[0], NULL);
	}
	if (span_is(step, "record")) {
		return ta_device_open(&r->dev, r->sessions, 2, msg, n, out, sizeof out, &outn, NULL);
	}
	return TA_E_ARG;
}

static void reject_case(const ta_crypto *c, const json_obj *o, const vcase *v, uint8_t profile)
{
	static rig r;
	static uint8_t msg[BIG];
	json_span name, step, party, expect, s;
	const json_field *prior;
	size_t n, pos = 0;
	uint64_t now;
	int upto, rc, want, slot = 0, got;
	char title[200];
	if (json_str(o, "name", &name) || json_str(o, "step", &step) ||
	    json_str(o, "party", &party) || json_str(o, "expect", &expect) ||
	    json_u64(o, "now", &now) || (prior = json_get(o, "prior")) == NULL ||
	    prior->kind != 'a') {
		t_begin("reject/unreadable case");
		t_expect(0, "case lacks a field of section 10.1");
		t_end();
		return;
	}
	if (!span_is(&party, "device")) {
		t_skipped++;
		return;
	}
	snprintf(title, sizeof title, "%s/reject/%.*s/%s", profile == TA_CLASSIC ? "classic" : "hardened",
	         (int)name.n, name.p, c->name);
	t_begin(title);
	want = code_of(&expect);
	t_expect(want > 0, "unknown expect name");
	upto = span_is(&step, "m1") ? UPTO_NONE
	       : span_is(&step, "m3") ? UPTO_M1
	       : span_is(&step, "m5") ? UPTO_M3
	                              : UPTO_SESSION;
	t_expect_rc(rig_init(&r, c, v), TA_OK, "device init");
	t_expect(rig_login(&r, v, upto) == 0, "setting up the base login");
	if (upto >= UPTO_M1) {
		slot = 1;
	}
	r.f.now = now;
	while ((rc = json_next_string(&prior->val, &pos, &s)) == 1) {
		t_expect(json_hex(&s, msg, sizeof msg, &n) == 0, "prior is not hex");
		t_expect_rc(deliver(&r, v, &step, msg, n, &slot), TA_OK, "prior message accepted");
	}
	t_expect(rc == 0, "prior is not an array of strings");
	t_expect(json_str(o, "message", &s) == 0 && json_hex(&s, msg, sizeof msg, &n) == 0,
	         "message is not hex");
	got = deliver(&r, v, &step, msg, n, &slot);
	t_expect_rc(got, want, "refusal");

	/* A refused message changes nothing: with no prior, the base's own
	 * message at its own time still goes through afterwards (unless the
	 * case is about the login having been dropped). */
	if (json_next_string(&prior->val, &(size_t){0}, &s) == 0 && got == want &&
	    !(span_is(&step, "m5") && now > v->t4 + 10000)) {
		const uint8_t *ok = span_is(&step, "m1")   ? v->m1
		                    : span_is(&step, "m3") ? v->m3
		                    : span_is(&step, "m5") ? v->m5
		                                           : v->rec;
		size_t ok_n = span_is(&step, "m1")   ? v->m1_n
		              : span_is(&step, "m3") ? v->m3_n
		              : span_is(&step, "m5") ? v->m5_n
		                                     : v->rec_n;
		r.f.now = span_is(&step, "m1") ? v->t2 : v->t4;
		t_expect_rc(deliver(&r, v, &step, ok, ok_n, &slot), TA_OK,
		            "the genuine message after the refusal");
	}
	ta_device_wipe(&r.dev);
	t_end();
}

/* Both files are loaded into caller buffers (large static arrays on the
 * board too: 256 KB each). */
int run_vectors(const ta_crypto *c, uint8_t profile, const char *success_path,
                const char *reject_path, char *sbuf, size_t scap, char *rbuf, size_t rcap)
{
	static vcase v;
	static json_obj o;
	json_span cases, rcases;
	size_t slen, rlen, pos = 0, rpos = 0;
	int rc;
	if (t_load(success_path, sbuf, scap, &slen) != 0 ||
	    json_top_array(sbuf, slen, "cases", &cases) != 0) {
		printf("FAIL %s: unreadable\n", success_path);
		t_failed++;
		return -1;
	}
	while ((rc = json_next_object(&cases, &pos, &o)) == 1) {
		if (decode_case(&o, profile, &v) != 0) {
			t_begin(success_path);
			t_expect(0, "a success case lacks a field of section 10");
			t_end();
			continue;
		}
		success_case(c, &v);
	}
	if (rc != 0) {
		printf("FAIL %s: syntax\n", success_path);
		t_failed++;
	}
	if (reject_path == NULL) {
		return 0;
	}
	if (t_load(reject_path, rbuf, rcap, &rlen) != 0 ||
	    json_top_array(rbuf, rlen, "cases", &rcases) != 0) {
		printf("FAIL %s: unreadable\n", reject_path);
		t_failed++;
		return -1;
	}
	while ((rc = json_next_object(&rcases, &rpos, &o)) == 1) {
		static json_obj so;
		uint64_t base, i;
		size_t spos = 0;
		int found = 0;
		if (json_u64(&o, "base", &base) != 0) {
			base = (uint64_t)-1;
		}
		for (i = 0; json_next_object(&cases, &spos, &so) == 1; i++) {
			if (i == base) {
				found = decode_case(&so, profile, &v) == 0;
				break;
			}
		}
		if (!found) {
			t_begin(reject_path);
			t_expect(0, "a rejection case names no success case as its base");
			t_end();
			continue;
		}
		reject_case(c, &o, &v, profile);
	}
	if (rc != 0) {
		printf("FAIL %s: syntax\n", reject_path);
		t_failed++;
	}
	return 0;
}

/* ---- properties no vector file states ---- */

static void unit_replay_cache(void)
{
	ta_replay_entry e[2];
	ta_replay r;
	uint8_t a[16] = {1}, b[16] = {2}, c[16] = {3};
	t_begin("unit/replay cache: insert-if-absent, busy when full, kept until now > T1 + dT");
	ta_replay_init(&r, e, 2);
	t_expect_rc(ta_replay_insert(&r, a, 1000, 500), TA_OK, "first a");
	t_expect_rc(ta_replay_insert(&r, a, 1000, 1000), TA_E_REPLAYED, "a again at its expiry");
	t_expect_rc(ta_replay_insert(&r, b, 1200, 600), TA_OK, "b");
	t_expect_rc(ta_replay_insert(&r, c, 1300, 700), TA_E_BUSY, "c with the cache full");
	t_expect_rc(ta_replay_insert(&r, c, 1300, 1001), TA_OK, "c once a expired");
	t_expect_rc(ta_replay_insert(&r, b, 1200, 1100), TA_E_REPLAYED, "b still live");
	t_end();
}

static void unit_error_messages(void)
{
	uint8_t out[3];
	const uint8_t classic[] = {0x01, 0x01}, other[] = {0x07, 0x01};
	const uint8_t short_confirm[8] = {0x02, 0x05};
	uint8_t confirm[9] = {0};
	t_begin("unit/error messages carry the request's profile byte or 0x00 (sections 7, 11)");
	ta_error_message(out, NULL, 0, TA_E_MALFORMED);
	t_expect(out[0] == 0 && out[1] == 0x7f && out[2] == 0x01, "empty");
	ta_error_message(out, classic, 2, TA_E_REJECTED);
	t_expect(out[0] == 1 && out[2] == 0x05, "classic");
	ta_error_message(out, other, 2, TA_E_UNSUPPORTED_PROFILE);
	t_expect(out[0] == 0 && out[2] == 0x02, "0x07");
	ta_error_message(out, classic, 2, TA_E_BUFFER);
	t_expect(out[2] == 0x07, "local errors are internal");
	ta_confirm_error_message(out, short_confirm, 8, TA_E_MALFORMED);
	t_expect(out[0] == 0, "confirm under 9 bytes");
	confirm[8] = 0x02;
	ta_confirm_error_message(out, confirm, 9, TA_E_MALFORMED);
	t_expect(out[0] == 2, "confirm: the m5's byte, not the sid's");
	t_end();
}

static void unit_identities(void)
{
	t_begin("unit/identities: 1-64 bytes of UTF-8 as Go's utf8.Valid, no NUL");
	t_expect(ta_valid_identity((const uint8_t *)"a", 1), "a");
	t_expect(ta_valid_identity((const uint8_t *)"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x94\x91", 9), "e-acute, CJK, emoji");
	t_expect(!ta_valid_identity((const uint8_t *)"", 0), "empty");
	t_expect(!ta_valid_identity((const uint8_t *)"a\0b", 3), "NUL");
	t_expect(!ta_valid_identity((const uint8_t *)"\xc0\x80", 2), "overlong NUL");
	t_expect(!ta_valid_identity((const uint8_t *)"\xe0\x80\xaf", 3), "overlong 3-byte");
	t_expect(!ta_valid_identity((const uint8_t *)"\xed\xa0\x80", 3), "surrogate");
	t_expect(!ta_valid_identity((const uint8_t *)"\xf4\x90\x80\x80", 4), "above U+10FFFF");
	t_expect(!ta_valid_identity((const uint8_t *)"\xe6\x97", 2), "truncated sequence");
	t_expect(!ta_valid_identity((const uint8_t *)"\x80", 1), "lone continuation");
	t_end();
}

static int all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	while (n--) {
		acc |= *p++;
	}
	return acc == 0;
}

/* On the first hardened success case: misuse, short buffers, wiping,
 * a wrong tau_i, record sequence and expiry. */
static void unit_device(const ta_crypto *c, const vcase *v)
{
	static rig r;
	uint8_t out[BIG], payload[TA_SID_SIZE + BIG];
	size_t n;
	t_begin("unit/device: short buffers and misuse change nothing; secrets wiped");
	t_expect_rc(rig_init(&r, c, v), TA_OK, "init");
	r.f.now = v->t2;
	t_expect_rc(ta_device_respond(&r.dev, &r.logins[0], v->m3, v->m3_n, out, sizeof out, &n,
	                              NULL),
	            TA_E_STATE, "m3 before m1");
	t_expect_rc(ta_device_start(&r.dev, &r.logins[0], v->m1, v->m1_n, out, v->m2_n - 1, &n),
	            TA_E_BUFFER, "m2 buffer one byte short");
	t_expect(r.logins[0].state == TA_LOGIN_FREE, "login untouched");
	t_expect_rc(ta_device_start(&r.dev, &r.logins[0], v->m1, v->m1_n, out, v->m2_n, &n), TA_OK,
	            "the same m1 with room: not recorded as seen before");
	t_expect_rc(ta_device_start(&r.dev, &r.logins[0], v->m1, v->m1_n, out, sizeof out, &n),
	            TA_E_STATE, "a busy login slot");
	r.f.now = v->t4;
	t_expect_rc(ta_device_respond(&r.dev, &r.logins[0], v->m3, v->m3_n, out, v->m4_n - 1, &n,
	                              NULL),
	            TA_E_BUFFER, "m4 buffer one byte short");
	t_expect(r.logins[0].state == TA_LOGIN_WAIT_M3, "still waiting for m3");
	t_expect_rc(ta_device_respond(&r.dev, &r.logins[0], v->m3, v->m3_n, out, v->m4_n, &n, NULL),
	            TA_OK, "m3 with room");
	t_expect(all_zero(r.logins[0].theta, TA_SIZE), "theta_i wiped after m4");
	memcpy(payload, v->sid, TA_SID_SIZE);
	memcpy(payload + TA_SID_SIZE, v->m5, v->m5_n);
	payload[TA_SID_SIZE + 5] ^= 0x40;
	t_expect_rc(ta_device_confirm(&r.dev, r.logins, 1, payload, TA_SID_SIZE + v->m5_n,
	                              &r.sessions[0], NULL),
	            TA_E_REJECTED, "wrong tau_i");
	payload[TA_SID_SIZE + 5] ^= 0x40;
	t_expect_rc(ta_device_confirm(&r.dev, r.logins, 1, payload, TA_SID_SIZE + v->m5_n,
	                              &r.sessions[0], NULL),
	            TA_OK, "right tau_i after a wrong one");
	t_expect(all_zero(r.logins[0].sk, TA_SIZE) && all_zero(r.logins[0].tau_i, TA_SIZE),
	         "SK_ij and tau_i wiped from the login");
	t_expect_rc(ta_device_open(&r.dev, r.sessions, 1, v->rec, v->rec_n, out, v->pt_n - 1, &n,
	                           NULL),
	            TA_E_BUFFER, "plaintext buffer one byte short");
	t_expect_rc(ta_device_open(&r.dev, r.sessions, 1, v->rec, v->rec_n, out, v->pt_n, &n, NULL),
	            TA_OK, "record with room");
	t_expect_rc(ta_session_seal(&r.dev, &r.sessions[0], v->pt, v->pt_n, out,
	                            v->pt_n + TA_RECORD_OVERHEAD - 1, &n),
	            TA_E_BUFFER, "record buffer one byte short");
	t_expect(r.sessions[0].send_seq == 0, "no sequence number spent");
	r.f.now = v->t4 + 5 * 60 * 1000 + 1;
	t_expect_rc(ta_session_seal(&r.dev, &r.sessions[0], v->pt, v->pt_n, out, sizeof out, &n),
	            TA_E_REJECTED, "idle past 5 minutes");
	t_expect(!r.sessions[0].open && all_zero(r.sessions[0].k_send, TA_SIZE),
	         "expired session wiped");
	ta_device_wipe(&r.dev);
	t_expect(all_zero((const uint8_t *)&r.dev, sizeof r.dev), "device wiped");
	t_end();
}

void run_unit_tests(const ta_crypto *c, const char *hardened_path, char *buf, size_t cap)
{
	static vcase v;
	static json_obj o;
	json_span cases;
	size_t len, pos = 0;
	unit_replay_cache();
	unit_error_messages();
	unit_identities();
	if (t_load(hardened_path, buf, cap, &len) != 0 ||
	    json_top_array(buf, len, "cases", &cases) != 0 ||
	    json_next_object(&cases, &pos, &o) != 1 || decode_case(&o, TA_HARDENED, &v) != 0) {
		t_begin("unit/device");
		t_expect(0, "cannot read the first hardened case");
		t_end();
		return;
	}
	unit_device(c, &v);
}
