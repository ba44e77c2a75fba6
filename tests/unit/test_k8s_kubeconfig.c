/* Target resolution (src/k8s/kubeconfig.c): kubeconfig files (contexts,
 * clusters, users, -data vs file, relative paths, unsupported plugins,
 * merged lists) and the in-cluster service-account defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/k8s.h"

#define HEAD                                                                                       \
	"apiVersion: v1\nkind: Config\ncurrent-context: dev\n"                                     \
	"contexts:\n- name: dev\n  context:\n    cluster: c1\n    user: u1\n    namespace: mail\n"
#define CLUSTER(body) "clusters:\n- name: c1\n  cluster:\n" body
#define USER(body)    "users:\n- name: u1\n  user:\n" body

/* base64("PEMDATA") */
#define B64 "UEVNREFUQQ=="

typedef struct kc_case {
	const char *name;
	const char *yaml;
	const char *ns_override;
	/* expectations (NULL = must be NULL / not checked for err) */
	const char *api_url;
	const char *ns;
	const char *ca_file;
	const char *ca_pem;
	bool insecure;
	const char *token;
	const char *token_file;
	const char *cert_file;
	const char *cert_pem;
	const char *key_file;
	const char *key_pem;
	const char *err; /* a substring of the error; NULL = must succeed */
} kc_case;

