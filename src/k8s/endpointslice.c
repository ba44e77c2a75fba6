/*
 * EndpointSlice decoding (discovery.k8s.io/v1) and the membership table of
 * one Service (see k8s.h).
 *
 * The table keeps, per slice name, only what membership needs: each
 * endpoint's id, first address and conditions. Slices are kept sorted by
 * name so an event finds its slice by binary search and the member union is
 * computed in a fixed order (every proxy replica must agree on it).
 *
 * Conditions follow the API documentation: `ready` nil means ready;
 * `serving` nil defers to `ready`; `terminating` nil means not terminating.
 */
#include "errf.h"
#include "switchyard/k8s.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct ep {
	char *id;
	char *address;
	bool serving;
	bool terminating;
} ep;

typedef enum addr_family { AF_KIND_IPV4, AF_KIND_IPV6, AF_KIND_OTHER } addr_family;

typedef struct slice {
	char *name;
	addr_family family;
	ep *eps;
	size_t n;
} slice;

struct k8s_table {
	slice *slices; /* sorted by name */
	size_t n, cap;
	char version[K8S_VERSION_MAX + 1];
};

static const char *const event_names[K8S_EV_COUNT] = {
    [K8S_EV_ADDED] = "ADDED",       [K8S_EV_MODIFIED] = "MODIFIED", [K8S_EV_DELETED] = "DELETED",
    [K8S_EV_BOOKMARK] = "BOOKMARK", [K8S_EV_ERROR] = "ERROR",
};

const char *k8s_event_type_name(k8s_event_type t)
{
	return t < K8S_EV_COUNT ? event_names[t] : "?";
}

static void slice_clear(slice *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->eps[i].id);
		free(s->eps[i].address);
	}
	free(s->eps);
	free(s->name);
	memset(s, 0, sizeof(*s));
}

k8s_table *k8s_table_new(void)
{
	return calloc(1, sizeof(k8s_table));
}

static void clear_slices(slice *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		slice_clear(&v[i]);
	free(v);
}

void k8s_table_free(k8s_table *t)
{
	if (!t)
		return;
	clear_slices(t->slices, t->n);
	free(t);
}

const char *k8s_table_version(const k8s_table *t)
{
	return t->version;
}

size_t k8s_table_slice_count(const k8s_table *t)
{
	return t->n;
}

/* A name or id we are willing to carry into logs and routing: non-empty,
 * bounded, printable ASCII without spaces or quotes. */
static bool good_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > K8S_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '=')
			return false;
	}
	return true;
}

static bool good_address(addr_family f, const char *a)
{
	unsigned char buf[16];
	if (f == AF_KIND_IPV4)
		return inet_pton(AF_INET, a, buf) == 1;
	if (f == AF_KIND_IPV6)
		return inet_pton(AF_INET6, a, buf) == 1;
	return false;
}

/* An optional boolean member: absent or null gives `dflt`; another type is
 * an error. */
static int opt_bool(json_t *obj, const char *key, bool dflt, bool *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v)) {
		*out = dflt;
		return 0;
	}
	if (!json_is_boolean(v))
		return -1;
	*out = json_is_true(v);
	return 0;
}

static int get_version(json_t *obj, char *out, bool *present, char *err, size_t errlen)
{
	json_t *md = json_object_get(obj, "metadata");
	json_t *rv = md ? json_object_get(md, "resourceVersion") : NULL;
	*present = false;
	if (!rv || json_is_null(rv))
		return 0;
	if (!json_is_string(rv) || json_string_length(rv) == 0 ||
	    json_string_length(rv) > K8S_VERSION_MAX ||
	    strlen(json_string_value(rv)) != json_string_length(rv)) {
		errf(err, errlen,
		     "metadata.resourceVersion must be a non-empty string of at most %u "
		     "bytes",
		     K8S_VERSION_MAX);
		return -1;
	}
	memcpy(out, json_string_value(rv), json_string_length(rv) + 1);
	*present = true;
	return 0;
}

