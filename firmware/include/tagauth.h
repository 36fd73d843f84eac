/*
 * tagauth firmware SDK: the device role of the tagauth protocol (spec
 * version 1.1, docs: firmware/README.md) in C99 with no heap.
 *
 * Everything lives in structs that the caller provides: ta_device (the
 * credential and configuration), ta_login (one login from m1 to m5),
 * ta_session (one established channel) and the replay cache's entries.
 * Functions are sans-IO: they read a message from a buffer and write the
 * answer into another, and the caller moves bytes over CoAP, MQTT or
 * anything else. The library keeps no global state; one ta_device and its
 * logins and sessions must be used from one thread (or under one lock).
 *
 * Every function that handles a message returns TA_OK or the wire error
 * code of spec section 7 (TA_E_MALFORMED .. TA_E_INTERNAL); ta_error_message
 * turns it into the error message to send. Negative results are local
 * misuse (a step out of order, a buffer too small) and go on the wire as
 * internal. A message that fails any check changes nothing.
 */
#ifndef TAGAUTH_H
#define TAGAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "tagauth_crypto.h"

#define TA_SIZE 32
#define TA_NONCE_SIZE 16
#define TA_SID_SIZE 8
#define TA_MAX_ID 64

#define TA_CLASSIC 0x01
#define TA_HARDENED 0x02

/* Message types (spec section 7). */
#define TA_M1 0x01
#define TA_M2 0x02
#define TA_M3 0x03
#define TA_M4 0x04
#define TA_M5 0x05
#define TA_RECORD 0x10
#define TA_ERROR 0x7f

/* Buffer sizes a caller needs. */
#define TA_M2_MAX (2 + (1 + TA_MAX_ID) + 1 + TA_NONCE_SIZE + TA_SIZE + (1 + TA_MAX_ID) + 1 + TA_SIZE + 16)
#define TA_M4_MAX (2 + 3 * TA_SIZE + 16)
#define TA_ERROR_SIZE 3
#define TA_RECORD_HEADER (2 + TA_SID_SIZE + 8)
#define TA_RECORD_OVERHEAD (TA_RECORD_HEADER + TA_AEAD_TAG)

/* Results: wire codes (section 7) and local errors. */
enum {
	TA_OK = 0,
	TA_E_MALFORMED = 0x01,
	TA_E_UNSUPPORTED_PROFILE = 0x02,
	TA_E_STALE_TIMESTAMP = 0x03,
	TA_E_REPLAYED = 0x04,
	TA_E_REJECTED = 0x05,
	TA_E_BUSY = 0x06,
	TA_E_INTERNAL = 0x07,
	TA_E_STATE = -1,  /* step out of order, or an object not initialised */
	TA_E_BUFFER = -2, /* output buffer too small */
	TA_E_ARG = -3     /* invalid argument (credential, configuration) */
};

/* The name of a result as the spec writes it ("malformed", ...). */
const char *ta_strerror(int rc);

/* The platform: a clock and a source of random bytes. */
typedef struct ta_port {
	/* Milliseconds since the Unix epoch (the protocol's timestamps). */
	uint64_t (*now_ms)(void *ctx);
	/* Fills out with n bytes from a cryptographic RNG; 0 on success. */
	int (*random)(void *ctx, uint8_t *out, size_t n);
	void *ctx;
} ta_port;

/* What the gateway provisioned: DID_j, Tag_j and (hardened) kv_j. */
typedef struct ta_credential {
	uint8_t profile;
	uint8_t kv;     /* hardened: 1-255; classic: ignored */
	uint8_t did_len;
	uint8_t did[TA_MAX_ID];
	uint8_t tag[TA_SIZE];
} ta_credential;

/* The device's replay cache of (ID_i, E_i): entries hold a 16-byte digest
 * of the pair and the time after which the entry may go (T1 + dT). */
typedef struct ta_replay_entry {
	uint8_t key[16];
	uint64_t expires; /* 0: empty */
} ta_replay_entry;

typedef struct ta_replay {
	ta_replay_entry *entries;
	size_t n;
} ta_replay;

void ta_replay_init(ta_replay *r, ta_replay_entry *storage, size_t n);
/* Insert-if-absent: TA_OK if the key was fresh (now recorded),
 * TA_E_REPLAYED if recorded and unexpired, TA_E_BUSY if full. */
int ta_replay_insert(ta_replay *r, const uint8_t key[16], uint64_t expires, uint64_t now);

typedef struct ta_device {
	const ta_crypto *crypto;
	ta_port port;
	ta_replay *replay;
	uint64_t window_ms;       /* dT, default 10 000 */
	uint64_t session_idle_ms; /* default 5 minutes */
	uint64_t session_life_ms; /* default 1 hour */
	uint8_t profile;
	uint8_t kv;
	uint8_t did_len;
	uint8_t did[TA_MAX_ID];
	uint8_t tag[TA_SIZE];  /* classic hashes Tag_j raw */
	ta_hmac_key tag_key;   /* hardened: HMAC states of Tag_j, cached */
	uint8_t ready;
} ta_device;

