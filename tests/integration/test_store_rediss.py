"""Redis over TLS (rediss://) for the mapping store and its fleet-events
subscriber (src/route/store_redis.c), against redis-server serving TLS only
(`--port 0 --tls-port P`) with certificates from the harness PKI.

Two levels: the store alone through build/store-driver (as in
test_stores.py), and whole proxies routing real logins to the Dovecots of
test_routing.py and following fleet events on the admin port.

The harness PKI's CA is in no platform trust store, so a store that is not
given `tls_ca_file` must refuse the server: that is the "untrusted CA" case.
"""

import re
import signal
import time

import pytest

from harness import Redis
from harness.switchyard import check_config
from harness.util import free_port, run
from test_admin import TOKEN, Admin
from test_routing import assert_tempfail, env, marks, new_ports, proxy_config, q, routed  # noqa: F401
from test_stores import PROMPT, RECONNECT, create_error, driver  # noqa: F401

PASSWORD = "tls-secret-pw"


@pytest.fixture
def tls_redis(certs, request):
    """A TLS-only redis-server with the PKI's localhost certificate (DNS:localhost,
    IP:127.0.0.1) and a password."""
    r = Redis(tls=certs, password=PASSWORD)
    try:
        r.start()
        yield r
    finally:
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            with open(r.log_path, errors="replace") as f:
                print(f"--- redis log ---\n{f.read()[-5000:]}")
        r.cleanup()


def redis_cli(r, *args):
    cmd = ["redis-cli", *r.cli_args(), "--no-auth-warning"]
    if r.password:
        cmd += ["-a", r.password]
    return run(cmd + list(args), timeout=10).stdout.strip()


def restarted(old):
    """A fresh TLS redis-server on the port `old` used (after old.stop())."""
    r = Redis(tls=old.tls, password=old.password, cert=old.cert)
    r.port = old.port
    return r.start()


# ---- the store alone ----------------------------------------------------------------------------


def test_rediss_get_put_del_verified(tls_redis, certs, driver):
    r = tls_redis
    d = driver("redis", url=f"rediss://:{PASSWORD}@127.0.0.1:{r.port}/3", prefix="route:", conns=2,
               tls_ca_file=certs.ca_cert, log="debug")
    assert d.op("put alice@example.com new") == "DONE"
    assert redis_cli(r, "-n", "3", "GET", "route:alice@example.com") == "new"
    redis_cli(r, "-n", "3", "SET", "route:bob@example.com", "legacy")
    assert d.op("get bob@example.com") == "FOUND legacy"
    assert d.op("get nobody@example.com") == "NOT_FOUND"
    assert d.op("del alice@example.com") == "DONE"
    assert d.op("del alice@example.com") == "NOT_FOUND"
    # Pipelined on two connections: answers match their requests.
    for i in range(3):
        redis_cli(r, "-n", "3", "SET", f"route:u{i}", f"d{i}")
    d.send(*[f"&get u{i % 3}" for i in range(30)], "wait")
    got = sorted(d.result() for _ in range(30))
    assert got == sorted(f"FOUND d{i % 3}" for i in range(30))
    assert d.finish() == ["CLOSED"]
    err = d.stderr_text()
    assert PASSWORD not in err
    assert re.search(r"redis: connected.*tls=yes", err), err


def test_rediss_server_name_override_and_mutual_tls(certs, driver):
    # The server's certificate names mail.example.com only: reached by IP,
    # tls_server_name says which name to expect. The server also requires
    # a client certificate issued by the CA.
    with Redis(tls=certs, cert=certs.mail, auth_clients=True) as r:
        r.command("SET", "k", "v")
        d = driver("redis", url=f"rediss://127.0.0.1:{r.port}", tls_ca_file=certs.ca_cert,
                   tls_server_name="mail.example.com", tls_client_cert=certs.client.cert,
                   tls_client_key=certs.client.key)
        assert d.op("get k") == "FOUND v"
        assert d.finish() == ["CLOSED"]


