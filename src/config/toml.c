/*
 * TOML 1.0.0 parser.
 *
 * The parser is a hand-written recursive descent over the whole document held
 * in memory. Recursion only happens for nested arrays and inline tables, and
 * every value carries its depth in the tree, which is capped at TOML_MAX_DEPTH,
 * so neither parsing nor freeing can run away on hostile input.
 *
 * Each value is allocated as a `node`, a private wrapper whose first member is
 * the public toml_value. The wrapper carries the bookkeeping needed to enforce
 * TOML's rules about defining tables only once, and a hash index so that
 * tables with many keys do not make parsing quadratic.
 */
#include <switchyard/toml.h>

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

/* Tables at least this large get a hash index; smaller ones are scanned. */
#define INDEX_THRESHOLD 8

enum {
	/*
	 * The table's contents have been defined, either by a [header] or by
	 * dotted keys, so a [header] naming it again would define it twice.
	 * Tables created only as the parents of a header lack this flag.
	 */
	F_DEFINED = 1u << 0,
	/* Defined by a [header] or [[header]]: dotted keys written elsewhere
	 * may not reach into it. */
	F_HEADER = 1u << 1,
	/* An inline table: immutable once its closing brace is read. */
	F_FROZEN = 1u << 2,
	/* An array created by [[header]], which later headers may extend;
	 * arrays written as values are static. */
	F_AOT = 1u << 3,
};

typedef struct node {
	/* Must stay the first member: public toml_value pointers are converted
	 * back to the node that contains them. */
	toml_value v;
	unsigned flags;
	int depth;
	size_t cap;    /* allocated entries of v.u.arr.items or v.u.tab.items */
	size_t *slots; /* hash index into v.u.tab.items, entries are index + 1 */
	size_t nslots; /* a power of two, or 0 when there is no index */
} node;

/* One part of a (possibly dotted) key, as read from the document. */
typedef struct keypart {
	char *s;
	size_t len;
	int line, col;
} keypart;

typedef struct keypath {
	keypart *parts;
	size_t n, cap;
} keypath;

typedef struct strbuf {
	char *p;
	size_t len, cap;
} strbuf;

typedef struct parser {
	const char *s;
	size_t len;
	size_t pos;
	char *err;
	size_t errlen;
	bool failed;
	/*
	 * Cache for locate(): the line and column of offset loff, and where
	 * that line starts. Positions are requested in (nearly) increasing
	 * order, so computing them incrementally keeps the total work linear.
	 */
	size_t loff, lstart;
	int lline, lcol;
	node *root;
	node *cur; /* the table that key/value lines currently go into */
} parser;

static node *as_node(toml_value *v)
{
	return (node *)v;
}

static const node *as_cnode(const toml_value *v)
{
	return (const node *)v;
}

static void free_node(node *n);

/* ---- Positions and errors ---- */

static void locate(parser *p, size_t off, int *line, int *col)
{
	if (off > p->len)
		off = p->len;
	if (off < p->loff) {
		if (off >= p->lstart) {
			p->loff = p->lstart;
			p->lcol = 1;
		} else {
			p->loff = 0;
			p->lstart = 0;
			p->lline = 1;
			p->lcol = 1;
		}
	}
	while (p->loff < off) {
		unsigned char c = (unsigned char)p->s[p->loff++];
		if (c == '\n') {
			p->lline++;
			p->lcol = 1;
			p->lstart = p->loff;
		} else if ((c & 0xC0) != 0x80) {
			/* Columns count characters, not bytes, so only the
			 * first byte of a UTF-8 sequence advances them. */
			p->lcol++;
		}
	}
	*line = p->lline;
	*col = p->lcol;
}

PRINTF_LIKE(4, 0)
static bool vfail_lc(parser *p, int line, int col, const char *fmt, va_list ap)
{
	/* Only the first error is reported; later ones are consequences. */
	if (p->failed)
		return false;
	p->failed = true;
	if (p->errlen == 0)
		return false;
	int n = snprintf(p->err, p->errlen, "line %d, column %d: ", line, col);
	if (n >= 0 && (size_t)n < p->errlen)
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	return false;
}

PRINTF_LIKE(4, 5)
static bool fail_lc(parser *p, int line, int col, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail_lc(p, line, col, fmt, ap);
	va_end(ap);
	return false;
}

PRINTF_LIKE(3, 4)
static bool fail_at(parser *p, size_t off, const char *fmt, ...)
{
	int line, col;
	va_list ap;
	if (p->failed)
		return false;
	locate(p, off, &line, &col);
	va_start(ap, fmt);
	vfail_lc(p, line, col, fmt, ap);
	va_end(ap);
	return false;
}

static bool oom(parser *p)
{
	return fail_at(p, p->pos, "out of memory");
}

/* Decodes the (already validated) UTF-8 sequence at off. */
static unsigned long decode_at(const parser *p, size_t off)
{
	const unsigned char *s = (const unsigned char *)p->s + off;
	size_t left = p->len - off;
	if (s[0] < 0x80 || left < 2)
		return s[0];
	if ((s[0] & 0xE0) == 0xC0)
		return ((s[0] & 0x1Ful) << 6) | (s[1] & 0x3Ful);
	if ((s[0] & 0xF0) == 0xE0 && left >= 3)
		return ((s[0] & 0x0Ful) << 12) | ((s[1] & 0x3Ful) << 6) | (s[2] & 0x3Ful);
	if (left >= 4)
		return ((s[0] & 0x07ul) << 18) | ((s[1] & 0x3Ful) << 12) | ((s[2] & 0x3Ful) << 6) |
		       (s[3] & 0x3Ful);
	return s[0];
}

/* Describes the character at off for "unexpected ..." messages. */
static const char *describe(const parser *p, size_t off, char *buf, size_t n)
{
	if (off >= p->len)
		return "end of file";
	unsigned char c = (unsigned char)p->s[off];
	if (c == '\n' || (c == '\r' && off + 1 < p->len && p->s[off + 1] == '\n'))
		return "end of line";
	if (c > 0x20 && c < 0x7F)
		snprintf(buf, n, "'%c'", c);
	else if (c == ' ')
		snprintf(buf, n, "a space");
	else
		snprintf(buf, n, "U+%04lX", decode_at(p, off));
	return buf;
}

