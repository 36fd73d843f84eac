/*
 * The device role of tagauth (spec version 1.1, sections 5, 6, 7, 9, 11).
 * Mirrors protocol/device.go and protocol/channel.go of the Go
 * implementation; the order of the checks is that of spec section 7:
 * empty -> malformed, foreign profile byte -> unsupported_profile, type and
 * layout -> malformed, then the step's own checks, freshness first.
 */
#include <string.h>

#include "tagauth.h"

#define DEFAULT_WINDOW_MS 10000u
#define DEFAULT_IDLE_MS (5u * 60u * 1000u)
#define DEFAULT_LIFE_MS (60u * 60u * 1000u)

#define M3_SIZE (2 + 2 * TA_SIZE + 8)
#define M4_CLASSIC_SIZE (2 + 2 * TA_SIZE + 8)
#define M4_HARDENED_SIZE (2 + 3 * TA_SIZE + 16)
#define M5_SIZE (2 + TA_SIZE)
#define RECORD_MIN (TA_RECORD_HEADER + TA_AEAD_TAG)

/* The device's replay-cache domain byte, as protocol/stores.go. */
#define REPLAY_DEVICE 0x03

static const char L_I[] = "tagauth/I";
static const char L_F[] = "tagauth/F";
static const char L_E[] = "tagauth/E";
static const char L_X[] = "tagauth/X";
static const char L_SK[] = "tagauth/SK";
static const char L_CONFIRM_DEVICE[] = "tagauth/confirm-device";
static const char L_CONFIRM_USER[] = "tagauth/confirm-user";
static const char L_SID[] = "tagauth/sid";
static const char INFO_UD[] = "tagauth/channel user->device";
static const char INFO_DU[] = "tagauth/channel device->user";

/* ---- encodings (section 2) ---- */

/* A hash or MAC input, built on the stack. The largest is the classic
 * E_i: 32 + 2 * (1 + 64) bytes. */
typedef struct msg {
	uint8_t b[192];
	size_t n;
	int overflow;
} msg;

static void put(msg *m, const uint8_t *p, size_t n)
{
	if (m->overflow || n > sizeof m->b - m->n) {
		m->overflow = 1;
		return;
	}
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void put_u8(msg *m, uint8_t v)
{
	put(m, &v, 1);
}

static void put_lbl(msg *m, const char *s)
{
	size_t n = strlen(s);
	put_u8(m, (uint8_t)n);
	put(m, (const uint8_t *)s, n);
}

static void put_id8(msg *m, const uint8_t *id, size_t n)
{
	put_u8(m, (uint8_t)n);
	put(m, id, n);
}

static void enc_ts(uint8_t out[8], uint64_t t)
{
	int i;
	for (i = 0; i < 8; i++) {
		out[i] = (uint8_t)(t >> (56 - 8 * i));
	}
}

static void put_ts(msg *m, uint64_t t)
{
	uint8_t b[8];
	enc_ts(b, t);
	put(m, b, 8);
}

static uint64_t get_ts(const uint8_t *p)
{
	uint64_t t = 0;
	int i;
	for (i = 0; i < 8; i++) {
		t = t << 8 | p[i];
	}
	return t;
}

static void xor32(uint8_t out[TA_SIZE], const uint8_t *a, const uint8_t *b)
{
	int i;
	for (i = 0; i < TA_SIZE; i++) {
		out[i] = a[i] ^ b[i];
	}
}

/* h(m) for classic, SHA-256 of the built message. hash_msg and mac_msg
 * wipe m, which leaves it empty and ready for the next input. */
static int hash_msg(const ta_device *d, msg *m, uint8_t out[TA_SIZE])
{
	int rc = m->overflow || ta_sha256(d->crypto, m->b, m->n, out);
	ta_wipe(m, sizeof *m);
	return rc;
}

/* M(k, s, x) = HMAC-SHA256(k, lbl(s) || x): m already holds lbl(s) || x. */
static int mac_msg(const ta_device *d, const uint8_t *key, size_t key_len, msg *m,
                   uint8_t out[TA_SIZE])
{
	int rc = m->overflow || ta_hmac(d->crypto, key, key_len, m->b, m->n, out);
	ta_wipe(m, sizeof *m);
	return rc;
}

/* M(Tag_j, s, x) from the cached key states. */
static int mac_tag(const ta_device *d, msg *m, uint8_t out[TA_SIZE])
{
	int rc = m->overflow || ta_hmac_keyed(d->crypto, &d->tag_key, m->b, m->n, out);
	ta_wipe(m, sizeof *m);
	return rc;
}

/* Go's utf8.Valid: shortest form only, no surrogates, at most U+10FFFF. */
static int valid_utf8(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = p[i];
		size_t k, need;
		uint8_t lo = 0x80, hi = 0xbf;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			if (c == 0xe0) {
				lo = 0xa0;
			} else if (c == 0xed) {
				hi = 0x9f;
			}
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			if (c == 0xf0) {
				lo = 0x90;
			} else if (c == 0xf4) {
				hi = 0x8f;
			}
		} else {
			return 0;
		}
		if (n - i - 1 < need) {
			return 0;
		}
		for (k = 1; k <= need; k++) {
			uint8_t x = p[i + k];
			if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xbf)) {
				return 0;
			}
		}
		i += need + 1;
	}
	return 1;
}

