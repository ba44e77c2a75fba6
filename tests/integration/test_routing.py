"""Routing through the mapping sources (src/route/router.c, cache.c,
cluster.c): a migration in miniature with two real Dovecot backends.

"legacy" is the default destination, "new" the one accounts move to. Each
backend's INBOX of every user holds a message whose subject names the
server, and each backend's log records the logins it served
(`<svc>-login: Info: Login: user=<u>`), so a test can tell where a login
went for IMAP (subjects and log), POP3 (subjects and log), ManageSieve and
submission (log).

Every test starts its own Switchyard (its own cache) with listeners for
imap, pop3, managesieve and submission, all plaintext on both legs, and the
mapping source under test: the file (the flip here rewrites the file and
restarts; the live flip through POST /mappings/reload and PUT /mappings is
covered by test_admin.py and the demo), Redis (`SET`, then the
positive/negative TTL of 1 s runs out) or PostgreSQL (`UPDATE`, then the
TTL). The store tests also cover negative caching and coalescing (counted
with Redis MONITOR), store faults (tempfail, or the default with
on_store_error = "default"), recovery after a Redis restart, and a store
slower than lookup_timeout.
"""

import base64
import imaplib
import json
import poplib
import re
import smtplib
import socket
import threading
import time

import pytest

from harness import Dovecot, Postgres, Redis, Switchyard
from harness.clients import rendezvous_score
from harness.util import Backoff, HarnessError, free_port, recv_line

USERS = {f"{n}@example.com": f"{n}pass" for n in
         ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")}
BACKENDS = ("legacy", "new")
PROTOS = ("imap", "pop3", "managesieve", "submission")
LOGIN_SERVICE = {"imap": "imap-login", "pop3": "pop3-login", "managesieve": "managesieve-login",
                 "submission": "submission-login"}
WAIT = 10.0


def q(s):
    return json.dumps(s)


def subject_of(name):
    return f"Welcome to the {name} server"


# --- the two backends ---------------------------------------------------------------------------


class Env:
    pass


@pytest.fixture(scope="module")
def env(certs, smtp_sink):
    e = Env()
    e.backends = {}
    # The "tls" listeners are unused, but declaring them moves Dovecot's
    # built-in imaps/pop3s/submissions listeners off their well-known ports.
    listeners = {"imap": ("plain", "tls"), "pop3": ("plain", "tls"), "submission": ("plain", "tls"),
                 "sieve": ("plain",), "lmtp": ("plain",)}
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
def marks(env, request):
    """Log offsets of both backends at the start of the test (printed from
    there on if the test fails)."""
    m = {name: d.log_mark() for name, d in env.backends.items()}
    yield m
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        for name, d in env.backends.items():
            print(f"--- dovecot {name} log during the test ---\n{d.log_text(m[name])[-6000:]}")


def proxy_config(env, mapping, ports, extra=""):
    parts = [f"""
[server]
threads = 2
backend_timeout = "5s"
host_down_threshold = 0
shutdown_grace = "3s"

[routing]
default_destination = "legacy"

{mapping}

[capabilities.imap]
allow_plain_auth_without_tls = true
[capabilities.pop3]
allow_plain_auth_without_tls = true
[capabilities.managesieve]
allow_plain_auth_without_tls = true
[capabilities.submission]
allow_plain_auth_without_tls = true

[listener.imap]
protocol = "imap"
tls = "plain"
bind = ["127.0.0.1:{ports['imap']}"]
max_auth_attempts = 5
[listener.pop3]
protocol = "pop3"
tls = "plain"
bind = ["127.0.0.1:{ports['pop3']}"]
max_auth_attempts = 5
[listener.managesieve]
protocol = "managesieve"
tls = "plain"
bind = ["127.0.0.1:{ports['managesieve']}"]
max_auth_attempts = 5
[listener.submission]
protocol = "submission"
tls = "plain"
bind = ["127.0.0.1:{ports['submission']}"]
max_auth_attempts = 5
{extra}
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
[destination.{name}.protocol.pop3]
port = {d.pop3}
tls = "plain"
[destination.{name}.protocol.managesieve]
port = {d.sieve}
tls = "plain"
[destination.{name}.protocol.submission]
port = {d.submission}
tls = "plain"
""")
    return "".join(parts)


def new_ports():
    return {p: free_port() for p in PROTOS}


# --- clients ----------------------------------------------------------------------------------------


class Refused(Exception):
    """The proxy (or the backend) refused the login: the reply is the message."""


def login_imap(port, user, password):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=WAIT)
    try:
        try:
            # Quoted: "%" (master-user separator) is not an atom character.
            m.login(f'"{user}"', password)
        except imaplib.IMAP4.error as e:
            raise Refused(str(e))
        m.select("INBOX", readonly=True)
        _, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [p[1].decode().strip() for p in data if isinstance(p, tuple)]
    finally:
        try:
            m.logout()
        except Exception:
            pass


