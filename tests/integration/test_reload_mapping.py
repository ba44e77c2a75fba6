"""Reloading a configuration that changes [mapping] (server_reload in
src/server/server.c, the router lifecycle in src/route/router.c): a new router
is built from the new configuration, the admin port and every worker switch
to it, and the old one drains (lookups in flight finish there) before it is
freed. Established sessions are not touched.

Two real Dovecot backends: "legacy" (the shared one, also the default
destination) and "new" (a private one with the same users). Where a login
went is read from the backends' logs (`imap-login: Info: Login: user=<u>`).
The proxy's log lines relied on: `mapping settings changed: ... source=<s>`
and `every worker routes through the new router` (a reload that switched
routers, once every worker has its new context), `configuration reload
failed: ...`.

Also here: an opaque bearer token (no identifier) whose default destination
is a cluster is spread over the cluster's nodes by connection.
"""

import base64
import http.client
import json
import re
import threading

import pytest

from harness.util import Backoff, HarnessError, connect, free_port, recv_line

TOKEN = "reload-mapping-token-0123456789abcdef"
PASSWORDS = {"alice@example.com": "alicepass", "bob@example.com": "bobpass",
             "carol@example.com": "carolpass"}
WAIT = 15.0


# --- configuration ----------------------------------------------------------------------------------

def destination(name, port):
    return f"""[destination.{name}]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true
[destination.{name}.protocol.imap]
port = {port}
tls = "plain"
"""


def make_config(imap_port, admin_port, backends, mapping, default="legacy", extra=""):
    """backends: {destination id: Dovecot imap port}."""
    return "\n".join([f"""[server]
threads = 2
shutdown_grace = "5s"
host_down_threshold = 0

[listener.imap]
protocol = "imap"
tls = "plain"
bind = ["127.0.0.1:{imap_port}"]

[capabilities.imap]
allow_plain_auth_without_tls = true

[routing]
default_destination = "{default}"

[admin]
bind = "127.0.0.1:{admin_port}"
tls = "plain"
allow_plaintext = true
bearer_token = "{TOKEN}"
"""] + [destination(n, p) for n, p in backends.items()] + [mapping, extra])


FILE_MAPPING = """[mapping]
source = "file"
normalize = "lowercase"
[mapping.file]
path = "mappings.tsv"
"""


def redis_mapping(url):
    return f"""[mapping]
source = "redis"
normalize = "lowercase"
positive_ttl = "60s"
negative_ttl = "60s"
lookup_timeout = "5s"
[mapping.redis]
url = {json.dumps(url)}
key_prefix = "route:"
pool_size = 2
"""


def sql_mapping(url, query):
    return f"""[mapping]
source = "sql"
normalize = "lowercase"
positive_ttl = "60s"
negative_ttl = "60s"
lookup_timeout = "10s"
[mapping.sql]
url = {json.dumps(url)}
query = {json.dumps(query)}
pool_size = 2
"""


# --- clients ------------------------------------------------------------------------------------------

