/* Compact portable SHA-256 (FIPS 180-4), for builds with no crypto library. */
#ifndef TA_SHA256_H
#define TA_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct ta_sha256_ctx {
	uint32_t h[8];
	uint64_t len; /* bytes hashed so far */
	uint8_t buf[64];
} ta_sha256_ctx;

void ta_sha256_init(ta_sha256_ctx *c);
void ta_sha256_update(ta_sha256_ctx *c, const uint8_t *p, size_t n);
void ta_sha256_final(ta_sha256_ctx *c, uint8_t out[32]);

#endif
