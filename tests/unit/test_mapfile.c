/*
 * Unit tests for src/core/mapfile.c: the line format (comments, blank
 * lines, whitespace, trailing fields), normalization, duplicates, errors
 * that name the file and line, look-ups, edits, and the atomic rewrite.
 * The destinations a file may name come from a small loaded config.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "switchyard/config.h"
#include "switchyard/mapfile.h"

static char tmpdir[] = "/tmp/sy-mapfile-test-XXXXXX";
static sy_config *cfg;

static const char cfg_text[] = "[routing]\ndefault_destination = \"old\"\n"
                               "[destination.old]\nhost = \"old.example.com\"\n"
                               "[destination.new]\nhost = \"new.example.com\"\n"
                               "[destination.n1]\nhost = \"n1.example.com\"\n"
                               "[cluster.pool]\ntemplate = \"new\"\nnodes = [\"n1\"]\n";

static char *path_of(const char *name)
{
	static char buf[512];
	snprintf(buf, sizeof(buf), "%s/%s", tmpdir, name);
	return buf;
}

static void write_file(const char *name, const char *content)
{
	FILE *f = fopen(path_of(name), "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static char *read_file(const char *name)
{
	static char buf[4096];
	FILE *f = fopen(path_of(name), "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int setup(void **state)
{
	sy_errors errs = {0};
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	if (config_load_string(cfg_text, strlen(cfg_text), tmpdir, &cfg, &errs) != 0) {
		for (size_t i = 0; i < errs.len; i++)
			fprintf(stderr, "%s\n", errs.msgs[i]);
		sy_errors_free(&errs);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	config_free(cfg);
	DIR *d = opendir(tmpdir);
	if (d != NULL) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				unlink(path_of(e->d_name));
		}
		closedir(d);
	}
	rmdir(tmpdir);
	return 0;
}

static bool has_msg(const sy_errors *errs, const char *needle)
{
	for (size_t i = 0; i < errs->len; i++) {
		if (strstr(errs->msgs[i], needle) != NULL)
			return true;
	}
	return false;
}

static void test_format(void **state)
{
	(void)state;
	sy_errors errs = {0};
	sy_mapfile m;

	write_file("a.tsv", "# a comment\n"
	                    "\n"
	                    "   \t\n"
	                    "alice@example.com\tnew\n"
	                    "  Bob@Example.COM   old   # trailing comment\n"
	                    "carol@example.com pool extra fields ignored\r\n"
	                    "   # indented comment\n"
	                    "a#b@example.com new\n"
	                    "dave@example.com new"); /* no final newline */
	assert_int_equal(mapfile_load(path_of("a.tsv"), false, config_target_cb, cfg, &m, &errs),
	                 0);
	assert_int_equal(errs.len, 0);
	assert_int_equal(m.len, 5);
	/* Sorted by identifier (bytewise). */
	for (size_t i = 1; i < m.len; i++)
		assert_true(strcmp(m.entries[i - 1].identifier, m.entries[i].identifier) < 0);
	assert_string_equal(mapfile_lookup(&m, "alice@example.com"), "new");
	assert_string_equal(mapfile_lookup(&m, "Bob@Example.COM"), "old");
	assert_null(mapfile_lookup(&m, "bob@example.com")); /* no normalization asked */
	assert_string_equal(mapfile_lookup(&m, "carol@example.com"), "pool");
	assert_string_equal(mapfile_lookup(&m, "a#b@example.com"), "new");
	assert_string_equal(mapfile_lookup(&m, "dave@example.com"), "new");
	assert_null(mapfile_lookup(&m, "zed@example.com"));
	assert_null(mapfile_lookup(&m, ""));
	mapfile_free(&m);
	assert_int_equal(m.len, 0);
	assert_null(m.entries);
}

/* mapfile_parse reads text in memory exactly as mapfile_load reads a file,
 * and names the text in its errors. */
