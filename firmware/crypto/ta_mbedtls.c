/* The mbedTLS backend (mbedTLS 2.28 or 3.x): SHA-256 and
 * ChaCha20-Poly1305 from the library behind the ta_crypto table. A product
 * with mbedTLS (or PSA, or a hardware engine) writes a table like this one. */
#include <mbedtls/chachapoly.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "tagauth_crypto.h"

#if MBEDTLS_VERSION_NUMBER < 0x03000000
#define sha256_starts mbedtls_sha256_starts_ret
#define sha256_update mbedtls_sha256_update_ret
#define sha256_finish mbedtls_sha256_finish_ret
#else
#define sha256_starts mbedtls_sha256_starts
#define sha256_update mbedtls_sha256_update
#define sha256_finish mbedtls_sha256_finish
#endif

typedef char ta_state_fits[sizeof(mbedtls_sha256_context) <= TA_HASH_STATE_MAX ? 1 : -1];

#define CTX(st) ((mbedtls_sha256_context *)(void *)(st))

static int init(ta_hash_state *st)
{
	mbedtls_sha256_init(CTX(st));
	return sha256_starts(CTX(st), 0);
}

static int update(ta_hash_state *st, const uint8_t *p, size_t n)
{
	return sha256_update(CTX(st), p, n);
}

static int final(ta_hash_state *st, uint8_t out[TA_HASH_SIZE])
{
	int rc = sha256_finish(CTX(st), out);
	mbedtls_sha256_free(CTX(st));
	return rc;
}

static int clone(ta_hash_state *dst, const ta_hash_state *src)
{
	mbedtls_sha256_init(CTX(dst));
	mbedtls_sha256_clone(CTX(dst), (const mbedtls_sha256_context *)(const void *)src);
	return 0;
}

static int seal(const uint8_t key[TA_AEAD_KEY], const uint8_t nonce[TA_AEAD_NONCE],
                const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t n, uint8_t *ct,
                uint8_t tag[TA_AEAD_TAG])
{
	mbedtls_chachapoly_context c;
	int rc;
	mbedtls_chachapoly_init(&c);
	rc = mbedtls_chachapoly_setkey(&c, key) ||
	     mbedtls_chachapoly_encrypt_and_tag(&c, n, nonce, aad, aad_len, pt, ct, tag);
	mbedtls_chachapoly_free(&c);
	return rc;
}

static int aead_open(const uint8_t key[TA_AEAD_KEY], const uint8_t nonce[TA_AEAD_NONCE],
                const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t n,
                const uint8_t tag[TA_AEAD_TAG], uint8_t *pt)
{
	mbedtls_chachapoly_context c;
	int rc;
	mbedtls_chachapoly_init(&c);
	rc = mbedtls_chachapoly_setkey(&c, key) ||
	     mbedtls_chachapoly_auth_decrypt(&c, n, nonce, aad, aad_len, tag, ct, pt);
	mbedtls_chachapoly_free(&c);
	return rc;
}

const ta_crypto ta_crypto_mbedtls = {
	"mbedtls", sizeof(mbedtls_sha256_context), init, update, final, clone, seal, aead_open,
};
