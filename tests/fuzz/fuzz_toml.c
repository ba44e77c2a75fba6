/*
 * libFuzzer target for toml_parse() (see README.md for building).
 *
 * The input is the document. Besides memory safety, it checks the parser's
 * contract: NULL comes with a non-empty "line L, column C: ..." message, a
 * tree comes back as a table, and walking the whole tree (what config.c
 * does) visits only well-formed values no deeper than TOML_MAX_DEPTH.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/toml.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

static void walk(const toml_value *v, int depth)
{
	check(v != NULL);
	check(depth <= TOML_MAX_DEPTH);
	check(v->line >= 1 && v->col >= 1);
	switch (v->type) {
	case TOML_STRING:
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL:
		check(v->u.str.ptr != NULL && v->u.str.ptr[v->u.str.len] == '\0');
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < v->u.arr.len; i++)
			walk(v->u.arr.items[i], depth + 1);
		break;
	case TOML_TABLE:
		for (size_t i = 0; i < v->u.tab.len; i++) {
			const toml_kv *kv = &v->u.tab.items[i];
			check(kv->key != NULL && kv->key[kv->keylen] == '\0');
			walk(kv->value, depth + 1);
		}
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	err[0] = '\0';
	toml_value *root = toml_parse((const char *)data, size, err, sizeof(err));
	if (root == NULL) {
		check(strncmp(err, "line ", 5) == 0);
		return 0;
	}
	check(root->type == TOML_TABLE);
	walk(root, 0);
	toml_free(root);
	return 0;
}