def test_rediss_host_name_is_resolved_and_verified(tls_redis, certs, driver):
    # "localhost" resolves (off the loop) to ::1 and 127.0.0.1; the server
    # listens on 127.0.0.1 only, so an address that refuses is skipped at
    # once. The certificate is checked against the name (DNS:localhost).
    r = tls_redis
    r.command("SET", "k", "v")
    d = driver("redis", url=f"rediss://:{PASSWORD}@localhost:{r.port}", tls_ca_file=certs.ca_cert, log="debug")
    res, took = d.timed("get k")
    assert res == "FOUND v"
    assert took < PROMPT
    assert d.finish() == ["CLOSED"]
    assert "server=localhost:" in d.stderr_text()


@pytest.mark.parametrize("case", ["untrusted-ca", "self-signed", "wrong-name", "ip-not-in-cert"])
def test_rediss_bad_certificate_is_refused(certs, driver, case):
    cert = {"self-signed": certs.selfsigned, "ip-not-in-cert": certs.mail}.get(case, certs.localhost)
    with Redis(tls=certs, cert=cert) as r:
        r.command("SET", "k", "v")
        args = {} if case == "untrusted-ca" else {"tls_ca_file": certs.ca_cert}
        if case == "wrong-name":
            args["tls_server_name"] = "other.example.org"
        d = driver("redis", url=f"rediss://127.0.0.1:{r.port}", **args)
        res, took = d.timed("get k")
        assert res == "ERROR redis: not connected"
        assert took < PROMPT + 1
        assert d.finish() == ["CLOSED"]
        err = d.stderr_text()
        why = {"untrusted-ca": "self-signed certificate in certificate chain",
               "self-signed": "self-signed certificate",
               "wrong-name": "hostname mismatch",
               "ip-not-in-cert": "IP address mismatch"}[case]
        assert re.search(r"redis: cannot connect.*TLS handshake failed: certificate verification failed: "
                         + re.escape(why), err), err


def test_rediss_allow_invalid_certs_accepts_anything(certs, driver):
    with Redis(tls=certs, cert=certs.selfsigned) as r:
        r.command("SET", "k", "v")
        d = driver("redis", url=f"rediss://127.0.0.1:{r.port}", tls_allow_invalid_certs=1)
        assert d.op("get k") == "FOUND v"
        assert d.finish() == ["CLOSED"]


def test_rediss_to_a_plaintext_server_is_bounded_by_the_timeout(redis_server, driver):
    # A plaintext Redis takes the ClientHello for the start of an inline
    # command and waits for its end: the attempt timeout (lookup_timeout)
    # ends the handshake, and the request parked for startup fails.
    d = driver("redis", url=f"rediss://127.0.0.1:{redis_server.port}", timeout=800)
    res, took = d.timed("get k")
    assert res == "ERROR redis: not connected"
    assert took < 0.8 + PROMPT
    res, took = d.timed("get k")
    assert res == "ERROR redis: not connected"
    assert took < PROMPT
    assert d.finish() == ["CLOSED"]
    assert re.search(r"redis: cannot connect.*TLS handshake timed out", d.stderr_text()), d.stderr_text()


def test_rediss_create_errors_name_the_key(certs):
    msg = create_error("redis", url=f"rediss://:{PASSWORD}@127.0.0.1:1", tls_ca_file=certs.client.key)
    assert msg.startswith("mapping.redis.tls_ca_file: "), msg
    msg = create_error("redis", url="rediss://127.0.0.1:1", tls_client_cert=certs.client.cert)
    assert msg.startswith("mapping.redis.tls_client_key: required when tls_client_cert is set"), msg
    assert PASSWORD not in msg


def test_rediss_down_fails_promptly_and_recovers(tls_redis, certs, driver):
    r = tls_redis
    r.command("SET", "route:k", "v1")
    d = driver("redis", url=r.url, prefix="route:", conns=2, tls_ca_file=certs.ca_cert)
    assert d.op("get k") == "FOUND v1"
    r.stop()
    res, took = d.timed("get k")
    assert res.startswith("ERROR redis: "), res
    assert took < PROMPT
    r2 = restarted(r)
    try:
        r2.command("SET", "route:k", "v2")
        assert d.until("get k", lambda x: x == "FOUND v2", timeout=RECONNECT) == "FOUND v2"
        assert d.finish() == ["CLOSED"]
    finally:
        r2.cleanup()


