#ifndef TA_TEST_VECTORS_H
#define TA_TEST_VECTORS_H

#include <stddef.h>

#include "tagauth.h"

/* Runs every success case of success_path and every device case of
 * reject_path (may be NULL) with backend c. */
int run_vectors(const ta_crypto *c, uint8_t profile, const char *success_path,
                const char *reject_path, char *sbuf, size_t scap, char *rbuf, size_t rcap);
/* The standard vectors: FIPS 180-4, RFC 4231, RFC 5869, RFC 8439. */
void run_crypto_vectors(const ta_crypto *c);
void run_portable_vectors(void);
/* Properties of the library that no vector file covers. */
void run_unit_tests(const ta_crypto *c, const char *hardened_path, char *buf, size_t cap);

#endif
