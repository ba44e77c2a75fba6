/*
 * libFuzzer target for k8s_kubeconfig_parse(): YAML text through libyaml's
 * document loader and the kubeconfig lookup (current-context, context,
 * cluster, user; -data decoding; relative paths) (see README.md for
 * building).
 *
 * Checks: success and failure are exclusive (a target comes back exactly
 * when no error was reported, and a failed parse leaves the target zeroed);
 * a resolved target has an http(s) URL without a trailing slash and a
 * namespace; each PEM item is a path or bytes, never both; a certificate
 * comes with its key; relative paths were resolved against the (nonexistent)
 * base directory. The parser reads no files, so the input cannot make the
 * target read this machine's files.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/k8s.h"

#define BASEDIR "/nonexistent-fuzz-basedir"

static void check(int cond)
{
	if (!cond)
		abort();
}

static void check_path(const char *p)
{
	if (p)
		check(p[0] == '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sy_k8s_target t;
	char err[512] = "";
	int rc = k8s_kubeconfig_parse((const char *)data, size, "/fuzz/kubeconfig", BASEDIR, NULL,
	                              &t, err, sizeof(err));
	if (rc != 0) {
		check(rc == -1 && err[0] != '\0');
		static const sy_k8s_target zero;
		check(memcmp(&t, &zero, sizeof(t)) == 0);
		return 0;
	}
	check(t.api_url &&
	      (strncmp(t.api_url, "https://", 8) == 0 || strncmp(t.api_url, "http://", 7) == 0));
	size_t ul = strlen(t.api_url);
	check(ul > 0 && t.api_url[ul - 1] != '/');
	check(t.namespace_ && t.namespace_[0] != '\0');
	check(t.source != NULL);
	check(!(t.ca_file && t.ca_pem) && !(t.cert_file && t.cert_pem) &&
	      !(t.key_file && t.key_pem));
	check((t.cert_file || t.cert_pem) == (t.key_file || t.key_pem));
	check(!t.ca_pem || t.ca_pem_len > 0);
	check_path(t.ca_file);
	check_path(t.cert_file);
	check_path(t.key_file);
	check_path(t.token_file);
	k8s_target_free(&t);
	return 0;
}
