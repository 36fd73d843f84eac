/* The portable backend: ta_sha256.c and ta_chachapoly.c behind the
 * ta_crypto table. */
#include <string.h>

#include "ta_chachapoly.h"
#include "ta_sha256.h"
#include "tagauth_crypto.h"

typedef char ta_state_fits[sizeof(ta_sha256_ctx) <= TA_HASH_STATE_MAX ? 1 : -1];

static int init(ta_hash_state *st)
{
	ta_sha256_init((ta_sha256_ctx *)(void *)st);
	return 0;
}

static int update(ta_hash_state *st, const uint8_t *p, size_t n)
{
	ta_sha256_update((ta_sha256_ctx *)(void *)st, p, n);
	return 0;
}

static int final(ta_hash_state *st, uint8_t out[TA_HASH_SIZE])
{
	ta_sha256_final((ta_sha256_ctx *)(void *)st, out);
	return 0;
}

static int clone(ta_hash_state *dst, const ta_hash_state *src)
{
	memcpy(dst, src, sizeof(ta_sha256_ctx));
	return 0;
}

static int seal(const uint8_t key[TA_AEAD_KEY], const uint8_t nonce[TA_AEAD_NONCE],
                const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t n, uint8_t *ct,
                uint8_t tag[TA_AEAD_TAG])
{
	ta_chachapoly_seal(key, nonce, aad, aad_len, pt, n, ct, tag);
	return 0;
}

const ta_crypto ta_crypto_portable = {
	"portable", sizeof(ta_sha256_ctx), init, update, final, clone, seal, ta_chachapoly_open,
};