class Admin:
    def __init__(self, port):
        self.port = port

    def request(self, method, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
            r = conn.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def json(self, method, path, expect=200):
        st, body = self.request(method, path)
        assert st == expect, (method, path, st, body)
        return json.loads(body)

    def explain(self, identifier):
        return self.json("GET", f"/mappings?identifier={identifier}")


class Imap:
    """A raw IMAP client (tags a1, a2, ...) that can IDLE."""

    def __init__(self, port):
        self.sock = connect(port)
        self.n = 0
        greeting = recv_line(self.sock, timeout=WAIT)
        assert greeting.startswith(b"* OK"), greeting

    def command(self, line):
        self.n += 1
        tag = f"a{self.n}"
        self.sock.sendall(f"{tag} {line}\r\n".encode())
        return self.tagged(tag)

    def tagged(self, tag):
        lines = []
        while True:
            l = recv_line(self.sock, timeout=WAIT)
            if not l:
                raise HarnessError(f"connection closed waiting for {tag}; got {lines!r}")
            lines.append(l)
            if l.startswith(tag.encode() + b" "):
                return l

    def idle(self):
        self.n += 1
        self.idle_tag = f"a{self.n}"
        self.sock.sendall(f"{self.idle_tag} IDLE\r\n".encode())
        l = recv_line(self.sock, timeout=WAIT)
        assert l.startswith(b"+"), l

    def done(self):
        self.sock.sendall(b"DONE\r\n")
        return self.tagged(self.idle_tag)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def login(port, user):
    c = Imap(port)
    line = c.command(f'LOGIN "{user}" "{PASSWORDS[user]}"')
    assert b" OK " in line, line
    return c


def lands_on(env, user):
    """Logs `user` in (and out) and returns the backend whose log shows it."""
    since = {name: d.log_mark() for name, d in env.backends.items()}
    c = login(env.imap_port, user)
    c.command("LOGOUT")
    c.close()
    rx = re.compile(rf"imap-login: Info: Login: user=<{re.escape(user)}>")
    b = Backoff(WAIT)
    while True:
        hits = [n for n, d in env.backends.items() if rx.search(d.log_text(since[n]))]
        if hits:
            assert len(hits) == 1, hits
            return hits[0]
        if not b.pause():
            raise HarnessError(f"no backend logged the login of {user}")


def reload_ok(env, config):
    """Writes `config` and reloads it through the API; waits until every
    worker has switched when the reload switches routers."""
    sy = env.sy
    mark = sy.log_mark()
    sy.write_config(config)
    body = env.admin.json("POST", "/config/reload")
    assert body["reloaded"] is True, body
    return mark


def wait_switched(env, mark, source):
    env.sy.wait_log(rf"mapping settings changed.*source={source}", since=mark)
    env.sy.wait_log(r"every worker routes through the new router", since=mark)


class Env:
    pass


@pytest.fixture
def env(switchyard, dovecot, make_dovecot):
    e = Env()
    e.backends = {"legacy": dovecot, "new": make_dovecot(listeners={"imap": ("plain", "tls")})}
    e.ports = {n: d.imap for n, d in e.backends.items()}
    e.imap_port = free_port()
    e.admin_port = free_port()
    e.admin = Admin(e.admin_port)
    e.start = lambda config, files: setattr(e, "sy", switchyard(config, files=files))
    return e


# --- tests ----------------------------------------------------------------------------------------------

def test_reload_switches_mapping_source(env, redis_server):
    """file (alice -> legacy) -> redis (alice -> new) -> file again, while a
    bridged IDLE session of bob stays up; an unusable mapping change is
    refused and the routing in place keeps serving."""
    r = redis_server
    v_file = make_config(env.imap_port, env.admin_port, env.ports, FILE_MAPPING)
    v_redis = make_config(env.imap_port, env.admin_port, env.ports, redis_mapping(r.url))
    env.start(v_file, {"mappings.tsv": "alice@example.com legacy\n"})
    a, sy = env.admin, env.sy

    e = a.explain("alice@example.com")
    assert e["destination"] == "legacy" and e["routed_to_default"] is False, e
    assert lands_on(env, "alice@example.com") == "legacy"

    mark = env.backends["legacy"].log_mark()
    bob = login(env.imap_port, "bob@example.com")
    env.backends["legacy"].wait_log(r"imap-login: Info: Login: user=<bob@example\.com>", since=mark)
    bob.idle()

    # 1. file -> redis.
    r.command("SET", "route:alice@example.com", "new")
    mark = reload_ok(env, v_redis)
    wait_switched(env, mark, "redis")
    assert lands_on(env, "alice@example.com") == "new"
    # The admin port uses the new router: explain asks Redis, PUT writes it.
    e = a.explain("Alice@Example.com")
    assert e["destination"] == "new" and e["routed_to_default"] is False, e
    assert a.request("PUT", "/mappings?identifier=carol@example.com&destination=new") == (200, "ok\n")
    assert r.command("GET", "route:carol@example.com") == "new"
    assert lands_on(env, "carol@example.com") == "new"
    stats = a.json("GET", "/stats")
    assert stats["cache_misses"] >= 1, stats

    # bob's session, bridged before the switch, still answers.
    assert b" OK " in bob.done()
    assert b" OK " in bob.command("NOOP")
    bob.idle()

    # 2. redis -> file: the file's mapping again, carol back to the default.
    mark = reload_ok(env, v_file)
    wait_switched(env, mark, "file")
    assert lands_on(env, "alice@example.com") == "legacy"
    assert lands_on(env, "carol@example.com") == "legacy"
    e = a.explain("alice@example.com")
    assert e["destination"] == "legacy" and e["routed_to_default"] is False, e
    # Management writes go to the file now.
    assert a.request("PUT", "/mappings?identifier=carol@example.com&destination=new") == (200, "ok\n")
    with open(sy.path("mappings.tsv")) as f:
        assert re.search(r"^carol@example\.com\s+new$", f.read(), re.M)
    assert lands_on(env, "carol@example.com") == "new"

    # 3. An invalid mapping change: 400, nothing switched.
    bad = make_config(env.imap_port, env.admin_port, env.ports, redis_mapping("mysql://x"))
    mark = sy.log_mark()
    sy.write_config(bad)
    st, body = a.request("POST", "/config/reload")
    assert st == 400, body
    assert body.startswith("reload failed: ") and "mapping.redis.url" in body, body
    sy.wait_log(r"configuration reload failed.*mapping\.redis\.url", since=mark)
    assert lands_on(env, "alice@example.com") == "legacy"
    assert lands_on(env, "carol@example.com") == "new"
    e = a.explain("alice@example.com")
    assert e["destination"] == "legacy" and e["routed_to_default"] is False, e
    assert sy.log_count(r"mapping settings changed", since=mark) == 0

    # A store URL that passes validation but that the store cannot use
    # (port 0) fails the reload the same way.
    bad2 = make_config(env.imap_port, env.admin_port, env.ports, redis_mapping("redis://127.0.0.1:0"))
    sy.write_config(bad2)
    st, body = a.request("POST", "/config/reload")
    assert st == 400 and "mapping.redis.url" in body, body
    assert lands_on(env, "alice@example.com") == "legacy"

    assert b" OK " in bob.done()
    assert b" OK " in bob.command("NOOP")
    bob.close()


def test_lookup_in_flight_finishes_on_the_old_router(env, postgres_server):
    """A login whose SQL lookup is running when a reload switches to the
    file source completes with the old router's answer (new); the next
    login uses the file (legacy). The old router's connections are closed
    once that lookup is over."""
    pg = postgres_server
    pg.psql("CREATE TABLE routes (identifier text PRIMARY KEY, destination text NOT NULL)")
    pg.psql("INSERT INTO routes VALUES ('carol@example.com', 'new')")
    slow = "SELECT destination FROM routes, pg_sleep(2) WHERE identifier = $1"
    v_sql = make_config(env.imap_port, env.admin_port, env.ports, sql_mapping(pg.url, slow))
    v_file = make_config(env.imap_port, env.admin_port, env.ports, FILE_MAPPING)
    env.start(v_sql, {"mappings.tsv": "carol@example.com legacy\n"})

    result = {}

    def slow_login():
        try:
            result["backend"] = lands_on(env, "carol@example.com")
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=slow_login)
    t.start()
    try:
        # The event to wait for: the lookup is running in PostgreSQL.
        b = Backoff(WAIT)
        while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' "
                      "AND state = 'active' AND pid <> pg_backend_pid()") != "1":
            assert b.pause(), "the lookup never reached PostgreSQL"
        mark = reload_ok(env, v_file)
        wait_switched(env, mark, "file")
    finally:
        t.join(30)
    assert "error" not in result, result.get("error")
    assert result["backend"] == "new"
    env.sy.wait_log(r"\blogin\b.*identifier=carol@example\.com.*destination=new.*result=ok")
    assert lands_on(env, "carol@example.com") == "legacy"

    # The drained router's store connections go away (the proxy's only
    # sessions with this database were the old router's).
    b = Backoff(WAIT)
    while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'postgres' "
                  "AND pid <> pg_backend_pid() AND backend_type = 'client backend'") != "0":
        assert b.pause(), "the old router's PostgreSQL connections are still open"


