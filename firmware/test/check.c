#include <stdio.h>
#include <string.h>

#include "check.h"
#include "tagauth.h"

unsigned long t_passed, t_failed, t_skipped;
static const char *cur_name;
static int cur_failed;

void t_begin(const char *name)
{
	cur_name = name;
	cur_failed = 0;
}

void t_expect(int ok, const char *what)
{
	if (!ok) {
		printf("FAIL %s: %s\n", cur_name, what);
		cur_failed = 1;
	}
}

void t_expect_eq(const uint8_t *got, size_t got_n, const uint8_t *want, size_t want_n,
                 const char *what)
{
	t_expect(got_n == want_n && memcmp(got, want, got_n) == 0, what);
}

void t_expect_rc(int got, int want, const char *what)
{
	if (got != want) {
		printf("FAIL %s: %s: got %s, want %s\n", cur_name, what, ta_strerror(got),
		       ta_strerror(want));
		cur_failed = 1;
	}
}

void t_end(void)
{
	if (cur_failed) {
		t_failed++;
	} else {
		t_passed++;
	}
}

int t_load(const char *path, char *buf, size_t cap, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t n;
	if (f == NULL) {
		printf("cannot open %s\n", path);
		return -1;
	}
	n = fread(buf, 1, cap, f);
	fclose(f);
	if (n == cap) {
		printf("%s is larger than the %lu-byte buffer\n", path, (unsigned long)cap);
		return -1;
	}
	*len = n;
	return 0;
}

static int nib(char c)
{
	if (c >= '0' && c <= '9') {
		return c - '0';
	}
	if (c >= 'a' && c <= 'f') {
		return c - 'a' + 10;
	}
	return -1;
}

int t_hex(const char *hex, uint8_t *out, size_t cap, size_t *n)
{
	size_t l = strlen(hex), i;
	if (l % 2 || l / 2 > cap) {
		return -1;
	}
	for (i = 0; i < l / 2; i++) {
		int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			return -1;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*n = l / 2;
	return 0;
}

void t_summary(void)
{
	if (t_skipped) {
		printf("skipped %lu card and gateway rejection vectors (roles outside the device SDK)\n",
		       t_skipped);
	}
	printf("%lu passed, %lu failed\n", t_passed, t_failed);
}