int ta_valid_identity(const uint8_t *id, size_t n)
{
	if (id == NULL || n < 1 || n > TA_MAX_ID || memchr(id, 0, n) != NULL) {
		return 0;
	}
	return valid_utf8(id, n);
}

/* |t - now| <= w without overflow. */
static int fresh(uint64_t t, uint64_t now, uint64_t w)
{
	return t >= now ? t - now <= w : now - t <= w;
}

static uint64_t now_ms(const ta_device *d)
{
	return d->port.now_ms(d->port.ctx);
}

/* ---- bounds-checked reading ---- */

typedef struct rd {
	const uint8_t *p;
	size_t n;
	int ok;
} rd;

static const uint8_t *take(rd *r, size_t k)
{
	const uint8_t *q;
	if (!r->ok || r->n < k) {
		r->ok = 0;
		return NULL;
	}
	q = r->p;
	r->p += k;
	r->n -= k;
	return q;
}

static uint8_t take_u8(rd *r)
{
	const uint8_t *q = take(r, 1);
	return q ? *q : 0;
}

static uint64_t take_ts(rd *r)
{
	const uint8_t *q = take(r, 8);
	return q ? get_ts(q) : 0;
}

/* The first checks of every receiver (section 7). */
static int head(const uint8_t *b, size_t n, uint8_t profile, uint8_t type)
{
	if (b == NULL || n == 0) {
		return TA_E_MALFORMED;
	}
	if (b[0] != profile) {
		return TA_E_UNSUPPORTED_PROFILE;
	}
	if (n < 2 || b[1] != type) {
		return TA_E_MALFORMED;
	}
	return TA_OK;
}

typedef struct m1 {
	const uint8_t *id, *nonce, *e, *theta;
	uint8_t id_len, kv;
	uint64_t t1;
} m1_t;

static int parse_m1(const uint8_t *b, size_t n, uint8_t profile, m1_t *m)
{
	rd r;
	int rc = head(b, n, profile, TA_M1);
	if (rc != TA_OK) {
		return rc;
	}
	r.p = b + 2, r.n = n - 2, r.ok = 1;
	m->id_len = take_u8(&r);
	m->id = take(&r, m->id_len);
	if (!r.ok || !ta_valid_identity(m->id, m->id_len)) {
		return TA_E_MALFORMED;
	}
	m->kv = 0;
	m->nonce = NULL;
	if (profile == TA_HARDENED) {
		m->kv = take_u8(&r);
		m->nonce = take(&r, TA_NONCE_SIZE);
		if (m->kv == 0) {
			r.ok = 0;
		}
	}
	m->e = take(&r, TA_SIZE);
	m->theta = take(&r, TA_SIZE);
	m->t1 = take_ts(&r);
	if (!r.ok || r.n != 0) {
		return TA_E_MALFORMED;
	}
	return TA_OK;
}

