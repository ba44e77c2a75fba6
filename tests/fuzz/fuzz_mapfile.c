/*
 * libFuzzer target for the mapping file parser (src/core/mapfile.c):
 * mapfile_parse (the same parser mapfile_load runs over a file), then
 * mapfile_lookup, mapfile_set and mapfile_remove on the result.
 *
 * Input: byte 0 is flags (bit 0: lowercase identifiers; bit 1: a target
 * check that refuses destinations starting with 'x'), the rest is the file.
 *
 * Checks: success and failure are exclusive (entries exactly when no error,
 * every error a non-empty message naming mapping.file.path); the entries are
 * sorted, unique, non-empty, free of whitespace, never a comment, lowercase
 * when asked, and accepted by the target check; every entry is found by
 * lookup; writing the entries back as "<id> <dest>" lines and parsing that
 * gives the same entries (the format can hold everything it produces); a
 * set then remove of a new key leaves the same entries.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/mapfile.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

static bool refuse_x(void *arg, const char *dest)
{
	(void)arg;
	return dest[0] != 'x';
}

static void check_entries(const sy_mapfile *m, bool lowercase, bool policy)
{
	for (size_t i = 0; i < m->len; i++) {
		const char *id = m->entries[i].identifier, *d = m->entries[i].destination;
		check(id != NULL && d != NULL && id[0] != '\0' && d[0] != '\0');
		check(id[0] != '#' && d[0] != '#');
		for (const char *p = id; *p; p++) {
			check(!isspace((unsigned char)*p));
			check(!lowercase || !(*p >= 'A' && *p <= 'Z'));
		}
		for (const char *p = d; *p; p++)
			check(!isspace((unsigned char)*p));
		check(!policy || refuse_x(NULL, d));
		if (i > 0)
			check(strcmp(m->entries[i - 1].identifier, id) < 0);
		const char *found = mapfile_lookup(m, id);
		check(found != NULL && strcmp(found, d) == 0);
	}
}

static bool same(const sy_mapfile *a, const sy_mapfile *b)
{
	if (a->len != b->len)
		return false;
	for (size_t i = 0; i < a->len; i++)
		if (strcmp(a->entries[i].identifier, b->entries[i].identifier) != 0 ||
		    strcmp(a->entries[i].destination, b->entries[i].destination) != 0)
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool lowercase = data[0] & 1, policy = data[0] & 2;
	sy_mapfile m;
	sy_errors errs = {0};
	int r = mapfile_parse((const char *)data + 1, size - 1, "fuzz.tsv", lowercase,
	                      policy ? refuse_x : NULL, NULL, &m, &errs);
	if (r != 0) {
		check(r == -1 && errs.len > 0 && m.entries == NULL && m.len == 0);
		for (size_t i = 0; i < errs.len; i++)
			check(errs.msgs[i] != NULL &&
			      strncmp(errs.msgs[i], "mapping.file.path: ", 19) == 0);
		sy_errors_free(&errs);
		return 0;
	}
	check(errs.len == 0);
	check_entries(&m, lowercase, policy);

	/* Round trip through the text format. */
	size_t cap = 1;
	for (size_t i = 0; i < m.len; i++)
		cap += strlen(m.entries[i].identifier) + strlen(m.entries[i].destination) + 2;
	char *text = malloc(cap);
	check(text != NULL);
	size_t off = 0;
	for (size_t i = 0; i < m.len; i++)
		off += (size_t)snprintf(text + off, cap - off, "%s %s\n", m.entries[i].identifier,
		                        m.entries[i].destination);
	sy_mapfile again;
	check(mapfile_parse(text, off, "again.tsv", lowercase, NULL, NULL, &again, &errs) == 0);
	check(same(&m, &again));
	mapfile_free(&again);
	free(text);

	/* A new key in and out again. */
	static const char key[] = "\x7f-fuzz-new-key";
	if (mapfile_lookup(&m, key) == NULL) {
		sy_mapfile copy;
		check(mapfile_parse((const char *)data + 1, size - 1, "fuzz.tsv", lowercase,
		                    policy ? refuse_x : NULL, NULL, &copy, &errs) == 0);
		check(mapfile_set(&m, key, "dest") == 0);
		check(m.len == copy.len + 1);
		check(strcmp(mapfile_lookup(&m, key), "dest") == 0);
		check(mapfile_remove(&m, key));
		check(!mapfile_remove(&m, key));
		check(same(&m, &copy));
		mapfile_free(&copy);
	}
	mapfile_free(&m);
	return 0;
}
