#include <string.h>

#include "json.h"

typedef struct cur {
	const char *p;
	size_t n, i;
	int depth;
} cur;

static void ws(cur *c)
{
	while (c->i < c->n && (c->p[c->i] == ' ' || c->p[c->i] == '\n' || c->p[c->i] == '\r' ||
	                       c->p[c->i] == '\t')) {
		c->i++;
	}
}

static int peek(cur *c)
{
	ws(c);
	return c->i < c->n ? (unsigned char)c->p[c->i] : -1;
}

/* A string: s gets the raw bytes between the quotes. */
static int str(cur *c, json_span *s)
{
	if (peek(c) != '"') {
		return -1;
	}
	c->i++;
	s->p = c->p + c->i;
	while (c->i < c->n && c->p[c->i] != '"') {
		if (c->p[c->i] == '\\') {
			c->i++;
		}
		c->i++;
	}
	if (c->i >= c->n) {
		return -1;
	}
	s->n = (size_t)(c->p + c->i - s->p);
	c->i++;
	return 0;
}

static int value(cur *c, char *kind, json_span *v);

/* Skips an array or object, checking its syntax, with a depth limit. */
static int compound(cur *c, char open, char close)
{
	json_span s;
	char k;
	if (++c->depth > 16) {
		return -1;
	}
	c->i++; /* open */
	(void)open;
	if (peek(c) == close) {
		c->i++;
		c->depth--;
		return 0;
	}
	for (;;) {
		if (close == '}') {
			if (str(c, &s) != 0 || peek(c) != ':') {
				return -1;
			}
			c->i++;
		}
		if (value(c, &k, &s) != 0) {
			return -1;
		}
		if (peek(c) == ',') {
			c->i++;
			continue;
		}
		if (peek(c) == close) {
			c->i++;
			c->depth--;
			return 0;
		}
		return -1;
	}
}

static int value(cur *c, char *kind, json_span *v)
{
	int ch = peek(c);
	size_t start = c->i;
	if (ch == '"') {
		*kind = 's';
		return str(c, v);
	}
	if (ch == '[' || ch == '{') {
		*kind = ch == '[' ? 'a' : 'o';
		if (compound(c, (char)ch, ch == '[' ? ']' : '}') != 0) {
			return -1;
		}
		v->p = c->p + start;
		v->n = c->i - start;
		return 0;
	}
	if (ch == '-' || (ch >= '0' && ch <= '9')) {
		*kind = 'n';
		while (c->i < c->n && (c->p[c->i] == '-' || (c->p[c->i] >= '0' && c->p[c->i] <= '9'))) {
			c->i++;
		}
		v->p = c->p + start;
		v->n = c->i - start;
		return 0;
	}
	if (ch == 't' || ch == 'f' || ch == 'n') {
		*kind = 'l';
		while (c->i < c->n && c->p[c->i] >= 'a' && c->p[c->i] <= 'z') {
			c->i++;
		}
		v->p = c->p + start;
		v->n = c->i - start;
		return 0;
	}
	return -1;
}

static int span_is(const json_span *s, const char *lit)
{
	size_t n = strlen(lit);
	return s->n == n && memcmp(s->p, lit, n) == 0;
}

int json_top_array(const char *buf, size_t len, const char *key, json_span *arr)
{
	cur c = {buf, len, 0, 0};
	json_span k, v;
	char kind;
	if (peek(&c) != '{') {
		return -1;
	}
	c.i++;
	for (;;) {
		if (str(&c, &k) != 0 || peek(&c) != ':') {
			return -1;
		}
		c.i++;
		if (value(&c, &kind, &v) != 0) {
			return -1;
		}
		if (kind == 'a' && span_is(&k, key)) {
			*arr = v;
			return 0;
		}
		if (peek(&c) != ',') {
			return -1;
		}
		c.i++;
	}
}