static int get_name(json_t *obj, const char **out, char *err, size_t errlen)
{
	json_t *md = json_object_get(obj, "metadata");
	json_t *nm = json_is_object(md) ? json_object_get(md, "name") : NULL;
	if (!json_is_string(nm) || !good_name(json_string_value(nm)) ||
	    strlen(json_string_value(nm)) != json_string_length(nm)) {
		errf(err, errlen, "EndpointSlice without a valid metadata.name");
		return -1;
	}
	*out = json_string_value(nm);
	return 0;
}

/*
 * Decodes one EndpointSlice object into *out. Endpoints without a usable
 * address or id are skipped (they cannot be dialled); structural errors
 * (wrong types, too many endpoints) fail the slice.
 */
static int decode_slice(json_t *obj, slice *out, char *err, size_t errlen)
{
	const char *name;
	memset(out, 0, sizeof(*out));
	if (!json_is_object(obj)) {
		errf(err, errlen, "the object is not a JSON object");
		return -1;
	}
	if (get_name(obj, &name, err, errlen) != 0)
		return -1;
	json_t *at = json_object_get(obj, "addressType");
	if (!json_is_string(at)) {
		errf(err, errlen, "EndpointSlice %s: addressType must be a string", name);
		return -1;
	}
	const char *ats = json_string_value(at);
	out->family = strcmp(ats, "IPv4") == 0   ? AF_KIND_IPV4
	              : strcmp(ats, "IPv6") == 0 ? AF_KIND_IPV6
	                                         : AF_KIND_OTHER;
	json_t *eps = json_object_get(obj, "endpoints");
	if (eps && !json_is_null(eps) && !json_is_array(eps)) {
		errf(err, errlen, "EndpointSlice %s: endpoints must be a list", name);
		return -1;
	}
	size_t count = eps && json_is_array(eps) ? json_array_size(eps) : 0;
	if (count > K8S_ENDPOINTS_MAX) {
		errf(err, errlen, "EndpointSlice %s: more than %u endpoints", name,
		     K8S_ENDPOINTS_MAX);
		return -1;
	}
	out->name = strdup(name);
	out->eps = count ? calloc(count, sizeof(ep)) : NULL;
	if (!out->name || (count && !out->eps)) {
		errf(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < count; i++) {
		json_t *e = json_array_get(eps, i);
		if (!json_is_object(e)) {
			errf(err, errlen, "EndpointSlice %s: endpoints[%zu] is not an object", name,
			     i);
			goto fail;
		}
		json_t *addrs = json_object_get(e, "addresses");
		if (addrs && !json_is_null(addrs) && !json_is_array(addrs)) {
			errf(err, errlen,
			     "EndpointSlice %s: endpoints[%zu].addresses must be a list", name, i);
			goto fail;
		}
		json_t *a0 = json_is_array(addrs) ? json_array_get(addrs, 0) : NULL;
		json_t *cond = json_object_get(e, "conditions");
		if (cond && !json_is_null(cond) && !json_is_object(cond)) {
			errf(err, errlen,
			     "EndpointSlice %s: endpoints[%zu].conditions must be an object", name,
			     i);
			goto fail;
		}
		bool ready, serving, terminating;
		if (opt_bool(cond, "ready", true, &ready) != 0 ||
		    opt_bool(cond, "serving", ready, &serving) != 0 ||
		    opt_bool(cond, "terminating", false, &terminating) != 0) {
			errf(err, errlen,
			     "EndpointSlice %s: endpoints[%zu].conditions: ready, serving "
			     "and terminating must be booleans",
			     name, i);
			goto fail;
		}
		if (!json_is_string(a0) ||
		    strlen(json_string_value(a0)) != json_string_length(a0) ||
		    json_string_length(a0) > K8S_NAME_MAX ||
		    (out->family != AF_KIND_OTHER &&
		     !good_address(out->family, json_string_value(a0))))
			continue; /* nothing we could dial */
		const char *addr = json_string_value(a0);
		const char *id = addr;
		json_t *tr = json_object_get(e, "targetRef");
		if (json_is_object(tr)) {
			json_t *tn = json_object_get(tr, "name");
			if (json_is_string(tn) && json_string_length(tn) > 0) {
				if (!good_name(json_string_value(tn)) ||
				    strlen(json_string_value(tn)) != json_string_length(tn))
					continue;
				id = json_string_value(tn);
			}
		}
		if (!good_name(id))
			continue;
		ep *d = &out->eps[out->n];
		d->id = strdup(id);
		d->address = strdup(addr);
		d->serving = serving;
		d->terminating = terminating;
		out->n++;
		if (!d->id || !d->address) {
			errf(err, errlen, "out of memory");
			goto fail;
		}
	}
	return 0;
fail:
	slice_clear(out);
	return -1;
}

static int cmp_slice(const void *a, const void *b)
{
	return strcmp(((const slice *)a)->name, ((const slice *)b)->name);
}

/* Index of the slice called `name`, or -(insertion point) - 1. */
static long find_slice(const k8s_table *t, const char *name)
{
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(t->slices[mid].name, name);
		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

int k8s_table_apply_list(k8s_table *t, const char *json, size_t len, char *err, size_t errlen)
{
	json_error_t je;
	char version[K8S_VERSION_MAX + 1];
	bool has_version;
	slice *v = NULL;
	size_t n = 0;
	int rc = -1;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		errf(err, errlen, "list response is not JSON: %s (line %d)", je.text, je.line);
		return -1;
	}
	if (!json_is_object(root)) {
		errf(err, errlen, "list response is not a JSON object");
		goto out;
	}
	json_t *kind = json_object_get(root, "kind");
	if (kind &&
	    (!json_is_string(kind) || strcmp(json_string_value(kind), "EndpointSliceList") != 0)) {
		errf(err, errlen, "list response is a %s, not an EndpointSliceList",
		     json_is_string(kind) ? json_string_value(kind) : "non-string kind");
		goto out;
	}
	if (get_version(root, version, &has_version, err, errlen) != 0)
		goto out;
	if (!has_version) {
		errf(err, errlen, "list response has no metadata.resourceVersion");
		goto out;
	}
	json_t *items = json_object_get(root, "items");
	if (items && !json_is_null(items) && !json_is_array(items)) {
		errf(err, errlen, "list response: items must be a list");
		goto out;
	}
	size_t count = json_is_array(items) ? json_array_size(items) : 0;
	if (count > K8S_SLICES_MAX) {
		errf(err, errlen, "list response: more than %u EndpointSlices", K8S_SLICES_MAX);
		goto out;
	}
	v = count ? calloc(count, sizeof(slice)) : NULL;
	if (count && !v) {
		errf(err, errlen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		char serr[256];
		if (decode_slice(json_array_get(items, i), &v[n], serr, sizeof(serr)) != 0) {
			errf(err, errlen, "list response: items[%zu]: %s", i, serr);
			goto out;
		}
		n++;
	}
	if (n > 1)
		qsort(v, n, sizeof(slice), cmp_slice);
	/* Duplicate names cannot come from a real API server; keep the last. */
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (w > 0 && strcmp(v[w - 1].name, v[i].name) == 0) {
			slice_clear(&v[w - 1]);
			v[w - 1] = v[i];
		} else {
			v[w++] = v[i];
		}
	}
	n = w;
	clear_slices(t->slices, t->n);
	t->slices = v;
	t->n = t->cap = n;
	v = NULL;
	n = 0;
	memcpy(t->version, version, sizeof(version));
	rc = 0;
out:
	clear_slices(v, n);
	json_decref(root);
	return rc;
}

static int upsert(k8s_table *t, slice *s, char *err, size_t errlen)
{
	long at = find_slice(t, s->name);
	if (at >= 0) {
		slice_clear(&t->slices[at]);
		t->slices[at] = *s;
		return 0;
	}
	if (t->n >= K8S_SLICES_MAX) {
		errf(err, errlen, "more than %u EndpointSlices", K8S_SLICES_MAX);
		return -1;
	}
	if (t->n == t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 8;
		slice *nv = realloc(t->slices, nc * sizeof(slice));
		if (!nv) {
			errf(err, errlen, "out of memory");
			return -1;
		}
		t->slices = nv;
		t->cap = nc;
	}
	size_t pos = (size_t)(-at - 1);
	memmove(&t->slices[pos + 1], &t->slices[pos], (t->n - pos) * sizeof(slice));
	t->slices[pos] = *s;
	t->n++;
	return 0;
}

int k8s_table_apply_event(k8s_table *t, const char *line, size_t len, k8s_event_result *res,
                          char *err, size_t errlen)
{
	json_error_t je;
	char version[K8S_VERSION_MAX + 1];
	bool has_version = false;
	int rc = -1;
	memset(res, 0, sizeof(*res));
	json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		errf(err, errlen, "watch event is not JSON: %s", je.text);
		return -1;
	}
	json_t *type = json_object_get(root, "type");
	json_t *obj = json_object_get(root, "object");
	if (!json_is_object(root) || !json_is_string(type) || !json_is_object(obj)) {
		errf(err, errlen, "watch event without a type and an object");
		goto out;
	}
	const char *ts = json_string_value(type);
	k8s_event_type et = K8S_EV_COUNT;
	for (int i = 0; i < K8S_EV_COUNT; i++)
		if (strcmp(ts, event_names[i]) == 0)
			et = (k8s_event_type)i;
	if (et == K8S_EV_COUNT) {
		errf(err, errlen, "watch event of unknown type \"%.32s\"", ts);
		goto out;
	}
	res->type = et;
	if (et == K8S_EV_ERROR) {
		/* A Status object: {"kind":"Status","status":"Failure","code":410,...}. */
		json_t *code = json_object_get(obj, "code");
		json_t *msg = json_object_get(obj, "message");
		if (json_is_integer(code))
			res->code = (long)json_integer_value(code);
		if (json_is_string(msg))
			snprintf(res->message, sizeof(res->message), "%s", json_string_value(msg));
		res->gone = res->code == 410;
		rc = 0;
		goto out;
	}
	if (get_version(obj, version, &has_version, err, errlen) != 0)
		goto out;
	switch (et) {
	case K8S_EV_ADDED:
	case K8S_EV_MODIFIED: {
		slice s;
		char serr[256];
		if (decode_slice(obj, &s, serr, sizeof(serr)) != 0) {
			errf(err, errlen, "%s event: %s", ts, serr);
			goto out;
		}
		if (upsert(t, &s, err, errlen) != 0) {
			slice_clear(&s);
			goto out;
		}
		break;
	}
	case K8S_EV_DELETED: {
		const char *name;
		if (get_name(obj, &name, err, errlen) != 0)
			goto out;
		long at = find_slice(t, name);
		if (at >= 0) {
			slice_clear(&t->slices[at]);
			memmove(&t->slices[at], &t->slices[at + 1],
			        (t->n - (size_t)at - 1) * sizeof(slice));
			t->n--;
		}
		break;
	}
	case K8S_EV_BOOKMARK:
		if (!has_version) {
			errf(err, errlen, "BOOKMARK event without metadata.resourceVersion");
			goto out;
		}
		break;
	default:
		break;
	}
	if (has_version)
		memcpy(t->version, version, sizeof(version));
	rc = 0;
out:
	json_decref(root);
	return rc;
}