def login_pop3(port, user, password):
    p = poplib.POP3("127.0.0.1", port, timeout=WAIT)
    try:
        try:
            p.user(user)
            p.pass_(password)
        except poplib.error_proto as e:
            raise Refused(e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e))
        n, _ = p.stat()
        out = []
        for i in range(1, n + 1):
            _, lines, _ = p.top(i, 0)
            out += [l.decode() for l in lines if l.lower().startswith(b"subject:")]
        return out
    finally:
        try:
            p.quit()
        except Exception:
            pass


def login_sieve(port, user, password):
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    try:
        while not re.match(rb"^(OK|NO|BYE)", recv_line(s)):
            pass
        ir = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        s.sendall(f'AUTHENTICATE "PLAIN" "{ir}"\r\n'.encode())
        while True:
            line = recv_line(s)
            if re.match(rb"^(OK|NO|BYE)", line):
                break
        if not line.startswith(b"OK"):
            raise Refused(line.decode().strip())
        s.sendall(b"LOGOUT\r\n")
        return []
    finally:
        s.close()


def login_submission(port, user, password):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=WAIT)
    try:
        s.ehlo()
        try:
            s.login(user, password)
        except smtplib.SMTPAuthenticationError as e:
            raise Refused(f"{e.smtp_code} {e.smtp_error.decode()}")
        return []
    finally:
        try:
            s.quit()
        except Exception:
            pass


LOGIN = {"imap": login_imap, "pop3": login_pop3, "managesieve": login_sieve, "submission": login_submission}


def login_line(proto, user):
    return rf"{LOGIN_SERVICE[proto]}: Info: Login: user=<{re.escape(user)}>"


def backend_of(env, proto, user, since):
    """Which backend's log shows the login of `user` over `proto` after the
    offsets `since` (Dovecot logs asynchronously: polled, bounded)."""
    rx = re.compile(login_line(proto, user), re.I)
    b = Backoff(WAIT)
    while True:
        hits = [name for name, d in env.backends.items() if rx.search(d.log_text(since[name]))]
        if hits:
            assert len(hits) == 1, f"login of {user} over {proto} reached {hits}"
            return hits[0]
        if not b.pause():
            raise HarnessError(f"no backend logged the {proto} login of {user}")


def routed(env, sy_ports, proto, user, password=None, login_as=None):
    """Logs in over `proto` and returns the backend that served it. For IMAP
    and POP3 the mailbox content must agree with the backend's log."""
    since = {name: d.log_mark() for name, d in env.backends.items()}
    who = login_as or user
    subjects = LOGIN[proto](sy_ports[proto], who, password or USERS[user])
    name = backend_of(env, proto, user, since)
    if proto in ("imap", "pop3"):
        assert any(subject_of(name) in s for s in subjects), (proto, user, name, subjects)
    return name


def refused(sy_ports, proto, user, password=None):
    """Logs in and expects a refusal; returns its text."""
    with pytest.raises(Refused) as ei:
        LOGIN[proto](sy_ports[proto], user, password or USERS[user])
    return str(ei.value)


TEMPFAIL = {"imap": r"\[UNAVAILABLE\]", "pop3": r"\[SYS/TEMP\]", "managesieve": r"NO \(TRYLATER\)",
            "submission": r"^4\d\d "}


def assert_tempfail(sy_ports, proto, user):
    text = refused(sy_ports, proto, user)
    assert re.search(TEMPFAIL[proto], text), (proto, text)


# --- Redis MONITOR ----------------------------------------------------------------------------------