/* ---- replay cache ---- */

void ta_replay_init(ta_replay *r, ta_replay_entry *storage, size_t n)
{
	r->entries = storage;
	r->n = n;
	memset(storage, 0, n * sizeof *storage);
}

int ta_replay_insert(ta_replay *r, const uint8_t key[16], uint64_t expires, uint64_t now)
{
	size_t i, slot = r->n;
	for (i = 0; i < r->n; i++) {
		ta_replay_entry *e = &r->entries[i];
		/* An entry lives until now > T1 + dT (section 7). */
		int live = e->expires != 0 && now <= e->expires;
		if (live && memcmp(e->key, key, 16) == 0) {
			return TA_E_REPLAYED;
		}
		if (!live && slot == r->n) {
			slot = i;
		}
	}
	if (slot == r->n) {
		return TA_E_BUSY;
	}
	memcpy(r->entries[slot].key, key, 16);
	r->entries[slot].expires = expires ? expires : 1;
	return TA_OK;
}

/* ---- device ---- */

int ta_device_init(ta_device *d, const ta_crypto *c, const ta_port *port,
                   const ta_credential *cred, ta_replay *replay)
{
	if (d == NULL) {
		return TA_E_ARG;
	}
	memset(d, 0, sizeof *d);
	if (c == NULL || port == NULL || port->now_ms == NULL || port->random == NULL ||
	    cred == NULL || replay == NULL || (replay->n > 0 && replay->entries == NULL) ||
	    c->state_size > TA_HASH_STATE_MAX) {
		return TA_E_ARG;
	}
	if ((cred->profile != TA_CLASSIC && cred->profile != TA_HARDENED) ||
	    !ta_valid_identity(cred->did, cred->did_len) ||
	    (cred->profile == TA_HARDENED && cred->kv == 0)) {
		return TA_E_ARG;
	}
	d->crypto = c;
	d->port = *port;
	d->replay = replay;
	d->window_ms = DEFAULT_WINDOW_MS;
	d->session_idle_ms = DEFAULT_IDLE_MS;
	d->session_life_ms = DEFAULT_LIFE_MS;
	d->profile = cred->profile;
	d->kv = cred->profile == TA_HARDENED ? cred->kv : 0;
	d->did_len = cred->did_len;
	memcpy(d->did, cred->did, cred->did_len);
	memcpy(d->tag, cred->tag, TA_SIZE);
	if (ta_hmac_setkey(c, &d->tag_key, d->tag, TA_SIZE) != 0) {
		ta_device_wipe(d);
		return TA_E_INTERNAL;
	}
	d->ready = 1;
	return TA_OK;
}

void ta_device_wipe(ta_device *d)
{
	if (d != NULL) {
		ta_wipe(d, sizeof *d);
	}
}

void ta_login_wipe(ta_login *l)
{
	if (l != NULL) {
		ta_wipe(l, sizeof *l);
	}
}

void ta_session_wipe(ta_session *s)
{
	if (s != NULL) {
		ta_wipe(s, sizeof *s);
	}
}

int ta_sid(const ta_crypto *c, const uint8_t e[TA_SIZE], uint8_t sid[TA_SID_SIZE])
{
	msg m;
	uint8_t h[TA_SIZE];
	int rc;
	m.n = 0, m.overflow = 0;
	put_lbl(&m, L_SID);
	put(&m, e, TA_SIZE);
	rc = ta_sha256(c, m.b, m.n, h);
	memcpy(sid, h, TA_SID_SIZE);
	return rc;
}

