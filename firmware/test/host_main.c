/* The host test runner: the standard crypto vectors on both backends, a
 * differential test of the portable backend against mbedTLS on random
 * inputs, the unit properties, and every vector of both profiles on both
 * backends. Usage: host_test VECTOR_DIR */
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tagauth.h"
#include "vectors.h"

static char sbuf[256 * 1024], rbuf[512 * 1024];

/* xorshift64*: reproducible inputs; the seed is printed. */
static uint64_t rs;

static uint64_t rnd(void)
{
	rs ^= rs >> 12, rs ^= rs << 25, rs ^= rs >> 27;
	return rs * 2685821657736338717ull;
}

static void fill(uint8_t *p, size_t n)
{
	while (n--) {
		*p++ = (uint8_t)rnd();
	}
}

static void differential(int rounds)
{
	const ta_crypto *p = &ta_crypto_portable, *m = &ta_crypto_mbedtls;
	const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
	static uint8_t a[600], b[600], key[150], salt[150], info[150], x[600], y[600], t1[16], t2[16];
	uint8_t n1[12];
	int i, bad[4] = {0, 0, 0, 0};
	for (i = 0; i < rounds; i++) {
		size_t n = (size_t)(rnd() % 300), kn = (size_t)(rnd() % 150), sn = (size_t)(rnd() % 150);
		size_t fnn = (size_t)(rnd() % 150), ln = 1 + (size_t)(rnd() % 200), cut = n ? (size_t)(rnd() % n) : 0;
		ta_hash_state st;
		uint8_t d1[32], d2[32];
		fill(a, n), fill(key, kn), fill(salt, sn), fill(info, fnn), fill(n1, sizeof n1);
		/* SHA-256, one call against two updates split at random */
		bad[0] |= ta_sha256(m, a, n, d1) || p->sha256_init(&st) ||
		          p->sha256_update(&st, a, cut) || p->sha256_update(&st, a + cut, n - cut) ||
		          p->sha256_final(&st, d2) || memcmp(d1, d2, 32) != 0;
		/* HMAC: the SDK's construction over the portable hash against
		 * mbedTLS's own HMAC */
		bad[1] |= ta_hmac(p, key, kn, a, n, d1) || mbedtls_md_hmac(md, key, kn, a, n, d2) ||
		          memcmp(d1, d2, 32) != 0;
		/* HKDF likewise (salt empty or random) */
		bad[2] |= ta_hkdf(p, salt, sn, a, n, info, fnn, x, ln) ||
		          mbedtls_hkdf(md, salt, sn, a, n, info, fnn, y, ln) || memcmp(x, y, ln) != 0;
		/* ChaCha20-Poly1305: same output, and each opens the other's */
		fill(b, kn);
		bad[3] |= p->aead_seal(key[0] ? salt : info, n1, b, kn, a, n, x, t1) ||
		          m->aead_seal(key[0] ? salt : info, n1, b, kn, a, n, y, t2) ||
		          memcmp(x, y, n) != 0 || memcmp(t1, t2, 16) != 0 ||
		          p->aead_open(key[0] ? salt : info, n1, b, kn, y, n, t2, y) ||
		          memcmp(y, a, n) != 0;
	}
	t_begin("differential/SHA-256 portable vs mbedTLS");
	t_expect(!bad[0], "digests differ");
	t_end();
	t_begin("differential/HMAC-SHA256 SDK over portable vs mbedtls_md_hmac");
	t_expect(!bad[1], "MACs differ");
	t_end();
	t_begin("differential/HKDF-SHA256 SDK over portable vs mbedtls_hkdf");
	t_expect(!bad[2], "OKMs differ");
	t_end();
	t_begin("differential/ChaCha20-Poly1305 portable vs mbedTLS");
	t_expect(!bad[3], "ciphertexts or tags differ");
	t_end();
}

int main(int argc, char **argv)
{
	const ta_crypto *backends[2] = {&ta_crypto_portable, &ta_crypto_mbedtls};
	char s[512], r[512], h[512];
	const char *dir = argc > 1 ? argv[1] : "../testdata/vectors";
	const char *seed = getenv("TA_SEED");
	int i;
	rs = seed ? strtoull(seed, NULL, 0) : 0x7a6761757468ull;
	if (rs == 0) {
		rs = 1;
	}
	printf("differential seed %llu (set TA_SEED to repeat another)\n", (unsigned long long)rs);
	run_portable_vectors();
	for (i = 0; i < 2; i++) {
		run_crypto_vectors(backends[i]);
	}
	differential(2000);
	snprintf(h, sizeof h, "%s/hardened.json", dir);
	for (i = 0; i < 2; i++) {
		run_unit_tests(backends[i], h, sbuf, sizeof sbuf);
		snprintf(s, sizeof s, "%s/classic.json", dir);
		snprintf(r, sizeof r, "%s/classic-reject.json", dir);
		run_vectors(backends[i], TA_CLASSIC, s, r, sbuf, sizeof sbuf, rbuf, sizeof rbuf);
		snprintf(r, sizeof r, "%s/hardened-reject.json", dir);
		run_vectors(backends[i], TA_HARDENED, h, r, sbuf, sizeof sbuf, rbuf, sizeof rbuf);
	}
	t_summary();
	return t_failed ? 1 : 0;
}