static const kc_case CASES[] = {
    {.name = "token and CA file relative to the kubeconfig",
     .yaml = HEAD CLUSTER("    server: https://10.0.0.1:6443/\n"
                          "    certificate-authority: certs/ca.pem\n") USER("    token: abc\n"),
     .api_url = "https://10.0.0.1:6443",
     .ns = "mail",
     .ca_file = "/kube/certs/ca.pem",
     .token = "abc"},
    {.name = "CA data wins over the CA file; insecure flag",
     .yaml = HEAD CLUSTER("    server: https://k8s.example:443\n"
                          "    certificate-authority: /abs/ca.pem\n"
                          "    certificate-authority-data: " B64 "\n"
                          "    insecure-skip-tls-verify: true\n") USER("    token: abc\n"),
     .api_url = "https://k8s.example:443",
     .ns = "mail",
     .ca_pem = "PEMDATA",
     .insecure = true,
     .token = "abc"},
    {.name = "tokenFile wins over token, absolute path kept",
     .yaml = HEAD CLUSTER("    server: https://a:1\n") USER("    token: abc\n"
                                                            "    tokenFile: /var/tok\n"),
     .api_url = "https://a:1",
     .ns = "mail",
     .token_file = "/var/tok"},
    {.name = "client certificate files, relative",
     .yaml = HEAD CLUSTER("    server: https://a:1\n") USER("    client-certificate: me.crt\n"
                                                            "    client-key: ../keys/me.key\n"),
     .api_url = "https://a:1",
     .ns = "mail",
     .cert_file = "/kube/me.crt",
     .key_file = "/kube/../keys/me.key"},
    {.name = "client certificate data",
     .yaml = HEAD CLUSTER("    server: https://a:1\n") USER("    client-certificate-data: " B64 "\n"
                                                            "    client-key-data: " B64 "\n"),
     .api_url = "https://a:1",
     .ns = "mail",
     .cert_pem = "PEMDATA",
     .key_pem = "PEMDATA"},
    {.name = "namespace override; no namespace in the context means default",
     .yaml =
         "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c1, user: u1}\n" CLUSTER(
             "    server: http://127.0.0.1:8080\n") USER("    token: t\n"),
     .api_url = "http://127.0.0.1:8080",
     .ns = "default",
     .token = "t"},
    {.name = "explicit namespace wins",
     .yaml = HEAD CLUSTER("    server: https://a:1\n") USER("    token: t\n"),
     .ns_override = "other",
     .api_url = "https://a:1",
     .ns = "other",
     .token = "t"},
    {.name = "a context without a user is anonymous",
     .yaml = "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c1}\n" CLUSTER(
         "    server: https://a:1\n"),
     .api_url = "https://a:1",
     .ns = "default"},
    {.name = "exec user",
     .yaml = HEAD CLUSTER("    server: https://a:1\n")
         USER("    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n"
              "      command: aws\n"),
     .err = "kubeconfig /kube/config: user \"u1\" authenticates with an exec plugin"},
    {.name = "auth-provider user",
     .yaml =
         HEAD CLUSTER("    server: https://a:1\n") USER("    auth-provider:\n      name: gcp\n"),
     .err = "user \"u1\" authenticates with an auth-provider plugin"},
    {.name = "basic auth user",
     .yaml = HEAD CLUSTER("    server: https://a:1\n") USER("    username: a\n    password: b\n"),
     .err = "basic authentication"},
    {.name = "missing current-context",
     .yaml = "contexts: []\nclusters: []\nusers: []\n",
     .err = "no current-context"},
    {.name = "empty file", .yaml = "", .err = "no current-context"},
    {.name = "current-context not defined",
     .yaml = "current-context: nope\n" CLUSTER("    server: https://a:1\n"),
     .err = "current-context \"nope\" is not defined"},
    {.name = "cluster not defined", .yaml = HEAD USER("    token: t\n"), .err = "cluster \"c1\""},
    {.name = "user not defined",
     .yaml = HEAD CLUSTER("    server: https://a:1\n"),
     .err = "user \"u1\" (of context \"dev\") is not defined"},
    {.name = "server not a URL",
     .yaml = HEAD CLUSTER("    server: a:1\n") USER("    token: t\n"),
     .err = "server must be an http(s):// URL"},
    {.name = "bad base64",
     .yaml = HEAD CLUSTER("    server: https://a:1\n    certificate-authority-data: '***'\n")
         USER("    token: t\n"),
     .err = "certificate-authority-data is not valid base64"},
    {.name = "bad boolean",
     .yaml = HEAD CLUSTER("    server: https://a:1\n    insecure-skip-tls-verify: maybe\n")
         USER("    token: t\n"),
     .err = "insecure-skip-tls-verify must be true or false"},
    {.name = "certificate without key",
     .yaml = HEAD CLUSTER("    server: https://a:1\n") USER("    client-certificate: me.crt\n"),
     .err = "client-certificate and client-key go together"},
    {.name = "server without a host",
     .yaml = HEAD CLUSTER("    server: https://\n") USER("    token: t\n"),
     .err = "server must be an http(s):// URL"},
    {.name = "server is a mapping",
     .yaml = HEAD CLUSTER("    server: {a: 1}\n") USER("    token: t\n"),
     .err = "server must be a string"},
    {.name = "not a mapping", .yaml = "- a\n- b\n", .err = "not a mapping"},
    {.name = "malformed YAML",
     .yaml = "current-context: [\n",
     .err = "kubeconfig /kube/config: line"},
};

static void expect_str(const char *what, const char *got, const char *want, const char *name)
{
	if (!want && !got)
		return;
	if (!want || !got || strcmp(want, got) != 0)
		fail_msg("%s: %s: got \"%s\", want \"%s\"", name, what, got ? got : "(null)",
		         want ? want : "(null)");
}

static void kubeconfig_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
		const kc_case *c = &CASES[i];
		sy_k8s_target t;
		char err[512] = "";
		int rc = k8s_kubeconfig_parse(c->yaml, strlen(c->yaml), "/kube/config", "/kube",
		                              c->ns_override, &t, err, sizeof(err));
		if (c->err) {
			if (rc == 0)
				fail_msg("%s: accepted", c->name);
			if (!strstr(err, c->err))
				fail_msg("%s: error \"%s\" lacks \"%s\"", c->name, err, c->err);
			assert_null(t.api_url);
			continue;
		}
		if (rc != 0)
			fail_msg("%s: rejected: %s", c->name, err);
		expect_str("api_url", t.api_url, c->api_url, c->name);
		expect_str("namespace", t.namespace_, c->ns, c->name);
		expect_str("ca_file", t.ca_file, c->ca_file, c->name);
		expect_str("ca_pem", t.ca_pem, c->ca_pem, c->name);
		expect_str("token", t.token, c->token, c->name);
		expect_str("token_file", t.token_file, c->token_file, c->name);
		expect_str("cert_file", t.cert_file, c->cert_file, c->name);
		expect_str("cert_pem", t.cert_pem, c->cert_pem, c->name);
		expect_str("key_file", t.key_file, c->key_file, c->name);
		expect_str("key_pem", t.key_pem, c->key_pem, c->name);
		if (c->ca_pem)
			assert_int_equal(t.ca_pem_len, strlen(c->ca_pem));
		if (t.insecure != c->insecure)
			fail_msg("%s: insecure=%d", c->name, t.insecure);
		assert_non_null(t.source);
		k8s_target_free(&t);
	}
}