class Monitor:
    """Redis MONITOR on its own connection; `gets(key)` counts GETs of a key
    seen up to a sentinel command sent after everything of interest, so the
    count is complete without waiting for a quiet period."""

    def __init__(self, redis):
        self.redis = redis
        self.sock = socket.create_connection((redis.host, redis.port), timeout=WAIT)
        self.sock.sendall(b"MONITOR\r\n")
        self.f = self.sock.makefile("rb")
        assert self.f.readline().startswith(b"+OK")
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.n = 0

    def _read(self):
        try:
            for raw in iter(self.f.readline, b""):
                with self.cond:
                    self.lines.append(raw.decode("utf-8", "replace"))
                    self.cond.notify_all()
        except OSError:
            pass

    def sync(self):
        """Returns every command line seen up to now (after a sentinel ECHO
        round trip through the server)."""
        self.n += 1
        token = f"sentinel-{self.n}-{time.monotonic_ns()}"
        self.redis.command("ECHO", token)
        with self.cond:
            ok = self.cond.wait_for(lambda: any(token in l for l in self.lines), WAIT)
            assert ok, "MONITOR did not show the sentinel"
            return list(self.lines)

    def gets(self, key):
        return sum(1 for l in self.sync() if re.search(r'"GET" "' + re.escape(key) + '"', l, re.I))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def monitor():
    made = []

    def factory(redis):
        m = Monitor(redis)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


# --- file ---------------------------------------------------------------------------------------------


FILE_MAPPING = """
[mapping]
source = "file"
normalize = "lowercase"
[mapping.file]
path = "mappings.tsv"
"""


def test_file_migration_all_protocols(env, marks, switchyard):
    """bob is mapped to new, alice is not (default: legacy); after the file
    is flipped and Switchyard restarted, alice is on new and bob back on
    legacy. Every interactive protocol follows the mapping."""
    ports = new_ports()
    sy = switchyard(proxy_config(env, FILE_MAPPING, ports),
                    files={"mappings.tsv": "# moved accounts\nbob@example.com new\n"})
    for proto in PROTOS:
        assert routed(env, ports, proto, "bob@example.com") == "new", proto
        assert routed(env, ports, proto, "alice@example.com") == "legacy", proto
    sy.stop()

    ports = new_ports()
    sy2 = switchyard(proxy_config(env, FILE_MAPPING, ports),
                     files={"mappings.tsv": "alice@example.com\tnew\n"})
    for proto in PROTOS:
        assert routed(env, ports, proto, "alice@example.com") == "new", proto
        assert routed(env, ports, proto, "bob@example.com") == "legacy", proto
    sy2.wait_log(r"\blogin\b.*identifier=alice@example\.com.*destination=new.*result=ok")


def test_lowercase_and_master_user(env, marks, switchyard):
    """normalize = "lowercase": mixed-case logins find their lowercase
    mapping; the master-user suffix is cut before the lookup (the full login
    is still replayed, and Dovecot logs the master login in as bob)."""
    ports = new_ports()
    switchyard(proxy_config(env, FILE_MAPPING, ports),
               files={"mappings.tsv": "Carol@Example.COM new\nbob@example.com new\n"})
    for proto in PROTOS:
        assert routed(env, ports, proto, "carol@example.com", login_as="cArOl@EXAMPLE.com") == "new"
        assert routed(env, ports, proto, "dave@example.com", login_as="Dave@Example.com") == "legacy"
        assert routed(env, ports, proto, "bob@example.com", login_as="bob@example.com%master",
                      password="masterpass") == "new"


def test_normalize_none_is_exact(env, marks, switchyard):
    """normalize = "none": a mapping only matches the identifier byte for byte."""
    ports = new_ports()
    mapping = FILE_MAPPING.replace('normalize = "lowercase"', 'normalize = "none"')
    switchyard(proxy_config(env, mapping, ports), files={"mappings.tsv": "erin@example.com new\n"})
    assert routed(env, ports, "imap", "erin@example.com") == "new"
    assert routed(env, ports, "imap", "erin@example.com", login_as="ERIN@example.com") == "legacy"


@pytest.fixture(scope="module")
def pods(certs, smtp_sink):
    """Two Dovecots that listen alike, as the pods behind one Service do:
    the same ports, on 127.0.0.2 ("node-a") and 127.0.0.3 ("node-b")."""
    e = Env()
    e.backends = {}
    listeners = {"imap": ("plain", "tls"), "pop3": ("plain", "tls"), "submission": ("plain", "tls"),
                 "sieve": ("plain",), "lmtp": ("plain",)}
    try:
        first = None
        for name, addr in (("node-a", "127.0.0.2"), ("node-b", "127.0.0.3")):
            d = Dovecot(certs, users=USERS, listeners=listeners, address=addr, ports_of=first,
                        relay=(smtp_sink.host, smtp_sink.port))
            first = first or d
            e.backends[name] = d
            d.start()
            with smtplib.LMTP(addr, d.lmtp) as l:
                for u in USERS:
                    l.sendmail("setup@example.com", [u],
                               f"From: setup@example.com\r\nTo: {u}\r\nSubject: {subject_of(name)}\r\n\r\n"
                               "Hello.\r\n")
        yield e
    finally:
        for d in e.backends.values():
            d.cleanup()


