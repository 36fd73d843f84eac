/*
 * The emulated board's run (QEMU mps2-an385, Cortex-M3, -icount shift=0):
 * the crypto vectors, the unit properties and every vector of both
 * profiles on the portable backend, read from the host through
 * semihosting; then the figures of one hardened device login:
 *
 *  - stack: the deepest byte written below the caller's stack pointer by
 *    start + respond + confirm + open + seal, found by painting the stack
 *    with 0xa5 first;
 *  - insns_per_login: SysTick ticks across start + respond + confirm,
 *    times the instructions per tick measured on a calibration loop of
 *    known length (with -icount shift=0 QEMU's virtual clock advances
 *    1 ns per guest instruction, so a tick is a fixed number of them);
 *  - ram: the caller-provided state of one device, one login, one session
 *    and an 8-entry replay cache (the library has no static data);
 *  - flash: text + data of the library objects, measured by the Makefile
 *    with arm-none-eabi-size and passed in as TA_FLASH.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tagauth.h"
#include "vectors.h"

#ifndef TA_FLASH
#define TA_FLASH 0
#endif
#ifndef VECTORS
#define VECTORS "../testdata/vectors"
#endif

static char sbuf[64 * 1024], rbuf[160 * 1024];

#define SYST_CSR (*(volatile uint32_t *)0xe000e010u)
#define SYST_RVR (*(volatile uint32_t *)0xe000e014u)
#define SYST_CVR (*(volatile uint32_t *)0xe000e018u)

static void systick_start(void)
{
	SYST_RVR = 0x00ffffffu;
	SYST_CVR = 0;
	SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
}

static uint32_t ticks_since(uint32_t start)
{
	return (start - SYST_CVR) & 0x00ffffffu;
}

/* 2 instructions per iteration (subs, bne), plus 2 around the loop. */
__attribute__((noinline)) static uint32_t calibrate(uint32_t iterations)
{
	uint32_t t0 = SYST_CVR, n = iterations;
	__asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
	return ticks_since(t0);
}

/* One hardened login, from the first hardened vector, with every object
 * static so that the stack holds only the library's frames. */
static struct {
	uint64_t now;
	uint8_t kj[TA_SIZE];
	uint8_t m1[256], m3[128], m5[64], rec[256], sid[8];
	size_t m1_n, m3_n, m5_n, rec_n;
	uint64_t t2, t4;
	ta_credential cred;
} lv;

static ta_port port;
static ta_replay_entry entries[8];
static ta_replay replay;
static ta_device dev;
static ta_login login;
static ta_session session;
static uint8_t out[256], payload[128];
static size_t out_n;
static int login_rc;

static uint64_t lv_now(void *ctx)
{
	(void)ctx;
	return lv.now;
}

static int lv_random(void *ctx, uint8_t *p, size_t n)
{
	(void)ctx;
	memcpy(p, lv.kj, n < TA_SIZE ? n : TA_SIZE);
	return 0;
}

static int load_login(void)
{
	/* Only what one login needs, from hardened.json's first case. */
	static const char *keys[] = {"\"m1\"", "\"m3\"", "\"m5\"", "\"record\"", "\"sid\"",
	                             "\"k_j\"", "\"tag_j\"", "\"did_j\"", "\"t2\"", "\"t4\""};
	size_t len, n, i;
	const char *p;
	char hex[600];
	if (t_load(VECTORS "/hardened.json", sbuf, sizeof sbuf, &len) != 0) {
		return -1;
	}
	sbuf[len] = 0;
	for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		const char *q;
		p = strstr(sbuf, keys[i]);
		if (p == NULL) {
			return -1;
		}
		p = strchr(p, ':') + 1;
		while (*p == ' ' || *p == '"') {
			p++;
		}
		q = p;
		while (*q && *q != '"' && *q != ',' && *q != '\n') {
			q++;
		}
		if ((size_t)(q - p) >= sizeof hex) {
			return -1;
		}
		memcpy(hex, p, (size_t)(q - p));
		hex[q - p] = 0;
		switch (i) {
		case 0: t_hex(hex, lv.m1, sizeof lv.m1, &lv.m1_n); break;
		case 1: t_hex(hex, lv.m3, sizeof lv.m3, &lv.m3_n); break;
		case 2: t_hex(hex, lv.m5, sizeof lv.m5, &lv.m5_n); break;
		case 3: t_hex(hex, lv.rec, sizeof lv.rec, &lv.rec_n); break;
		case 4: t_hex(hex, lv.sid, sizeof lv.sid, &n); break;
		case 5: t_hex(hex, lv.kj, sizeof lv.kj, &n); break;
		case 6: t_hex(hex, lv.cred.tag, sizeof lv.cred.tag, &n); break;
		case 7:
			lv.cred.did_len = (uint8_t)strlen(hex);
			memcpy(lv.cred.did, hex, lv.cred.did_len);
			break;
		case 8: lv.t2 = strtoull(hex, NULL, 10); break;
		case 9: lv.t4 = strtoull(hex, NULL, 10); break;
		}
	}
	lv.cred.profile = TA_HARDENED;
	lv.cred.kv = 1;
	port.now_ms = lv_now;
	port.random = lv_random;
	return 0;
}

