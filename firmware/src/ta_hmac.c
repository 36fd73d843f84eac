/*
 * HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) over a backend's
 * SHA-256, with the key states cached as the Go gateway caches them: a key
 * used for several HMACs costs two compressions per HMAC instead of four.
 */
#include <string.h>

#include "tagauth_crypto.h"

void ta_wipe(void *p, size_t n)
{
	/* A volatile pointer keeps the stores: the compiler cannot prove them
	 * dead. */
	volatile unsigned char *v = (volatile unsigned char *)p;
	while (n--) {
		*v++ = 0;
	}
}

int ta_ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	volatile uint8_t d = 0;
	size_t i;
	for (i = 0; i < n; i++) {
		d |= (uint8_t)(a[i] ^ b[i]);
	}
	/* (d - 1) >> 8 is 0xff..ff for d == 0 only, without a branch on d. */
	return (int)((((uint32_t)d) - 1u) >> 31);
}

int ta_sha256(const ta_crypto *c, const uint8_t *msg, size_t n, uint8_t out[TA_HASH_SIZE])
{
	ta_hash_state st;
	int rc = c->sha256_init(&st) || c->sha256_update(&st, msg, n) || c->sha256_final(&st, out);
	ta_wipe(&st, sizeof st);
	return rc;
}

int ta_hmac_setkey(const ta_crypto *c, ta_hmac_key *k, const uint8_t *key, size_t key_len)
{
	uint8_t pad[TA_HASH_BLOCK], kh[TA_HASH_SIZE];
	size_t i;
	int rc;
	if (key_len > TA_HASH_BLOCK) {
		/* RFC 2104: a key longer than a block is hashed first. */
		if (ta_sha256(c, key, key_len, kh) != 0) {
			return -1;
		}
		key = kh;
		key_len = sizeof kh;
	}
	for (i = 0; i < TA_HASH_BLOCK; i++) {
		pad[i] = (uint8_t)((i < key_len ? key[i] : 0) ^ 0x36);
	}
	rc = c->sha256_init(&k->inner) || c->sha256_update(&k->inner, pad, sizeof pad);
	for (i = 0; i < TA_HASH_BLOCK; i++) {
		pad[i] ^= 0x36 ^ 0x5c;
	}
	rc = rc || c->sha256_init(&k->outer) || c->sha256_update(&k->outer, pad, sizeof pad);
	ta_wipe(pad, sizeof pad);
	ta_wipe(kh, sizeof kh);
	return rc;
}

int ta_hmac_keyed(const ta_crypto *c, const ta_hmac_key *k, const uint8_t *msg, size_t n,
                  uint8_t out[TA_HASH_SIZE])
{
	ta_hash_state st;
	uint8_t ih[TA_HASH_SIZE];
	int rc = c->sha256_clone(&st, &k->inner) || c->sha256_update(&st, msg, n) ||
	         c->sha256_final(&st, ih) || c->sha256_clone(&st, &k->outer) ||
	         c->sha256_update(&st, ih, sizeof ih) || c->sha256_final(&st, out);
	ta_wipe(&st, sizeof st);
	ta_wipe(ih, sizeof ih);
	return rc;
}

int ta_hmac(const ta_crypto *c, const uint8_t *key, size_t key_len, const uint8_t *msg, size_t n,
            uint8_t out[TA_HASH_SIZE])
{
	ta_hmac_key k;
	int rc = ta_hmac_setkey(c, &k, key, key_len) || ta_hmac_keyed(c, &k, msg, n, out);
	ta_wipe(&k, sizeof k);
	return rc;
}

int ta_hkdf(const ta_crypto *c, const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
            size_t ikm_len, const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
	static const uint8_t zero[TA_HASH_SIZE];
	uint8_t prk[TA_HASH_SIZE], t[TA_HASH_SIZE];
	ta_hmac_key k;
	ta_hash_state st;
	size_t done = 0, take;
	uint8_t ctr = 1;
	int rc;
	if (out_len > 255u * TA_HASH_SIZE) {
		return -1;
	}
	/* RFC 5869: an absent salt is HashLen zeros. */
	if (salt_len == 0) {
		salt = zero;
		salt_len = sizeof zero;
	}
	rc = ta_hmac(c, salt, salt_len, ikm, ikm_len, prk) || ta_hmac_setkey(c, &k, prk, sizeof prk);
	while (rc == 0 && done < out_len) {
		uint8_t ih[TA_HASH_SIZE];
		/* T(i) = HMAC(PRK, T(i-1) || info || i), streamed from the
		 * cached inner state. */
		rc = c->sha256_clone(&st, &k.inner) ||
		     (ctr > 1 && c->sha256_update(&st, t, sizeof t)) ||
		     c->sha256_update(&st, info, info_len) || c->sha256_update(&st, &ctr, 1) ||
		     c->sha256_final(&st, ih) || c->sha256_clone(&st, &k.outer) ||
		     c->sha256_update(&st, ih, sizeof ih) || c->sha256_final(&st, t);
		ta_wipe(ih, sizeof ih);
		take = out_len - done < sizeof t ? out_len - done : sizeof t;
		memcpy(out + done, t, take);
		done += take;
		ctr++;
	}
	ta_wipe(prk, sizeof prk);
	ta_wipe(t, sizeof t);
	ta_wipe(&k, sizeof k);
	ta_wipe(&st, sizeof st);
	return rc;
}