CLUSTER_NAMES = ["frank@example.com", "grace@example.com", "heidi@example.com", "ivan@example.com",
                 "judy@example.com"]


def pod_cluster(pods):
    """A cluster whose nodes are declared with only their host: the ports,
    TLS mode, forwarding and plaintext rule come from the template."""
    d = pods.backends["node-a"]
    return f"""
[destination.pod]
host = "pod.invalid"
forwarding = "none"
allow_plaintext_auth = true
[destination.pod.protocol.imap]
port = {d.imap}
tls = "plain"
[destination.pod.protocol.pop3]
port = {d.pop3}
tls = "plain"
[destination.pod.protocol.managesieve]
port = {d.sieve}
tls = "plain"
[destination.pod.protocol.submission]
port = {d.submission}
tls = "plain"
[destination.node-a]
host = "127.0.0.2"
[destination.node-b]
host = "127.0.0.3"
[cluster.pool]
template = "pod"
nodes = ["node-a", "node-b"]
"""


def test_cluster_nodes_inherit_the_template(env, pods, marks, switchyard):
    """A mapping may name a cluster: each account lands on the node the
    rendezvous hash picks, and nodes declared with only `host` are reached on
    the template's port with its settings (they declare no protocol)."""
    ports = new_ports()
    switchyard(proxy_config(env, FILE_MAPPING, ports, extra=pod_cluster(pods)),
               files={"mappings.tsv": "".join(f"{n} pool\n" for n in CLUSTER_NAMES)})
    seen = set()
    for n in CLUSTER_NAMES:
        want = max(("node-a", "node-b"), key=lambda node: rendezvous_score(node, n))
        assert routed(pods, ports, "imap", n) == want, n
        seen.add(want)
    assert seen == {"node-a", "node-b"}  # the fixed names spread over both nodes
    n = CLUSTER_NAMES[0]
    want = max(("node-a", "node-b"), key=lambda node: rendezvous_score(node, n))
    for proto in PROTOS:
        assert routed(pods, ports, proto, n) == want, proto


# --- Redis ------------------------------------------------------------------------------------------------


def redis_mapping(redis, ttl="1s", negative_ttl=None, timeout="2s", extra=""):
    return f"""
[mapping]
source = "redis"
normalize = "lowercase"
positive_ttl = "{ttl}"
negative_ttl = "{negative_ttl or ttl}"
lookup_timeout = "{timeout}"
{extra}
[mapping.redis]
url = {q(redis.url)}
key_prefix = "route:"
pool_size = 2
"""


def test_redis_migration_all_protocols(env, marks, switchyard, redis_server):
    r = redis_server
    r.command("SET", "route:bob@example.com", "new")
    ports = new_ports()
    switchyard(proxy_config(env, redis_mapping(r), ports))
    for proto in PROTOS:
        assert routed(env, ports, proto, "bob@example.com") == "new", proto
        assert routed(env, ports, proto, "alice@example.com") == "legacy", proto
    # The flip: alice moves to new, bob goes back (no mapping). Both cached
    # answers run out after 1 s.
    r.command("SET", "route:alice@example.com", "new")
    r.command("DEL", "route:bob@example.com")
    time.sleep(1.2)
    for proto in PROTOS:
        assert routed(env, ports, proto, "alice@example.com") == "new", proto
        assert routed(env, ports, proto, "bob@example.com") == "legacy", proto


def test_redis_undeclared_destination_routes_to_default(env, marks, switchyard, redis_server, monitor):
    r = redis_server
    r.command("SET", "route:carol@example.com", "nowhere")
    ports = new_ports()
    sy = switchyard(proxy_config(env, redis_mapping(r, negative_ttl="30s"), ports))
    mon = monitor(r)
    assert routed(env, ports, "imap", "carol@example.com") == "legacy"
    sy.wait_log(r"WARN.*not declared.*identifier=carol@example\.com.*destination=nowhere")
    # Cached as negative: the second login does not ask Redis again.
    assert routed(env, ports, "imap", "carol@example.com") == "legacy"
    assert mon.gets("route:carol@example.com") == 1


