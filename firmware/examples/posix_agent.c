/*
 * tagauth-agent: a POSIX device agent in C on libcoap, built on the
 * firmware SDK. It serves the device endpoints of spec section 11 over
 * CoAP/UDP: /tagauth/login (m1 -> relays m2 to the gateway's
 * /tagauth/verify -> m4), /tagauth/confirm (sid || m5) and /tagauth/task
 * with one built-in task, "echo", whose answer is its arguments.
 *
 *   tagauth-agent --cred sensor-7.json --listen 127.0.0.1:5683 [--gateway HOST:PORT]
 *
 * The credential is the file `tagauth gateway provision` writes. The agent
 * prints "serving CoAP on ADDR, ..." once it listens and runs until SIGTERM
 * or SIGINT. Logs go to stderr and never hold secrets or raw identities.
 * Retransmitted confirmable requests are answered from a cache of recent
 * responses, never by running a protocol step again (section 11).
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <coap3/coap.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "tagauth.h"

#define LOGINS 64
#define SESSIONS 64
#define REPLAY 4096
#define MAX_PAYLOAD 1024

static ta_replay_entry replay_entries[REPLAY];
static ta_replay replay;
static ta_device dev;
static ta_login logins[LOGINS];
static ta_session sessions[SESSIONS];
static size_t max_sessions = SESSIONS; /* --sessions: fewer, for tests */
static char gateway[256];
static volatile sig_atomic_t stop;

/* ---- the port: clock and randomness ---- */

static uint64_t now_ms(void *ctx)
{
	struct timespec ts;
	(void)ctx;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int random_bytes(void *ctx, uint8_t *out, size_t n)
{
	FILE *f = fopen("/dev/urandom", "rb");
	size_t got;
	(void)ctx;
	if (f == NULL) {
		return -1;
	}
	got = fread(out, 1, n, f);
	fclose(f);
	return got == n ? 0 : -1;
}

/* ---- the credential file ---- */

static int load_credential(const char *path, ta_credential *c)
{
	static char buf[16384];
	static json_obj o;
	json_span s;
	uint64_t kv = 0;
	size_t n;
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "tagauth-agent: %s: %s\n", path, strerror(errno));
		return -1;
	}
	n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	memset(c, 0, sizeof *c);
	if (n == sizeof buf || json_object(buf, n, &o) != 0) {
		fprintf(stderr, "tagauth-agent: %s: not a credential (one JSON object)\n", path);
		return -1;
	}
	if (json_str(&o, "profile", &s) != 0 ||
	    (s.n == 7 && memcmp(s.p, "classic", 7) == 0   ? (c->profile = TA_CLASSIC, 0)
	     : s.n == 8 && memcmp(s.p, "hardened", 8) == 0 ? (c->profile = TA_HARDENED, 0)
	                                                   : -1) != 0) {
		fprintf(stderr, "tagauth-agent: %s: profile must be classic or hardened\n", path);
		return -1;
	}
	/* The identity is raw bytes between the quotes: a DID with JSON
	 * escapes is refused rather than guessed at. */
	if (json_str(&o, "id", &s) != 0 || s.n > TA_MAX_ID || memchr(s.p, '\\', s.n) != NULL ||
	    !ta_valid_identity((const uint8_t *)s.p, s.n)) {
		fprintf(stderr, "tagauth-agent: %s: id must be 1-64 bytes of UTF-8 without escapes\n", path);
		return -1;
	}
	c->did_len = (uint8_t)s.n;
	memcpy(c->did, s.p, s.n);
	if (json_u64(&o, "kv", &kv) != 0 || kv > 255 || (c->profile == TA_HARDENED && kv == 0)) {
		fprintf(stderr, "tagauth-agent: %s: kv must be 1-255\n", path);
		return -1;
	}
	c->kv = (uint8_t)kv;
	if (json_hexf(&o, "tag", c->tag, sizeof c->tag, &n) != 0 || n != TA_SIZE) {
		fprintf(stderr, "tagauth-agent: %s: tag must be 64 lowercase hex digits\n", path);
		return -1;
	}
	if (gateway[0] == 0) {
		if (json_str(&o, "gateway", &s) != 0 || s.n == 0 || s.n >= sizeof gateway) {
			fprintf(stderr, "tagauth-agent: %s: no gateway address (or pass --gateway)\n", path);
			return -1;
		}
		memcpy(gateway, s.p, s.n);
		gateway[s.n] = 0;
	}
	ta_wipe(buf, sizeof buf);
	return 0;
}

