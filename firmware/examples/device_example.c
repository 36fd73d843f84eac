/*
 * A complete device built on the SDK, as firmware/README.md shows it: the
 * three CoAP endpoints of spec section 11 as three functions that take a
 * request payload and write the response payload. The platform supplies
 * platform_now_ms, platform_random, platform_credential and
 * gateway_verify (send m2 to the gateway's /tagauth/verify and wait for
 * its answer); everything else is here. `make test` compiles this file.
 */
#include <string.h>

#include "tagauth.h"

/* ---- supplied by the platform ---- */
uint64_t platform_now_ms(void *ctx);                     /* RTC, synced (SNTP, GNSS, the gateway) */
int platform_random(void *ctx, uint8_t *out, size_t n);  /* TRNG; 0 on success */
const ta_credential *platform_credential(void);          /* DID_j, Tag_j, kv_j from protected flash */
/* POSTs m2 to the gateway; returns the CoAP response payload length, or
 * -1 on timeout. *ok says whether the code was 2.04 (m3) or an error. */
int gateway_verify(const uint8_t *m2, size_t n, uint8_t *resp, size_t cap, int *ok);

/* ---- all the device's protocol state: static, no heap ---- */
#define LOGINS 4
#define SESSIONS 4
static ta_replay_entry replay_entries[16]; /* logins per 2 dT, at most */
static ta_replay replay;
static ta_device dev;
static ta_login logins[LOGINS];
static ta_session sessions[SESSIONS];

int device_setup(void)
{
	static const ta_port port = {platform_now_ms, platform_random, NULL};
	ta_replay_init(&replay, replay_entries, sizeof replay_entries / sizeof replay_entries[0]);
	return ta_device_init(&dev, &ta_crypto_portable, &port, platform_credential(), &replay);
}

/* The CoAP code of an error (spec section 11): 4.00, 4.01, 5.03 or 5.00. */
static int coap_code(int rc)
{
	switch (rc) {
	case TA_E_MALFORMED:
	case TA_E_UNSUPPORTED_PROFILE:
		return 0x80;
	case TA_E_STALE_TIMESTAMP:
	case TA_E_REPLAYED:
	case TA_E_REJECTED:
		return 0x81;
	case TA_E_BUSY:
		return 0xa3;
	default:
		return 0xa0;
	}
}

static ta_login *free_login(void)
{
	size_t i;
	for (i = 0; i < LOGINS; i++) {
		/* a finished login's slot is free again; so is one past dT */
		if (logins[i].state == TA_LOGIN_DONE ||
		    (logins[i].state == TA_LOGIN_WAIT_M5 &&
		     platform_now_ms(NULL) > logins[i].t4 + dev.window_ms)) {
			ta_login_wipe(&logins[i]);
		}
		if (logins[i].state == TA_LOGIN_FREE) {
			return &logins[i];
		}
	}
	return NULL;
}

static ta_session *free_session(void)
{
	size_t i;
	for (i = 0; i < SESSIONS; i++) {
		if (!sessions[i].open) {
			return &sessions[i];
		}
	}
	return NULL; /* or end the oldest session */
}

/* POST /tagauth/login: m1 in, m4 (or an error message) out. Returns the
 * response length; *code is the CoAP code to answer with. */
size_t on_login(const uint8_t *m1, size_t n, uint8_t *out, size_t cap, int *code)
{
	uint8_t m2[TA_M2_MAX], m3[128];
	size_t m2_len, m4_len = 0;
	ta_login *l = free_login();
	ta_session *s = free_session();
	int rc, len, ok = 0;
	if (l == NULL || s == NULL) {
		rc = TA_E_BUSY;
		goto refuse;
	}
	rc = ta_device_start(&dev, l, m1, n, m2, sizeof m2, &m2_len);
	if (rc != TA_OK) {
		goto refuse;
	}
	len = gateway_verify(m2, m2_len, m3, sizeof m3, &ok);
	if (len < 0 || !ok) {
		/* unreachable: busy; an error message: relay its code */
		rc = len >= 3 && m3[1] == TA_ERROR ? m3[2] : TA_E_BUSY;
		ta_login_wipe(l);
		goto refuse;
	}
	/* classic establishes s here; hardened waits for m5 */
	rc = ta_device_respond(&dev, l, m3, (size_t)len, out, cap, &m4_len, s);
	if (rc != TA_OK) {
		ta_login_wipe(l);
		/* an m3 that does not parse is the gateway's fault */
		rc = rc == TA_E_MALFORMED || rc == TA_E_UNSUPPORTED_PROFILE ? TA_E_INTERNAL : rc;
		goto refuse;
	}
	*code = 0x44; /* 2.04 Changed */
	return m4_len;
refuse:
	ta_error_message(out, m1, n, rc);
	*code = coap_code(rc);
	return TA_ERROR_SIZE;
}

/* POST /tagauth/confirm: sid || m5 in, empty (or an error message) out. */
size_t on_confirm(const uint8_t *payload, size_t n, uint8_t *out, int *code)
{
	ta_session *s = free_session();
	int rc = s == NULL ? TA_E_BUSY : ta_device_confirm(&dev, logins, LOGINS, payload, n, s, NULL);
	if (rc == TA_OK) {
		*code = 0x44;
		return 0;
	}
	ta_confirm_error_message(out, payload, n, rc);
	*code = coap_code(rc);
	return TA_ERROR_SIZE;
}

/* POST /tagauth/task: a sealed task in, the sealed answer out. The task
 * here is "echo": the answer is the request's plaintext. */
size_t on_task(const uint8_t *rec, size_t n, uint8_t *out, size_t cap, int *code)
{
	uint8_t pt[256];
	size_t pt_len, which, rec_len;
	int rc = ta_device_open(&dev, sessions, SESSIONS, rec, n, pt, sizeof pt, &pt_len, &which);
	if (rc == TA_OK) {
		/* sessions[which].id is the user the gateway vouched for */
		rc = ta_session_seal(&dev, &sessions[which], pt, pt_len, out, cap, &rec_len);
		ta_wipe(pt, sizeof pt);
		if (rc == TA_OK) {
			*code = 0x44;
			return rec_len;
		}
	}
	ta_error_message(out, rec, n, rc);
	*code = coap_code(rc);
	return TA_ERROR_SIZE;
}
