/* EndpointSlice decoding and the membership table (src/k8s/endpointslice.c):
 * conditions, address types, ids, list replacement, watch events (ADDED,
 * MODIFIED, DELETED, BOOKMARK, ERROR 410), malformed input, diffs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/k8s.h"

static char err[512];

static void list_ok(k8s_table *t, const char *json)
{
	if (k8s_table_apply_list(t, json, strlen(json), err, sizeof(err)) != 0)
		fail_msg("list rejected: %s\n%s", err, json);
}

static k8s_event_result event_ok(k8s_table *t, const char *json)
{
	k8s_event_result r;
	if (k8s_table_apply_event(t, json, strlen(json), &r, err, sizeof(err)) != 0)
		fail_msg("event rejected: %s\n%s", err, json);
	return r;
}

/* "id=addr:E id=addr:-" with E = eligible, T = terminating, S = serving only. */
static void members_are(k8s_table *t, const char *want)
{
	k8s_members m;
	char got[2048] = "";
	assert_int_equal(k8s_table_members(t, &m), 0);
	for (size_t i = 0; i < m.n; i++) {
		char one[600];
		snprintf(one, sizeof(one), "%s%s=%s:%c%c%c", i ? " " : "", m.v[i].id,
		         m.v[i].address, m.v[i].eligible ? 'E' : '-', m.v[i].serving ? 'S' : '-',
		         m.v[i].terminating ? 'T' : '-');
		strncat(got, one, sizeof(got) - strlen(got) - 1);
	}
	k8s_members_free(&m);
	if (strcmp(got, want) != 0)
		fail_msg("members: got  \"%s\"\n          want \"%s\"", got, want);
}

#define SLICE(name, type, eps)                                                                     \
	"{\"metadata\":{\"name\":\"" name                                                          \
	"\",\"resourceVersion\":\"5\",\"labels\":{\"kubernetes.io/"                                \
	"service-name\":\"mail\"}},\"addressType\":\"" type "\",\"endpoints\":[" eps "]}"
#define EP(addr, pod, cond)                                                                        \
	"{\"addresses\":[\"" addr "\"],\"conditions\":{" cond "},\"targetRef\":{\"kind\":\"Pod\"," \
	"\"name\":\"" pod "\"}}"
#define LIST(rv, items)                                                                            \
	"{\"kind\":\"EndpointSliceList\",\"apiVersion\":\"discovery.k8s.io/v1\",\"metadata\":{"    \
	"\"resourceVersion\":\"" rv "\"},\"items\":[" items "]}"
#define EVENT(type, obj) "{\"type\":\"" type "\",\"object\":" obj "}"

/* Every combination of the three conditions (absent, true, false). */
static void conditions_table(void **state)
{
	(void)state;
	static const char *const vals[3] = {NULL, "true", "false"};
	for (int r = 0; r < 3; r++) {
		for (int s = 0; s < 3; s++) {
			for (int x = 0; x < 3; x++) {
				char cond[128] = "", json[1024];
				const char *names[3] = {"ready", "serving", "terminating"};
				int idx[3] = {r, s, x};
				for (int k = 0; k < 3; k++) {
					if (!vals[idx[k]])
						continue;
					char one[40];
					snprintf(one, sizeof(one), "%s\"%s\":%s",
					         cond[0] ? "," : "", names[k], vals[idx[k]]);
					strcat(cond, one);
				}
				snprintf(json, sizeof(json),
				         LIST("1",
				              "{\"metadata\":{\"name\":\"s\"},\"addressType\":"
				              "\"IPv4\",\"endpoints\":[{\"addresses\":[\"10.0.0."
				              "1\"],\"conditions\":{%s},\"targetRef\":{\"name\":"
				              "\"p\"}}]}"),
				         cond);
				bool ready = r != 2; /* absent counts as ready */
				bool serving = s == 0 ? ready : s == 1;
				bool term = x == 1;
				k8s_table *t = k8s_table_new();
				list_ok(t, json);
				k8s_members m;
				assert_int_equal(k8s_table_members(t, &m), 0);
				assert_int_equal(m.n, 1);
				if (m.v[0].serving != serving || m.v[0].terminating != term ||
				    m.v[0].eligible != (serving && !term))
					fail_msg("conditions {%s}: serving=%d terminating=%d "
					         "eligible=%d",
					         cond, m.v[0].serving, m.v[0].terminating,
					         m.v[0].eligible);
				k8s_members_free(&m);
				k8s_table_free(t);
			}
		}
	}
}