static bool fail_unexpected(parser *p, const char *expected)
{
	char buf[32];
	return fail_at(p, p->pos, "unexpected %s, expected %s",
	               describe(p, p->pos, buf, sizeof buf), expected);
}

/*
 * Renders parts [0, n) of a key for messages, quoting parts that are not bare
 * keys. Output is truncated (with "...") rather than allocated, since it only
 * ever ends up in a fixed-size error buffer.
 */
static const char *key_str(const keypath *kp, size_t n, char *buf, size_t size)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 8 < size; i++) {
		const keypart *k = &kp->parts[i];
		bool bare = k->len > 0;
		for (size_t j = 0; j < k->len; j++) {
			char c = k->s[j];
			if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			      (c >= '0' && c <= '9') || c == '_' || c == '-'))
				bare = false;
		}
		if (i > 0)
			buf[o++] = '.';
		if (!bare)
			buf[o++] = '"';
		for (size_t j = 0; j < k->len && o + 8 < size; j++) {
			unsigned char c = (unsigned char)k->s[j];
			if (c < 0x20 || c == 0x7F || c == '"' || c == '\\')
				o += (size_t)snprintf(buf + o, size - o, "\\x%02X", c);
			else
				buf[o++] = (char)c;
		}
		if (!bare)
			buf[o++] = '"';
	}
	if (o + 8 >= size)
		o += (size_t)snprintf(buf + o, size - o, "...");
	buf[o] = '\0';
	return buf;
}

/* Names what a value is, with an article, for redefinition messages. */
static const char *kind_of(const node *n)
{
	switch (n->v.type) {
	case TOML_ARRAY:
		return (n->flags & F_AOT) ? "an array of tables" : "a static array";
	case TOML_TABLE:
		return (n->flags & F_FROZEN) ? "an inline table" : "a table";
	case TOML_INTEGER:
		return "an integer";
	case TOML_FLOAT:
		return "a float";
	case TOML_BOOL:
		return "a boolean";
	case TOML_STRING:
		return "a string";
	default:
		return "a date/time";
	}
}

/* ---- Validation of the whole document ---- */

/*
 * TOML documents must be valid UTF-8 throughout, comments included. Checking
 * once up front means the rest of the parser can copy non-ASCII bytes
 * blindly. Overlong forms, surrogates and code points past U+10FFFF are not
 * valid UTF-8 and are rejected too.
 */
static bool check_utf8(parser *p)
{
	const unsigned char *s = (const unsigned char *)p->s;
	size_t i = 0;
	while (i < p->len) {
		unsigned char c = s[i];
		size_t n;
		unsigned long cp, min;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			n = 2;
			cp = c & 0x1Fu;
			min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			n = 3;
			cp = c & 0x0Fu;
			min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			n = 4;
			cp = c & 0x07u;
			min = 0x10000;
		} else {
			return fail_at(p, i, "invalid UTF-8 byte 0x%02X", c);
		}
		if (n > p->len - i)
			return fail_at(p, i, "truncated UTF-8 sequence");
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return fail_at(p, i, "invalid UTF-8 sequence");
			cp = (cp << 6) | (s[i + k] & 0x3Fu);
		}
		if (cp < min)
			return fail_at(p, i, "overlong UTF-8 sequence");
		if (cp >= 0xD800 && cp <= 0xDFFF)
			return fail_at(p, i, "UTF-8 encoded surrogate U+%04lX", cp);
		if (cp > 0x10FFFF)
			return fail_at(p, i, "code point beyond U+10FFFF");
		i += n;
	}
	return true;
}

