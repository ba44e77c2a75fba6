"""The PostgreSQL store with host names and host lists (src/route/store_sql.c):
names are resolved on the loop, each host of a list is tried in turn with its
own timeout, target_session_attrs=read-write skips a read-only server, and a
lost connection walks the list again (a failover to a new primary is
followed).

Real PostgreSQL servers (harness.Postgres) on loopback, a real Switchyard in
front of two real Dovecot backends ("legacy", the default destination, and
"new"), real IMAP logins. Each backend's INBOX holds a message whose subject
names the server, so a login tells where it was routed.
"""

import imaplib
import json
import re
import smtplib
import socket
import time
import urllib.request

import pytest

from harness import Dovecot, Postgres
from harness.util import Backoff, free_port, read_text
from test_stores import create_error, driver  # noqa: F401 (driver is a fixture)

USERS = {f"{n}@example.com": f"{n}pass" for n in ("alice", "bob", "carol")}
BACKENDS = ("legacy", "new")
WAIT = 10.0


def subject_of(name):
    return f"Welcome to the {name} server"


class Env:
    pass


@pytest.fixture(scope="module")
def env(certs, smtp_sink):
    e = Env()
    e.backends = {}
    listeners = {"imap": ("plain", "tls"), "pop3": ("plain", "tls"), "submission": ("plain", "tls"),
                 "lmtp": ("plain",)}
    try:
        for name in BACKENDS:
            d = Dovecot(certs, users=USERS, listeners=listeners, relay=(smtp_sink.host, smtp_sink.port))
            e.backends[name] = d
            d.start()
            with smtplib.LMTP("127.0.0.1", d.lmtp) as l:
                for u in USERS:
                    l.sendmail("setup@example.com", [u],
                               f"From: setup@example.com\r\nTo: {u}\r\nSubject: {subject_of(name)}\r\n\r\n"
                               "Hello.\r\n")
        yield e
    finally:
        for d in e.backends.values():
            d.cleanup()


@pytest.fixture
def make_pg(request):
    """Factory: make_pg() -> a started harness.Postgres with an empty routes
    table; all are cleaned up (logs printed on failure)."""
    started = []

    def factory():
        pg = Postgres()
        started.append(pg)
        pg.start()
        pg.psql("CREATE TABLE routes (identifier text PRIMARY KEY, destination text NOT NULL)")
        return pg

    yield factory
    rep = getattr(request.node, "rep_call", None)
    for pg in started:
        if rep is None or rep.failed:
            print(f"--- postgres {pg.port} log ---\n{read_text(pg.log_path)[-5000:]}")
        pg.cleanup()


def config(env, url, imap_port, admin_port, lookup_timeout="2s", positive_ttl="600s"):
    parts = [f"""
[server]
threads = 1
backend_timeout = "5s"
host_down_threshold = 0
shutdown_grace = "3s"
log_level = "debug"

[routing]
default_destination = "legacy"

[mapping]
source = "sql"
positive_ttl = {json.dumps(positive_ttl)}
negative_ttl = "1s"
lookup_timeout = {json.dumps(lookup_timeout)}

[mapping.sql]
url = {json.dumps(url)}
pool_size = 1

[capabilities.imap]
allow_plain_auth_without_tls = true

[listener.imap]
protocol = "imap"
tls = "plain"
bind = ["127.0.0.1:{imap_port}"]

[admin]
bind = "127.0.0.1:{admin_port}"
tls = "plain"
allow_plaintext = true
bearer_token = "test-token-for-the-pg-hosts-tests-0123456789"
"""]
    for name, d in env.backends.items():
        parts.append(f"""
[destination.{name}]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true
[destination.{name}.protocol.imap]
port = {d.imap}
tls = "plain"
""")
    return "".join(parts)


def routed(imap_port, user):
    """Logs in over IMAP through the proxy; returns the backend that served
    the login (from the subject of its INBOX message)."""
    m = imaplib.IMAP4("127.0.0.1", imap_port, timeout=WAIT)
    try:
        m.login(user, USERS[user])
        m.select("INBOX", readonly=True)
        _, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [p[1].decode() for p in data if isinstance(p, tuple)]
    finally:
        try:
            m.logout()
        except Exception:
            pass
    found = [name for name in BACKENDS if any(subject_of(name) in s for s in subjects)]
    assert len(found) == 1, subjects
    return found[0]


def routed_eventually(imap_port, user, want, timeout=15.0):
    """Logs in until the login lands on `want` (a reconnect or a cache expiry
    has no event a client can see); returns the last backend."""
    b = Backoff(timeout, first=0.05, cap=0.5)
    while True:
        try:
            got = routed(imap_port, user)
        except imaplib.IMAP4.error:
            got = None  # a temporary failure while the store reconnects
        if got == want or b.expired():
            return got
        b.pause()