/* ---- the relay: one CoAP POST to the gateway's /tagauth/verify ---- */

static int split_hostport(const char *hp, char *host, size_t cap, const char **port)
{
	const char *colon = strrchr(hp, ':');
	size_t n;
	if (colon == NULL) {
		return -1;
	}
	n = (size_t)(colon - hp);
	if (n >= 2 && hp[0] == '[' && hp[n - 1] == ']') { /* [::1]:5683 */
		hp++;
		n -= 2;
	}
	if (n == 0 || n >= cap) {
		return -1;
	}
	memcpy(host, hp, n);
	host[n] = 0;
	*port = colon + 1;
	return 0;
}

/* Skips the options of a CoAP message at p (after the token); returns the
 * payload's offset or -1. */
static long payload_offset(const uint8_t *p, size_t n, size_t i)
{
	while (i < n) {
		size_t delta, len;
		if (p[i] == 0xff) {
			return i + 1 < n ? (long)(i + 1) : -1;
		}
		delta = p[i] >> 4, len = p[i] & 15, i++;
		if (delta == 15 || len == 15) {
			return -1;
		}
		if (delta == 13) {
			i += 1;
		} else if (delta == 14) {
			i += 2;
		}
		if (len == 13) {
			if (i >= n) {
				return -1;
			}
			len = 13u + p[i], i += 1;
		} else if (len == 14) {
			if (i + 1 >= n) {
				return -1;
			}
			len = 269u + ((size_t)p[i] << 8 | p[i + 1]), i += 2;
		}
		i += len;
	}
	return (long)n; /* no payload */
}

/* Returns the response payload's length and sets *code (the CoAP code
 * byte), or -1 if the gateway did not answer: 4 transmissions, 1 s then
 * doubling, as RFC 7252's defaults scaled for a gateway on the LAN. */
