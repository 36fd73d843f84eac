/*
 * libFuzzer targets, one per parser of untrusted bytes, chosen at build
 * time: FUZZ_M1 (ta_device_start), FUZZ_M3 (ta_device_respond on a pending
 * login), FUZZ_CONFIRM (ta_device_confirm on a login waiting for m5),
 * FUZZ_RECORD (ta_device_open on an established session), and FUZZ_JSON
 * (test/json.c, which tagauth-agent uses on task requests and credential
 * files). The first input
 * byte picks the profile (bit 0: classic or hardened), the rest is the
 * message. Besides the sanitizers, each run checks the library's promise
 * that a refused message changes nothing, and that every result maps to a
 * wire code. Seeds: run with TA_FUZZ_SEEDS=dir once to write the vectors'
 * messages there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_vectors.h"
#include "tagauth.h"

static uint64_t now;
static uint8_t kj[TA_SIZE];

static uint64_t clock_ms(void *ctx)
{
	(void)ctx;
	return now;
}

static int rnd(void *ctx, uint8_t *out, size_t n)
{
	(void)ctx;
	memcpy(out, kj, n < TA_SIZE ? n : TA_SIZE);
	return 0;
}

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
	size_t n = strlen(h) / 2, i;
	unsigned v;
	if (n > cap) {
		abort();
	}
	for (i = 0; i < n; i++) {
		if (sscanf(h + 2 * i, "%2x", &v) != 1) {
			abort();
		}
		out[i] = (uint8_t)v;
	}
	return n;
}

static void seed(const char *dir, const char *name, uint8_t profile, const char *hex)
{
	uint8_t b[512];
	char path[512];
	FILE *f;
	size_t n = unhex(hex, b + 1, sizeof b - 1);
	b[0] = (uint8_t)(profile - 1);
	snprintf(path, sizeof path, "%s/%s-%u", dir, name, (unsigned)profile);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(b, 1, n + 1, f) != n + 1 || fclose(f) != 0) {
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("TA_FUZZ_SEEDS");
	int i;
	(void)argc, (void)argv;
	if (dir == NULL) {
		return 0;
	}
	{
		FILE *f;
		char path[512];
		snprintf(path, sizeof path, "%s/json-credential", dir);
		f = fopen(path, "wb");
		if (f == NULL) {
			abort();
		}
		fputs("{\"profile\":\"hardened\",\"id\":\"sensor-7\",\"kv\":1,\"tag\":\"00ff\","
		      "\"cases\":[{\"prior\":[\"0a\"],\"task\":\"echo\",\"args\":\"a\\\"b\"}]}", f);
		fclose(f);
	}
	for (i = 0; i < 2; i++) {
		const fuzz_vec *v = &fuzz_vecs[i];
		char payload[600];
		seed(dir, "m1", v->profile, v->m1);
		seed(dir, "m3", v->profile, v->m3);
		seed(dir, "record", v->profile, v->record);
		if (v->m5[0]) {
			snprintf(payload, sizeof payload, "%s%s", v->sid, v->m5);
			seed(dir, "confirm", v->profile, payload);
		}
	}
	exit(0);
}

static ta_replay_entry entries[4];
static ta_replay replay;
static ta_device dev;
static ta_login logins[2];
static ta_session sessions[2];

/* A device with the vector's credential, advanced to the state the
 * target attacks. */
static void setup(const fuzz_vec *v)
{
	static uint8_t m[512], out[512];
	ta_port port = {clock_ms, rnd, NULL};
	ta_credential cred;
	size_t n, outn;
	memset(&cred, 0, sizeof cred);
	cred.profile = v->profile;
	cred.kv = v->kv_j;
	cred.did_len = (uint8_t)strlen(v->did);
	memcpy(cred.did, v->did, cred.did_len);
	unhex(v->tag_j, cred.tag, sizeof cred.tag);
	unhex(v->k_j, kj, sizeof kj);
	ta_replay_init(&replay, entries, 4);
	memset(logins, 0, sizeof logins);
	memset(sessions, 0, sizeof sessions);
	if (ta_device_init(&dev, &ta_crypto_portable, &port, &cred, &replay) != TA_OK) {
		abort();
	}
	now = v->t2;
#ifndef FUZZ_M1
	n = unhex(v->m1, m, sizeof m);
	if (ta_device_start(&dev, &logins[0], m, n, out, sizeof out, &outn) != TA_OK) {
		abort();
	}
	now = v->t4;
#endif
#if defined(FUZZ_CONFIRM) || defined(FUZZ_RECORD)
	n = unhex(v->m3, m, sizeof m);
	if (ta_device_respond(&dev, &logins[0], m, n, out, sizeof out, &outn, &sessions[0]) !=
	    TA_OK) {
		abort();
	}
#endif
#if defined(FUZZ_RECORD)
	if (v->profile == TA_HARDENED) {
		n = unhex(v->sid, m, sizeof m);
		n += unhex(v->m5, m + n, sizeof m - n);
		if (ta_device_confirm(&dev, logins, 2, m, n, &sessions[0], NULL) != TA_OK) {
			abort();
		}
	}
#endif
	(void)n, (void)outn, (void)m, (void)out;
}

