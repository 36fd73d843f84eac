/* The standard vectors of the primitives, run against a backend (and, for
 * HMAC and HKDF, against the SDK's construction over its hash):
 * FIPS 180-4 (SHA-256, the NIST example messages), RFC 4231 (HMAC-SHA256,
 * test cases 1-7), RFC 5869 (HKDF-SHA256, test cases 1-3) and RFC 8439
 * (ChaCha20 2.4.2, Poly1305 2.5.2, AEAD 2.8.2). */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "tagauth.h"
#include "ta_chachapoly.h"
#include "vectors.h"

static const char LADIES[] = "Ladies and Gentlemen of the class of '99: If I could offer you only "
                             "one tip for the future, sunscreen would be it.";

static void sha(const ta_crypto *c, const char *name, const uint8_t *m, size_t n, const char *want)
{
	uint8_t got[32], w[32];
	size_t wn;
	t_begin(name);
	t_hex(want, w, sizeof w, &wn);
	t_expect(ta_sha256(c, m, n, got) == 0, "sha256");
	t_expect_eq(got, 32, w, wn, "digest");
	t_end();
}

static void sha_million_a(const ta_crypto *c)
{
	ta_hash_state st;
	uint8_t block[1000], got[32], w[32];
	size_t wn;
	int i, rc;
	memset(block, 'a', sizeof block);
	t_begin("FIPS 180-4 SHA-256 one million 'a'");
	rc = c->sha256_init(&st);
	for (i = 0; i < 1000; i++) {
		rc |= c->sha256_update(&st, block, sizeof block);
	}
	rc |= c->sha256_final(&st, got);
	t_hex("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", w, sizeof w, &wn);
	t_expect(rc == 0, "sha256");
	t_expect_eq(got, 32, w, wn, "digest");
	t_end();
}

static void hmac(const ta_crypto *c, const char *name, const uint8_t *key, size_t kn,
                 const uint8_t *m, size_t n, const char *want)
{
	uint8_t got[32], w[32];
	size_t wn;
	ta_hmac_key k;
	t_begin(name);
	t_hex(want, w, sizeof w, &wn);
	t_expect(ta_hmac(c, key, kn, m, n, got) == 0, "hmac");
	t_expect_eq(got, wn, w, wn, "mac"); /* test case 5 is truncated to 128 bits */
	/* the cached key states give the same MAC, twice */
	t_expect(ta_hmac_setkey(c, &k, key, kn) == 0 && ta_hmac_keyed(c, &k, m, n, got) == 0 &&
	             memcmp(got, w, wn) == 0 && ta_hmac_keyed(c, &k, m, n, got) == 0 &&
	             memcmp(got, w, wn) == 0,
	         "keyed mac");
	t_end();
}

static void seq(uint8_t *b, size_t n, uint8_t from)
{
	size_t i;
	for (i = 0; i < n; i++) {
		b[i] = (uint8_t)(from + i);
	}
}

static void hkdf(const ta_crypto *c, const char *name, const uint8_t *salt, size_t sn,
                 const uint8_t *ikm, size_t in, const uint8_t *info, size_t fn, const char *want)
{
	uint8_t got[82], w[82];
	size_t wn;
	t_begin(name);
	t_hex(want, w, sizeof w, &wn);
	t_expect(ta_hkdf(c, salt, sn, ikm, in, info, fn, got, wn) == 0, "hkdf");
	t_expect_eq(got, wn, w, wn, "okm");
	t_end();
}