def test_redis_negative_and_positive_caching(env, marks, switchyard, redis_server, monitor):
    """Within the TTLs, repeated logins of a mapped and an unmapped account
    cost one GET each, over every protocol."""
    r = redis_server
    r.command("SET", "route:dave@example.com", "new")
    ports = new_ports()
    switchyard(proxy_config(env, redis_mapping(r, ttl="30s"), ports))
    mon = monitor(r)
    for proto in PROTOS:
        assert routed(env, ports, proto, "erin@example.com") == "legacy"
        assert routed(env, ports, proto, "dave@example.com") == "new"
    assert mon.gets("route:erin@example.com") == 1
    assert mon.gets("route:dave@example.com") == 1


def test_redis_coalescing(env, marks, switchyard, redis_server, monitor):
    """20 concurrent logins of one account that is not cached yet (spread
    over both worker threads) make one GET: Redis is paused while they
    arrive, so they all find the lookup in flight."""
    r = redis_server
    r.command("SET", "route:frank@example.com", "new")
    ports = new_ports()
    sy = switchyard(proxy_config(env, redis_mapping(r, ttl="60s", timeout="10s"), ports))
    mon = monitor(r)
    r.command("CLIENT", "PAUSE", "2000", "ALL")
    results = [None] * 20
    since = {name: d.log_mark() for name, d in env.backends.items()}

    def one(i):
        try:
            results[i] = login_imap(ports["imap"], "frank@example.com", USERS["frank@example.com"])
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for res in results:
        assert isinstance(res, list) and any(subject_of("new") in s for s in res), res
    assert mon.gets("route:frank@example.com") == 1
    # Every login reached the new backend (its log is written asynchronously).
    b = Backoff(WAIT)
    while len(re.findall(login_line("imap", "frank@example.com"), env.backends["new"].log_text(since["new"]))) < 20:
        assert b.pause(), env.backends["new"].log_text(since["new"])
    assert not re.search(login_line("imap", "frank@example.com"), env.backends["legacy"].log_text(since["legacy"]))
    sy.wait_log(r"\blogin\b.*identifier=frank@example\.com.*destination=new.*result=ok")


def test_destination_without_protocol_tempfails(env, marks, switchyard, redis_server):
    """A store answer naming a destination that does not declare the
    protocol in use gets that protocol's temporary failure, and the log
    names both. (A mapping file like that is refused at startup.)"""
    ports = new_ports()
    extra = f"""
[destination.imaponly]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true
[destination.imaponly.protocol.imap]
port = {env.backends['new'].imap}
tls = "plain"
"""
    redis_server.command("SET", "route:frank@example.com", "imaponly")
    sy = switchyard(proxy_config(env, redis_mapping(redis_server, ttl="30s"), ports, extra=extra))
    assert routed(env, ports, "imap", "frank@example.com") == "new"
    assert_tempfail(ports, "pop3", "frank@example.com")
    sy.wait_log(r"destination does not declare the protocol in use.*destination=imaponly.*protocol=pop3")


def restart_redis(old):
    """A new redis-server on the port of a stopped one (data is gone)."""
    r = Redis()
    r.port = old.port
    r.start()
    return r


def test_redis_down_tempfail_then_recovers(env, marks, switchyard, redis_server):
    """Redis killed mid-run: a login that is not cached gets the temporary
    failure (IMAP NO [UNAVAILABLE]) promptly, on every protocol; once Redis
    is back the same logins work without restarting Switchyard."""
    r = redis_server
    ports = new_ports()
    sy = switchyard(proxy_config(env, redis_mapping(r), ports))
    r.command("SET", "route:grace@example.com", "new")
    assert routed(env, ports, "imap", "grace@example.com") == "new"
    r.stop()
    time.sleep(1.1)  # the cached answer runs out
    for proto in PROTOS:
        t0 = time.monotonic()
        assert_tempfail(ports, proto, "grace@example.com")
        assert time.monotonic() - t0 < 1.5, proto
    sy.wait_log(r"mapping lookup failed.*identifier=grace@example\.com.*on_store_error=tempfail")
    r2 = restart_redis(r)
    try:
        r2.command("SET", "route:grace@example.com", "new")
        b = Backoff(15.0, first=0.1, cap=0.5)
        while True:
            try:
                assert routed(env, ports, "imap", "grace@example.com") == "new"
                break
            except Refused:
                if not b.pause():
                    raise
        for proto in PROTOS:
            assert routed(env, ports, proto, "grace@example.com") == "new", proto
    finally:
        r2.cleanup()


