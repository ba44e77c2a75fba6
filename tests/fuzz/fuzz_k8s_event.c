/*
 * libFuzzer target for the EndpointSlice decoders: k8s_table_apply_list()
 * and k8s_table_apply_event() (see README.md for building).
 *
 * The input is split at newlines, as the watch stream is: when the first
 * line starts with "L" the rest of that line is applied as a list response
 * first, then every further line as a watch event on the same table (a
 * table seeded with one known slice otherwise). Checks: a rejected list or
 * event leaves the table exactly as it was (same version, same members); an
 * accepted one leaves members sorted with unique ids, eligible equal to
 * serving and not terminating, and a version of bounded length; an ERROR
 * event changes nothing; the diff between consecutive member lists accounts
 * for every id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/k8s.h"

static const char SEED[] =
    "{\"kind\":\"EndpointSliceList\",\"metadata\":{\"resourceVersion\":\"7\"},\"items\":[{"
    "\"metadata\":{\"name\":\"s\"},\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":["
    "\"10.0.0.1\"],\"targetRef\":{\"name\":\"p\"}}]}]}";

static void check(int cond)
{
	if (!cond)
		abort();
}

static void check_members(const k8s_members *m)
{
	for (size_t i = 0; i < m->n; i++) {
		const k8s_member *x = &m->v[i];
		check(x->id && *x->id && x->address && *x->address);
		check(strlen(x->id) <= K8S_NAME_MAX && strlen(x->address) <= K8S_NAME_MAX);
		check(x->eligible == (x->serving && !x->terminating));
		if (i > 0)
			check(strcmp(m->v[i - 1].id, x->id) < 0);
	}
}

static void snapshot(const k8s_table *t, k8s_members *m, char *version)
{
	check(k8s_table_members(t, m) == 0);
	check_members(m);
	size_t vl = strlen(k8s_table_version(t));
	check(vl <= K8S_VERSION_MAX);
	memcpy(version, k8s_table_version(t), vl + 1);
}

static void check_diff(const k8s_members *a, const k8s_members *b)
{
	k8s_diff d;
	check(k8s_members_diff(a, b, &d) == 0);
	/* Every id of `b` is joined, or in both; every id of `a` left, or in both. */
	check(d.njoined <= b->n && d.nleft <= a->n);
	check(b->n - d.njoined == a->n - d.nleft);
	check(d.nterminating + d.nchanged <= b->n - d.njoined);
	if (k8s_members_equal(a, b))
		check(d.njoined == 0 && d.nleft == 0 && d.nterminating == 0 && d.nchanged == 0);
	k8s_diff_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	char err[512], before_v[K8S_VERSION_MAX + 1], after_v[K8S_VERSION_MAX + 1];
	k8s_table *t = k8s_table_new();
	check(t != NULL);
	bool first = true;
	if (!(size > 0 && p[0] == 'L'))
		check(k8s_table_apply_list(t, SEED, sizeof(SEED) - 1, err, sizeof(err)) == 0);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		k8s_members before, after;
		snapshot(t, &before, before_v);
		int rc;
		bool is_error = false;
		if (first && len > 0 && p[0] == 'L') {
			rc = k8s_table_apply_list(t, p + 1, len - 1, err, sizeof(err));
		} else {
			k8s_event_result r;
			rc = k8s_table_apply_event(t, p, len, &r, err, sizeof(err));
			if (rc == 0) {
				check(r.type < K8S_EV_COUNT);
				is_error = r.type == K8S_EV_ERROR;
				check(!r.gone || (is_error && r.code == 410));
			}
		}
		first = false;
		snapshot(t, &after, after_v);
		if (rc != 0) {
			check(err[0] != '\0');
			check(strcmp(before_v, after_v) == 0);
			check(k8s_members_equal(&before, &after));
		} else if (is_error) {
			check(strcmp(before_v, after_v) == 0);
			check(k8s_members_equal(&before, &after));
		}
		check_diff(&before, &after);
		k8s_members_free(&before);
		k8s_members_free(&after);
		p += len + (nl ? 1 : 0);
	}
	k8s_table_free(t);
	return 0;
}
