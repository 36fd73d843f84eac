/* A minimal test counter shared by the host and board runners: one test
 * is one vector or one named property; the runner ends with the line
 * "N passed, N failed". */
#ifndef TA_TEST_CHECK_H
#define TA_TEST_CHECK_H

#include <stddef.h>
#include <stdint.h>

extern unsigned long t_passed, t_failed, t_skipped;

void t_begin(const char *name);
/* Records a failed expectation of the current test and prints why. */
void t_expect(int ok, const char *what);
void t_expect_eq(const uint8_t *got, size_t got_n, const uint8_t *want, size_t want_n,
                 const char *what);
void t_expect_rc(int got, int want, const char *what);
void t_end(void);
/* Reads a whole file into buf; 0 on success. */
int t_load(const char *path, char *buf, size_t cap, size_t *len);
int t_hex(const char *hex, uint8_t *out, size_t cap, size_t *n);
void t_summary(void);

#endif