int ta_device_start(ta_device *d, ta_login *l, const uint8_t *m1, size_t n, uint8_t *m2,
                    size_t cap, size_t *m2_len)
{
	m1_t m;
	msg hm;
	uint8_t key[TA_SIZE], ij[TA_SIZE];
	uint64_t now, w;
	size_t need, o = 0;
	int rc;
	if (d == NULL || !d->ready || l == NULL || l->state != TA_LOGIN_FREE || m2 == NULL ||
	    m2_len == NULL) {
		return TA_E_STATE;
	}
	rc = parse_m1(m1, n, d->profile, &m);
	if (rc != TA_OK) {
		return rc;
	}
	need = 2 + 1 + (size_t)m.id_len + TA_SIZE + 1 + d->did_len + TA_SIZE + 16;
	if (d->profile == TA_HARDENED) {
		need += 1 + TA_NONCE_SIZE + 1;
	}
	if (cap < need) {
		return TA_E_BUFFER;
	}
	now = now_ms(d);
	w = d->window_ms;
	if (!fresh(m.t1, now, w)) {
		return TA_E_STALE_TIMESTAMP;
	}

	/* I_j first, so that a backend failure records nothing. */
	hm.n = 0, hm.overflow = 0;
	if (d->profile == TA_CLASSIC) {
		put(&hm, d->tag, TA_SIZE); /* I_j = h(Tag_j || E_i) */
		put(&hm, m.e, TA_SIZE);
		rc = hash_msg(d, &hm, ij);
	} else { /* I_j = M(Tag_j, "tagauth/I", E_i || id8(DID_j) || ts(T2)) */
		put_lbl(&hm, L_I);
		put(&hm, m.e, TA_SIZE);
		put_id8(&hm, d->did, d->did_len);
		put_ts(&hm, now);
		rc = mac_tag(d, &hm, ij);
	}
	if (rc != 0) {
		return TA_E_INTERNAL;
	}

	/* The replay cache holds a digest of (ID_i, E_i): 16 bytes, not 97. */
	hm.n = 0, hm.overflow = 0;
	put_u8(&hm, REPLAY_DEVICE);
	put_id8(&hm, m.id, m.id_len);
	put(&hm, m.e, TA_SIZE);
	if (hash_msg(d, &hm, key) != 0) {
		return TA_E_INTERNAL;
	}
	rc = ta_replay_insert(d->replay, key, m.t1 + w < m.t1 ? UINT64_MAX : m.t1 + w, now);
	if (rc != TA_OK) {
		return rc;
	}

	/* m2 = (ID_i, [kv_i, n_i,] E_i, DID_j, [kv_j,] I_j, T1, T2) */
	m2[o++] = d->profile;
	m2[o++] = TA_M2;
	m2[o++] = m.id_len;
	memcpy(m2 + o, m.id, m.id_len), o += m.id_len;
	if (d->profile == TA_HARDENED) {
		m2[o++] = m.kv;
		memcpy(m2 + o, m.nonce, TA_NONCE_SIZE), o += TA_NONCE_SIZE;
	}
	memcpy(m2 + o, m.e, TA_SIZE), o += TA_SIZE;
	m2[o++] = d->did_len;
	memcpy(m2 + o, d->did, d->did_len), o += d->did_len;
	if (d->profile == TA_HARDENED) {
		m2[o++] = d->kv;
	}
	memcpy(m2 + o, ij, TA_SIZE), o += TA_SIZE;
	enc_ts(m2 + o, m.t1), o += 8;
	enc_ts(m2 + o, now), o += 8;
	*m2_len = o;

	memset(l, 0, sizeof *l);
	l->state = TA_LOGIN_WAIT_M3;
	l->id_len = m.id_len;
	memcpy(l->id, m.id, m.id_len);
	memcpy(l->e, m.e, TA_SIZE);
	memcpy(l->theta, m.theta, TA_SIZE);
	l->t1 = m.t1;
	return TA_OK;
}