def test_rediss_pending_requests_fail_on_drop_and_on_close(tls_redis, certs, driver):
    r = tls_redis
    d = driver("redis", url=r.url, tls_ca_file=certs.ca_cert)
    assert d.op("get k") == "NOT_FOUND"
    r.proc.send_signal(signal.SIGSTOP)
    try:
        d.send("&get k", "close")
        assert d.result(timeout=5) == "ERROR redis: store closed"
        assert d.result(timeout=5) == "CLOSED"
        assert d.finish() == []
    finally:
        r.proc.send_signal(signal.SIGCONT)

    d = driver("redis", url=r.url, tls_ca_file=certs.ca_cert)
    assert d.op("get k") == "NOT_FOUND"
    r.proc.send_signal(signal.SIGSTOP)
    try:
        d.send("&get k")
        time.sleep(0.2)  # let the request reach the stopped server's socket
    finally:
        r.proc.kill()
        r.proc.wait()
    assert d.result(timeout=5) == "ERROR redis: connection lost"
    assert d.finish() == ["CLOSED"]


# ---- whole proxies ------------------------------------------------------------------------------------


def rediss_mapping(r, certs=None, ttl="1s", extra_redis="", extra=""):
    ca = f"tls_ca_file = {q(certs.ca_cert)}\n" if certs else ""
    return f"""
[mapping]
source = "redis"
normalize = "lowercase"
positive_ttl = "{ttl}"
negative_ttl = "{ttl}"
lookup_timeout = "2s"
{extra}
[mapping.redis]
url = {q(r.url)}
key_prefix = "route:"
pool_size = 2
{ca}{extra_redis}
"""


def admin_section(port):
    return f"""
[admin]
bind = "127.0.0.1:{port}"
tls = "plain"
allow_plaintext = true
bearer_token = "{TOKEN}"
"""


def test_rediss_routes_logins(env, marks, switchyard, tls_redis, certs):
    """Logins are routed by mappings read over TLS, on every protocol."""
    r = tls_redis
    r.command("SET", "route:bob@example.com", "new")
    ports = new_ports()
    sy = switchyard(proxy_config(env, rediss_mapping(r, certs), ports))
    for proto in ("imap", "pop3", "managesieve", "submission"):
        assert routed(env, ports, proto, "bob@example.com") == "new", proto
        assert routed(env, ports, proto, "alice@example.com") == "legacy", proto
    assert PASSWORD not in sy.log_text()


@pytest.mark.parametrize("case", ["untrusted-ca", "wrong-name"])
def test_rediss_bad_certificate_tempfails_logins(env, marks, switchyard, tls_redis, certs, case):
    r = tls_redis
    r.command("SET", "route:carol@example.com", "new")
    ports = new_ports()
    if case == "untrusted-ca":
        mapping = rediss_mapping(r)
        why = "self-signed certificate in certificate chain"
    else:
        mapping = rediss_mapping(r, certs, extra_redis='tls_server_name = "other.example.org"\n')
        why = "hostname mismatch"
    sy = switchyard(proxy_config(env, mapping, ports))
    sy.wait_log(r"redis: cannot connect.*server=127\.0\.0\.1:\d+.*TLS handshake failed: "
                r"certificate verification failed: " + re.escape(why))
    for proto in ("imap", "pop3", "managesieve", "submission"):
        assert_tempfail(ports, proto, "carol@example.com")
    assert PASSWORD not in sy.log_text()


def test_check_config_accepts_rediss(env, tls_redis, certs):
    ports = new_ports()
    rc, out = check_config(proxy_config(env, rediss_mapping(tls_redis, certs), ports))
    assert rc == 0, out
    # A TLS key without rediss:// is refused, naming the key.
    plain = rediss_mapping(tls_redis, certs).replace("rediss://", "redis://")
    rc, out = check_config(proxy_config(env, plain, ports))
    assert rc != 0
    assert "mapping.redis.tls_ca_file: only applies to Redis over TLS" in out, out
    assert PASSWORD not in out


def two_proxies(env, switchyard, r, certs, extra_redis=""):
    """A and B share the TLS Redis; long cache lifetimes, so only a fleet
    event can make B forget what it cached."""
    out = []
    for name in ("A", "B"):
        ports, admin_port = new_ports(), free_port()
        sy = switchyard(proxy_config(env, rediss_mapping(r, certs, ttl="10m", extra_redis=extra_redis), ports,
                                     extra=admin_section(admin_port)))
        sy.ports, sy.admin = ports, Admin(admin_port)
        sy.wait_log(r"redis: subscribed to the fleet events channel")
        out.append(sy)
    return out