static void setup_login(void)
{
	ta_replay_init(&replay, entries, 8);
	ta_device_init(&dev, &ta_crypto_portable, &port, &lv.cred, &replay);
	memset(&login, 0, sizeof login);
	memset(&session, 0, sizeof session);
	memcpy(payload, lv.sid, 8);
	memcpy(payload + 8, lv.m5, lv.m5_n);
}

__attribute__((noinline)) static void do_login(void)
{
	lv.now = lv.t2;
	login_rc = ta_device_start(&dev, &login, lv.m1, lv.m1_n, out, sizeof out, &out_n);
	lv.now = lv.t4;
	login_rc |= ta_device_respond(&dev, &login, lv.m3, lv.m3_n, out, sizeof out, &out_n, NULL);
	login_rc |= ta_device_confirm(&dev, &login, 1, payload, 8 + lv.m5_n, &session, NULL);
}

__attribute__((noinline)) static void do_channel(void)
{
	login_rc |= ta_device_open(&dev, &session, 1, lv.rec, lv.rec_n, out, sizeof out, &out_n, NULL);
	login_rc |= ta_session_seal(&dev, &session, out, out_n, payload, sizeof payload, &out_n);
}

__attribute__((noinline)) static void do_all(void)
{
	do_login();
	do_channel();
}

extern uint32_t _sstack;

static uint32_t sp(void)
{
	uint32_t v;
	__asm__ volatile("mov %0, sp" : "=r"(v));
	return v;
}

/* Paints [_sstack, sp - 64), runs fn, and returns how far below the SP at
 * the call it wrote. */
__attribute__((noinline)) static uint32_t stack_used(void (*fn)(void))
{
	volatile uint8_t *lo = (volatile uint8_t *)&_sstack;
	uint32_t top = sp() - 64, p;
	for (p = (uint32_t)lo; p < top; p++) {
		*(volatile uint8_t *)p = 0xa5;
	}
	fn();
	for (p = (uint32_t)lo; p < top && *(volatile uint8_t *)p == 0xa5; p++) {
	}
	return top + 64 - p;
}

/* The trace check (make qemu-trace): markers around one login, so that
 * QEMU's per-instruction log can be counted between them. */
__attribute__((noinline)) void trace_start(void)
{
	__asm__ volatile("nop");
}

__attribute__((noinline)) void trace_stop(void)
{
	__asm__ volatile("nop");
}

int main(void)
{
	uint32_t t0, ticks, cticks, cal, stack, insns, ram;
#ifdef TA_TRACE_CHECK
	if (load_login() != 0) {
		return 1;
	}
	setup_login();
	trace_start();
	do_login();
	trace_stop();
	return login_rc == TA_OK ? 0 : 1;
#endif
	run_portable_vectors();
	run_crypto_vectors(&ta_crypto_portable);
	run_unit_tests(&ta_crypto_portable, VECTORS "/hardened.json", sbuf, sizeof sbuf);
	run_vectors(&ta_crypto_portable, TA_CLASSIC, VECTORS "/classic.json",
	            VECTORS "/classic-reject.json", sbuf, sizeof sbuf, rbuf, sizeof rbuf);
	run_vectors(&ta_crypto_portable, TA_HARDENED, VECTORS "/hardened.json",
	            VECTORS "/hardened-reject.json", sbuf, sizeof sbuf, rbuf, sizeof rbuf);

	t_begin("board/hardened login figures");
	t_expect(load_login() == 0, "loading the first hardened vector");
	systick_start();
	cal = calibrate(1000000);
	setup_login();
	t0 = SYST_CVR;
	do_login();
	ticks = ticks_since(t0);
	t0 = SYST_CVR;
	do_channel();
	cticks = ticks_since(t0);
	t_expect(login_rc == TA_OK, "the measured login and task succeed");
	setup_login();
	stack = stack_used(do_all);
	t_expect(login_rc == TA_OK, "the painted-stack login succeeds");
	t_end();
	t_summary();

	/* instructions = ticks * (2 000 002 instructions / cal ticks) */
	insns = cal ? (uint32_t)(((uint64_t)ticks * 2000002u + cal / 2) / cal) : 0;
	ram = (uint32_t)(sizeof dev + sizeof login + sizeof session + sizeof replay +
	                 sizeof entries);
	printf("calibration: 2000002 instructions = %lu SysTick ticks; login = %lu ticks\n",
	       (unsigned long)cal, (unsigned long)ticks);
	printf("channel: open a %lu-byte task record and seal the answer = %lu instructions\n",
	       (unsigned long)(lv.rec_n - TA_RECORD_OVERHEAD),
	       cal ? (unsigned long)(((uint64_t)cticks * 2000002u + cal / 2) / cal) : 0ul);
	printf("ram: ta_device %lu + ta_login %lu + ta_session %lu + replay %lu (8 entries)\n",
	       (unsigned long)sizeof dev, (unsigned long)sizeof login, (unsigned long)sizeof session,
	       (unsigned long)(sizeof replay + sizeof entries));
	printf("flash=%lu ram=%lu stack=%lu heap=0 insns_per_login=%lu\n", (unsigned long)TA_FLASH,
	       (unsigned long)ram, (unsigned long)stack, (unsigned long)insns);
	return t_failed ? 1 : 0;
}