/* Derives k_ud, k_du and sid from SK_ij and E_i (section 9). */
static int session_init(const ta_device *d, ta_session *s, const uint8_t sk[TA_SIZE],
                        const ta_login *l, uint64_t now)
{
	ta_session t;
	int rc;
	memset(&t, 0, sizeof t);
	rc = ta_hkdf(d->crypto, l->e, TA_SIZE, sk, TA_SIZE, (const uint8_t *)INFO_UD,
	             sizeof INFO_UD - 1, t.k_recv, TA_SIZE) ||
	     ta_hkdf(d->crypto, l->e, TA_SIZE, sk, TA_SIZE, (const uint8_t *)INFO_DU,
	             sizeof INFO_DU - 1, t.k_send, TA_SIZE) ||
	     ta_sid(d->crypto, l->e, t.sid);
	if (rc == 0) {
		t.open = 1;
		t.profile = d->profile;
		t.id_len = l->id_len;
		memcpy(t.id, l->id, l->id_len);
		t.created = t.last_used = now;
		*s = t;
	}
	ta_wipe(&t, sizeof t);
	return rc ? TA_E_INTERNAL : TA_OK;
}

/* Working secrets of respond, wiped in one place. */
typedef struct respond_tmp {
	uint8_t pad[TA_SIZE], beta[TA_SIZE], e[TA_SIZE], kj[TA_SIZE];
	uint8_t kikj[2 * TA_SIZE]; /* K_i' || K_j */
	uint8_t xp[TA_SIZE], x[TA_SIZE], sk[TA_SIZE], tau_j[TA_SIZE], tau_i[TA_SIZE];
	uint8_t sid[TA_SID_SIZE];
	msg m;
} respond_tmp;