/* ---- Small helpers ---- */

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static bool is_hex(int c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_bare(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' ||
	       c == '-';
}

/* Control characters other than tab may not appear in strings or comments. */
static bool is_ctl(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7F;
}

static bool at_eof(const parser *p)
{
	return p->pos >= p->len;
}

static int peek(const parser *p, size_t ahead)
{
	return p->pos + ahead < p->len ? (unsigned char)p->s[p->pos + ahead] : -1;
}

static void skip_ws(parser *p)
{
	while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
		p->pos++;
}

/* True if the parser is at "\n" or "\r\n"; n gets the newline's length. */
static bool at_newline(const parser *p, size_t *n)
{
	if (peek(p, 0) == '\n') {
		*n = 1;
		return true;
	}
	if (peek(p, 0) == '\r' && peek(p, 1) == '\n') {
		*n = 2;
		return true;
	}
	return false;
}

/* Skips a comment; the terminating newline is left for the caller. */
static bool skip_comment(parser *p)
{
	p->pos++; /* the '#' */
	while (p->pos < p->len) {
		unsigned char c = (unsigned char)p->s[p->pos];
		if (c == '\n' || (c == '\r' && peek(p, 1) == '\n'))
			return true;
		if (is_ctl(c))
			return fail_at(p, p->pos,
			               "control character U+%04X is not allowed in a comment", c);
		p->pos++;
	}
	return true;
}

/* Skips whitespace, newlines and comments, as allowed inside arrays. */
static bool skip_trivia(parser *p)
{
	for (;;) {
		size_t nl;
		skip_ws(p);
		if (at_newline(p, &nl))
			p->pos += nl;
		else if (peek(p, 0) == '#') {
			if (!skip_comment(p))
				return false;
		} else
			return true;
	}
}

static bool sb_reserve(parser *p, strbuf *b, size_t extra)
{
	if (b->cap - b->len > extra)
		return true;
	size_t cap = b->cap ? b->cap : 32;
	while (cap - b->len <= extra) {
		if (cap > SIZE_MAX / 2)
			return oom(p);
		cap *= 2;
	}
	char *np = realloc(b->p, cap);
	if (!np)
		return oom(p);
	b->p = np;
	b->cap = cap;
	return true;
}

static bool sb_put(parser *p, strbuf *b, const char *s, size_t n)
{
	if (!sb_reserve(p, b, n))
		return false;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return true;
}

static bool sb_putc(parser *p, strbuf *b, char c)
{
	return sb_put(p, b, &c, 1);
}

/* Makes sure the buffer is allocated (and NUL-terminated) even when empty. */
static bool sb_finish(parser *p, strbuf *b)
{
	if (!sb_reserve(p, b, 0))
		return false;
	b->p[b->len] = '\0';
	return true;
}

static bool sb_put_utf8(parser *p, strbuf *b, unsigned long cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xC0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xE0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (char)(0xF0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return sb_put(p, b, u, n);
}

/* ---- Tree construction ---- */

static node *new_node(parser *p, toml_type type, int depth, int line, int col)
{
	if (depth > TOML_MAX_DEPTH) {
		fail_lc(p, line, col, "nesting is deeper than the limit of %d levels",
		        TOML_MAX_DEPTH);
		return NULL;
	}
	node *n = calloc(1, sizeof(*n));
	if (!n) {
		fail_lc(p, line, col, "out of memory");
		return NULL;
	}
	n->v.type = type;
	n->v.line = line;
	n->v.col = col;
	n->depth = depth;
	return n;
}

static uint64_t hash_key(const char *s, size_t n)
{
	/* FNV-1a: simple and good enough to spread configuration keys. */
	uint64_t h = 0xcbf29ce484222325u;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3u;
	}
	return h;
}

static const toml_kv *table_find(const node *t, const char *key, size_t len)
{
	const toml_kv *items = t->v.u.tab.items;
	if (t->nslots) {
		size_t mask = t->nslots - 1;
		for (size_t h = hash_key(key, len) & mask; t->slots[h]; h = (h + 1) & mask) {
			const toml_kv *kv = &items[t->slots[h] - 1];
			if (kv->keylen == len && memcmp(kv->key, key, len) == 0)
				return kv;
		}
		return NULL;
	}
	for (size_t i = 0; i < t->v.u.tab.len; i++) {
		if (items[i].keylen == len && memcmp(items[i].key, key, len) == 0)
			return &items[i];
	}
	return NULL;
}

static void index_insert(node *t, size_t idx)
{
	const toml_kv *kv = &t->v.u.tab.items[idx];
	size_t mask = t->nslots - 1;
	size_t h = hash_key(kv->key, kv->keylen) & mask;
	while (t->slots[h])
		h = (h + 1) & mask;
	t->slots[h] = idx + 1;
}

/* Keeps the hash index at most half full, rebuilding it when it grows. */
static bool index_update(parser *p, node *t)
{
	size_t len = t->v.u.tab.len;
	if (len < INDEX_THRESHOLD)
		return true;
	if (t->nslots >= 2 * len) {
		index_insert(t, len - 1);
		return true;
	}
	size_t n = t->nslots ? t->nslots : 4 * INDEX_THRESHOLD;
	while (n < 2 * len) {
		if (n > SIZE_MAX / 2 / sizeof(size_t))
			return oom(p);
		n *= 2;
	}
	size_t *slots = calloc(n, sizeof(*slots));
	if (!slots)
		return oom(p);
	free(t->slots);
	t->slots = slots;
	t->nslots = n;
	for (size_t i = 0; i < len; i++)
		index_insert(t, i);
	return true;
}

/*
 * Adds key -> v to table t. The table gets its own copy of the key, since the
 * key path stays in use for error messages; on success v belongs to the
 * table, on failure the caller still owns it.
 */
static bool table_add(parser *p, node *t, const keypart *k, node *v)
{
	toml_value *tv = &t->v;
	char *key = malloc(k->len + 1);
	if (!key)
		return oom(p);
	memcpy(key, k->s, k->len);
	key[k->len] = '\0';
	if (tv->u.tab.len == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 4;
		if (cap > SIZE_MAX / sizeof(toml_kv)) {
			free(key);
			return oom(p);
		}
		toml_kv *items = realloc(tv->u.tab.items, cap * sizeof(*items));
		if (!items) {
			free(key);
			return oom(p);
		}
		tv->u.tab.items = items;
		t->cap = cap;
	}
	toml_kv *kv = &tv->u.tab.items[tv->u.tab.len++];
	kv->key = key;
	kv->keylen = k->len;
	kv->line = k->line;
	kv->col = k->col;
	kv->value = &v->v;
	if (!index_update(p, t)) {
		tv->u.tab.len--;
		free(key);
		return false;
	}
	return true;
}

/* Appends item to array a; on failure the caller still owns item. */
static bool array_push(parser *p, node *a, node *item)
{
	toml_value *av = &a->v;
	if (av->u.arr.len == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 4;
		if (cap > SIZE_MAX / sizeof(toml_value *))
			return oom(p);
		toml_value **items = realloc(av->u.arr.items, cap * sizeof(*items));
		if (!items)
			return oom(p);
		av->u.arr.items = items;
		a->cap = cap;
	}
	av->u.arr.items[av->u.arr.len++] = &item->v;
	return true;
}

/* The recursion is bounded because the tree depth is capped at construction. */
static void free_node(node *n)
{
	if (!n)
		return;
	toml_value *v = &n->v;
	switch (v->type) {
	case TOML_STRING:
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		free(v->u.str.ptr);
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->u.arr.len; i++)
			free_node(as_node(v->u.arr.items[i]));
		free(v->u.arr.items);
		break;
	case TOML_TABLE:
		for (size_t i = 0; i < v->u.tab.len; i++) {
			free(v->u.tab.items[i].key);
			free_node(as_node(v->u.tab.items[i].value));
		}
		free(v->u.tab.items);
		free(n->slots);
		break;
	default:
		break;
	}
	free(n);
}

/* ---- Strings ---- */

