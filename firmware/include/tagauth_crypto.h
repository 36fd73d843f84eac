/*
 * tagauth firmware SDK: the crypto backend interface.
 *
 * The protocol code never calls a crypto library directly. It asks a
 * ta_crypto table for SHA-256 and ChaCha20-Poly1305, and builds HMAC-SHA256
 * (with cached key states) and HKDF-SHA256 on top of the hash, so that a
 * product plugs its platform's crypto (PSA, mbedTLS, a hardware hash or AEAD
 * engine) into one small table. Two tables ship with the SDK:
 * ta_crypto_portable (crypto/ta_portable.c: compact C99, no dependency) and
 * ta_crypto_mbedtls (crypto/ta_mbedtls.c: mbedTLS 2.28 or 3.x).
 *
 * Contract for a backend:
 *  - A hash state lives in caller memory of TA_HASH_STATE_MAX bytes, aligned
 *    for uint64_t; state_size says how much of it the backend uses.
 *  - sha256_clone copies a state, so that HMAC can start from the cached
 *    state of a key (two compressions saved per HMAC).
 *  - Every function returns 0 on success, non-zero on failure; aead_open
 *    returns non-zero when the tag does not verify and then writes nothing
 *    that the caller may use.
 *  - No function allocates from a heap.
 */
#ifndef TAGAUTH_CRYPTO_H
#define TAGAUTH_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define TA_HASH_SIZE 32
#define TA_HASH_BLOCK 64
#define TA_AEAD_KEY 32
#define TA_AEAD_NONCE 12
#define TA_AEAD_TAG 16

/* Room for any backend's SHA-256 state (mbedTLS uses 108 bytes). */
#define TA_HASH_STATE_MAX 128

typedef union ta_hash_state {
	uint64_t align;
	unsigned char b[TA_HASH_STATE_MAX];
} ta_hash_state;

typedef struct ta_crypto {
	const char *name;
	size_t state_size;
	int (*sha256_init)(ta_hash_state *st);
	int (*sha256_update)(ta_hash_state *st, const uint8_t *p, size_t n);
	/* Writes the digest; the state is spent afterwards. */
	int (*sha256_final)(ta_hash_state *st, uint8_t out[TA_HASH_SIZE]);
	int (*sha256_clone)(ta_hash_state *dst, const ta_hash_state *src);
	/* ct and pt may be the same buffer; tag is written separately. */
	int (*aead_seal)(const uint8_t key[TA_AEAD_KEY], const uint8_t nonce[TA_AEAD_NONCE],
	                 const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t n,
	                 uint8_t *ct, uint8_t tag[TA_AEAD_TAG]);
	int (*aead_open)(const uint8_t key[TA_AEAD_KEY], const uint8_t nonce[TA_AEAD_NONCE],
	                 const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t n,
	                 const uint8_t tag[TA_AEAD_TAG], uint8_t *pt);
} ta_crypto;

/* The shipped backends. ta_crypto_mbedtls exists only when
 * crypto/ta_mbedtls.c is linked. */
extern const ta_crypto ta_crypto_portable;
extern const ta_crypto ta_crypto_mbedtls;

/* HMAC-SHA256 key states: the hash states after one block of key^ipad and
 * one of key^opad. They are as secret as the key: wipe them with
 * ta_wipe. */
typedef struct ta_hmac_key {
	ta_hash_state inner;
	ta_hash_state outer;
} ta_hmac_key;

/* Keys longer than a block are hashed first (RFC 2104); the protocol's
 * keys are 32 or 64 bytes. */
int ta_hmac_setkey(const ta_crypto *c, ta_hmac_key *k, const uint8_t *key, size_t key_len);
int ta_hmac_keyed(const ta_crypto *c, const ta_hmac_key *k, const uint8_t *msg, size_t n,
                  uint8_t out[TA_HASH_SIZE]);
int ta_hmac(const ta_crypto *c, const uint8_t *key, size_t key_len, const uint8_t *msg, size_t n,
            uint8_t out[TA_HASH_SIZE]);
int ta_sha256(const ta_crypto *c, const uint8_t *msg, size_t n, uint8_t out[TA_HASH_SIZE]);
/* RFC 5869 with SHA-256; out_len at most 255*32; salt may be empty. */
int ta_hkdf(const ta_crypto *c, const uint8_t *salt, size_t salt_len, const uint8_t *ikm,
            size_t ikm_len, const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

/* Wipes memory in a way the compiler may not remove. */
void ta_wipe(void *p, size_t n);
/* Constant-time equality of two n-byte strings: 1 if equal, 0 if not. */
int ta_ct_equal(const uint8_t *a, const uint8_t *b, size_t n);

#endif