/* ---- files: in-cluster defaults, $KUBECONFIG lists ---------------------- */

static char dir[256];

static void put(const char *name, const char *text)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup_dir(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sy-k8s-unit-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	return 0;
}

static int remove_dir(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void in_cluster_defaults(void **state)
{
	(void)state;
	char path[512], err[512];
	sy_k8s_target t;
	put("token", "  tok-123\n");
	put("namespace", "mail\n");
	put("ca.crt", "CA");
	k8s_settings s = {.env_host = "10.96.0.1", .env_port = "443", .sa_dir = dir};
	assert_int_equal(k8s_target_resolve(&s, &t, err, sizeof(err)), 0);
	assert_string_equal(t.api_url, "https://10.96.0.1:443");
	assert_string_equal(t.namespace_, "mail");
	snprintf(path, sizeof(path), "%s/token", dir);
	assert_string_equal(t.token_file, path);
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	assert_string_equal(t.ca_file, path);
	assert_string_equal(t.source, "in-cluster");
	k8s_target_free(&t);

	/* IPv6 service host in brackets; explicit namespace; api_url and
	 * ca_file override their parts. */
	s.env_host = "fd00::1";
	s.namespace_ = "other";
	assert_int_equal(k8s_target_resolve(&s, &t, err, sizeof(err)), 0);
	assert_string_equal(t.api_url, "https://[fd00::1]:443");
	assert_string_equal(t.namespace_, "other");
	k8s_target_free(&t);
	s.api_url = "https://api.example:6443/";
	s.ca_file = path;
	assert_int_equal(k8s_target_resolve(&s, &t, err, sizeof(err)), 0);
	assert_string_equal(t.api_url, "https://api.example:6443");
	k8s_target_free(&t);

	/* $KUBECONFIG is ignored once the table names api_url. */
	s.env_kubeconfig = "/nonexistent/kubeconfig";
	assert_int_equal(k8s_target_resolve(&s, &t, err, sizeof(err)), 0);
	k8s_target_free(&t);
	/* ... and used when it names none of them. */
	k8s_settings s2 = {.env_host = "10.96.0.1",
	                   .env_port = "443",
	                   .sa_dir = dir,
	                   .env_kubeconfig = "/nonexistent/kubeconfig"};
	assert_int_equal(k8s_target_resolve(&s2, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "/nonexistent/kubeconfig"));

	/* Errors: no env and no api_url; an unreadable token; an explicit
	 * ca_file that does not exist; no namespace anywhere. */
	k8s_settings s3 = {.sa_dir = dir};
	assert_int_equal(k8s_target_resolve(&s3, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
	k8s_settings s4 = {
	    .api_url = "https://a:1", .token_file = "/nonexistent/tok", .sa_dir = dir};
	assert_int_equal(k8s_target_resolve(&s4, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "token_file: cannot read /nonexistent/tok"));
	k8s_settings s5 = {.api_url = "https://a:1", .ca_file = "/nonexistent/ca", .sa_dir = dir};
	assert_int_equal(k8s_target_resolve(&s5, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "ca_file: cannot read /nonexistent/ca"));
	snprintf(path, sizeof(path), "%s/namespace", dir);
	unlink(path);
	k8s_settings s6 = {.api_url = "https://a:1", .sa_dir = dir};
	assert_int_equal(k8s_target_resolve(&s6, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "namespace: not set"));
	k8s_settings s7 = {.api_url = "ftp://a:1", .sa_dir = dir, .namespace_ = "x"};
	assert_int_equal(k8s_target_resolve(&s7, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "api_url"));
}

static void token_files(void **state)
{
	(void)state;
	char path[512], err[512], *tok;
	snprintf(path, sizeof(path), "%s/t", dir);
	put("t", "\n\t eyJ.abc.def \r\n");
	assert_int_equal(k8s_token_read(path, &tok, err, sizeof(err)), 0);
	assert_string_equal(tok, "eyJ.abc.def");
	k8s_token_free(tok);
	put("t", " \n");
	assert_int_equal(k8s_token_read(path, &tok, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));
	put("t", "one\ntwo\n");
	assert_int_equal(k8s_token_read(path, &tok, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "one line"));
}

static void kubeconfig_lists(void **state)
{
	(void)state;
	char a[512], b[512], list[2048], err[512];
	sy_k8s_target t;
	mkdir(dir, 0700);
	char sub[300];
	snprintf(sub, sizeof(sub), "%s/second", dir);
	mkdir(sub, 0700);
	/* The first file sets the context; the second defines the cluster and
	 * the user, whose relative paths resolve against the second's dir. */
	put("first", "current-context: dev\ncontexts:\n- name: dev\n  context: {cluster: c1, user: "
	             "u1}\n");
	put("second/config", CLUSTER("    server: https://b:2\n    certificate-authority: ca.pem\n")
	                         USER("    tokenFile: tok\n") "current-context: ignored\n");
	snprintf(a, sizeof(a), "%s/first", dir);
	snprintf(b, sizeof(b), "%s/second/config", dir);
	snprintf(list, sizeof(list), "%s:%s/missing:%s", a, dir, b);
	k8s_settings s = {.kubeconfig = list};
	if (k8s_target_resolve(&s, &t, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_string_equal(t.api_url, "https://b:2");
	char want[600];
	snprintf(want, sizeof(want), "%s/ca.pem", sub);
	assert_string_equal(t.ca_file, want);
	snprintf(want, sizeof(want), "%s/tok", sub);
	assert_string_equal(t.token_file, want);
	assert_string_equal(t.namespace_, "default");
	k8s_target_free(&t);
	/* A single missing file is an error naming it. */
	snprintf(list, sizeof(list), "%s/absent", dir);
	assert_int_equal(k8s_target_resolve(&s, &t, err, sizeof(err)), -1);
	assert_non_null(strstr(err, list));
}

static void settings_from_cluster(void **state)
{
	(void)state;
	sy_cluster_config cl;
	k8s_settings s;
	memset(&cl, 0, sizeof(cl));
	cl.has_kubernetes = true;
	cl.kubernetes.service = "mail";
	cl.kubernetes.namespace_ = "ns";
	cl.kubernetes.api_url = "https://a:1";
	cl.kubernetes.token_file = "/t";
	cl.kubernetes.ca_file = "/c";
	cl.kubernetes.kubeconfig = "/k";
	setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
	k8s_settings_from_cluster(&cl, &s);
	assert_string_equal(s.namespace_, "ns");
	assert_string_equal(s.api_url, "https://a:1");
	assert_string_equal(s.token_file, "/t");
	assert_string_equal(s.ca_file, "/c");
	assert_string_equal(s.kubeconfig, "/k");
	assert_string_equal(s.env_host, "10.0.0.1");
	assert_null(s.sa_dir);
	unsetenv("KUBERNETES_SERVICE_HOST");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(kubeconfig_table),
	    cmocka_unit_test(settings_from_cluster),
	    cmocka_unit_test_setup_teardown(in_cluster_defaults, setup_dir, remove_dir),
	    cmocka_unit_test_setup_teardown(token_files, setup_dir, remove_dir),
	    cmocka_unit_test_setup_teardown(kubeconfig_lists, setup_dir, remove_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