static void list_union_and_ids(void **state)
{
	(void)state;
	k8s_table *t = k8s_table_new();
	list_ok(t, LIST("77", SLICE("mail-b", "IPv4",
	                            EP("10.0.0.2", "pod-b", "\"ready\":true") "," EP(
	                                "10.0.0.3", "pod-c",
	                                "\"ready\":false,\"serving\":true,\"terminating\":"
	                                "true")) "," SLICE("mail-a", "IPv6",
	                                                   EP("fd00::1", "pod-a",
	                                                      "") ",{\"addresses\":[\"fd00:"
	                                                          ":9\",\"fd00::"
	                                                          "10\"]}") "," SLICE("mail"
	                                                                              "-f",
	                                                                              "FQD"
	                                                                              "N",
	                                                                              EP("d"
	                                                                                 "b"
	                                                                                 "."
	                                                                                 "e"
	                                                                                 "x"
	                                                                                 "a"
	                                                                                 "m"
	                                                                                 "p"
	                                                                                 "l"
	                                                                                 "e",
	                                                                                 "p"
	                                                                                 "o"
	                                                                                 "d"
	                                                                                 "-"
	                                                                                 "f",
	                                                                                 ""))));
	assert_string_equal(k8s_table_version(t), "77");
	assert_int_equal(k8s_table_slice_count(t), 3);
	/* Sorted by id; no targetRef -> the first address is the id; FQDN
	 * slices are ignored. */
	members_are(t, "fd00::9=fd00::9:ES- pod-a=fd00::1:ES- pod-b=10.0.0.2:ES- "
	               "pod-c=10.0.0.3:-ST");
	k8s_table_free(t);
}

static void dual_stack_prefers_eligible_then_ipv4(void **state)
{
	(void)state;
	k8s_table *t = k8s_table_new();
	list_ok(t, LIST("1", SLICE("m-v6", "IPv6", EP("fd00::2", "pod-x", "")) "," SLICE(
	                         "m-v4", "IPv4", EP("10.0.0.2", "pod-x", ""))));
	members_are(t, "pod-x=10.0.0.2:ES-");
	/* The IPv4 entry is not ready: the eligible IPv6 one wins. */
	event_ok(t, EVENT("MODIFIED",
	                  SLICE("m-v4", "IPv4", EP("10.0.0.2", "pod-x", "\"ready\":false"))));
	members_are(t, "pod-x=fd00::2:ES-");
	k8s_table_free(t);
}

static void skipped_endpoints(void **state)
{
	(void)state;
	k8s_table *t = k8s_table_new();
	/* A bad IPv4 address, no addresses, an address of the other family, a
	 * pod name with a space: nothing dialable or loggable, skipped. */
	list_ok(t,
	        LIST("1", SLICE("s", "IPv4",
	                        EP("10.0.0.300", "a", "") ",{\"addresses\":[]}," EP(
	                            "fd00::1", "b", "") "," EP("10.0.0.4", "bad name",
	                                                       "") "," EP("10.0.0.5", "ok", ""))));
	members_are(t, "ok=10.0.0.5:ES-");
	/* An empty slice (endpoints null). */
	list_ok(t, LIST("2", "{\"metadata\":{\"name\":\"e\"},\"addressType\":\"IPv4\","
	                     "\"endpoints\":null}"));
	members_are(t, "");
	k8s_table_free(t);
}