/* One login, from m1 until the session is established, refused or
 * expired. A zeroed ta_login is free. */
typedef struct ta_login {
	uint8_t state;
	uint8_t id_len;
	uint8_t id[TA_MAX_ID];
	uint8_t e[TA_SIZE];
	uint8_t theta[TA_SIZE];
	uint8_t sk[TA_SIZE];     /* hardened, between m4 and m5 */
	uint8_t tau_i[TA_SIZE];  /* hardened: the m5 expected */
	uint8_t sid[TA_SID_SIZE];
	uint64_t t1;
	uint64_t t4;
} ta_login;

/* Login states. */
enum { TA_LOGIN_FREE = 0, TA_LOGIN_WAIT_M3, TA_LOGIN_WAIT_M5, TA_LOGIN_DONE };

/* An established channel (spec section 9), device side. */
typedef struct ta_session {
	uint8_t open;
	uint8_t profile;
	uint8_t sid[TA_SID_SIZE];
	uint8_t id_len;
	uint8_t id[TA_MAX_ID]; /* ID_i, authenticated once established */
	uint8_t k_send[TA_SIZE]; /* k_du */
	uint8_t k_recv[TA_SIZE]; /* k_ud */
	uint64_t send_seq;
	uint64_t recv_seq;
	uint64_t created;
	uint64_t last_used;
} ta_session;

/* Copies cred (the caller may wipe its copy) and caches the HMAC states
 * of Tag_j. Defaults: dT 10 s, idle 5 min, life 1 h. TA_E_ARG for a
 * malformed credential, a NULL crypto, port function or replay cache. */
int ta_device_init(ta_device *d, const ta_crypto *c, const ta_port *port,
                   const ta_credential *cred, ta_replay *replay);
void ta_device_wipe(ta_device *d);

/* m1 -> m2 (step 504 / section 6): checks T1, records (ID_i, E_i) in the
 * replay cache and writes m2 for the gateway. l must be free. Output
 * buffers must not overlap the message read, here and below. */
int ta_device_start(ta_device *d, ta_login *l, const uint8_t *m1, size_t n,
                    uint8_t *m2, size_t cap, size_t *m2_len);

/* m3 -> m4: checks T3 and that m3 unmasks to E_i, draws K_j and writes m4
 * for the card. Classic: s is established and the login is done. Hardened:
 * the login waits for m5 (ta_device_confirm) for at most dT; s is unused. */
int ta_device_respond(ta_device *d, ta_login *l, const uint8_t *m3, size_t n,
                      uint8_t *m4, size_t cap, size_t *m4_len, ta_session *s);

/* The confirm request of section 11: payload = sid (8) || m5. Finds the
 * pending login by sid among logins[0..count), checks tau_i and
 * establishes s. *which (may be NULL) says which login. */
int ta_device_confirm(ta_device *d, ta_login *logins, size_t count, const uint8_t *payload,
                      size_t n, ta_session *s, size_t *which);

/* Abandons a login (for example when the gateway refuses) and wipes it. */
void ta_login_wipe(ta_login *l);

/* Opens a user->device record (section 9) for whichever of sessions[0..count)
 * its sid names; *which (may be NULL) says which. */
int ta_device_open(ta_device *d, ta_session *sessions, size_t count, const uint8_t *rec,
                   size_t n, uint8_t *pt, size_t cap, size_t *pt_len, size_t *which);

/* Seals the device's answer as the next device->user record of s. rec and
 * pt must not overlap. */
int ta_session_seal(ta_device *d, ta_session *s, const uint8_t *pt, size_t n, uint8_t *rec,
                    size_t cap, size_t *rec_len);

void ta_session_wipe(ta_session *s);

/* Writes the 3-byte error message answering req for result rc: the
 * request's profile byte when it is 0x01 or 0x02, 0x00 otherwise. Local
 * errors (rc < 0) become internal. For a confirm payload pass the payload:
 * under 9 bytes it answers with 0x00, otherwise with the m5's byte. */
void ta_error_message(uint8_t out[TA_ERROR_SIZE], const uint8_t *req, size_t n, int rc);
void ta_confirm_error_message(uint8_t out[TA_ERROR_SIZE], const uint8_t *payload, size_t n,
                              int rc);

/* Helpers also used by tests and tools. */
int ta_valid_identity(const uint8_t *id, size_t n);
/* sid = SHA-256(lbl("tagauth/sid") || E_i)[0:8] */
int ta_sid(const ta_crypto *c, const uint8_t e[TA_SIZE], uint8_t sid[TA_SID_SIZE]);

#endif