static int gateway_verify(const uint8_t *m2, size_t n, uint8_t *resp, size_t cap, uint8_t *code)
{
	static uint16_t mid;
	uint8_t req[16 + TA_M2_MAX], in[1500], tok[4];
	char host[256];
	const char *port;
	struct addrinfo hints, *ai = NULL;
	size_t o = 0;
	int fd = -1, tries, wait_ms = 1000, rc = -1, acked = 0;
	if (split_hostport(gateway, host, sizeof host, &port) != 0) {
		return -1;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_DGRAM;
	if (getaddrinfo(host, port, &hints, &ai) != 0) {
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 || random_bytes(NULL, tok, 4) != 0) {
		goto out;
	}
	mid++;
	req[o++] = 0x44; /* version 1, confirmable, 4-byte token */
	req[o++] = 0x02; /* POST */
	req[o++] = (uint8_t)(mid >> 8), req[o++] = (uint8_t)mid;
	memcpy(req + o, tok, 4), o += 4;
	req[o++] = 0xb7, memcpy(req + o, "tagauth", 7), o += 7; /* Uri-Path */
	req[o++] = 0x06, memcpy(req + o, "verify", 6), o += 6;  /* Uri-Path */
	req[o++] = 0x11, req[o++] = 42;                         /* Content-Format */
	req[o++] = 0xff;
	memcpy(req + o, m2, n), o += n;
	for (tries = 0; tries < 4 && rc < 0 && !acked; tries++, wait_ms *= 2) {
		struct pollfd pfd;
		uint64_t deadline = now_ms(NULL) + (uint64_t)wait_ms;
		if (send(fd, req, o, 0) != (ssize_t)o) {
			goto out;
		}
		pfd.fd = fd, pfd.events = POLLIN;
		while (rc < 0) {
			uint64_t t = now_ms(NULL);
			ssize_t got;
			long off;
			int type;
			if (t >= deadline || poll(&pfd, 1, (int)(deadline - t)) <= 0) {
				break;
			}
			got = recv(fd, in, sizeof in, 0);
			if (got < 4 || (in[0] >> 6) != 1) {
				continue;
			}
			type = in[0] >> 4 & 3;
			if (type == 2 && in[1] == 0 && ((in[2] << 8) | in[3]) == mid) {
				/* an empty ACK: the answer comes separately; wait
				 * for it without retransmitting */
				acked = 1;
				deadline = now_ms(NULL) + 10000u;
				continue;
			}
			if ((in[0] & 15) != 4 || got < 8 || memcmp(in + 4, tok, 4) != 0 ||
			    (type == 2 && ((in[2] << 8) | in[3]) != mid) || type == 3) {
				continue;
			}
			if (type == 0) { /* a separate confirmable answer: ACK it */
				uint8_t ack[4] = {0x60, 0x00, in[2], in[3]};
				(void)send(fd, ack, sizeof ack, 0);
			}
			off = payload_offset(in, (size_t)got, 8);
			if (off < 0 || (size_t)got - (size_t)off > cap) {
				continue;
			}
			*code = in[1];
			memcpy(resp, in + off, (size_t)got - (size_t)off);
			rc = (int)((size_t)got - (size_t)off);
		}
	}
out:
	if (fd >= 0) {
		close(fd);
	}
	freeaddrinfo(ai);
	return rc;
}

/* ---- answers and the retransmission cache ---- */

static coap_pdu_code_t coap_code(int rc)
{
	switch (rc) {
	case TA_OK:
		return COAP_RESPONSE_CODE_CHANGED;
	case TA_E_MALFORMED:
	case TA_E_UNSUPPORTED_PROFILE:
		return COAP_RESPONSE_CODE_BAD_REQUEST;
	case TA_E_STALE_TIMESTAMP:
	case TA_E_REPLAYED:
	case TA_E_REJECTED:
		return COAP_RESPONSE_CODE_UNAUTHORIZED;
	case TA_E_BUSY:
		return COAP_RESPONSE_CODE_SERVICE_UNAVAILABLE;
	default:
		return COAP_RESPONSE_CODE_INTERNAL_ERROR;
	}
}

typedef struct cached {
	coap_address_t peer;
	coap_mid_t mid;
	uint64_t at;
	coap_pdu_code_t code;
	size_t n;
	uint8_t data[MAX_PAYLOAD + 64];
} cached;

static cached cache[32];
static size_t cache_next;

/* EXCHANGE_LIFETIME of RFC 7252 is 247 s. */
#define EXCHANGE_LIFETIME_MS 247000u

static const cached *cache_find(const coap_session_t *s, const coap_pdu_t *req)
{
	size_t i;
	for (i = 0; i < sizeof cache / sizeof cache[0]; i++) {
		if (cache[i].at != 0 && now_ms(NULL) - cache[i].at < EXCHANGE_LIFETIME_MS &&
		    cache[i].mid == coap_pdu_get_mid(req) &&
		    coap_address_equals(&cache[i].peer, coap_session_get_addr_remote(s))) {
			return &cache[i];
		}
	}
	return NULL;
}

static void answer(const coap_session_t *s, const coap_pdu_t *req, coap_pdu_t *resp,
                   coap_pdu_code_t code, const uint8_t *data, size_t n)
{
	uint8_t cf[4];
	cached *c = &cache[cache_next++ % (sizeof cache / sizeof cache[0])];
	coap_pdu_set_code(resp, code);
	if (n > 0) {
		coap_add_option(resp, COAP_OPTION_CONTENT_FORMAT,
		                coap_encode_var_safe(cf, sizeof cf, COAP_MEDIATYPE_APPLICATION_OCTET_STREAM),
		                cf);
		coap_add_data(resp, n, data);
	}
	if (coap_pdu_get_type(req) == COAP_MESSAGE_CON && n <= sizeof c->data) {
		coap_address_copy(&c->peer, coap_session_get_addr_remote(s));
		c->mid = coap_pdu_get_mid(req);
		c->at = now_ms(NULL);
		c->code = code;
		c->n = n;
		memcpy(c->data, data, n);
	}
}

static int replayed_request(const coap_session_t *s, const coap_pdu_t *req, coap_pdu_t *resp)
{
	const cached *c = cache_find(s, req);
	uint8_t cf[4];
	if (c == NULL) {
		return 0;
	}
	coap_pdu_set_code(resp, c->code);
	if (c->n > 0) {
		coap_add_option(resp, COAP_OPTION_CONTENT_FORMAT,
		                coap_encode_var_safe(cf, sizeof cf, COAP_MEDIATYPE_APPLICATION_OCTET_STREAM),
		                cf);
		coap_add_data(resp, c->n, c->data);
	}
	return 1;
}

static void refuse(const coap_session_t *s, const coap_pdu_t *req, coap_pdu_t *resp,
                   const uint8_t *msg, size_t n, int rc, const char *step)
{
	uint8_t err[TA_ERROR_SIZE];
	ta_error_message(err, msg, n, rc);
	fprintf(stderr, "tagauth-agent: %s refused: %s\n", step, ta_strerror(rc));
	answer(s, req, resp, coap_code(rc), err, sizeof err);
}

/* ---- the endpoints ---- */

static ta_login *free_login(void)
{
	ta_login *oldest = NULL;
	uint64_t now = now_ms(NULL);
	size_t i;
	for (i = 0; i < LOGINS; i++) {
		ta_login *l = &logins[i];
		if (l->state == TA_LOGIN_WAIT_M5 && now > l->t4 && now - l->t4 > dev.window_ms) {
			ta_login_wipe(l); /* dropped: held for dT after m4 */
		}
		if (l->state == TA_LOGIN_FREE) {
			return l;
		}
		/* a finished login is kept so that its m5 replays are told
		 * apart; the oldest goes first when room runs out */
		if (l->state == TA_LOGIN_DONE && (oldest == NULL || l->t4 < oldest->t4)) {
			oldest = l;
		}
	}
	if (oldest != NULL) {
		ta_login_wipe(oldest);
	}
	return oldest;
}

static ta_session *free_session(void)
{
	uint64_t now = now_ms(NULL);
	size_t i;
	for (i = 0; i < max_sessions; i++) {
		ta_session *s = &sessions[i];
		if (s->open && ((now > s->last_used && now - s->last_used > dev.session_idle_ms) ||
		                (now > s->created && now - s->created > dev.session_life_ms))) {
			ta_session_wipe(s);
		}
		if (!s->open) {
			return s;
		}
	}
	return NULL;
}

static void get_payload(const coap_pdu_t *req, const uint8_t **p, size_t *n)
{
	if (!coap_get_data(req, n, p)) {
		*p = NULL;
		*n = 0;
	}
}

static void on_login(coap_resource_t *r, coap_session_t *s, const coap_pdu_t *req,
                     const coap_string_t *q, coap_pdu_t *resp)
{
	uint8_t m2[TA_M2_MAX], m3[256], m4[TA_M4_MAX];
	const uint8_t *m1;
	size_t n, m2_len, m4_len;
	ta_login *l;
	ta_session *sess;
	uint8_t code = 0;
	int rc, len;
	(void)r, (void)q;
	if (replayed_request(s, req, resp)) {
		return;
	}
	get_payload(req, &m1, &n);
	l = free_login();
	sess = free_session();
	if (l == NULL || sess == NULL) {
		refuse(s, req, resp, m1, n, TA_E_BUSY, "m1 (no free login or session slot)");
		return;
	}
	rc = ta_device_start(&dev, l, m1, n, m2, sizeof m2, &m2_len);
	if (rc != TA_OK) {
		refuse(s, req, resp, m1, n, rc, "m1");
		return;
	}
	len = gateway_verify(m2, m2_len, m3, sizeof m3, &code);
	if (len < 0) {
		ta_login_wipe(l);
		fprintf(stderr, "tagauth-agent: gateway %s unreachable\n", gateway);
		refuse(s, req, resp, m1, n, TA_E_BUSY, "m2");
		return;
	}
	if (code != COAP_RESPONSE_CODE_CHANGED) {
		/* the gateway's audit log has the reason; relay its code */
		ta_login_wipe(l);
		rc = len == TA_ERROR_SIZE && m3[1] == TA_ERROR && m3[2] >= 1 && m3[2] <= 7 ? m3[2]
		                                                                            : TA_E_INTERNAL;
		refuse(s, req, resp, m1, n, rc, "m3 (gateway)");
		return;
	}
	rc = ta_device_respond(&dev, l, m3, (size_t)len, m4, sizeof m4, &m4_len, sess);
	if (rc != TA_OK) {
		ta_login_wipe(l);
		/* an m3 that does not parse is the gateway's fault */
		refuse(s, req, resp, m1, n,
		       rc == TA_E_MALFORMED || rc == TA_E_UNSUPPORTED_PROFILE ? TA_E_INTERNAL : rc, "m3");
		return;
	}
	fprintf(stderr, "tagauth-agent: login %s\n",
	        dev.profile == TA_CLASSIC ? "established" : "awaiting confirmation");
	answer(s, req, resp, COAP_RESPONSE_CODE_CHANGED, m4, m4_len);
}

static void on_confirm(coap_resource_t *r, coap_session_t *s, const coap_pdu_t *req,
                       const coap_string_t *q, coap_pdu_t *resp)
{
	static ta_session spare;
	uint8_t err[TA_ERROR_SIZE];
	const uint8_t *p;
	size_t n, which = 0;
	ta_session *sess;
	int rc;
	(void)r, (void)q;
	if (replayed_request(s, req, resp)) {
		return;
	}
	get_payload(req, &p, &n);
	/* With no free slot the checks of sections 7 and 11 still come
	 * first: only an m5 that verifies needs room, and then it is busy and
	 * its login dropped, as the Go agent does. */
	sess = free_session();
	rc = ta_device_confirm(&dev, logins, LOGINS, p, n, sess != NULL ? sess : &spare, &which);
	if (rc == TA_OK && sess == NULL) {
		ta_session_wipe(&spare);
		ta_login_wipe(&logins[which]);
		rc = TA_E_BUSY;
	}
	if (rc == TA_OK) {
		fprintf(stderr, "tagauth-agent: login established\n");
		answer(s, req, resp, COAP_RESPONSE_CODE_CHANGED, NULL, 0);
		return;
	}
	ta_confirm_error_message(err, p, n, rc);
	fprintf(stderr, "tagauth-agent: m5 refused: %s\n", ta_strerror(rc));
	answer(s, req, resp, coap_code(rc), err, sizeof err);
}

/* Runs a task request {"task":NAME,"args":STRING} (userclient.TaskRequest)
 * and writes the JSON answer {"ok":..,"result"|"error":..}. Strings are
 * copied in their JSON-escaped form, which stays valid JSON. */
static size_t run_task(const uint8_t *pt, size_t n, char *out, size_t cap)
{
	static json_obj o;
	json_span task, args = {"", 0};
	size_t i;
	int len;
	if (json_object((const char *)pt, n, &o) != 0 || json_str(&o, "task", &task) != 0 ||
	    task.n == 0 || (json_get(&o, "args") != NULL && json_str(&o, "args", &args) != 0)) {
		goto bad;
	}
	for (i = 0; i < o.n; i++) { /* unknown fields are refused, as in Go */
		if (!(o.f[i].key.n == 4 && memcmp(o.f[i].key.p, "task", 4) == 0) &&
		    !(o.f[i].key.n == 4 && memcmp(o.f[i].key.p, "args", 4) == 0)) {
			goto bad;
		}
	}
	if (task.n == 4 && memcmp(task.p, "echo", 4) == 0) {
		len = snprintf(out, cap, "{\"ok\":true,\"result\":\"%.*s\"}", (int)args.n, args.p);
	} else {
		len = snprintf(out, cap, "{\"ok\":false,\"error\":\"unknown task \\\"%.*s\\\"\"}",
		               (int)(task.n > 64 ? 64 : task.n), task.p);
	}
	if (len > 0 && (size_t)len < cap) {
		return (size_t)len;
	}
	len = snprintf(out, cap, "{\"ok\":false,\"error\":\"result too large\"}");
	return (size_t)len;
bad:
	len = snprintf(out, cap, "{\"ok\":false,\"error\":\"task request must be one JSON object "
	                         "{\\\"task\\\":NAME,\\\"args\\\":STRING}\"}");
	return (size_t)len;
}

static void on_task(coap_resource_t *r, coap_session_t *s, const coap_pdu_t *req,
                    const coap_string_t *q, coap_pdu_t *resp)
{
	static uint8_t pt[MAX_PAYLOAD], rec[MAX_PAYLOAD + TA_RECORD_OVERHEAD];
	static char ans[MAX_PAYLOAD - TA_RECORD_OVERHEAD];
	const uint8_t *p;
	size_t n, pt_len, which, ans_len, rec_len;
	int rc;
	(void)r, (void)q;
	if (replayed_request(s, req, resp)) {
		return;
	}
	get_payload(req, &p, &n);
	rc = ta_device_open(&dev, sessions, SESSIONS, p, n, pt, sizeof pt, &pt_len, &which);
	if (rc != TA_OK) {
		refuse(s, req, resp, p, n, rc, "task");
		return;
	}
	ans_len = run_task(pt, pt_len, ans, sizeof ans);
	ta_wipe(pt, pt_len);
	rc = ta_session_seal(&dev, &sessions[which], (const uint8_t *)ans, ans_len, rec, sizeof rec,
	                     &rec_len);
	ta_wipe(ans, sizeof ans);
	if (rc != TA_OK) {
		refuse(s, req, resp, p, n, rc, "task answer");
		return;
	}
	answer(s, req, resp, COAP_RESPONSE_CODE_CHANGED, rec, rec_len);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int usage(void)
{
	fprintf(stderr, "usage: tagauth-agent --cred FILE --listen HOST:PORT [--gateway HOST:PORT] "
	                "[--sessions 1..64]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const ta_port port = {now_ms, random_bytes, NULL};
	const char *cred_path = NULL, *listen = NULL, *lport;
	char host[256];
	ta_credential cred;
	coap_context_t *ctx;
	coap_address_t addr;
	struct addrinfo hints, *ai;
	static const char *paths[] = {"tagauth/login", "tagauth/confirm", "tagauth/task"};
	coap_method_handler_t handlers[] = {on_login, on_confirm, on_task};
	int i, rc;
	for (i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--cred") == 0) {
			cred_path = argv[i + 1];
		} else if (strcmp(argv[i], "--listen") == 0) {
			listen = argv[i + 1];
		} else if (strcmp(argv[i], "--gateway") == 0 && strlen(argv[i + 1]) < sizeof gateway) {
			strcpy(gateway, argv[i + 1]);
		} else if (strcmp(argv[i], "--sessions") == 0 && atoi(argv[i + 1]) >= 1 &&
		           atoi(argv[i + 1]) <= SESSIONS) {
			max_sessions = (size_t)atoi(argv[i + 1]);
		} else {
			return usage();
		}
	}
	if (i != argc || cred_path == NULL || listen == NULL ||
	    split_hostport(listen, host, sizeof host, &lport) != 0) {
		return usage();
	}
	if (load_credential(cred_path, &cred) != 0) {
		return 1;
	}
	ta_replay_init(&replay, replay_entries, REPLAY);
	rc = ta_device_init(&dev, &ta_crypto_portable, &port, &cred, &replay);
	ta_wipe(&cred, sizeof cred);
	if (rc != TA_OK) {
		fprintf(stderr, "tagauth-agent: %s: credential refused (%s)\n", cred_path, ta_strerror(rc));
		return 1;
	}

	coap_startup();
	coap_set_log_level(LOG_WARNING);
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
	if (getaddrinfo(host, lport, &hints, &ai) != 0 || ai->ai_addrlen > sizeof addr.addr) {
		fprintf(stderr, "tagauth-agent: --listen %s: not a numeric HOST:PORT\n", listen);
		return 1;
	}
	coap_address_init(&addr);
	addr.size = ai->ai_addrlen;
	memcpy(&addr.addr, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	ctx = coap_new_context(NULL);
	if (ctx == NULL || coap_new_endpoint(ctx, &addr, COAP_PROTO_UDP) == NULL) {
		fprintf(stderr, "tagauth-agent: cannot listen on %s\n", listen);
		return 1;
	}
	for (i = 0; i < 3; i++) {
		coap_resource_t *r = coap_resource_init(coap_make_str_const(paths[i]), 0);
		coap_register_handler(r, COAP_REQUEST_POST, handlers[i]);
		coap_add_resource(ctx, r);
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("serving CoAP on %s, device %.*s (%s profile), gateway %s\n", listen,
	       (int)dev.did_len, (const char *)dev.did, dev.profile == TA_CLASSIC ? "classic" : "hardened",
	       gateway);
	fflush(stdout);
	while (!stop) {
		if (coap_io_process(ctx, 200) < 0) {
			break;
		}
	}
	coap_free_context(ctx);
	coap_cleanup();
	for (i = 0; i < LOGINS; i++) {
		ta_login_wipe(&logins[i]);
	}
	for (i = 0; i < SESSIONS; i++) {
		ta_session_wipe(&sessions[i]);
	}
	ta_device_wipe(&dev);
	return 0;
}