int ta_device_respond(ta_device *d, ta_login *l, const uint8_t *m3, size_t n, uint8_t *m4,
                      size_t cap, size_t *m4_len, ta_session *s)
{
	respond_tmp t;
	const uint8_t *f, *gamma;
	uint8_t *ki, *kj;
	uint64_t t3, now;
	size_t o = 0;
	int rc;
	if (d == NULL || !d->ready || l == NULL || m4 == NULL || m4_len == NULL ||
	    (d->profile == TA_CLASSIC && s == NULL)) {
		return TA_E_STATE;
	}
	rc = head(m3, n, d->profile, TA_M3);
	if (rc != TA_OK) {
		return rc;
	}
	if (n != M3_SIZE) {
		return TA_E_MALFORMED;
	}
	/* A second m3 for a login that has passed this step (section 7). */
	if (l->state == TA_LOGIN_WAIT_M5 || l->state == TA_LOGIN_DONE) {
		return TA_E_REPLAYED;
	}
	if (l->state != TA_LOGIN_WAIT_M3) {
		return TA_E_STATE;
	}
	if (cap < (d->profile == TA_CLASSIC ? M4_CLASSIC_SIZE : M4_HARDENED_SIZE)) {
		return TA_E_BUFFER;
	}
	f = m3 + 2;
	gamma = m3 + 2 + TA_SIZE;
	t3 = get_ts(m3 + 2 + 2 * TA_SIZE);
	now = now_ms(d);
	if (!fresh(t3, now, d->window_ms)) {
		return TA_E_STALE_TIMESTAMP;
	}

	memset(&t, 0, sizeof t);
	ki = t.kikj;
	kj = t.kikj + TA_SIZE;
	/* beta_i'' = F_ij ^ pad, and it must reproduce E_i: that is what
	 * authenticates m3. */
	if (d->profile == TA_CLASSIC) {
		put(&t.m, d->tag, TA_SIZE);
		put_ts(&t.m, t3);
		rc = hash_msg(d, &t.m, t.pad);
	} else {
		put_lbl(&t.m, L_F);
		put(&t.m, l->e, TA_SIZE);
		put_ts(&t.m, t3);
		rc = mac_tag(d, &t.m, t.pad);
	}
	xor32(t.beta, f, t.pad);
	if (rc == 0) {
		if (d->profile == TA_CLASSIC) {
			put(&t.m, t.beta, TA_SIZE);
		} else {
			put_lbl(&t.m, L_E);
		}
		put_id8(&t.m, l->id, l->id_len);
		put_id8(&t.m, d->did, d->did_len);
		rc = d->profile == TA_CLASSIC ? hash_msg(d, &t.m, t.e)
		                              : mac_msg(d, t.beta, TA_SIZE, &t.m, t.e);
	}
	if (rc != 0) {
		rc = TA_E_INTERNAL;
		goto out;
	}
	if (!ta_ct_equal(t.e, l->e, TA_SIZE)) {
		rc = TA_E_REJECTED;
		goto out;
	}
	if (d->port.random(d->port.ctx, kj, TA_SIZE) != 0) {
		rc = TA_E_INTERNAL;
		goto out;
	}
	xor32(ki, l->theta, t.beta); /* K_i' = theta_i ^ beta_i'' */

	if (d->profile == TA_CLASSIC) {
		/* X_ij = h(K_i' || ts(T4)) ^ K_j; SK_ij = h(K_i' ^ K_j) */
		put(&t.m, ki, TA_SIZE);
		put_ts(&t.m, now);
		rc = hash_msg(d, &t.m, t.xp);
		xor32(t.x, t.xp, kj);
		xor32(t.pad, ki, kj);
		put(&t.m, t.pad, TA_SIZE);
		rc = rc || hash_msg(d, &t.m, t.sk);
	} else {
		put_lbl(&t.m, L_X);
		put(&t.m, l->e, TA_SIZE);
		put_ts(&t.m, now);
		rc = mac_msg(d, ki, TA_SIZE, &t.m, t.xp);
		xor32(t.x, t.xp, kj);
		/* SK_ij = M(K_i' || K_j, "tagauth/SK", E_i || X_ij), a 64-byte key */
		put_lbl(&t.m, L_SK);
		put(&t.m, l->e, TA_SIZE);
		put(&t.m, t.x, TA_SIZE);
		rc = rc || mac_msg(d, t.kikj, sizeof t.kikj, &t.m, t.sk);
		put_lbl(&t.m, L_CONFIRM_DEVICE);
		put(&t.m, l->e, TA_SIZE);
		put(&t.m, t.x, TA_SIZE);
		put_ts(&t.m, t3);
		put_ts(&t.m, now);
		rc = rc || mac_msg(d, t.sk, TA_SIZE, &t.m, t.tau_j);
		put_lbl(&t.m, L_CONFIRM_USER);
		put(&t.m, l->e, TA_SIZE);
		put(&t.m, t.x, TA_SIZE);
		rc = rc || mac_msg(d, t.sk, TA_SIZE, &t.m, t.tau_i);
	}
	rc = rc || ta_sid(d->crypto, l->e, t.sid);
	if (rc != 0) {
		rc = TA_E_INTERNAL;
		goto out;
	}
	if (d->profile == TA_CLASSIC) {
		rc = session_init(d, s, t.sk, l, now);
		if (rc != TA_OK) {
			goto out;
		}
	}

	/* Commit: m4, then the login's new state. */
	m4[o++] = d->profile;
	m4[o++] = TA_M4;
	memcpy(m4 + o, t.x, TA_SIZE), o += TA_SIZE;
	memcpy(m4 + o, gamma, TA_SIZE), o += TA_SIZE;
	if (d->profile == TA_HARDENED) {
		enc_ts(m4 + o, t3), o += 8;
	}
	enc_ts(m4 + o, now), o += 8;
	if (d->profile == TA_HARDENED) {
		memcpy(m4 + o, t.tau_j, TA_SIZE), o += TA_SIZE;
	}
	*m4_len = o;
	ta_wipe(l->theta, TA_SIZE);
	memcpy(l->sid, t.sid, TA_SID_SIZE);
	l->t4 = now;
	if (d->profile == TA_CLASSIC) {
		l->state = TA_LOGIN_DONE;
	} else {
		memcpy(l->sk, t.sk, TA_SIZE);
		memcpy(l->tau_i, t.tau_i, TA_SIZE);
		l->state = TA_LOGIN_WAIT_M5;
	}
out:
	ta_wipe(&t, sizeof t);
	return rc;
}

