/*
 * TOML 1.0 parser: text -> an immutable tree of values.
 *
 * The parser is strict (it accepts exactly TOML 1.0.0 and passes the upstream
 * toml-test suite). Every value and every key remembers the line and column
 * where it was written, so configuration errors can point at the source.
 */
#ifndef SWITCHYARD_TOML_H
#define SWITCHYARD_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The deepest a value may sit in the tree (the root table is depth 0). Both
 * nested arrays/inline tables and long dotted keys or headers count, so that
 * hostile input cannot exhaust the stack of code that walks the tree.
 */
#define TOML_MAX_DEPTH 128

typedef enum toml_type {
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOL,
	TOML_DATETIME,       /* offset date-time, e.g. 1979-05-27T07:32:00Z */
	TOML_DATETIME_LOCAL, /* local date-time, e.g. 1979-05-27T07:32:00 */
	TOML_DATE_LOCAL,     /* local date, e.g. 1979-05-27 */
	TOML_TIME_LOCAL,     /* local time, e.g. 07:32:00 */
	TOML_ARRAY,
	TOML_TABLE,
} toml_type;

typedef struct toml_value toml_value;

/* One key/value pair of a table, in the order the keys were first defined. */
typedef struct toml_kv {
	char *key; /* NUL-terminated; TOML keys may contain NUL via \u0000, so see keylen */
	size_t keylen;
	int line, col; /* where the key was (first) written, 1-based */
	toml_value *value;
} toml_kv;

struct toml_value {
	toml_type type;
	int line, col; /* where the value starts, 1-based (tables: their header or first key) */
	union {
		/* TOML_STRING and the four date/time types. Date/time text is kept
		 * as written except that a space separator becomes 'T' and a
		 * lowercase 't'/'z' becomes uppercase. Always NUL-terminated. */
		struct {
			char *ptr;
			size_t len;
		} str;
		int64_t integer;
		double flt;
		bool boolean;
		struct {
			toml_value **items;
			size_t len;
		} arr;
		struct {
			toml_kv *items;
			size_t len;
		} tab;
	} u;
};

/*
 * Parses `len` bytes of TOML. Returns the root table (caller owns it, free with
 * toml_free), or NULL on error with a message of the form
 * "line L, column C: <what is wrong>" written into err (always NUL-terminated
 * when errlen > 0).
 */
toml_value *toml_parse(const char *src, size_t len, char *err, size_t errlen);

/* Frees a tree returned by toml_parse. NULL is allowed. */
void toml_free(toml_value *v);

/* Looks a key up in a table; NULL if absent or if `table` is not a table.
 * The table must be part of a tree returned by toml_parse (lookups use an
 * index kept alongside it). */
const toml_value *toml_get(const toml_value *table, const char *key);

/* Name of a type for messages: "string", "integer", "float", "boolean",
 * "datetime", "datetime-local", "date-local", "time-local", "array", "table". */
const char *toml_type_name(toml_type t);

#endif
