/* Compact portable ChaCha20-Poly1305 (RFC 8439), for builds with no crypto
 * library. */
#ifndef TA_CHACHAPOLY_H
#define TA_CHACHAPOLY_H

#include <stddef.h>
#include <stdint.h>

void ta_chacha20_xor(const uint8_t key[32], const uint8_t nonce[12], uint32_t counter,
                     const uint8_t *in, size_t n, uint8_t *out);
void ta_poly1305(const uint8_t key[32], const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                 size_t n, uint8_t tag[16]);
/* Tag-only Poly1305 over one message, for the RFC 8439 2.5.2 vector. */
void ta_poly1305_mac(const uint8_t key[32], const uint8_t *m, size_t n, uint8_t tag[16]);
void ta_chachapoly_seal(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                        size_t aad_len, const uint8_t *pt, size_t n, uint8_t *ct,
                        uint8_t tag[16]);
/* 0 when the tag verifies (pt then holds the plaintext), -1 otherwise (pt
 * untouched). */
int ta_chachapoly_open(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                       size_t aad_len, const uint8_t *ct, size_t n, const uint8_t tag[16],
                       uint8_t *pt);

#endif
