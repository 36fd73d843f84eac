/* Compact portable ChaCha20-Poly1305 (RFC 8439). Poly1305 uses 26-bit limbs
 * and 32x32->64 multiplies (as poly1305-donna-32): constant time where the
 * multiplier is (Cortex-M4 and later, x86-64), not on Cortex-M3, whose UMULL
 * ends early on small operands (see README.md, "Crypto backend"). */
#include <string.h>

#include "ta_chachapoly.h"
#include "tagauth_crypto.h"

static uint32_t ld32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void st32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define QR(a, b, c, d)                                                                           \
	(a += b, d ^= a, d = ROL(d, 16), c += d, b ^= c, b = ROL(b, 12), a += b, d ^= a,           \
	 d = ROL(d, 8), c += d, b ^= c, b = ROL(b, 7))

static void block(const uint8_t key[32], const uint8_t nonce[12], uint32_t ctr, uint8_t out[64])
{
	uint32_t s[16], x[16];
	int i;
	s[0] = 0x61707865, s[1] = 0x3320646e, s[2] = 0x79622d32, s[3] = 0x6b206574;
	for (i = 0; i < 8; i++) {
		s[4 + i] = ld32(key + 4 * i);
	}
	s[12] = ctr;
	s[13] = ld32(nonce), s[14] = ld32(nonce + 4), s[15] = ld32(nonce + 8);
	memcpy(x, s, sizeof s);
	for (i = 0; i < 10; i++) {
		QR(x[0], x[4], x[8], x[12]), QR(x[1], x[5], x[9], x[13]);
		QR(x[2], x[6], x[10], x[14]), QR(x[3], x[7], x[11], x[15]);
		QR(x[0], x[5], x[10], x[15]), QR(x[1], x[6], x[11], x[12]);
		QR(x[2], x[7], x[8], x[13]), QR(x[3], x[4], x[9], x[14]);
	}
	for (i = 0; i < 16; i++) {
		st32(out + 4 * i, x[i] + s[i]);
	}
	ta_wipe(s, sizeof s);
	ta_wipe(x, sizeof x);
}

void ta_chacha20_xor(const uint8_t key[32], const uint8_t nonce[12], uint32_t counter,
                     const uint8_t *in, size_t n, uint8_t *out)
{
	uint8_t ks[64];
	size_t i, take;
	while (n) {
		block(key, nonce, counter++, ks);
		take = n < 64 ? n : 64;
		for (i = 0; i < take; i++) {
			out[i] = in[i] ^ ks[i];
		}
		in += take, out += take, n -= take;
	}
	ta_wipe(ks, sizeof ks);
}

typedef struct {
	uint32_t r[5], h[5], pad[4];
} poly;

static void poly_init(poly *p, const uint8_t key[32])
{
	p->r[0] = ld32(key) & 0x3ffffff;
	p->r[1] = (ld32(key + 3) >> 2) & 0x3ffff03;
	p->r[2] = (ld32(key + 6) >> 4) & 0x3ffc0ff;
	p->r[3] = (ld32(key + 9) >> 6) & 0x3f03fff;
	p->r[4] = (ld32(key + 12) >> 8) & 0x00fffff;
	memset(p->h, 0, sizeof p->h);
	p->pad[0] = ld32(key + 16), p->pad[1] = ld32(key + 20);
	p->pad[2] = ld32(key + 24), p->pad[3] = ld32(key + 28);
}