/* Reads exactly n hex digits of a \u or \U escape into a code point. */
static bool parse_hex_escape(parser *p, size_t esc, int n, strbuf *b)
{
	unsigned long cp = 0;
	for (int i = 0; i < n; i++) {
		int c = peek(p, 0);
		if (!is_hex(c))
			return fail_at(p, esc, "\\%c escape needs exactly %d hex digits",
			               n == 4 ? 'u' : 'U', n);
		cp = cp * 16 + (unsigned long)(is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
		p->pos++;
	}
	/* Only Unicode scalar values may be written as escapes. */
	if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return fail_at(p, esc, "escape \\%c%0*lX is not a Unicode scalar value",
		               n == 4 ? 'u' : 'U', n, cp);
	return sb_put_utf8(p, b, cp);
}

/* Handles a backslash escape; multiline allows the line-ending backslash. */
static bool parse_escape(parser *p, strbuf *b, bool multiline)
{
	size_t esc = p->pos;
	p->pos++;
	if (at_eof(p))
		return fail_at(p, esc, "unterminated escape sequence");
	char c = p->s[p->pos];
	const char *simple = "b\bt\tn\nf\fr\r\"\"\\\\";
	for (const char *e = simple; *e; e += 2) {
		if (c == e[0]) {
			p->pos++;
			return sb_putc(p, b, e[1]);
		}
	}
	if (c == 'u' || c == 'U') {
		p->pos++;
		return parse_hex_escape(p, esc, c == 'u' ? 4 : 8, b);
	}
	if (multiline && (c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
		/*
		 * A backslash at the end of a line trims the newline and all
		 * whitespace after it. Only whitespace may sit between the
		 * backslash and the newline.
		 */
		size_t nl;
		skip_ws(p);
		if (!at_newline(p, &nl))
			return fail_at(p, esc,
			               "a line-ending backslash may only be followed by whitespace "
			               "and a newline");
		for (;;) {
			skip_ws(p);
			if (!at_newline(p, &nl))
				return true;
			p->pos += nl;
		}
	}
	if (c > 0x20 && c < 0x7F)
		return fail_at(p, esc, "invalid escape sequence '\\%c'", c);
	return fail_at(p, esc, "invalid escape sequence");
}

/* Handles one ordinary character of a string body. */
static bool string_char(parser *p, strbuf *b, bool multiline)
{
	unsigned char c = (unsigned char)p->s[p->pos];
	if (c == '\n' || c == '\r') {
		size_t nl;
		if (!multiline)
			return fail_at(p, p->pos, "newline in a single-line string");
		if (!at_newline(p, &nl))
			return fail_at(p, p->pos, "carriage return without a line feed");
		/* Newlines in strings are normalised to LF. */
		p->pos += nl;
		return sb_putc(p, b, '\n');
	}
	if (is_ctl(c))
		return fail_at(p, p->pos, "control character U+%04X must be escaped in a string",
		               c);
	p->pos++;
	return sb_putc(p, b, (char)c);
}

/*
 * Reads a string starting at the parser's position into b. quote is '"' or
 * '\'', and multiline tells whether the opening delimiter is tripled.
 */
static bool parse_string(parser *p, strbuf *b, char quote, bool multiline)
{
	size_t start = p->pos;
	size_t nl;
	p->pos += multiline ? 3 : 1;
	/* A newline right after the opening delimiter is not part of the value. */
	if (multiline && at_newline(p, &nl))
		p->pos += nl;
	for (;;) {
		if (at_eof(p))
			return fail_at(p, start, "unterminated string");
		char c = p->s[p->pos];
		if (c == quote) {
			if (!multiline) {
				p->pos++;
				return sb_finish(p, b);
			}
			/* Up to two quotes just before the closing delimiter
			 * belong to the string. */
			size_t run = 0;
			while (peek(p, run) == quote)
				run++;
			if (run >= 3) {
				if (run > 5)
					return fail_at(p, p->pos + 5,
					               "too many quotes at the end of a multi-line "
					               "string");
				if (!sb_put(p, b, p->s + p->pos, run - 3))
					return false;
				p->pos += run;
				return sb_finish(p, b);
			}
			if (!sb_put(p, b, p->s + p->pos, run))
				return false;
			p->pos += run;
		} else if (c == '\\' && quote == '"') {
			if (!parse_escape(p, b, multiline))
				return false;
		} else if (!string_char(p, b, multiline)) {
			return false;
		}
	}
}

/* ---- Keys ---- */

static void keypath_free(keypath *kp)
{
	for (size_t i = 0; i < kp->n; i++)
		free(kp->parts[i].s);
	free(kp->parts);
}

static bool parse_simple_key(parser *p, keypart *k)
{
	size_t start = p->pos;
	int c = peek(p, 0);
	strbuf b = {0};
	locate(p, start, &k->line, &k->col);
	if (c == '"' || c == '\'') {
		if (peek(p, 1) == c && peek(p, 2) == c)
			return fail_at(p, start, "multi-line strings cannot be used as keys");
		if (!parse_string(p, &b, (char)c, false)) {
			free(b.p);
			return false;
		}
	} else if (c >= 0 && is_bare(c)) {
		while (p->pos < p->len && is_bare((unsigned char)p->s[p->pos]))
			p->pos++;
		if (!sb_put(p, &b, p->s + start, p->pos - start)) {
			free(b.p);
			return false;
		}
	} else {
		return fail_unexpected(p, "a key");
	}
	k->s = b.p;
	k->len = b.len;
	return true;
}

/* Reads a dotted key and the whitespace after it. */
static bool parse_key(parser *p, keypath *kp)
{
	for (;;) {
		if (kp->n == TOML_MAX_DEPTH)
			return fail_at(p, p->pos, "key has more than %d parts", TOML_MAX_DEPTH);
		if (kp->n == kp->cap) {
			size_t cap = kp->cap ? kp->cap * 2 : 4;
			keypart *parts = realloc(kp->parts, cap * sizeof(*parts));
			if (!parts)
				return oom(p);
			kp->parts = parts;
			kp->cap = cap;
		}
		keypart *k = &kp->parts[kp->n];
		k->s = NULL;
		if (!parse_simple_key(p, k))
			return false;
		kp->n++;
		skip_ws(p);
		if (peek(p, 0) != '.')
			return true;
		p->pos++;
		skip_ws(p);
	}
}

/* ---- Scalars ---- */

static node *make_string(parser *p, toml_type type, strbuf *b, int line, int col)
{
	node *n = new_node(p, type, 0, line, col);
	if (!n) {
		free(b->p);
		return NULL;
	}
	n->v.u.str.ptr = b->p;
	n->v.u.str.len = b->len;
	return n;
}

/*
 * Scans digits of the given base with single underscores between them.
 * Returns 1 on success, 0 if there is no digit at *i, -1 for a misplaced
 * underscore.
 */
static int scan_digits(const char *t, size_t *i, size_t n, int base)
{
	size_t j = *i;
	bool (*ok)(int) = base == 16 ? is_hex : is_digit;
	if (j >= n || !ok((unsigned char)t[j]) || (base < 10 && t[j] - '0' >= base))
		return 0;
	while (j < n) {
		int c = (unsigned char)t[j];
		if (ok(c) && (base >= 10 || c - '0' < base)) {
			j++;
		} else if (c == '_') {
			int d = j + 1 < n ? (unsigned char)t[j + 1] : -1;
			if (!(d >= 0 && ok(d) && (base >= 10 || d - '0' < base))) {
				*i = j;
				return -1;
			}
			j++;
		} else {
			break;
		}
	}
	*i = j;
	return 1;
}

static int digit_value(char c)
{
	if (is_digit(c))
		return c - '0';
	return (c | 0x20) - 'a' + 10;
}

/* Converts validated digits (underscores allowed) to an int64 magnitude. */
static bool digits_to_int(const char *t, size_t n, int base, bool neg, int64_t *out)
{
	uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (t[i] == '_')
			continue;
		uint64_t d = (uint64_t)digit_value(t[i]);
		if (v > (limit - d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + d;
	}
	if (neg)
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	else
		*out = (int64_t)v;
	return true;
}

/*
 * Converts a validated float literal. strtod honours the locale's decimal
 * point, so the '.' is swapped for it rather than assuming the "C" locale.
 */
static bool text_to_double(parser *p, const char *t, size_t n, double *out)
{
	const char *dp = localeconv()->decimal_point;
	size_t dplen = dp && *dp ? strlen(dp) : 1;
	char *buf = malloc(n + dplen + 1);
	size_t o = 0;
	if (!buf)
		return oom(p);
	for (size_t i = 0; i < n; i++) {
		if (t[i] == '_')
			continue;
		if (t[i] == '.' && dp && *dp) {
			memcpy(buf + o, dp, dplen);
			o += dplen;
		} else {
			buf[o++] = t[i];
		}
	}
	buf[o] = '\0';
	char *end;
	*out = strtod(buf, &end);
	bool ok = *end == '\0';
	free(buf);
	return ok;
}

static node *parse_number(parser *p, int line, int col)
{
	size_t start = p->pos, end = start;
	while (end < p->len) {
		char c = p->s[end];
		if (!(is_bare((unsigned char)c) || c == '.' || c == '+'))
			break;
		end++;
	}
	const char *t = p->s + start;
	size_t n = end - start, i = 0;
	bool sign = false, neg = false, isfloat = false;
	node *v;

	if (t[0] == '+' || t[0] == '-') {
		sign = true;
		neg = t[0] == '-';
		i = 1;
	}
	if ((n - i == 3 && memcmp(t + i, "inf", 3) == 0) ||
	    (n - i == 3 && memcmp(t + i, "nan", 3) == 0)) {
		v = new_node(p, TOML_FLOAT, 0, line, col);
		if (!v)
			return NULL;
		if (t[i] == 'i')
			v->v.u.flt = neg ? -HUGE_VAL : HUGE_VAL;
		else
			v->v.u.flt = neg ? -NAN : NAN;
		p->pos = end;
		return v;
	}
	if (n - i >= 2 && t[i] == '0' && (t[i + 1] == 'x' || t[i + 1] == 'o' || t[i + 1] == 'b')) {
		int base = t[i + 1] == 'x' ? 16 : t[i + 1] == 'o' ? 8 : 2;
		if (sign) {
			fail_at(p, start, "signs are not allowed on hex, octal or binary integers");
			return NULL;
		}
		i += 2;
		int r = scan_digits(t, &i, n, base);
		if (r < 0) {
			fail_at(p, start + i, "underscores must be between digits");
			return NULL;
		}
		if (r == 0 || i != n) {
			fail_at(p, start + i, "invalid digit in base-%d integer", base);
			return NULL;
		}
		int64_t iv;
		if (!digits_to_int(t + 2, n - 2, base, false, &iv)) {
			fail_at(p, start, "integer does not fit in 64 bits");
			return NULL;
		}
		v = new_node(p, TOML_INTEGER, 0, line, col);
		if (v)
			v->v.u.integer = iv;
		p->pos = end;
		return v;
	}

	size_t int_start = i;
	int r = scan_digits(t, &i, n, 10);
	if (r == 0) {
		fail_at(p, start + i, "invalid number");
		return NULL;
	}
	if (t[int_start] == '0' && i - int_start > 1) {
		fail_at(p, start + int_start, "leading zeros are not allowed");
		return NULL;
	}
	if (r > 0 && i < n && t[i] == '.') {
		i++;
		isfloat = true;
		r = scan_digits(t, &i, n, 10);
		if (r == 0) {
			fail_at(p, start + i, "expected digits after the decimal point");
			return NULL;
		}
	}
	if (r > 0 && i < n && (t[i] == 'e' || t[i] == 'E')) {
		i++;
		isfloat = true;
		if (i < n && (t[i] == '+' || t[i] == '-'))
			i++;
		r = scan_digits(t, &i, n, 10);
		if (r == 0) {
			fail_at(p, start + i, "expected digits in the exponent");
			return NULL;
		}
	}
	if (r < 0) {
		fail_at(p, start + i, "underscores must be between digits");
		return NULL;
	}
	if (i != n) {
		fail_at(p, start + i, "invalid number");
		return NULL;
	}
	if (isfloat) {
		double d;
		if (!text_to_double(p, t, n, &d)) {
			fail_at(p, start, "invalid float");
			return NULL;
		}
		if (isinf(d)) {
			fail_at(p, start, "float is out of range");
			return NULL;
		}
		v = new_node(p, TOML_FLOAT, 0, line, col);
		if (v)
			v->v.u.flt = d;
	} else {
		int64_t iv;
		if (!digits_to_int(t + int_start, n - int_start, 10, neg, &iv)) {
			fail_at(p, start, "integer does not fit in 64 bits");
			return NULL;
		}
		v = new_node(p, TOML_INTEGER, 0, line, col);
		if (v)
			v->v.u.integer = iv;
	}
	p->pos = end;
	return v;
}

/* Reads n decimal digits at off, or returns -1 if they are not all there. */
static int read_digits(const parser *p, size_t off, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (off + (size_t)i >= p->len || !is_digit((unsigned char)p->s[off + (size_t)i]))
			return -1;
		v = v * 10 + (p->s[off + (size_t)i] - '0');
	}
	return v;
}

static bool at_char(const parser *p, size_t off, char c)
{
	return off < p->len && p->s[off] == c;
}

static int days_in_month(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
		return 29;
	return days[m - 1];
}

/* Reads HH:MM:SS[.fraction] at *i, advancing it. */
static bool parse_time(parser *p, size_t *i)
{
	size_t o = *i;
	int h = read_digits(p, o, 2), m = read_digits(p, o + 3, 2), s = read_digits(p, o + 6, 2);
	if (h < 0 || !at_char(p, o + 2, ':') || m < 0 || !at_char(p, o + 5, ':') || s < 0)
		return fail_at(p, o, "invalid time, expected HH:MM:SS");
	if (h > 23)
		return fail_at(p, o, "hour must be between 00 and 23");
	if (m > 59)
		return fail_at(p, o + 3, "minute must be between 00 and 59");
	/* 60 is allowed for leap seconds, as in RFC 3339. */
	if (s > 60)
		return fail_at(p, o + 6, "second must be between 00 and 60");
	o += 8;
	if (at_char(p, o, '.')) {
		o++;
		if (read_digits(p, o, 1) < 0)
			return fail_at(p, o, "expected digits after the decimal point");
		while (o < p->len && is_digit((unsigned char)p->s[o]))
			o++;
	}
	*i = o;
	return true;
}

/* Parses any of the four date/time kinds at the parser's position. */
static node *parse_datetime(parser *p, int line, int col)
{
	size_t start = p->pos, i = start;
	bool has_date = false, has_time = false, has_offset = false;

	if (read_digits(p, i, 4) >= 0 && at_char(p, i + 4, '-')) {
		int y = read_digits(p, i, 4), mo = read_digits(p, i + 5, 2),
		    d = read_digits(p, i + 8, 2);
		if (mo < 0 || !at_char(p, i + 7, '-') || d < 0) {
			fail_at(p, i, "invalid date, expected YYYY-MM-DD");
			return NULL;
		}
		if (mo < 1 || mo > 12) {
			fail_at(p, i + 5, "month must be between 01 and 12");
			return NULL;
		}
		if (d < 1 || d > days_in_month(y, mo)) {
			fail_at(p, i + 8, "day is out of range for the month");
			return NULL;
		}
		has_date = true;
		i += 10;
		/* A space may separate date and time, but only if a time
		 * really follows; otherwise it ends the value. */
		if (at_char(p, i, 'T') || at_char(p, i, 't') ||
		    (at_char(p, i, ' ') && read_digits(p, i + 1, 2) >= 0 &&
		     at_char(p, i + 3, ':'))) {
			i++;
			if (!parse_time(p, &i))
				return NULL;
			has_time = true;
		}
	} else {
		if (!parse_time(p, &i))
			return NULL;
		has_time = true;
	}
	if (has_date && has_time) {
		if (at_char(p, i, 'Z') || at_char(p, i, 'z')) {
			i++;
			has_offset = true;
		} else if (at_char(p, i, '+') || at_char(p, i, '-')) {
			int h = read_digits(p, i + 1, 2), m = read_digits(p, i + 4, 2);
			if (h < 0 || !at_char(p, i + 3, ':') || m < 0) {
				fail_at(p, i,
				        "invalid time zone offset, expected +HH:MM or -HH:MM");
				return NULL;
			}
			if (h > 23 || m > 59) {
				fail_at(p, i, "time zone offset is out of range");
				return NULL;
			}
			i += 6;
			has_offset = true;
		}
	}

	strbuf b = {0};
	if (!sb_put(p, &b, p->s + start, i - start)) {
		free(b.p);
		return NULL;
	}
	/* Normalise the separator and designators so consumers see one form. */
	for (size_t k = 0; k < b.len; k++) {
		if (b.p[k] == ' ' || b.p[k] == 't')
			b.p[k] = 'T';
		else if (b.p[k] == 'z')
			b.p[k] = 'Z';
	}
	toml_type type = !has_date     ? TOML_TIME_LOCAL
	                 : !has_time   ? TOML_DATE_LOCAL
	                 : !has_offset ? TOML_DATETIME_LOCAL
	                               : TOML_DATETIME;
	p->pos = i;
	return make_string(p, type, &b, line, col);
}

/* ---- Values ---- */

static node *parse_value(parser *p, int depth);
static bool parse_keyval(parser *p, node *table);

static node *parse_array(parser *p, node *a)
{
	p->pos++; /* the '[' */
	for (;;) {
		if (!skip_trivia(p))
			return NULL;
		if (peek(p, 0) == ']')
			break;
		node *item = parse_value(p, a->depth + 1);
		if (!item)
			return NULL;
		if (!array_push(p, a, item)) {
			free_node(item);
			return NULL;
		}
		if (!skip_trivia(p))
			return NULL;
		if (peek(p, 0) == ',') {
			p->pos++;
			continue;
		}
		if (peek(p, 0) != ']') {
			fail_unexpected(p, "',' or ']' in array");
			return NULL;
		}
		break;
	}
	p->pos++; /* the ']' */
	return a;
}

/* Inline tables must stay on one line and may not end with a comma. */
static node *parse_inline_table(parser *p, node *t)
{
	p->pos++; /* the '{' */
	skip_ws(p);
	if (peek(p, 0) == '}') {
		p->pos++;
		t->flags |= F_DEFINED | F_FROZEN;
		return t;
	}
	for (;;) {
		skip_ws(p);
		if (!parse_keyval(p, t))
			return NULL;
		skip_ws(p);
		if (peek(p, 0) == '}')
			break;
		if (peek(p, 0) != ',') {
			fail_unexpected(p, "',' or '}' in inline table");
			return NULL;
		}
		p->pos++;
		skip_ws(p);
		if (peek(p, 0) == '}') {
			fail_at(p, p->pos, "trailing comma is not allowed in an inline table");
			return NULL;
		}
	}
	p->pos++; /* the '}' */
	t->flags |= F_DEFINED | F_FROZEN;
	return t;
}

static node *parse_value(parser *p, int depth)
{
	int line, col;
	int c = peek(p, 0);
	node *v;
	strbuf b = {0};

	locate(p, p->pos, &line, &col);
	if (depth > TOML_MAX_DEPTH) {
		fail_lc(p, line, col, "nesting is deeper than the limit of %d levels",
		        TOML_MAX_DEPTH);
		return NULL;
	}
	if (c >= 0 && (c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
		/* The only bare words TOML has are true, false, inf and nan.
		 * Anything else is most likely a string someone forgot to
		 * quote, so say that rather than complain about one letter. */
		size_t end = p->pos;
		while (end < p->len && is_bare((unsigned char)p->s[end]))
			end++;
		size_t n = end - p->pos;
		const char *w = p->s + p->pos;
		if (!((n == 4 && memcmp(w, "true", 4) == 0) ||
		      (n == 5 && memcmp(w, "false", 5) == 0) ||
		      (n == 3 && (memcmp(w, "inf", 3) == 0 || memcmp(w, "nan", 3) == 0)))) {
			fail_lc(p, line, col, "invalid value '%.*s' (strings must be quoted)",
			        n > 40 ? 40 : (int)n, w);
			return NULL;
		}
	}
	switch (c) {
	case '"':
	case '\'': {
		bool ml = peek(p, 1) == c && peek(p, 2) == c;
		if (!parse_string(p, &b, (char)c, ml)) {
			free(b.p);
			return NULL;
		}
		v = make_string(p, TOML_STRING, &b, line, col);
		break;
	}
	case '[':
	case '{':
		v = new_node(p, c == '[' ? TOML_ARRAY : TOML_TABLE, depth, line, col);
		if (!v)
			return NULL;
		if (!(c == '[' ? parse_array(p, v) : parse_inline_table(p, v))) {
			free_node(v);
			return NULL;
		}
		return v;
	case 't':
	case 'f': {
		/* The bare word check above made sure this is true or false. */
		bool val = c == 't';
		v = new_node(p, TOML_BOOL, depth, line, col);
		if (v) {
			v->v.u.boolean = val;
			p->pos += val ? 4 : 5;
		}
		break;
	}
	default:
		if (c >= 0 && (is_digit(c) || c == '+' || c == '-' || c == 'i' || c == 'n')) {
			bool dt = (read_digits(p, p->pos, 4) >= 0 && at_char(p, p->pos + 4, '-')) ||
			          (read_digits(p, p->pos, 2) >= 0 && at_char(p, p->pos + 2, ':'));
			v = dt ? parse_datetime(p, line, col) : parse_number(p, line, col);
			break;
		}
		fail_unexpected(p, "a value");
		return NULL;
	}
	if (v)
		v->depth = depth;
	return v;
}

/* ---- Tables and key/value pairs ---- */

/*
 * Follows one non-final part of a dotted key in a key/value pair, creating
 * the table if needed. Dotted keys may extend tables they created themselves
 * (or that exist only as parents of a header), but not tables defined by a
 * header, inline tables, arrays, or other values.
 */
static node *dotted_descend(parser *p, node *t, keypath *kp, size_t i)
{
	char name[160];
	const keypart *k = &kp->parts[i];
	const toml_kv *kv = table_find(t, k->s, k->len);
	if (!kv) {
		node *n = new_node(p, TOML_TABLE, t->depth + 1, k->line, k->col);
		if (!n)
			return NULL;
		n->flags = F_DEFINED;
		if (!table_add(p, t, k, n)) {
			free_node(n);
			return NULL;
		}
		return n;
	}
	node *n = as_node(kv->value);
	key_str(kp, i + 1, name, sizeof name);
	if (n->v.type != TOML_TABLE)
		fail_lc(p, k->line, k->col, "cannot add keys to '%s': it is already %s", name,
		        kind_of(n));
	else if (n->flags & F_FROZEN)
		fail_lc(p, k->line, k->col, "cannot add keys to inline table '%s'", name);
	else if (n->flags & F_HEADER)
		fail_lc(p, k->line, k->col,
		        "cannot add keys to table '%s' with dotted keys: it is defined by a "
		        "[header]",
		        name);
	else {
		n->flags |= F_DEFINED;
		return n;
	}
	return NULL;
}

/* Parses `key = value` and stores it in table (relative to it). */
static bool parse_keyval(parser *p, node *table)
{
	keypath kp = {0};
	bool ok = false;
	char name[160];

	if (!parse_key(p, &kp))
		goto out;
	if (peek(p, 0) != '=') {
		fail_unexpected(p, "'=' after a key");
		goto out;
	}
	p->pos++;
	skip_ws(p);
	node *t = table;
	for (size_t i = 0; i + 1 < kp.n; i++) {
		t = dotted_descend(p, t, &kp, i);
		if (!t)
			goto out;
	}
	const keypart *last = &kp.parts[kp.n - 1];
	if (table_find(t, last->s, last->len)) {
		fail_lc(p, last->line, last->col, "duplicate key '%s'",
		        key_str(&kp, kp.n, name, sizeof name));
		goto out;
	}
	node *v = parse_value(p, t->depth + 1);
	if (!v)
		goto out;
	if (!table_add(p, t, last, v)) {
		free_node(v);
		goto out;
	}
	ok = true;
out:
	keypath_free(&kp);
	return ok;
}

/*
 * Follows one non-final part of a [header] key. Headers may pass through any
 * table that is not inline, and through an array of tables into its last
 * element; missing tables are created without being defined.
 */
static node *header_descend(parser *p, node *t, keypath *kp, size_t i, int line, int col)
{
	char name[160];
	const keypart *k = &kp->parts[i];
	const toml_kv *kv = table_find(t, k->s, k->len);
	if (!kv) {
		node *n = new_node(p, TOML_TABLE, t->depth + 1, line, col);
		if (!n)
			return NULL;
		if (!table_add(p, t, k, n)) {
			free_node(n);
			return NULL;
		}
		return n;
	}
	node *n = as_node(kv->value);
	key_str(kp, i + 1, name, sizeof name);
	if (n->v.type == TOML_TABLE && !(n->flags & F_FROZEN))
		return n;
	if (n->v.type == TOML_ARRAY && (n->flags & F_AOT))
		return as_node(n->v.u.arr.items[n->v.u.arr.len - 1]);
	if (n->v.type == TOML_TABLE)
		fail_lc(p, k->line, k->col, "cannot add keys to inline table '%s'", name);
	else if (n->v.type == TOML_ARRAY)
		fail_lc(p, k->line, k->col, "cannot add tables to static array '%s'", name);
	else
		fail_lc(p, k->line, k->col, "'%s' is already %s, not a table", name, kind_of(n));
	return NULL;
}

/* Parses [table] or [[array of tables]] and makes it the current table. */
static bool parse_header(parser *p)
{
	keypath kp = {0};
	bool ok = false;
	int line, col;
	char name[160];
	bool aot = peek(p, 1) == '[';

	locate(p, p->pos, &line, &col);
	p->pos += aot ? 2 : 1;
	skip_ws(p);
	if (!parse_key(p, &kp))
		goto out;
	if (peek(p, 0) != ']' || (aot && peek(p, 1) != ']')) {
		fail_unexpected(p, aot ? "']]' to close the header" : "']' to close the header");
		goto out;
	}
	p->pos += aot ? 2 : 1;

	node *t = p->root;
	for (size_t i = 0; i + 1 < kp.n; i++) {
		t = header_descend(p, t, &kp, i, line, col);
		if (!t)
			goto out;
	}
	const keypart *last = &kp.parts[kp.n - 1];
	const toml_kv *kv = table_find(t, last->s, last->len);
	node *n = kv ? as_node(kv->value) : NULL;
	key_str(&kp, kp.n, name, sizeof name);
	if (aot) {
		if (!n) {
			n = new_node(p, TOML_ARRAY, t->depth + 1, line, col);
			if (!n)
				goto out;
			n->flags = F_AOT;
			if (!table_add(p, t, last, n)) {
				free_node(n);
				goto out;
			}
		} else if (n->v.type != TOML_ARRAY || !(n->flags & F_AOT)) {
			fail_lc(p, last->line, last->col,
			        "cannot define array of tables '%s': it is already %s", name,
			        kind_of(n));
			goto out;
		}
		node *elem = new_node(p, TOML_TABLE, n->depth + 1, line, col);
		if (!elem)
			goto out;
		elem->flags = F_DEFINED | F_HEADER;
		if (!array_push(p, n, elem)) {
			free_node(elem);
			goto out;
		}
		p->cur = elem;
	} else {
		if (!n) {
			n = new_node(p, TOML_TABLE, t->depth + 1, line, col);
			if (!n)
				goto out;
			if (!table_add(p, t, last, n)) {
				free_node(n);
				goto out;
			}
		} else if (n->v.type != TOML_TABLE) {
			fail_lc(p, last->line, last->col,
			        "cannot define table '%s': it is already %s", name, kind_of(n));
			goto out;
		} else if (n->flags & (F_DEFINED | F_FROZEN)) {
			fail_lc(p, last->line, last->col, "table '%s' is already defined", name);
			goto out;
		}
		/* A table first created as a header's parent now gets its own
		 * header, so point at that. */
		n->flags |= F_DEFINED | F_HEADER;
		n->v.line = line;
		n->v.col = col;
		p->cur = n;
	}
	ok = true;
out:
	keypath_free(&kp);
	return ok;
}

/* After an expression only whitespace, a comment and a newline may follow. */
static bool end_of_line(parser *p)
{
	size_t nl;
	skip_ws(p);
	if (peek(p, 0) == '#' && !skip_comment(p))
		return false;
	if (at_eof(p))
		return true;
	if (at_newline(p, &nl)) {
		p->pos += nl;
		return true;
	}
	if (peek(p, 0) == '\r')
		return fail_at(p, p->pos, "carriage return without a line feed");
	return fail_unexpected(p, "a newline or comment");
}

static bool parse_document(parser *p)
{
	for (;;) {
		skip_ws(p);
		if (at_eof(p))
			return true;
		int c = peek(p, 0);
		if (c == '[') {
			if (!parse_header(p))
				return false;
		} else if (c != '#' && c != '\n' && c != '\r') {
			if (!parse_keyval(p, p->cur))
				return false;
		}
		if (!end_of_line(p))
			return false;
	}
}

/* ---- Public API ---- */

toml_value *toml_parse(const char *src, size_t len, char *err, size_t errlen)
{
	parser p = {0};
	p.s = src ? src : "";
	p.len = src ? len : 0;
	p.err = err;
	p.errlen = err ? errlen : 0;
	p.lline = 1;
	p.lcol = 1;
	if (p.errlen > 0)
		p.err[0] = '\0';

	/* Lines and columns are ints; refuse documents they cannot count. */
	if (p.len > INT_MAX) {
		fail_lc(&p, 1, 1, "document is too large");
		return NULL;
	}
	/* A byte order mark is allowed at the very start only. */
	if (p.len >= 3 && memcmp(p.s, "\xEF\xBB\xBF", 3) == 0) {
		p.s += 3;
		p.len -= 3;
	}
	if (!check_utf8(&p))
		return NULL;
	p.root = new_node(&p, TOML_TABLE, 0, 1, 1);
	if (!p.root)
		return NULL;
	p.root->flags = F_DEFINED | F_HEADER;
	p.cur = p.root;
	if (!parse_document(&p)) {
		free_node(p.root);
		return NULL;
	}
	return &p.root->v;
}

void toml_free(toml_value *v)
{
	if (v)
		free_node(as_node(v));
}

const toml_value *toml_get(const toml_value *table, const char *key)
{
	if (!table || !key || table->type != TOML_TABLE)
		return NULL;
	const toml_kv *kv = table_find(as_cnode(table), key, strlen(key));
	return kv ? kv->value : NULL;
}

const char *toml_type_name(toml_type t)
{
	switch (t) {
	case TOML_STRING:
		return "string";
	case TOML_INTEGER:
		return "integer";
	case TOML_FLOAT:
		return "float";
	case TOML_BOOL:
		return "boolean";
	case TOML_DATETIME:
		return "datetime";
	case TOML_DATETIME_LOCAL:
		return "datetime-local";
	case TOML_DATE_LOCAL:
		return "date-local";
	case TOML_TIME_LOCAL:
		return "time-local";
	case TOML_ARRAY:
		return "array";
	case TOML_TABLE:
		return "table";
	}
	return "unknown";
}