/* Positions the cursor inside an array span at *pos (0: before '['). */
static int array_step(const json_span *arr, size_t *pos, cur *c)
{
	c->p = arr->p, c->n = arr->n, c->i = *pos, c->depth = 0;
	if (c->i == 0) {
		if (peek(c) != '[') {
			return -1;
		}
		c->i++;
		if (peek(c) == ']') {
			*pos = c->n;
			return 0;
		}
		return 1;
	}
	if (c->i >= c->n) {
		return 0;
	}
	if (peek(c) == ',') {
		c->i++;
		return 1;
	}
	if (peek(c) == ']') {
		*pos = c->n;
		return 0;
	}
	return -1;
}

/* Reads one flat object at the cursor into o. */
static int read_object(cur *c, json_obj *o)
{
	if (peek(c) != '{') {
		return -1;
	}
	c->i++;
	o->n = 0;
	if (peek(c) == '}') {
		c->i++;
		return 0;
	}
	for (;;) {
		json_field f;
		if (str(c, &f.key) != 0 || peek(c) != ':') {
			return -1;
		}
		c->i++;
		if (value(c, &f.kind, &f.val) != 0 || o->n == JSON_MAX_FIELDS) {
			return -1;
		}
		o->f[o->n++] = f;
		if (peek(c) == ',') {
			c->i++;
			continue;
		}
		if (peek(c) == '}') {
			c->i++;
			return 0;
		}
		return -1;
	}
}

int json_next_object(const json_span *arr, size_t *pos, json_obj *o)
{
	cur c;
	int rc = array_step(arr, pos, &c);
	if (rc <= 0) {
		return rc;
	}
	if (read_object(&c, o) != 0) {
		return -1;
	}
	*pos = c.i;
	return 1;
}

int json_next_string(const json_span *arr, size_t *pos, json_span *s)
{
	cur c;
	int rc = array_step(arr, pos, &c);
	if (rc <= 0) {
		return rc;
	}
	if (str(&c, s) != 0) {
		return -1;
	}
	*pos = c.i;
	return 1;
}

int json_object(const char *buf, size_t len, json_obj *o)
{
	cur c = {buf, len, 0, 0};
	if (read_object(&c, o) != 0 || peek(&c) != -1) {
		return -1;
	}
	return 0;
}

const json_field *json_get(const json_obj *o, const char *key)
{
	size_t i;
	for (i = 0; i < o->n; i++) {
		if (span_is(&o->f[i].key, key)) {
			return &o->f[i];
		}
	}
	return NULL;
}

int json_str(const json_obj *o, const char *key, json_span *s)
{
	const json_field *f = json_get(o, key);
	if (f == NULL || f->kind != 's') {
		return -1;
	}
	*s = f->val;
	return 0;
}

int json_u64(const json_obj *o, const char *key, uint64_t *v)
{
	const json_field *f = json_get(o, key);
	size_t i;
	uint64_t x = 0;
	if (f == NULL || f->kind != 'n' || f->val.n == 0 || f->val.n > 19) {
		return -1;
	}
	for (i = 0; i < f->val.n; i++) {
		char ch = f->val.p[i];
		if (ch < '0' || ch > '9') {
			return -1;
		}
		x = x * 10 + (uint64_t)(ch - '0');
	}
	*v = x;
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

int json_hex(const json_span *s, uint8_t *out, size_t cap, size_t *n)
{
	size_t i;
	if (s->n % 2 != 0 || s->n / 2 > cap) {
		return -1;
	}
	for (i = 0; i < s->n / 2; i++) {
		int hi = nib(s->p[2 * i]), lo = nib(s->p[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			return -1;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*n = s->n / 2;
	return 0;
}

int json_hexf(const json_obj *o, const char *key, uint8_t *out, size_t cap, size_t *n)
{
	json_span s;
	return json_str(o, key, &s) != 0 ? -1 : json_hex(&s, out, cap, n);
}