def cached_on(sy, identifier):
    return sy.admin.json("GET", f"/mappings?identifier={identifier}")


def test_rediss_fleet_event_invalidates_the_other_proxy(env, marks, switchyard, tls_redis, certs):
    """An invalidate event PUBLISHed over TLS reaches B's subscriber (also
    over TLS): B's cached entry goes, and B sees the new destination."""
    r = tls_redis
    r.command("SET", "route:dave@example.com", "legacy")
    a, b = two_proxies(env, switchyard, r, certs)
    assert routed(env, b.ports, "imap", "dave@example.com") == "legacy"
    e = cached_on(b, "dave@example.com")
    assert e["destination"] == "legacy" and e["cached"] is True, e

    # A writes the new mapping through its admin port (Redis SET over TLS)
    # and publishes the invalidation, which B's subscriber hears over TLS.
    mark = b.log_mark()
    st, _, body = a.admin.request("PUT", "/mappings?identifier=dave@example.com&destination=new")
    assert (st, body) == (200, "ok\n")
    assert redis_cli(r, "GET", "route:dave@example.com") == "new"
    b.wait_log(r"fleet event applied.*type=invalidate.*identifier=dave@example\.com", since=mark)
    e = cached_on(b, "dave@example.com")
    assert e["destination"] == "new" and e["cached"] is False, e
    assert routed(env, b.ports, "imap", "dave@example.com") == "new"

    # An event published by hand (redis-cli over TLS) is applied the same way.
    r.command("SET", "route:dave@example.com", "legacy")
    assert cached_on(b, "dave@example.com")["destination"] == "new"  # B still has its copy
    mark = b.log_mark()
    channel = "route:events"
    assert redis_cli(r, "PUBLISH", channel, '{"v":1,"type":"invalidate","identifier":"dave@example.com"}') != "0"
    b.wait_log(r"fleet event applied.*type=invalidate.*identifier=dave@example\.com", since=mark)
    e = cached_on(b, "dave@example.com")
    assert e["destination"] == "legacy" and e["cached"] is False, e
    assert routed(env, b.ports, "imap", "dave@example.com") == "legacy"


def test_rediss_keyspace_notifications_follow_a_put_on_the_other_proxy(env, marks, switchyard, tls_redis,
                                                                       certs):
    """watch_keyspace over TLS: CONFIG GET notify-keyspace-events is checked,
    the keyspace pattern is followed, and a PUT on A's admin port makes B
    drop its cached entry without any explicit event."""
    r = tls_redis
    r.command("CONFIG", "SET", "notify-keyspace-events", "K$gx")
    r.command("SET", "route:erin@example.com", "legacy")
    a, b = two_proxies(env, switchyard, r, certs, extra_redis="watch_keyspace = true\n")
    b.wait_log(r"redis: following keyspace notifications")
    assert routed(env, b.ports, "imap", "erin@example.com") == "legacy"
    assert cached_on(b, "erin@example.com")["cached"] is True

    mark = b.log_mark()
    st, _, body = a.admin.request("PUT", "/mappings?identifier=erin@example.com&destination=new")
    assert (st, body) == (200, "ok\n")
    b.wait_log(r"fleet event applied.*type=invalidate.*identifier=erin@example\.com", since=mark)
    e = cached_on(b, "erin@example.com")
    assert e["destination"] == "new" and e["cached"] is False, e
    assert routed(env, b.ports, "imap", "erin@example.com") == "new"


def test_rediss_keyspace_refused_setting_is_logged(env, switchyard, tls_redis, certs):
    r = tls_redis
    r.command("CONFIG", "SET", "notify-keyspace-events", "")
    ports = new_ports()
    sy = switchyard(proxy_config(env, rediss_mapping(r, certs, extra_redis="watch_keyspace = true\n"), ports))
    sy.wait_log(r"mapping\.redis\.watch_keyspace is refused: the server's notify-keyspace-events setting")
    sy.wait_log(r"redis: subscribed to the fleet events channel")