void run_crypto_vectors(const ta_crypto *c)
{
	static uint8_t key[131], data[152], salt[80], ikm[80], info[80], got[128], w[128], tag[16];
	uint8_t nonce[12];
	size_t wn;
	char name[96];

	sha(c, "FIPS 180-4 SHA-256 \"abc\"", (const uint8_t *)"abc", 3,
	    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	sha(c, "FIPS 180-4 SHA-256 empty", (const uint8_t *)"", 0,
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	sha(c, "FIPS 180-4 SHA-256 448 bits",
	    (const uint8_t *)"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	sha(c, "FIPS 180-4 SHA-256 896 bits",
	    (const uint8_t *)"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
	    112, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
	sha_million_a(c);

	memset(key, 0x0b, 20);
	hmac(c, "RFC 4231 test case 1", key, 20, (const uint8_t *)"Hi There", 8,
	     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	hmac(c, "RFC 4231 test case 2", (const uint8_t *)"Jefe", 4,
	     (const uint8_t *)"what do ya want for nothing?", 28,
	     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	memset(key, 0xaa, 20);
	memset(data, 0xdd, 50);
	hmac(c, "RFC 4231 test case 3", key, 20, data, 50,
	     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
	seq(key, 25, 1);
	memset(data, 0xcd, 50);
	hmac(c, "RFC 4231 test case 4", key, 25, data, 50,
	     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
	memset(key, 0x0c, 20);
	hmac(c, "RFC 4231 test case 5", key, 20, (const uint8_t *)"Test With Truncation", 20,
	     "a3b6167473100ee06e0c796c2955552b");
	memset(key, 0xaa, 131);
	hmac(c, "RFC 4231 test case 6", key, 131,
	     (const uint8_t *)"Test Using Larger Than Block-Size Key - Hash Key First", 54,
	     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	hmac(c, "RFC 4231 test case 7", key, 131,
	     (const uint8_t *)"This is a test using a larger than block-size key and a larger "
	                      "than block-size data. The key needs to be hashed before being "
	                      "used by the HMAC algorithm.",
	     152, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");

	memset(ikm, 0x0b, 22);
	seq(salt, 13, 0);
	seq(info, 10, 0xf0);
	hkdf(c, "RFC 5869 test case 1", salt, 13, ikm, 22, info, 10,
	     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
	seq(ikm, 80, 0);
	seq(salt, 80, 0x60);
	seq(info, 80, 0xb0);
	hkdf(c, "RFC 5869 test case 2", salt, 80, ikm, 80, info, 80,
	     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
	     "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
	     "cc30c58179ec3e87c14c01d5c1f3434f1d87");
	memset(ikm, 0x0b, 22);
	hkdf(c, "RFC 5869 test case 3", NULL, 0, ikm, 22, NULL, 0,
	     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");

	/* RFC 8439 2.8.2: the AEAD, sealed and opened; a flipped bit fails. */
	snprintf(name, sizeof name, "RFC 8439 2.8.2 ChaCha20-Poly1305 (%s)", c->name);
	t_begin(name);
	seq(key, 32, 0x80);
	t_hex("070000004041424344454647", nonce, sizeof nonce, &wn);
	t_hex("50515253c0c1c2c3c4c5c6c7", data, sizeof data, &wn);
	t_expect(c->aead_seal(key, nonce, data, 12, (const uint8_t *)LADIES, 114, got, tag) == 0,
	         "seal");
	t_hex("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
	      "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
	      "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
	      "3ff4def08e4b7a9de576d26586cec64b6116",
	      w, sizeof w, &wn);
	t_expect_eq(got, 114, w, wn, "ciphertext");
	t_hex("1ae10b594f09e26a7e902ecbd0600691", w, sizeof w, &wn);
	t_expect_eq(tag, 16, w, wn, "tag");
	t_expect(c->aead_open(key, nonce, data, 12, got, 114, tag, got) == 0 &&
	             memcmp(got, LADIES, 114) == 0,
	         "open");
	tag[15] ^= 1;
	t_expect(c->aead_open(key, nonce, data, 12, got, 114, tag, w) != 0, "a flipped tag opens");
	t_end();
}

/* RFC 8439 2.4.2 and 2.5.2: the portable ChaCha20 and Poly1305 alone. */
void run_portable_vectors(void)
{
	uint8_t key[32], nonce[12], got[114], w[114], tag[16];
	size_t wn;
	t_begin("RFC 8439 2.4.2 ChaCha20 (portable)");
	seq(key, 32, 0);
	t_hex("000000000000004a00000000", nonce, sizeof nonce, &wn);
	ta_chacha20_xor(key, nonce, 1, (const uint8_t *)LADIES, 114, got);
	t_hex("6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
	      "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
	      "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
	      "5af90bbf74a35be6b40b8eedf2785e42874d",
	      w, sizeof w, &wn);
	t_expect_eq(got, 114, w, wn, "ciphertext");
	t_end();
	t_begin("RFC 8439 2.5.2 Poly1305 (portable)");
	t_hex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b", key, sizeof key, &wn);
	ta_poly1305_mac(key, (const uint8_t *)"Cryptographic Forum Research Group", 34, tag);
	t_hex("a8061dc1305136c6c22b8baf0c0127a9", w, sizeof w, &wn);
	t_expect_eq(tag, 16, w, wn, "tag");
	t_end();
}