static void test_parse_buffer(void **state)
{
	(void)state;
	static const char text[] = "# c\n  Bob@Example.com old # x\nalice@example.com new\n"
	                           "alice@example.com pool\ncarol@example.com new";
	sy_errors errs = {0};
	sy_mapfile a, b;
	write_file("same.tsv", text);
	assert_int_equal(mapfile_load(path_of("same.tsv"), true, config_target_cb, cfg, &a, &errs),
	                 0);
	assert_int_equal(
	    mapfile_parse(text, strlen(text), "mem", true, config_target_cb, cfg, &b, &errs), 0);
	assert_int_equal(errs.len, 0);
	assert_int_equal(a.len, 3);
	assert_int_equal(b.len, a.len);
	for (size_t i = 0; i < a.len; i++) {
		assert_string_equal(a.entries[i].identifier, b.entries[i].identifier);
		assert_string_equal(a.entries[i].destination, b.entries[i].destination);
	}
	assert_string_equal(mapfile_lookup(&b, "alice@example.com"), "pool");
	mapfile_free(&a);
	mapfile_free(&b);

	assert_int_equal(mapfile_parse("", 0, "empty", false, NULL, NULL, &b, &errs), 0);
	assert_int_equal(b.len, 0);
	assert_null(mapfile_lookup(&b, "x"));
	mapfile_free(&b);

	static const char bad[] = "ok@example.com new\nlonely\nx@example.com nowhere\n";
	assert_int_equal(
	    mapfile_parse(bad, strlen(bad), "mem.tsv", false, config_target_cb, cfg, &b, &errs),
	    -1);
	assert_null(b.entries);
	assert_int_equal(errs.len, 2);
	assert_true(has_msg(&errs, "mapping.file.path: mem.tsv:2:"));
	assert_true(has_msg(&errs, "mem.tsv:3: destination \"nowhere\" is not declared"));
	sy_errors_free(&errs);
}

static void test_normalize_and_duplicates(void **state)
{
	(void)state;
	sy_errors errs = {0};
	sy_mapfile m;

	write_file("d.tsv", "ALICE@example.com old\n"
	                    "bob@example.com new\n"
	                    "Alice@Example.com new\n"); /* later duplicate wins */
	assert_int_equal(mapfile_load(path_of("d.tsv"), true, config_target_cb, cfg, &m, &errs), 0);
	assert_int_equal(m.len, 2);
	assert_string_equal(m.entries[0].identifier, "alice@example.com");
	assert_string_equal(mapfile_lookup(&m, "alice@example.com"), "new");
	mapfile_free(&m);

	/* Without normalization the two spellings are different keys. */
	assert_int_equal(mapfile_load(path_of("d.tsv"), false, config_target_cb, cfg, &m, &errs),
	                 0);
	assert_int_equal(m.len, 3);
	mapfile_free(&m);
	assert_int_equal(errs.len, 0);
}

static void test_errors(void **state)
{
	(void)state;
	sy_errors errs = {0};
	sy_mapfile m = {(sy_mapentry *)1, 99};

	write_file("bad.tsv", "alice@example.com new\n"
	                      "lonely@example.com\n"
	                      "bob@example.com ghost\n"
	                      "carol@example.com # no destination\n"
	                      "dave@example.com old\n");
	assert_int_equal(mapfile_load(path_of("bad.tsv"), false, config_target_cb, cfg, &m, &errs),
	                 -1);
	assert_null(m.entries);
	assert_int_equal(m.len, 0);
	/* One message per bad line, each naming the key, file and line. */
	assert_int_equal(errs.len, 3);
	char want[1024];
	snprintf(want, sizeof(want), "mapping.file.path: %s:2: expected", path_of("bad.tsv"));
	assert_true(has_msg(&errs, want));
	snprintf(want, sizeof(want),
	         "mapping.file.path: %s:3: destination \"ghost\" is not declared",
	         path_of("bad.tsv"));
	assert_true(has_msg(&errs, want));
	assert_true(has_msg(&errs, "bad.tsv:4: expected"));
	sy_errors_free(&errs);

	/* A missing file. */
	assert_int_equal(mapfile_load(path_of("none.tsv"), false, config_target_cb, cfg, &m, &errs),
	                 -1);
	assert_int_equal(errs.len, 1);
	assert_true(has_msg(&errs, "mapping.file.path: cannot read"));
	sy_errors_free(&errs);

	/* Without a config, any destination is accepted (tools, tests). */
	assert_int_equal(mapfile_load(path_of("bad.tsv"), false, NULL, NULL, &m, &errs), -1);
	assert_int_equal(errs.len, 2); /* only the two short lines */
	sy_errors_free(&errs);

	/* An empty file is a valid, empty mapping. */
	write_file("empty.tsv", "");
	assert_int_equal(
	    mapfile_load(path_of("empty.tsv"), false, config_target_cb, cfg, &m, &errs), 0);
	assert_int_equal(m.len, 0);
	assert_null(mapfile_lookup(&m, "x"));
	mapfile_free(&m);
}