int ta_device_confirm(ta_device *d, ta_login *logins, size_t count, const uint8_t *payload,
                      size_t n, ta_session *s, size_t *which)
{
	const uint8_t *m5;
	ta_login *l = NULL;
	uint64_t now;
	size_t i;
	int rc;
	if (d == NULL || !d->ready || s == NULL || (count > 0 && logins == NULL)) {
		return TA_E_STATE;
	}
	/* section 11: sid (8) || m5; under 9 bytes nothing names a profile */
	if (payload == NULL || n < TA_SID_SIZE + 1) {
		return TA_E_MALFORMED;
	}
	m5 = payload + TA_SID_SIZE;
	rc = head(m5, n - TA_SID_SIZE, d->profile, TA_M5);
	if (rc != TA_OK) {
		return rc;
	}
	/* Classic has no m5: a classic m5 is malformed, as ParseM5 says. */
	if (d->profile != TA_HARDENED || n - TA_SID_SIZE != M5_SIZE) {
		return TA_E_MALFORMED;
	}
	for (i = 0; i < count; i++) {
		if ((logins[i].state == TA_LOGIN_WAIT_M5 || logins[i].state == TA_LOGIN_DONE) &&
		    ta_ct_equal(logins[i].sid, payload, TA_SID_SIZE)) {
			l = &logins[i];
			break;
		}
	}
	if (l == NULL) {
		return TA_E_REJECTED;
	}
	if (l->state == TA_LOGIN_DONE) {
		return TA_E_REPLAYED;
	}
	now = now_ms(d);
	/* The device holds a pending login for dT after m4 (section 6). */
	if (now > l->t4 && now - l->t4 > d->window_ms) {
		ta_login_wipe(l);
		return TA_E_REJECTED;
	}
	/* A wrong tau_i leaves the pending login as it was (section 11). */
	if (!ta_ct_equal(l->tau_i, m5 + 2, TA_SIZE)) {
		return TA_E_REJECTED;
	}
	rc = session_init(d, s, l->sk, l, now);
	if (rc != TA_OK) {
		return rc;
	}
	ta_wipe(l->sk, TA_SIZE);
	ta_wipe(l->tau_i, TA_SIZE);
	l->state = TA_LOGIN_DONE;
	if (which != NULL) {
		*which = i;
	}
	return TA_OK;
}

/* ---- channel (section 9) ---- */

static int expired(const ta_device *d, const ta_session *s, uint64_t now)
{
	return (now > s->last_used && now - s->last_used > d->session_idle_ms) ||
	       (now > s->created && now - s->created > d->session_life_ms);
}

static void record_nonce(uint8_t nonce[TA_AEAD_NONCE], const uint8_t seq[8])
{
	memset(nonce, 0, 4);
	memcpy(nonce + 4, seq, 8);
}

int ta_device_open(ta_device *d, ta_session *sessions, size_t count, const uint8_t *rec,
                   size_t n, uint8_t *pt, size_t cap, size_t *pt_len, size_t *which)
{
	ta_session *s = NULL;
	uint8_t nonce[TA_AEAD_NONCE];
	uint64_t seq, now;
	size_t i, ct_len;
	int rc;
	if (d == NULL || !d->ready || pt_len == NULL || (count > 0 && sessions == NULL)) {
		return TA_E_STATE;
	}
	rc = head(rec, n, d->profile, TA_RECORD);
	if (rc != TA_OK) {
		return rc;
	}
	if (n < RECORD_MIN) {
		return TA_E_MALFORMED;
	}
	for (i = 0; i < count; i++) {
		if (sessions[i].open && ta_ct_equal(sessions[i].sid, rec + 2, TA_SID_SIZE)) {
			s = &sessions[i];
			break;
		}
	}
	if (s == NULL) {
		return TA_E_REJECTED;
	}
	now = now_ms(d);
	if (expired(d, s, now)) {
		ta_session_wipe(s);
		return TA_E_REJECTED;
	}
	ct_len = n - RECORD_MIN;
	if (cap < ct_len || (ct_len > 0 && pt == NULL)) {
		return TA_E_BUFFER;
	}
	seq = get_ts(rec + 2 + TA_SID_SIZE);
	record_nonce(nonce, rec + 2 + TA_SID_SIZE);
	/* The tag before the sequence number (section 9): a record that
	 * does not authenticate is rejected whatever its seq says. */
	if (d->crypto->aead_open(s->k_recv, nonce, rec, TA_RECORD_HEADER, rec + TA_RECORD_HEADER,
	                         ct_len, rec + n - TA_AEAD_TAG, pt) != 0) {
		if (pt != NULL) {
			ta_wipe(pt, ct_len);
		}
		return TA_E_REJECTED;
	}
	if (seq <= s->recv_seq) {
		if (pt != NULL) {
			ta_wipe(pt, ct_len);
		}
		return TA_E_REPLAYED;
	}
	s->recv_seq = seq;
	s->last_used = now;
	*pt_len = ct_len;
	if (which != NULL) {
		*which = i;
	}
	return TA_OK;
}