def test_opaque_token_spreads_over_cluster_default(switchyard, make_dovecot):
    """A bearer token Switchyard cannot read yields no identifier: with a
    cluster as the default destination, each connection picks its node
    (by session id), so such logins reach both nodes instead of one."""
    token = "opaque-bearer-token-7f3a9c"
    users = {"opq@example.com": token}
    # The nodes listen alike (same port, own address); they inherit the
    # template's port and settings and declare only their host.
    n1 = make_dovecot(users=users, listeners={"imap": ("plain", "tls")}, address="127.0.0.2")
    n2 = make_dovecot(users=users, listeners={"imap": ("plain", "tls")}, address="127.0.0.3", ports_of=n1)
    nodes = {"n1": n1, "n2": n2}
    imap_port, admin_port = free_port(), free_port()
    cfg = make_config(imap_port, admin_port, {"node": n1.imap}, "", default="pool",
                      extra='[destination.n1]\nhost = "127.0.0.2"\n[destination.n2]\nhost = "127.0.0.3"\n'
                            '[cluster.pool]\ntemplate = "node"\nnodes = ["n1", "n2"]\n')
    switchyard(cfg)
    marks = {n: d.log_mark() for n, d in nodes.items()}
    ir = base64.b64encode(f"user=opq@example.com\x01auth=Bearer {token}\x01\x01".encode()).decode()
    logins = 16
    for _ in range(logins):
        c = Imap(imap_port)
        line = c.command(f"AUTHENTICATE XOAUTH2 {ir}")
        assert b" OK " in line, line
        c.command("LOGOUT")
        c.close()
    rx = r"imap-login: Info: Login: user=<opq@example\.com>"
    b = Backoff(WAIT)
    while True:
        counts = {n: len(re.findall(rx, d.log_text(marks[n]))) for n, d in nodes.items()}
        if sum(counts.values()) >= logins:
            break
        assert b.pause(), counts
    assert sum(counts.values()) == logins, counts
    # 16 connections all on one node by chance: probability 2 * 2^-16.
    assert all(n > 0 for n in counts.values()), counts