/* ---- members ----------------------------------------------------------- */

typedef struct cand {
	const ep *e;
	const slice *s;
} cand;

static bool ep_eligible(const ep *e)
{
	return e->serving && !e->terminating;
}

/* By id, then the preferred entry first: eligible, IPv4, slice name. */
static int cmp_cand(const void *a, const void *b)
{
	const cand *x = a, *y = b;
	int c = strcmp(x->e->id, y->e->id);
	if (c != 0)
		return c;
	bool ex = ep_eligible(x->e), ey = ep_eligible(y->e);
	if (ex != ey)
		return ex ? -1 : 1;
	if (x->s->family != y->s->family)
		return x->s->family == AF_KIND_IPV4 ? -1 : 1;
	c = strcmp(x->s->name, y->s->name);
	if (c != 0)
		return c;
	return strcmp(x->e->address, y->e->address);
}

void k8s_members_free(k8s_members *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].id);
		free(m->v[i].address);
	}
	free(m->v);
	m->v = NULL;
	m->n = 0;
}

int k8s_table_members(const k8s_table *t, k8s_members *out)
{
	size_t total = 0;
	out->v = NULL;
	out->n = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->slices[i].family != AF_KIND_OTHER)
			total += t->slices[i].n;
	if (total == 0)
		return 0;
	cand *c = malloc(total * sizeof(cand));
	out->v = calloc(total, sizeof(k8s_member));
	if (!c || !out->v) {
		free(c);
		free(out->v);
		out->v = NULL;
		return -1;
	}
	size_t k = 0;
	for (size_t i = 0; i < t->n; i++) {
		if (t->slices[i].family == AF_KIND_OTHER)
			continue;
		for (size_t j = 0; j < t->slices[i].n; j++)
			c[k++] = (cand){&t->slices[i].eps[j], &t->slices[i]};
	}
	qsort(c, total, sizeof(cand), cmp_cand);
	for (size_t i = 0; i < total; i++) {
		if (out->n > 0 && strcmp(out->v[out->n - 1].id, c[i].e->id) == 0)
			continue;
		k8s_member *m = &out->v[out->n++];
		m->id = strdup(c[i].e->id);
		m->address = strdup(c[i].e->address);
		m->serving = c[i].e->serving;
		m->terminating = c[i].e->terminating;
		m->eligible = ep_eligible(c[i].e);
		if (!m->id || !m->address) {
			free(c);
			k8s_members_free(out);
			return -1;
		}
	}
	free(c);
	return 0;
}