int ta_session_seal(ta_device *d, ta_session *s, const uint8_t *pt, size_t n, uint8_t *rec,
                    size_t cap, size_t *rec_len)
{
	uint8_t nonce[TA_AEAD_NONCE];
	uint64_t now;
	if (d == NULL || !d->ready || s == NULL || !s->open || rec == NULL || rec_len == NULL ||
	    (n > 0 && pt == NULL)) {
		return TA_E_STATE;
	}
	if (cap < RECORD_MIN || cap - RECORD_MIN < n) {
		return TA_E_BUFFER;
	}
	now = now_ms(d);
	if (expired(d, s, now) || s->send_seq == UINT64_MAX) {
		ta_session_wipe(s);
		return TA_E_REJECTED;
	}
	rec[0] = s->profile;
	rec[1] = TA_RECORD;
	memcpy(rec + 2, s->sid, TA_SID_SIZE);
	enc_ts(rec + 2 + TA_SID_SIZE, s->send_seq + 1);
	record_nonce(nonce, rec + 2 + TA_SID_SIZE);
	if (d->crypto->aead_seal(s->k_send, nonce, rec, TA_RECORD_HEADER, pt, n,
	                         rec + TA_RECORD_HEADER, rec + TA_RECORD_HEADER + n) != 0) {
		return TA_E_INTERNAL;
	}
	s->send_seq++;
	s->last_used = now;
	*rec_len = RECORD_MIN + n;
	return TA_OK;
}

/* ---- errors ---- */

void ta_error_message(uint8_t out[TA_ERROR_SIZE], const uint8_t *req, size_t n, int rc)
{
	out[0] = (req != NULL && n > 0 && (req[0] == TA_CLASSIC || req[0] == TA_HARDENED)) ? req[0]
	                                                                                  : 0x00;
	out[1] = TA_ERROR;
	out[2] = (uint8_t)(rc >= TA_E_MALFORMED && rc <= TA_E_INTERNAL ? rc : TA_E_INTERNAL);
}

void ta_confirm_error_message(uint8_t out[TA_ERROR_SIZE], const uint8_t *payload, size_t n,
                              int rc)
{
	if (payload == NULL || n < TA_SID_SIZE + 1) {
		ta_error_message(out, NULL, 0, rc);
		return;
	}
	ta_error_message(out, payload + TA_SID_SIZE, n - TA_SID_SIZE, rc);
}

const char *ta_strerror(int rc)
{
	switch (rc) {
	case TA_OK:
		return "ok";
	case TA_E_MALFORMED:
		return "malformed";
	case TA_E_UNSUPPORTED_PROFILE:
		return "unsupported_profile";
	case TA_E_STALE_TIMESTAMP:
		return "stale_timestamp";
	case TA_E_REPLAYED:
		return "replayed";
	case TA_E_REJECTED:
		return "rejected";
	case TA_E_BUSY:
		return "busy";
	case TA_E_INTERNAL:
		return "internal";
	case TA_E_STATE:
		return "step out of order";
	case TA_E_BUFFER:
		return "buffer too small";
	case TA_E_ARG:
		return "invalid argument";
	}
	return "unknown";
}
