/* A tiny bounds-checked reader for the flat JSON of the test vectors
 * (spec sections 10 and 10.1): one object holding "cases", an array of
 * flat objects whose values are strings, integers or arrays of strings. */
#ifndef TA_TEST_JSON_H
#define TA_TEST_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_FIELDS 64

typedef struct json_span {
	const char *p;
	size_t n;
} json_span;

typedef struct json_field {
	json_span key;
	char kind; /* 's' string (raw, between the quotes), 'n' number, 'a' array */
	json_span val;
} json_field;

typedef struct json_obj {
	json_field f[JSON_MAX_FIELDS];
	size_t n;
} json_obj;

/* Finds the array under key in the top-level object; 0 on success. */
int json_top_array(const char *buf, size_t len, const char *key, json_span *arr);
/* Reads the next object of an array span; *pos starts at 0. Returns 1 for
 * an object, 0 at the end of the array, -1 on a syntax error. */
int json_next_object(const json_span *arr, size_t *pos, json_obj *o);
/* Reads the next string of an array of strings (1, 0 at end, -1 on error). */
int json_next_string(const json_span *arr, size_t *pos, json_span *s);

/* Reads buf as one flat object and nothing after it (JSON whitespace
 * allowed); 0 on success. */
int json_object(const char *buf, size_t len, json_obj *o);

const json_field *json_get(const json_obj *o, const char *key);
/* The field as raw string, decimal integer, or hex bytes. 0 on success. */
int json_str(const json_obj *o, const char *key, json_span *s);
int json_u64(const json_obj *o, const char *key, uint64_t *v);
int json_hex(const json_span *s, uint8_t *out, size_t cap, size_t *n);
int json_hexf(const json_obj *o, const char *key, uint8_t *out, size_t cap, size_t *n);

#endif