static void events_apply(void **state)
{
	(void)state;
	k8s_table *t = k8s_table_new();
	list_ok(t, LIST("10", SLICE("s1", "IPv4", EP("10.0.0.1", "p1", ""))));
	k8s_event_result r =
	    event_ok(t, EVENT("ADDED", "{\"kind\":\"EndpointSlice\",\"apiVersion\":\"discovery.k8s."
	                               "io/v1\",\"metadata\":{\"name\":\"s2\",\"resourceVersion\":"
	                               "\"11\"},\"addressType\":\"IPv4\",\"endpoints\":[" EP(
	                                   "10.0.0.2", "p2", "") "]}"));
	assert_int_equal(r.type, K8S_EV_ADDED);
	assert_string_equal(k8s_table_version(t), "11");
	members_are(t, "p1=10.0.0.1:ES- p2=10.0.0.2:ES-");

	r = event_ok(t,
	             EVENT("MODIFIED", "{\"metadata\":{\"name\":\"s1\",\"resourceVersion\":\"12\"},"
	                               "\"addressType\":\"IPv4\",\"endpoints\":[" EP(
	                                   "10.0.0.1", "p1", "\"terminating\":true") "]}"));
	assert_int_equal(r.type, K8S_EV_MODIFIED);
	members_are(t, "p1=10.0.0.1:-ST p2=10.0.0.2:ES-");

	r = event_ok(t,
	             EVENT("DELETED", "{\"metadata\":{\"name\":\"s1\",\"resourceVersion\":\"13\"},"
	                              "\"addressType\":\"IPv4\",\"endpoints\":[]}"));
	assert_int_equal(r.type, K8S_EV_DELETED);
	assert_string_equal(k8s_table_version(t), "13");
	members_are(t, "p2=10.0.0.2:ES-");
	/* Deleting an unknown slice is not an error. */
	event_ok(t,
	         EVENT("DELETED", "{\"metadata\":{\"name\":\"nope\",\"resourceVersion\":\"14\"}}"));

	r = event_ok(t, EVENT("BOOKMARK", "{\"kind\":\"EndpointSlice\",\"apiVersion\":\"discovery."
	                                  "k8s.io/v1\",\"metadata\":{\"resourceVersion\":\"99\","
	                                  "\"creationTimestamp\":null},\"addressType\":\"\","
	                                  "\"endpoints\":null}"));
	assert_int_equal(r.type, K8S_EV_BOOKMARK);
	assert_string_equal(k8s_table_version(t), "99");
	members_are(t, "p2=10.0.0.2:ES-");
	assert_int_equal(k8s_table_slice_count(t), 1);
	k8s_table_free(t);
}

static void error_events(void **state)
{
	(void)state;
	k8s_table *t = k8s_table_new();
	list_ok(t, LIST("10", SLICE("s1", "IPv4", EP("10.0.0.1", "p1", ""))));
	k8s_event_result r = event_ok(
	    t,
	    EVENT("ERROR", "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":"
	                   "\"Failure\",\"message\":\"too old resource version: 5 (10)\","
	                   "\"reason\":\"Expired\",\"code\":410}"));
	assert_int_equal(r.type, K8S_EV_ERROR);
	assert_true(r.gone);
	assert_int_equal(r.code, 410);
	assert_string_equal(r.message, "too old resource version: 5 (10)");
	r = event_ok(t, EVENT("ERROR", "{\"kind\":\"Status\",\"code\":500,\"message\":\"etcd\"}"));
	assert_false(r.gone);
	assert_int_equal(r.code, 500);
	/* Errors change nothing. */
	assert_string_equal(k8s_table_version(t), "10");
	members_are(t, "p1=10.0.0.1:ES-");
	k8s_table_free(t);
}