def test_redis_down_on_store_error_default(env, marks, switchyard, redis_server):
    r = redis_server
    ports = new_ports()
    sy = switchyard(proxy_config(env, redis_mapping(r, extra='on_store_error = "default"'), ports))
    r.command("SET", "route:heidi@example.com", "new")
    assert routed(env, ports, "imap", "heidi@example.com") == "new"
    r.stop()
    time.sleep(1.1)
    for proto in PROTOS:
        assert routed(env, ports, proto, "heidi@example.com") == "legacy", proto
    sy.wait_log(r"mapping lookup failed.*identifier=heidi@example\.com.*on_store_error=default")


# --- PostgreSQL ------------------------------------------------------------------------------------------


def sql_mapping(pg, query=None, extra=""):
    query = query or "SELECT destination FROM routes WHERE identifier = $1"
    return f"""
[mapping]
source = "sql"
normalize = "lowercase"
positive_ttl = "1s"
negative_ttl = "1s"
lookup_timeout = "2s"
{extra}
[mapping.sql]
url = {q(pg.url)}
query = {q(query)}
pool_size = 2
"""


@pytest.fixture
def pg(postgres_server):
    postgres_server.psql("CREATE TABLE routes (identifier text PRIMARY KEY, destination text NOT NULL)")
    return postgres_server


def test_sql_migration_all_protocols(env, marks, switchyard, pg):
    pg.psql("INSERT INTO routes VALUES ('bob@example.com', 'new'), ('alice@example.com', 'legacy')")
    ports = new_ports()
    switchyard(proxy_config(env, sql_mapping(pg), ports))
    for proto in PROTOS:
        assert routed(env, ports, proto, "bob@example.com") == "new", proto
        assert routed(env, ports, proto, "alice@example.com") == "legacy", proto
        assert routed(env, ports, proto, "carol@example.com") == "legacy", proto
    pg.psql("UPDATE routes SET destination = 'new' WHERE identifier = 'alice@example.com'")
    pg.psql("UPDATE routes SET destination = 'legacy' WHERE identifier = 'bob@example.com'")
    pg.psql("INSERT INTO routes VALUES ('carol@example.com', 'new')")
    time.sleep(1.2)
    for proto in PROTOS:
        assert routed(env, ports, proto, "alice@example.com") == "new", proto
        assert routed(env, ports, proto, "bob@example.com") == "legacy", proto
        assert routed(env, ports, proto, "carol@example.com") == "new", proto


def test_sql_stopped_tempfail(env, marks, switchyard, pg):
    pg.psql("INSERT INTO routes VALUES ('ivan@example.com', 'new')")
    ports = new_ports()
    sy = switchyard(proxy_config(env, sql_mapping(pg), ports))
    assert routed(env, ports, "imap", "ivan@example.com") == "new"
    pg.stop()
    time.sleep(1.1)
    for proto in PROTOS:
        t0 = time.monotonic()
        assert_tempfail(ports, proto, "ivan@example.com")
        assert time.monotonic() - t0 < 2.5, proto
    sy.wait_log(r"mapping lookup failed.*identifier=ivan@example\.com.*store=sql")


def test_sql_slower_than_lookup_timeout(env, marks, switchyard, pg):
    """A store that answers after lookup_timeout: the login gets the
    temporary failure when the timeout passes, not when the answer comes."""
    pg.psql("INSERT INTO routes VALUES ('judy@example.com', 'new')")
    ports = new_ports()
    slow = "SELECT destination FROM routes, pg_sleep(3) WHERE identifier = $1"
    sy = switchyard(proxy_config(env, sql_mapping(pg, query=slow).replace('lookup_timeout = "2s"',
                                                                           'lookup_timeout = "1s"'), ports))
    t0 = time.monotonic()
    assert_tempfail(ports, "imap", "judy@example.com")
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 2.5, elapsed
    sy.wait_log(r"mapping lookup failed.*identifier=judy@example\.com.*lookup_timeout")
