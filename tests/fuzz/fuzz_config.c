/*
 * libFuzzer target for config_load_string(): TOML text through the typed
 * configuration (defaults, every table's keys, durations, CIDRs, bind
 * addresses, enums) and the startup validation rules (see README.md for
 * building; it links the whole core library).
 *
 * Checks: success and failure are exclusive (a config comes back exactly
 * when no error was reported), and every error message is a non-empty
 * string. Paths in the input are resolved against a directory that does not
 * exist, so a hostile input cannot make the target read this machine's
 * files by relative name.
 */
#include <stdint.h>
#include <stdlib.h>

#include "switchyard/config.h"

static void check(int cond)
{
	if (!cond)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sy_config *cfg = NULL;
	sy_errors errs = {0};
	int r =
	    config_load_string((const char *)data, size, "/nonexistent-fuzz-basedir", &cfg, &errs);
	if (r == 0) {
		check(cfg != NULL && errs.len == 0);
		config_free(cfg);
	} else {
		check(cfg == NULL && errs.len > 0);
		for (size_t i = 0; i < errs.len; i++)
			check(errs.msgs[i] != NULL && errs.msgs[i][0] != '\0');
	}
	sy_errors_free(&errs);
	return 0;
}