/* Absorbs one 16-byte block; hibit is 1<<24 for full blocks. */
static void poly_block(poly *p, const uint8_t m[16], uint32_t hibit)
{
	uint32_t r0 = p->r[0], r1 = p->r[1], r2 = p->r[2], r3 = p->r[3], r4 = p->r[4];
	uint32_t s1 = r1 * 5, s2 = r2 * 5, s3 = r3 * 5, s4 = r4 * 5;
	uint32_t h0 = p->h[0], h1 = p->h[1], h2 = p->h[2], h3 = p->h[3], h4 = p->h[4], c;
	uint64_t d0, d1, d2, d3, d4;
	h0 += ld32(m) & 0x3ffffff;
	h1 += (ld32(m + 3) >> 2) & 0x3ffffff;
	h2 += (ld32(m + 6) >> 4) & 0x3ffffff;
	h3 += (ld32(m + 9) >> 6) & 0x3ffffff;
	h4 += (ld32(m + 12) >> 8) | hibit;
	d0 = (uint64_t)h0 * r0 + (uint64_t)h1 * s4 + (uint64_t)h2 * s3 + (uint64_t)h3 * s2 + (uint64_t)h4 * s1;
	d1 = (uint64_t)h0 * r1 + (uint64_t)h1 * r0 + (uint64_t)h2 * s4 + (uint64_t)h3 * s3 + (uint64_t)h4 * s2;
	d2 = (uint64_t)h0 * r2 + (uint64_t)h1 * r1 + (uint64_t)h2 * r0 + (uint64_t)h3 * s4 + (uint64_t)h4 * s3;
	d3 = (uint64_t)h0 * r3 + (uint64_t)h1 * r2 + (uint64_t)h2 * r1 + (uint64_t)h3 * r0 + (uint64_t)h4 * s4;
	d4 = (uint64_t)h0 * r4 + (uint64_t)h1 * r3 + (uint64_t)h2 * r2 + (uint64_t)h3 * r1 + (uint64_t)h4 * r0;
	c = (uint32_t)(d0 >> 26), h0 = (uint32_t)d0 & 0x3ffffff;
	d1 += c, c = (uint32_t)(d1 >> 26), h1 = (uint32_t)d1 & 0x3ffffff;
	d2 += c, c = (uint32_t)(d2 >> 26), h2 = (uint32_t)d2 & 0x3ffffff;
	d3 += c, c = (uint32_t)(d3 >> 26), h3 = (uint32_t)d3 & 0x3ffffff;
	d4 += c, c = (uint32_t)(d4 >> 26), h4 = (uint32_t)d4 & 0x3ffffff;
	h0 += c * 5, c = h0 >> 26, h0 &= 0x3ffffff;
	h1 += c;
	p->h[0] = h0, p->h[1] = h1, p->h[2] = h2, p->h[3] = h3, p->h[4] = h4;
}

/* Absorbs n bytes, the last partial block zero-padded to 16 (RFC 8439's
 * AEAD construction pads aad and ciphertext alike). */
static void poly_padded(poly *p, const uint8_t *m, size_t n)
{
	uint8_t b[16];
	for (; n >= 16; m += 16, n -= 16) {
		poly_block(p, m, 1u << 24);
	}
	if (n) {
		memset(b, 0, sizeof b);
		memcpy(b, m, n);
		poly_block(p, b, 1u << 24);
	}
}