#ifdef FUZZ_JSON
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static json_obj o;
	static uint8_t hex[512];
	json_span arr, s;
	size_t pos = 0, i, n;
	uint64_t v;
	(void)setup;
	if (json_object((const char *)data, size, &o) == 0) {
		for (i = 0; i < o.n; i++) {
			if (o.f[i].kind == 's') {
				json_hex(&o.f[i].val, hex, sizeof hex, &n);
			}
		}
		json_u64(&o, "kv", &v);
	}
	if (json_top_array((const char *)data, size, "cases", &arr) == 0) {
		int rc;
		while ((rc = json_next_object(&arr, &pos, &o)) == 1) {
			const json_field *f = json_get(&o, "prior");
			size_t p2 = 0;
			while (f != NULL && f->kind == 'a' && json_next_string(&f->val, &p2, &s) == 1) {
			}
		}
	}
	return 0;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static ta_login lsnap[2];
	static ta_session ssnap[2];
	static ta_replay_entry rsnap[4];
	static uint8_t out[1024];
	uint8_t err[TA_ERROR_SIZE];
	const fuzz_vec *v;
	size_t n = 0, which;
	int rc;
	if (size < 1) {
		return 0;
	}
	v = &fuzz_vecs[data[0] & 1];
	setup(v);
	memcpy(lsnap, logins, sizeof logins);
	memcpy(ssnap, sessions, sizeof sessions);
	memcpy(rsnap, entries, sizeof entries);
	data++, size--;
#if defined(FUZZ_M1)
	rc = ta_device_start(&dev, &logins[0], data, size, out, sizeof out, &n);
	ta_error_message(err, data, size, rc);
#elif defined(FUZZ_M3)
	rc = ta_device_respond(&dev, &logins[0], data, size, out, sizeof out, &n, &sessions[0]);
	ta_error_message(err, data, size, rc);
#elif defined(FUZZ_CONFIRM)
	rc = ta_device_confirm(&dev, logins, 2, data, size, &sessions[0], &which);
	ta_confirm_error_message(err, data, size, rc);
#elif defined(FUZZ_RECORD)
	rc = ta_device_open(&dev, sessions, 2, data, size, out, sizeof out, &n, &which);
	ta_error_message(err, data, size, rc);
#else
#error "define one of FUZZ_M1, FUZZ_M3, FUZZ_CONFIRM, FUZZ_RECORD"
#endif
	(void)which;
	if (rc == TA_E_BUFFER && size > sizeof out + TA_RECORD_OVERHEAD) {
		rc = TA_E_MALFORMED; /* a record larger than this harness's buffer */
	}
	if (rc < 0 || rc > TA_E_INTERNAL || err[1] != TA_ERROR || err[2] < 1 || err[2] > 7 ||
	    (err[0] != 0 && err[0] != 1 && err[0] != 2)) {
		abort();
	}
	if (rc != TA_OK && (memcmp(lsnap, logins, sizeof logins) != 0 ||
	                    memcmp(ssnap, sessions, sizeof sessions) != 0 ||
	                    memcmp(rsnap, entries, sizeof entries) != 0)) {
		fprintf(stderr, "a refused message (%s) changed the device's state\n", ta_strerror(rc));
		abort();
	}
	if (rc == TA_OK && n > sizeof out) {
		abort();
	}
	ta_device_wipe(&dev);
	return 0;
}
#endif