def livez(admin_port):
    """GET /livez; returns (status, seconds taken)."""
    t = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/livez", timeout=WAIT) as r:
        status = r.status
    return status, time.monotonic() - t


def terminate_switchyard_sessions(pg):
    """Cuts the proxy's connections from the server side, as a failover does."""
    pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'switchyard'")


def make_read_only(pg, on=True):
    """default_transaction_read_only for new sessions (what libpq's
    read-write check looks at) via ALTER SYSTEM and a reload."""
    if on:
        pg.psql("ALTER SYSTEM SET default_transaction_read_only = on")
    else:
        pg.psql("ALTER SYSTEM RESET default_transaction_read_only", check=True)
    pg.psql("SELECT pg_reload_conf()")
    want = "on" if on else "off"
    b = Backoff(10.0)
    while pg.psql("SHOW default_transaction_read_only") != want:
        assert not b.expired(), "the reload did not take"
        b.pause()


class BlackHole:
    """A listening socket that never accepts: the kernel completes the TCP
    handshakes into its backlog, and nothing is ever read or answered."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


@pytest.fixture
def black_hole():
    bh = BlackHole()
    yield bh
    bh.close()


def test_host_name_localhost(env, make_pg, switchyard):
    pg = make_pg()
    pg.psql("INSERT INTO routes VALUES ('bob@example.com', 'new')")
    imap, admin = free_port(), free_port()
    sy = switchyard(config(env, f"postgres://postgres@localhost:{pg.port}/postgres", imap, admin))
    # Resolved on the loop: libpq is handed the address with the name.
    sy.wait_log(rf"sql: connected.*host=localhost:{pg.port}.*address=127\.0\.0\.1")
    assert routed(imap, "bob@example.com") == "new"
    assert routed(imap, "alice@example.com") == "legacy"  # not mapped: the default


def test_two_hosts_first_refused(env, make_pg, switchyard):
    pg = make_pg()
    pg.psql("INSERT INTO routes VALUES ('bob@example.com', 'new')")
    closed = free_port()
    imap, admin = free_port(), free_port()
    url = f"postgres://postgres@127.0.0.1:{closed},localhost:{pg.port}/postgres"
    sy = switchyard(config(env, url, imap, admin))
    sy.wait_log(rf"trying the next host.*host=127\.0\.0\.1:{closed}.*refused")
    sy.wait_log(rf"sql: connected.*host=localhost:{pg.port}")
    assert routed(imap, "bob@example.com") == "new"
    # Never "every host down": only the first host's failure is logged.
    assert not [l for l in sy.log_lines() if "sql: cannot connect" in l and "next host" not in l]


def test_two_hosts_first_black_hole_loop_keeps_serving(env, make_pg, switchyard, black_hole):
    """The first host accepts TCP and never answers: each attempt on it ends
    at the per-host timeout (lookup_timeout) and the second host is reached;
    meanwhile the loop serves the admin port and logins answered from the
    cache. Once at startup, and again after the connection is cut (the
    reconnect walks the list from its start)."""
    pg = make_pg()
    pg.psql("INSERT INTO routes VALUES ('bob@example.com', 'new'), ('carol@example.com', 'new')")
    imap, admin = free_port(), free_port()
    url = f"postgres://postgres@127.0.0.1:{black_hole.port},127.0.0.1:{pg.port}/postgres"
    sy = switchyard(config(env, url, imap, admin, lookup_timeout="3s"))
    stuck = rf"trying the next host.*host=127\.0\.0\.1:{black_hole.port}.*timed out"
    connected = rf"sql: connected.*host=127\.0\.0\.1:{pg.port}"

    # Startup: the attempt on the black hole is pending; the loop answers.
    served = 0
    while not any(l for l in sy.log_lines() if "sql: connected" in l):
        status, took = livez(admin)
        assert status == 200 and took < 1.0, took
        served += 1
        time.sleep(0.05)
    assert served >= 3, served  # the stuck phase lasts ~3 s
    sy.wait_log(stuck)
    sy.wait_log(connected)
    assert routed(imap, "bob@example.com") == "new"  # now cached

    # A failover: the server drops the connection; the reconnect goes to the
    # black hole first again and sits there for the timeout.
    mark = sy.log_mark()
    terminate_switchyard_sessions(pg)
    sy.wait_log(r"sql: connection lost", since=mark)
    t0 = time.monotonic()
    assert routed(imap, "bob@example.com") == "new"  # from the cache, at once
    status, took = livez(admin)
    assert status == 200
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed
    # Both were served while the attempt on the black hole was still pending.
    assert not any("timed out" in l for l in sy.log_lines()[mark:]), sy.log_text()
    sy.wait_log(stuck, since=mark)
    sy.wait_log(connected, since=mark)
    # A store lookup again. The first "connected" may be another of the
    # store's connections (the fleet subscriber, another pool slot) while the
    # one this login's worker uses is still sitting on the black hole.
    assert routed_eventually(imap, "carol@example.com", "new") == "new"


def test_read_write_skips_a_read_only_server_and_follows_a_failover(env, make_pg, switchyard):
    standby, primary = make_pg(), make_pg()
    # Where a login lands tells which server answered.
    standby.psql("INSERT INTO routes VALUES ('bob@example.com', 'legacy')")
    primary.psql("INSERT INTO routes VALUES ('bob@example.com', 'new')")
    make_read_only(standby)
    imap, admin = free_port(), free_port()
    url = (f"postgres://postgres@127.0.0.1:{standby.port},127.0.0.1:{primary.port}/postgres"
           "?target_session_attrs=read-write")
    sy = switchyard(config(env, url, imap, admin, positive_ttl="1s"))
    sy.wait_log(rf"trying the next host.*host=127\.0\.0\.1:{standby.port}.*read-only")
    sy.wait_log(rf"sql: connected.*host=127\.0\.0\.1:{primary.port}")
    assert routed(imap, "bob@example.com") == "new"

    # Failover: the old standby becomes the primary and the old primary is
    # read-only; the server cuts the proxy's sessions and the reconnect
    # walks the list again.
    make_read_only(standby, on=False)
    make_read_only(primary)
    mark = sy.log_mark()
    terminate_switchyard_sessions(primary)
    sy.wait_log(rf"sql: connected.*host=127\.0\.0\.1:{standby.port}", since=mark)
    assert routed_eventually(imap, "bob@example.com", "legacy") == "legacy"


# ---- the store alone, through build/store-driver (see test_stores.py) ----


def test_driver_unresolvable_name_then_a_real_host(make_pg, driver):
    pg = make_pg()
    pg.psql("INSERT INTO routes VALUES ('alice@example.com', 'store-a')")
    d = driver("sql", url=f"postgresql://postgres@nosuch.invalid:5432,127.0.0.1:{pg.port}/postgres",
               log="info")
    assert d.op("get alice@example.com") == "FOUND store-a"
    assert d.finish() == ["CLOSED"]
    err = d.stderr_text()
    assert "cannot resolve nosuch.invalid" in err, err
    assert f"sql: connected server=nosuch.invalid:5432,127.0.0.1:{pg.port}/postgres " \
           f"host=127.0.0.1:{pg.port}" in err, err


def test_driver_every_host_down_fails_promptly(driver):
    a, b = free_port(), free_port()
    d = driver("sql", url=f"postgresql://postgres:topsecret@127.0.0.1:{a},localhost:{b}/postgres")
    t = time.monotonic()
    assert d.op("get k") == "ERROR sql: not connected"
    assert time.monotonic() - t < 1.0
    assert d.finish() == ["CLOSED"]
    err = d.stderr_text()
    # One warning for the walk, naming the last host and its error.
    assert re.search(rf"WARN sql: cannot connect server=127\.0\.0\.1:{a},localhost:{b}/postgres "
                     rf"host=localhost:{b} .*Connection refused", err), err
    assert "topsecret" not in err


@pytest.mark.parametrize("url, msg", [
    ("postgresql://u:topsecret@a,b,c/db?port=1,2", "give one port, or one port per host"),
    ("postgresql://u:topsecret@a,b/db?hostaddr=10.0.0.1,10.0.0.2,10.0.0.3",
     "the host and hostaddr lists differ in length"),
])
def test_driver_host_lists_that_do_not_line_up_are_creation_errors(url, msg):
    err = create_error("sql", url=url)
    assert err == f"mapping.sql.url: {msg}", err
    assert "topsecret" not in err


def test_driver_close_during_the_walk_releases_everything(driver, black_hole):
    # Closed at once (the name lookup may still be pending) and once the
    # attempt on the black hole is under way: the driver exits 0 only when
    # every handle and lookup of the store has been released (and ASan
    # checks for leaks at exit).
    url = f"postgresql://postgres@localhost:{black_hole.port},localhost:{black_hole.port}/postgres"
    d = driver("sql", url=url, timeout="5000")
    d.send("close")
    assert d.result(timeout=5) == "CLOSED"
    assert d.finish() == []
    d = driver("sql", url=url, timeout="5000")
    d.send("&get k")  # parked in the startup queue while the walk is under way
    d.send("close")
    assert [d.result(timeout=5) for _ in range(2)] == ["ERROR sql: store closed", "CLOSED"]
    assert d.finish() == []
