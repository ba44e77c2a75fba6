"""The mapping store lookup metrics (docs/API.md): every lookup the router
makes (file, Redis, SQL) is observed in `switchyard_store_lookup_seconds`,
and the ones that fail or time out are also counted in
`switchyard_store_lookup_errors_total`. Cached answers are no lookups.

A real redis-server (and, in the SQL test, a real PostgreSQL) holds `route:<account>` keys (a `routes` table) naming one of two
destinations, both the shared Dovecot; the proxy logs the accounts in over
IMAP (a mapped account, an unmapped one, each a cache miss once), then the
store is stopped and a login is refused as a temporary failure, which must
count an error. The file source is checked the same way without a store.
"""

import http.client
import imaplib
import re

import pytest

from harness.util import free_port

SOURCE = "127.0.0.11"


def config(dovecot, imap_port, admin_port, mapping):
    dests = "".join(f"""
[destination.{name}]
host = "127.0.0.1"
allow_plaintext_auth = true
proxy_protocol = false
[destination.{name}.protocol.imap]
port = {dovecot.imap}
tls = "plain"
""" for name in ("d1", "d2"))
    return f"""[server]
threads = 2
shutdown_grace = "2s"

[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:{imap_port}"]
tls = "plain"

[capabilities.imap]
allow_plain_auth_without_tls = true
{dests}
[routing]
default_destination = "d1"

{mapping}

[admin]
bind = "127.0.0.1:{admin_port}"
tls = "plain"
allow_plaintext = true
bearer_token = "store-metrics-test-token-0123456789abcdef"
"""


def metrics(admin_port):
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, body
    finally:
        c.close()
    out = {}
    for line in body.splitlines():
        m = re.match(r"^(switchyard_store_lookup_\w+?)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def lookups(m):
    return m["switchyard_store_lookup_seconds_count"]


def errors(m):
    return m["switchyard_store_lookup_errors_total"]


def login(port, user, password):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        typ, _ = m.login(user, password)
        m.logout()
        return typ
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        try:
            m.shutdown()
        except OSError:
            pass


def check_histogram(m):
    """Buckets are cumulative and end at the count; the sum is plausible."""
    buckets = sorted(((float(re.search(r'le="([^"]+)"', k).group(1).replace("+Inf", "inf")), v)
                      for k, v in m.items() if k.startswith("switchyard_store_lookup_seconds_bucket")))
    assert buckets, m
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), buckets
    assert buckets[-1] == (float("inf"), lookups(m))
    assert 0 <= m["switchyard_store_lookup_seconds_sum"] < 10 * max(lookups(m), 1)


def test_redis_lookups_observed(switchyard, dovecot, redis_server):
    imap_port, admin_port = free_port(), free_port()
    redis_server.command("SET", "route:alice@example.com", "d2")
    mapping = f"""[mapping]
source = "redis"
positive_ttl = "600s"
negative_ttl = "600s"
lookup_timeout = "1s"
on_store_error = "tempfail"
[mapping.redis]
url = "{redis_server.url}"
key_prefix = "route:"
pool_size = 1
"""
    sy = switchyard(config(dovecot, imap_port, admin_port, mapping))
    m0 = metrics(admin_port)
    assert lookups(m0) == 0 and errors(m0) == 0, m0

    assert login(imap_port, "alice@example.com", "alicepass") == "OK"  # mapped: d2
    assert login(imap_port, "bob@example.com", "bobpass") == "OK"  # unmapped: the default
    m1 = metrics(admin_port)
    assert lookups(m1) == 2 and errors(m1) == 0, m1
    check_histogram(m1)
    sy.wait_log(r"login .*identifier=alice@example.com .*destination=d2 result=ok")

    # Cached now: no further lookups.
    assert login(imap_port, "alice@example.com", "alicepass") == "OK"
    assert lookups(metrics(admin_port)) == 2

    # The store gone: a lookup for a new account fails (refused or timed
    # out), the login is a temporary failure, and the error is counted.
    redis_server.stop()
    res = login(imap_port, "carol@example.com", "carolpass")
    assert "UNAVAILABLE" in res, res
    m2 = metrics(admin_port)
    assert lookups(m2) == 3 and errors(m2) == 1, m2
    check_histogram(m2)


def test_sql_lookups_observed(switchyard, dovecot, postgres_server):
    pg = postgres_server
    pg.psql("CREATE TABLE routes (account text PRIMARY KEY, destination text NOT NULL)")
    pg.psql("INSERT INTO routes VALUES ('alice@example.com', 'd2')")
    imap_port, admin_port = free_port(), free_port()
    mapping = f"""[mapping]
source = "sql"
lookup_timeout = "1s"
on_store_error = "tempfail"
[mapping.sql]
url = "{pg.url}"
query = "SELECT destination FROM routes WHERE account = $1"
pool_size = 1
"""
    sy = switchyard(config(dovecot, imap_port, admin_port, mapping))
    assert login(imap_port, "alice@example.com", "alicepass") == "OK"
    assert login(imap_port, "bob@example.com", "bobpass") == "OK"
    m1 = metrics(admin_port)
    assert lookups(m1) == 2 and errors(m1) == 0, m1
    check_histogram(m1)
    sy.wait_log(r"login .*identifier=alice@example.com .*destination=d2 result=ok")
    pg.stop()
    res = login(imap_port, "carol@example.com", "carolpass")
    assert "UNAVAILABLE" in res, res
    m2 = metrics(admin_port)
    assert lookups(m2) == 3 and errors(m2) == 1, m2


def test_file_lookups_observed(switchyard, dovecot):
    imap_port, admin_port = free_port(), free_port()
    mapping = '[mapping]\nsource = "file"\n[mapping.file]\npath = "map.tsv"\n'
    switchyard(config(dovecot, imap_port, admin_port, mapping),
               files={"map.tsv": "alice@example.com d2\n"})
    assert lookups(metrics(admin_port)) == 0
    assert login(imap_port, "alice@example.com", "alicepass") == "OK"
    assert login(imap_port, "bob@example.com", "bobpass") == "OK"
    m = metrics(admin_port)
    assert lookups(m) == 2 and errors(m) == 0, m
    check_histogram(m)