static void poly_finish(poly *p, uint8_t tag[16])
{
	uint32_t h0 = p->h[0], h1 = p->h[1], h2 = p->h[2], h3 = p->h[3], h4 = p->h[4], c;
	uint32_t g0, g1, g2, g3, g4, mask;
	uint64_t f;
	c = h1 >> 26, h1 &= 0x3ffffff;
	h2 += c, c = h2 >> 26, h2 &= 0x3ffffff;
	h3 += c, c = h3 >> 26, h3 &= 0x3ffffff;
	h4 += c, c = h4 >> 26, h4 &= 0x3ffffff;
	h0 += c * 5, c = h0 >> 26, h0 &= 0x3ffffff;
	h1 += c;
	/* h - p, selected without a branch when h >= p */
	g0 = h0 + 5, c = g0 >> 26, g0 &= 0x3ffffff;
	g1 = h1 + c, c = g1 >> 26, g1 &= 0x3ffffff;
	g2 = h2 + c, c = g2 >> 26, g2 &= 0x3ffffff;
	g3 = h3 + c, c = g3 >> 26, g3 &= 0x3ffffff;
	g4 = h4 + c - (1u << 26);
	mask = (g4 >> 31) - 1;
	g0 &= mask, g1 &= mask, g2 &= mask, g3 &= mask, g4 &= mask;
	mask = ~mask;
	h0 = (h0 & mask) | g0, h1 = (h1 & mask) | g1, h2 = (h2 & mask) | g2;
	h3 = (h3 & mask) | g3, h4 = (h4 & mask) | g4;
	h0 = (h0 | (h1 << 26)) & 0xffffffff;
	h1 = ((h1 >> 6) | (h2 << 20)) & 0xffffffff;
	h2 = ((h2 >> 12) | (h3 << 14)) & 0xffffffff;
	h3 = ((h3 >> 18) | (h4 << 8)) & 0xffffffff;
	f = (uint64_t)h0 + p->pad[0], h0 = (uint32_t)f;
	f = (uint64_t)h1 + p->pad[1] + (f >> 32), h1 = (uint32_t)f;
	f = (uint64_t)h2 + p->pad[2] + (f >> 32), h2 = (uint32_t)f;
	f = (uint64_t)h3 + p->pad[3] + (f >> 32), h3 = (uint32_t)f;
	st32(tag, h0), st32(tag + 4, h1), st32(tag + 8, h2), st32(tag + 12, h3);
	ta_wipe(p, sizeof *p);
}

void ta_poly1305_mac(const uint8_t key[32], const uint8_t *m, size_t n, uint8_t tag[16])
{
	poly p;
	uint8_t b[16];
	poly_init(&p, key);
	for (; n >= 16; m += 16, n -= 16) {
		poly_block(&p, m, 1u << 24);
	}
	if (n) {
		/* A final partial block gets a 1 byte after it, no high bit. */
		memset(b, 0, sizeof b);
		memcpy(b, m, n);
		b[n] = 1;
		poly_block(&p, b, 0);
	}
	poly_finish(&p, tag);
}

void ta_poly1305(const uint8_t key[32], const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                 size_t n, uint8_t tag[16])
{
	poly p;
	uint8_t lens[16];
	uint64_t a = aad_len, c = n;
	int i;
	poly_init(&p, key);
	poly_padded(&p, aad, aad_len);
	poly_padded(&p, ct, n);
	for (i = 0; i < 8; i++) {
		lens[i] = (uint8_t)(a >> (8 * i));
		lens[8 + i] = (uint8_t)(c >> (8 * i));
	}
	poly_block(&p, lens, 1u << 24);
	poly_finish(&p, tag);
}

static void otk(const uint8_t key[32], const uint8_t nonce[12], uint8_t pk[32])
{
	uint8_t b[64];
	block(key, nonce, 0, b);
	memcpy(pk, b, 32);
	ta_wipe(b, sizeof b);
}

void ta_chachapoly_seal(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                        size_t aad_len, const uint8_t *pt, size_t n, uint8_t *ct,
                        uint8_t tag[16])
{
	uint8_t pk[32];
	otk(key, nonce, pk);
	ta_chacha20_xor(key, nonce, 1, pt, n, ct);
	ta_poly1305(pk, aad, aad_len, ct, n, tag);
	ta_wipe(pk, sizeof pk);
}

int ta_chachapoly_open(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                       size_t aad_len, const uint8_t *ct, size_t n, const uint8_t tag[16],
                       uint8_t *pt)
{
	uint8_t pk[32], want[16];
	int ok;
	otk(key, nonce, pk);
	ta_poly1305(pk, aad, aad_len, ct, n, want);
	ok = ta_ct_equal(want, tag, sizeof want);
	ta_wipe(pk, sizeof pk);
	ta_wipe(want, sizeof want);
	if (!ok) {
		return -1;
	}
	ta_chacha20_xor(key, nonce, 1, ct, n, pt);
	return 0;
}