static bool member_equal(const k8s_member *a, const k8s_member *b)
{
	return strcmp(a->id, b->id) == 0 && strcmp(a->address, b->address) == 0 &&
	       a->eligible == b->eligible && a->serving == b->serving &&
	       a->terminating == b->terminating;
}

bool k8s_members_equal(const k8s_members *a, const k8s_members *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (!member_equal(&a->v[i], &b->v[i]))
			return false;
	return true;
}

int k8s_members_copy(const k8s_members *src, k8s_members *dst)
{
	dst->n = 0;
	dst->v = src->n ? calloc(src->n, sizeof(k8s_member)) : NULL;
	if (src->n && !dst->v)
		return -1;
	for (size_t i = 0; i < src->n; i++) {
		k8s_member *m = &dst->v[dst->n++];
		*m = src->v[i];
		m->id = strdup(src->v[i].id);
		m->address = strdup(src->v[i].address);
		if (!m->id || !m->address) {
			k8s_members_free(dst);
			return -1;
		}
	}
	return 0;
}

void k8s_diff_free(k8s_diff *d)
{
	free(d->joined);
	free(d->left);
	free(d->terminating);
	free(d->changed);
	memset(d, 0, sizeof(*d));
}

int k8s_members_diff(const k8s_members *before, const k8s_members *after, k8s_diff *out)
{
	memset(out, 0, sizeof(*out));
	size_t na = before->n + 1, nb = after->n + 1;
	out->joined = malloc(nb * sizeof(size_t));
	out->left = malloc(na * sizeof(size_t));
	out->terminating = malloc(nb * sizeof(size_t));
	out->changed = malloc(nb * sizeof(size_t));
	if (!out->joined || !out->left || !out->terminating || !out->changed) {
		k8s_diff_free(out);
		return -1;
	}
	size_t i = 0, j = 0;
	while (i < before->n || j < after->n) {
		int c = i == before->n  ? 1
		        : j == after->n ? -1
		                        : strcmp(before->v[i].id, after->v[j].id);
		if (c < 0) {
			out->left[out->nleft++] = i++;
		} else if (c > 0) {
			out->joined[out->njoined++] = j++;
		} else {
			if (after->v[j].terminating && !before->v[i].terminating)
				out->terminating[out->nterminating++] = j;
			else if (!member_equal(&before->v[i], &after->v[j]))
				out->changed[out->nchanged++] = j;
			i++;
			j++;
		}
	}
	return 0;
}