static void test_set_remove(void **state)
{
	(void)state;
	sy_mapfile m = {0};

	assert_int_equal(mapfile_set(&m, "m@x", "old"), 0);
	assert_int_equal(mapfile_set(&m, "a@x", "new"), 0);
	assert_int_equal(mapfile_set(&m, "z@x", "old"), 0);
	assert_int_equal(mapfile_set(&m, "m@x", "new"), 0); /* replace */
	assert_int_equal(m.len, 3);
	assert_string_equal(m.entries[0].identifier, "a@x");
	assert_string_equal(m.entries[1].identifier, "m@x");
	assert_string_equal(m.entries[2].identifier, "z@x");
	assert_string_equal(mapfile_lookup(&m, "m@x"), "new");

	assert_true(mapfile_remove(&m, "m@x"));
	assert_false(mapfile_remove(&m, "m@x"));
	assert_false(mapfile_remove(&m, "q@x"));
	assert_int_equal(m.len, 2);
	assert_null(mapfile_lookup(&m, "m@x"));
	assert_string_equal(mapfile_lookup(&m, "z@x"), "old");
	assert_true(mapfile_remove(&m, "a@x"));
	assert_true(mapfile_remove(&m, "z@x"));
	assert_int_equal(m.len, 0);
	mapfile_free(&m);
}

static void test_write_roundtrip(void **state)
{
	(void)state;
	sy_errors errs = {0};
	sy_mapfile m = {0}, back;
	const char *err = "unset";
	struct stat st;

	write_file("w.tsv", "# will be replaced\nold@x old\n");
	chmod(path_of("w.tsv"), 0640);
	assert_int_equal(mapfile_set(&m, "zed@example.com", "old"), 0);
	assert_int_equal(mapfile_set(&m, "amy@example.com", "new"), 0);
	assert_int_equal(mapfile_set(&m, "kim@example.com", "pool"), 0);
	assert_int_equal(mapfile_write(path_of("w.tsv"), &m, &err), 0);
	assert_null(err);
	assert_string_equal(read_file("w.tsv"), "amy@example.com\tnew\n"
	                                        "kim@example.com\tpool\n"
	                                        "zed@example.com\told\n");
	/* The replaced file keeps its permissions. */
	assert_int_equal(stat(path_of("w.tsv"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	assert_int_equal(mapfile_load(path_of("w.tsv"), false, config_target_cb, cfg, &back, &errs),
	                 0);
	assert_int_equal(back.len, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(back.entries[i].identifier, m.entries[i].identifier);
		assert_string_equal(back.entries[i].destination, m.entries[i].destination);
	}
	mapfile_free(&back);

	/* No temporary file is left behind. */
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		assert_null(strstr(e->d_name, ".tmp"));
	closedir(d);

	/* A new file gets 0644; an empty mapping writes an empty file. */
	sy_mapfile empty = {0};
	assert_int_equal(mapfile_write(path_of("new.tsv"), &empty, &err), 0);
	assert_int_equal(stat(path_of("new.tsv"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(st.st_size, 0);

	/* A directory that does not exist is reported, not crashed on. */
	assert_int_equal(mapfile_write("/nonexistent-dir-sy/x.tsv", &m, &err), -1);
	assert_non_null(err);
	mapfile_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format),          cmocka_unit_test(test_normalize_and_duplicates),
	    cmocka_unit_test(test_errors),          cmocka_unit_test(test_set_remove),
	    cmocka_unit_test(test_write_roundtrip), cmocka_unit_test(test_parse_buffer),
	};
	return cmocka_run_group_tests_name("mapfile", tests, setup, teardown);
}