static void malformed_input(void **state)
{
	(void)state;
	static const char *const bad_events[] = {
	    "",
	    "{",
	    "[]",
	    "{\"type\":\"ADDED\"}",
	    "{\"type\":\"ADDED\",\"object\":[]}",
	    "{\"type\":\"SOMETHING\",\"object\":{}}",
	    "{\"type\":7,\"object\":{}}",
	    EVENT("ADDED", "{\"metadata\":{},\"addressType\":\"IPv4\"}"),
	    EVENT("ADDED", "{\"metadata\":{\"name\":\"x\"}}"),
	    EVENT("ADDED",
	          "{\"metadata\":{\"name\":\"x\"},\"addressType\":\"IPv4\",\"endpoints\":{}}"),
	    EVENT("ADDED",
	          "{\"metadata\":{\"name\":\"x\"},\"addressType\":\"IPv4\",\"endpoints\":[7]}"),
	    EVENT("ADDED",
	          "{\"metadata\":{\"name\":\"x\"},\"addressType\":\"IPv4\",\"endpoints\":[{"
	          "\"addresses\":[\"1.2.3.4\"],\"conditions\":{\"ready\":\"yes\"}}]}"),
	    EVENT("ADDED", "{\"metadata\":{\"name\":\"x\",\"resourceVersion\":5},\"addressType\":"
	                   "\"IPv4\"}"),
	    EVENT("BOOKMARK", "{\"metadata\":{}}"),
	    EVENT("DELETED", "{\"metadata\":{\"resourceVersion\":\"3\"}}"),
	    "{\"type\":\"ADDED\",\"type\":\"DELETED\",\"object\":{}}",
	};
	k8s_table *t = k8s_table_new();
	list_ok(t, LIST("10", SLICE("s1", "IPv4", EP("10.0.0.1", "p1", ""))));
	for (size_t i = 0; i < sizeof(bad_events) / sizeof(bad_events[0]); i++) {
		k8s_event_result r;
		err[0] = '\0';
		if (k8s_table_apply_event(t, bad_events[i], strlen(bad_events[i]), &r, err,
		                          sizeof(err)) == 0)
			fail_msg("accepted: %s", bad_events[i]);
		assert_true(err[0] != '\0');
	}
	assert_string_equal(k8s_table_version(t), "10");
	members_are(t, "p1=10.0.0.1:ES-");

	static const char *const bad_lists[] = {
	    "nope",
	    "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[]}",
	    "{\"kind\":\"EndpointSliceList\",\"metadata\":{},\"items\":[]}",
	    "{\"kind\":\"EndpointSliceList\",\"metadata\":{\"resourceVersion\":\"1\"},\"items\":{}"
	    "}",
	    LIST("2", "{\"metadata\":{\"name\":\"x\"}}"),
	};
	for (size_t i = 0; i < sizeof(bad_lists) / sizeof(bad_lists[0]); i++) {
		if (k8s_table_apply_list(t, bad_lists[i], strlen(bad_lists[i]), err, sizeof(err)) ==
		    0)
			fail_msg("accepted list: %s", bad_lists[i]);
	}
	assert_string_equal(k8s_table_version(t), "10");
	members_are(t, "p1=10.0.0.1:ES-");

	/* More endpoints than the API allows in one slice. */
	size_t cap = (K8S_ENDPOINTS_MAX + 1) * 40 + 256;
	char *big = malloc(cap);
	int o = snprintf(big, cap,
	                 "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"big\"},"
	                 "\"addressType\":\"IPv4\",\"endpoints\":[");
	for (unsigned i = 0; i <= K8S_ENDPOINTS_MAX; i++)
		o += snprintf(big + o, cap - (size_t)o, "%s{\"addresses\":[\"10.1.%u.%u\"]}",
		              i ? "," : "", i / 250, i % 250);
	snprintf(big + o, cap - (size_t)o, "]}}");
	k8s_event_result r;
	assert_int_equal(k8s_table_apply_event(t, big, strlen(big), &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "more than"));
	free(big);
	k8s_table_free(t);
}

static void diff_of_members(void **state)
{
	(void)state;
	k8s_table *t = k8s_table_new();
	k8s_members a, b;
	k8s_diff d;
	list_ok(t, LIST("1", SLICE("s", "IPv4",
	                           EP("10.0.0.1", "a", "") "," EP("10.0.0.2", "b", "") "," EP(
	                               "10.0.0.3", "c", ""))));
	assert_int_equal(k8s_table_members(t, &a), 0);
	list_ok(t, LIST("2", SLICE("s", "IPv4",
	                           EP("10.0.0.1", "a", "\"terminating\":true") "," EP(
	                               "10.0.0.9", "c", "") "," EP("10.0.0.4", "d", ""))));
	assert_int_equal(k8s_table_members(t, &b), 0);
	assert_false(k8s_members_equal(&a, &b));
	assert_int_equal(k8s_members_diff(&a, &b, &d), 0);
	assert_int_equal(d.njoined, 1);
	assert_string_equal(b.v[d.joined[0]].id, "d");
	assert_int_equal(d.nleft, 1);
	assert_string_equal(a.v[d.left[0]].id, "b");
	assert_int_equal(d.nterminating, 1);
	assert_string_equal(b.v[d.terminating[0]].id, "a");
	assert_int_equal(d.nchanged, 1);
	assert_string_equal(b.v[d.changed[0]].id, "c");
	k8s_diff_free(&d);
	k8s_members c;
	assert_int_equal(k8s_members_copy(&b, &c), 0);
	assert_true(k8s_members_equal(&b, &c));
	k8s_members_free(&a);
	k8s_members_free(&b);
	k8s_members_free(&c);
	k8s_table_free(t);
}

static void names_tables(void **state)
{
	(void)state;
	assert_string_equal(k8s_event_type_name(K8S_EV_BOOKMARK), "BOOKMARK");
	assert_string_equal(k8s_watch_state_name(K8S_WATCH_SYNCED), "SYNCED");
	assert_string_equal(k8s_restart_reason_name(K8S_RESTART_GONE), "gone");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(conditions_table),
	    cmocka_unit_test(list_union_and_ids),
	    cmocka_unit_test(dual_stack_prefers_eligible_then_ipv4),
	    cmocka_unit_test(skipped_endpoints),
	    cmocka_unit_test(events_apply),
	    cmocka_unit_test(error_events),
	    cmocka_unit_test(malformed_input),
	    cmocka_unit_test(diff_of_members),
	    cmocka_unit_test(names_tables),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
