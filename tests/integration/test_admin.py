"""The management side port (src/admin/): probes, the Prometheus exposition,
the bearer-token API and configuration reload, against real Dovecot
backends through the built proxy.

Proxies here use a plain IMAP listener towards Dovecot's plain IMAP port
(forwarding none, cleartext auth allowed on both legs) and a plaintext admin
port (`allow_plaintext = true`), except test_admin_tls. Clients bind their
own loopback source addresses where the lockout (per client IP) matters.

The /metrics output is checked by a strict validator of the text exposition
format 0.0.4 (parse_exposition below), not by substring matches.

Switchyard log lines relied on (text format `<time> <LEVEL> <msg> k=v ...`):
  `configuration reloaded trigger=<api|SIGHUP|"file change"|...>`,
  `configuration reload failed: keeping the running configuration trigger=.. error=..`,
  `session closed ...`, `login ... identifier=.. result=..`,
  `admin: sessions kicked identifier=.. sessions=N`.
Dovecot's: `imap-login: Info: Login: user=<u>, ...`.
"""

import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import time

import pytest

from harness.util import HarnessError, closed_or_refused, connect, expect_closed, free_port, recv_line

TOKEN = "admin-token-0123456789abcdef0123456789"
ALICE = ("alice@example.com", "alicepass")
BOB = ("bob@example.com", "bobpass")
CAROL = ("carol@example.com", "carolpass")


# --- configuration ------------------------------------------------------------------------------

def imap_listener(name, port, **extra):
    lines = [f"[listener.{name}]", 'protocol = "imap"', f'bind = ["127.0.0.1:{port}"]', 'tls = "plain"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def destination(name, port):
    return f"""[destination.{name}]
host = "127.0.0.1"
proxy_protocol = false
allow_plaintext_auth = true
[destination.{name}.protocol.imap]
port = {port}
tls = "plain"
"""


def make_config(listeners, destinations, admin_port, *, default="dovecot", admin=None, token=TOKEN,
                extra="", server=None):
    """TOML for a proxy. listeners: {name: port}; destinations: {name: backend port}."""
    srv = {"threads": 2, "shutdown_grace": "10s"}
    srv.update(server or {})
    out = ["[server]"] + [f"{k} = {json.dumps(v)}" for k, v in srv.items()] + [""]
    for name, port in listeners.items():
        out.append(imap_listener(name, port))
    out.append("[capabilities.imap]\nallow_plain_auth_without_tls = true\n")
    for name, port in destinations.items():
        out.append(destination(name, port))
    out.append(f'[routing]\ndefault_destination = "{default}"\n')
    a = {"bind": f"127.0.0.1:{admin_port}", "tls": "plain", "allow_plaintext": True}
    if token is not None:
        a["bearer_token"] = token
    a.update(admin or {})
    out.append("[admin]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in a.items() if v is not None))
    out.append(extra)
    return "\n".join(out)


# --- clients ---------------------------------------------------------------------------------------

class Admin:
    """HTTP client for the admin port; every request is a new connection
    (the port answers with Connection: close)."""

    def __init__(self, port, token=TOKEN, tls_ctx=None):
        self.port, self.token, self.tls_ctx = port, token, tls_ctx

    def request(self, method, path, token="default", source=None, headers=None, body=None):
        addr = (source, 0) if source else None
        if self.tls_ctx:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.tls_ctx,
                                               source_address=addr)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=addr)
        h = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read().decode("utf-8", "replace")
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def json(self, method, path, expect=200, **kw):
        st, hdrs, body = self.request(method, path, **kw)
        assert st == expect, (st, body)
        assert hdrs["content-type"].startswith("application/json"), hdrs
        return json.loads(body)

    def metrics(self):
        st, hdrs, body = self.get("/metrics", token=None)
        assert st == 200, body
        assert hdrs["content-type"].startswith("text/plain; version=0.0.4"), hdrs
        return parse_exposition(body)


class Imap:
    """A raw IMAP client (tags a1, a2, ...) that can IDLE."""

    def __init__(self, port, source=None):
        self.sock = connect(port, source=source)
        self.n = 0
        greeting = recv_line(self.sock)
        assert greeting.startswith(b"* OK"), greeting

    def command(self, line, timeout=10.0):
        self.n += 1
        tag = f"a{self.n}"
        self.sock.sendall(f"{tag} {line}\r\n".encode())
        return self.tagged(tag, timeout)

    def tagged(self, tag, timeout=10.0):
        lines = []
        while True:
            l = recv_line(self.sock, timeout=timeout)
            if not l:
                raise HarnessError(f"connection closed waiting for {tag}; got {lines!r}")
            lines.append(l)
            if l.startswith(tag.encode() + b" "):
                return l, lines

    def login(self, user, password):
        line, _ = self.command(f'LOGIN "{user}" "{password}"')
        return line

    def idle(self):
        self.n += 1
        self.idle_tag = f"a{self.n}"
        self.sock.sendall(f"{self.idle_tag} IDLE\r\n".encode())
        l = recv_line(self.sock)
        assert l.startswith(b"+"), l

    def done(self):
        self.sock.sendall(b"DONE\r\n")
        line, _ = self.tagged(self.idle_tag)
        return line

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def login_ok(port, user=ALICE, source=None):
    c = Imap(port, source=source)
    line = c.login(*user)
    assert b" OK " in line, line
    return c


# --- the exposition-format validator --------------------------------------------------------------

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?\Z")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\Z)')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    assert re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s), f"bad sample value {s!r}"
    return float(s)


def parse_labels(text):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_PAIR.match(text, pos)
        assert m, f"bad label set {text!r} at {pos}"
        name, value = m.group(1), m.group(2)
        assert not name.startswith("__"), name
        assert name not in labels, f"duplicate label {name} in {text!r}"
        labels[name] = value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        pos = m.end()
    return labels


class Exposition:
    def __init__(self):
        self.families = {}  # name -> {"type", "help", "samples": [(sample name, labels, value)]}
        self.values = {}  # (sample name, frozenset(labels)) -> value

    def get(self, name, **labels):
        """The value of one series (0 when absent)."""
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def sum(self, name, **labels):
        """Sum over every series of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and want <= set(ls))


def parse_exposition(text):
    """Parses Prometheus text format 0.0.4 strictly: HELP/TYPE before the
    samples of their family, families contiguous, valid names and escaped
    label values, no duplicate series, counters non-negative and named
    *_total, histograms with increasing buckets ending in +Inf, cumulative
    counts, and _sum/_count matching."""
    assert text.endswith("\n"), "exposition must end with a newline"
    e = Exposition()
    current = None
    closed = set()

    def family_of(sample_name):
        if sample_name in e.families:
            return sample_name
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample_name[: -len(suffix)] if sample_name.endswith(suffix) else None
            if base and e.families.get(base, {}).get("type") in ("histogram", "summary"):
                return base
        raise AssertionError(f"sample {sample_name} has no # TYPE before it")

    def switch(name):
        nonlocal current
        if current != name:
            assert name not in closed, f"family {name} is not contiguous"
            if current is not None:
                closed.add(current)
            current = name

    for line in text.split("\n")[:-1]:
        assert line, "empty line in exposition"
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, rest = line[2:6], line[7:]
            name, _, arg = rest.partition(" ")
            assert METRIC_NAME.match(name), f"bad metric name {name!r}"
            assert name.startswith("switchyard_"), name
            switch(name)
            fam = e.families.setdefault(name, {"type": None, "help": None, "samples": []})
            assert not fam["samples"], f"{kind} for {name} after its samples"
            if kind == "HELP":
                assert fam["help"] is None, f"second HELP for {name}"
                assert arg, f"empty HELP for {name}"
                fam["help"] = arg
            else:
                assert fam["type"] is None, f"second TYPE for {name}"
                assert arg in TYPES, f"bad TYPE {arg!r}"
                fam["type"] = arg
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        name, labels = m.group(1), parse_labels(m.group(3) or "")
        value = parse_value(m.group(4))
        fam_name = family_of(name)
        switch(fam_name)
        fam = e.families[fam_name]
        assert fam["help"] and fam["type"], f"{fam_name}: HELP and TYPE must precede samples"
        key = (name, frozenset(labels.items()))
        assert key not in e.values, f"duplicate series {line!r}"
        e.values[key] = value
        fam["samples"].append((name, labels, value))
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} should end in _total"
            assert value >= 0, line
        if fam["type"] == "histogram":
            assert name != fam_name, f"histogram {fam_name} sample without suffix"
            if name.endswith("_bucket"):
                assert "le" in labels, line
                parse_value(labels["le"])
            else:
                assert "le" not in labels, line

    for fam_name, fam in e.families.items():
        assert fam["type"] and fam["help"], f"{fam_name} lacks HELP or TYPE"
        if fam["type"] != "histogram":
            continue
        series = {}
        for name, labels, value in fam["samples"]:
            key = frozenset((k, v) for k, v in labels.items() if k != "le")
            s = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
            if name.endswith("_bucket"):
                s["buckets"].append((parse_value(labels["le"]), value))
            elif name.endswith("_sum"):
                s["sum"] = value
            else:
                s["count"] = value
        for key, s in series.items():
            les = [le for le, _ in s["buckets"]]
            counts = [c for _, c in s["buckets"]]
            assert les and les[-1] == math.inf, f"{fam_name}{dict(key)}: no +Inf bucket"
            assert les == sorted(les) and len(set(les)) == len(les), f"{fam_name}: buckets not increasing"
            assert counts == sorted(counts), f"{fam_name}{dict(key)}: bucket counts not cumulative {counts}"
            assert s["sum"] is not None and s["count"] is not None, f"{fam_name}: missing _sum/_count"
            assert s["count"] == counts[-1], f"{fam_name}: _count != +Inf bucket"
    return e


def test_validator_rejects_bad_expositions():
    """The validator itself: a few malformed inputs it must refuse."""
    good = ("# HELP switchyard_x_total X.\n# TYPE switchyard_x_total counter\n"
            "switchyard_x_total{a=\"1\"} 3\n")
    parse_exposition(good)
    bad = [
        good.rstrip("\n"),  # no final newline
        "switchyard_x_total 1\n",  # no TYPE
        good + "switchyard_x_total{a=\"1\"} 4\n",  # duplicate
        good.replace("counter", "gauge").replace("_total", "") + "# HELP switchyard_y Y.\n# TYPE switchyard_y gauge\n"
        "switchyard_y 1\nswitchyard_x{a=\"2\"} 1\n",  # not contiguous
        "# HELP switchyard_h H.\n# TYPE switchyard_h histogram\nswitchyard_h_bucket{le=\"1\"} 2\n"
        "switchyard_h_bucket{le=\"2\"} 1\nswitchyard_h_bucket{le=\"+Inf\"} 2\nswitchyard_h_sum 1\n"
        "switchyard_h_count 2\n",  # not cumulative
        "# HELP switchyard_h H.\n# TYPE switchyard_h histogram\nswitchyard_h_bucket{le=\"1\"} 2\n"
        "switchyard_h_sum 1\nswitchyard_h_count 2\n",  # no +Inf
        "# HELP switchyard_g G.\n# TYPE switchyard_g gauge\nswitchyard_g{a=\"x\ny\"} 1\n",  # raw newline
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            parse_exposition(text)


# --- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture
def proxy(switchyard, dovecot):
    """A proxy with one plain IMAP listener to the shared Dovecot and a
    plaintext admin port (lockout after 3 failures for 2 s)."""
    ports = {"imap": free_port()}
    admin_port = free_port()
    cfg = make_config(ports, {"dovecot": dovecot.imap}, admin_port,
                      admin={"lockout_threshold": 3, "lockout_duration": "2s"})
    sy = switchyard(cfg)
    sy.ports = ports
    sy.admin = Admin(admin_port)
    return sy


# --- probes ------------------------------------------------------------------------------------------

def test_probes(proxy):
    a = proxy.admin
    for path in ("/livez", "/healthz", "/readyz"):
        st, hdrs, body = a.get(path, token=None)
        assert (st, body) == (200, "ok\n"), (path, st, body)
        assert hdrs["connection"] == "close"
    st, _, body = a.get("/readyz?verbose", token=None)
    assert st == 200
    assert body.splitlines() == ["[+]config ok", "[+]listeners ok", "[+]discovery ok", "[+]shutdown ok",
                                 "readyz check passed"]
    assert a.get("/nope", token=None)[0] == 404
    assert a.get("/", token=None)[0] == 404
    # A trailing slash names the same path (test_trailing_slash_is_the_same_path).
    assert a.get("/livez/", token=None)[:3:2] == (200, "ok\n")
    assert a.get("/stats/", token=None)[0] == 401
    st, hdrs, _ = a.post("/livez", token=None)
    assert st == 405 and "GET" in hdrs["allow"]
    st, hdrs, _ = a.get("/config/reload")
    assert st == 405 and hdrs["allow"] == "POST"
    assert a.request("PATCH", "/mappings")[0] == 405


def test_malformed_requests(proxy):
    port = proxy.admin.port

    def raw(data):
        s = connect(port)
        s.sendall(data)
        status = recv_line(s)
        s.close()
        return status

    assert raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    big = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    assert raw(big).startswith(b"HTTP/1.1 431 ")
    assert raw(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    # A bad percent escape in the query.
    assert raw(b"POST /connections/kick?identifier=%zz HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() +
               b"\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_readyz_fails_while_draining(proxy):
    """SIGTERM: /readyz turns 503 (and says why) while bridged sessions
    drain; /livez stays 200; the process exits once the session ends."""
    c = login_ok(proxy.ports["imap"])
    mark = proxy.log_mark()
    proxy.send_signal(signal.SIGTERM)
    proxy.wait_log(r"shutting down", since=mark)
    st, _, body = proxy.admin.get("/readyz?verbose", token=None)
    assert st == 503, body
    assert "[-]shutdown failed" in body.splitlines() and body.endswith("readyz check failed\n")
    assert proxy.admin.get("/readyz", token=None)[0] == 503
    assert proxy.admin.get("/livez", token=None)[0] == 200
    m = proxy.admin.metrics()
    assert m.get("switchyard_draining") == 1
    c.command("LOGOUT")
    c.close()
    assert proxy.wait_exit() == 0


# --- metrics -----------------------------------------------------------------------------------------

def test_metrics_exposition_and_counters(proxy, switchyard, dovecot):
    a = proxy.admin
    before = a.metrics()
    for fam in ("switchyard_connections_accepted_total", "switchyard_connections_active",
                "switchyard_connections_rejected_total", "switchyard_logins_total",
                "switchyard_backend_connect_seconds", "switchyard_backend_connect_failures_total",
                "switchyard_destination_up", "switchyard_destination_consecutive_failures",
                "switchyard_mapping_cache_hits_total", "switchyard_mapping_cache_misses_total",
                "switchyard_mapping_cache_entries", "switchyard_store_lookup_seconds",
                "switchyard_store_lookup_errors_total", "switchyard_bridged_bytes_total",
                "switchyard_session_duration_seconds", "switchyard_config_reloads_total",
                "switchyard_config_last_reload_success_timestamp_seconds", "switchyard_discovery_endpoints",
                "switchyard_discovery_watch_restarts_total", "switchyard_build_info"):
        assert fam in before.families, fam
    assert before.families["switchyard_backend_connect_seconds"]["type"] == "histogram"
    assert before.get("switchyard_destination_up", destination="dovecot") == 1
    assert before.sum("switchyard_build_info") == 1
    # No series carries an account name.
    for (name, labels), _ in before.values.items():
        assert not any("@" in v for _, v in labels), (name, labels)

    mark = proxy.log_mark()
    c = login_ok(proxy.ports["imap"])
    line, lines = c.command("SELECT INBOX")
    assert b" OK " in line, lines
    c2 = Imap(proxy.ports["imap"])
    assert b" NO " in c2.login(ALICE[0], "wrong")
    mid = a.metrics()
    assert mid.get("switchyard_connections_active", listener="imap", protocol="imap") == 2
    c.command("LOGOUT")
    c.close()
    c2.close()
    proxy.wait_log(r"session closed", since=mark)

    after = a.metrics()
    d = lambda name, **l: after.sum(name, **l) - before.sum(name, **l)  # noqa: E731
    assert d("switchyard_connections_accepted_total", listener="imap") == 2
    assert d("switchyard_logins_total", protocol="imap", result="ok") == 1
    assert d("switchyard_logins_total", protocol="imap", result="failed") == 1
    assert d("switchyard_backend_connect_seconds_count", protocol="imap") == 2
    assert d("switchyard_bridged_bytes_total", protocol="imap", direction="client_to_backend") > 0
    assert d("switchyard_bridged_bytes_total", protocol="imap", direction="backend_to_client") > 0
    assert d("switchyard_session_duration_seconds_count", protocol="imap") >= 1

    # Failures by reason: a proxy whose only backend refuses connections.
    dead = free_port()
    ports = {"imap": free_port()}
    admin_port = free_port()
    sy2 = switchyard(make_config(ports, {"dead": dead}, admin_port, default="dead",
                                 server={"host_down_threshold": 2, "backend_connect_retries": 0}))
    a2 = Admin(admin_port)
    for _ in range(3):
        c = Imap(ports["imap"])
        assert b" NO " in c.login(*ALICE)
        c.close()
    m = a2.metrics()
    assert m.get("switchyard_backend_connect_failures_total", reason="refused") == 2
    assert m.get("switchyard_backend_connect_failures_total", reason="down") == 1
    assert m.get("switchyard_logins_total", protocol="imap", mechanism="LOGIN", result="tempfail") == 3
    assert m.get("switchyard_destination_up", destination="dead") == 0
    assert m.get("switchyard_destination_consecutive_failures", destination="dead") == 2


# --- authentication ----------------------------------------------------------------------------------

def test_token_required_and_lockout(proxy):
    a = proxy.admin
    st, hdrs, _ = a.get("/stats", token=None, source="127.0.0.21")
    assert st == 401 and hdrs["www-authenticate"].startswith("Bearer")
    st, hdrs, _ = a.get("/stats", token="wrong", source="127.0.0.21")
    assert st == 401 and hdrs["www-authenticate"].startswith("Bearer")
    st, _, body = a.get("/stats", source="127.0.0.21")
    assert st == 200, body
    stats = json.loads(body)
    assert set(stats) >= {"cache_hits", "cache_misses", "hit_rate_pct", "cache_entries", "active_connections"}
    # Not a Bearer token at all.
    assert a.get("/stats", token=None, headers={"Authorization": "Basic " + TOKEN},
                 source="127.0.0.22")[0] == 401

    # Lockout: 3 failures within the window, then 429 even with the right token.
    for _ in range(3):
        assert a.get("/destinations", token="nope", source="127.0.0.23")[0] == 401
    st, hdrs, _ = a.get("/destinations", source="127.0.0.23")
    assert st == 429 and int(hdrs["retry-after"]) >= 1
    # Another address is not affected; probes need no token at all.
    assert a.get("/destinations", source="127.0.0.24")[0] == 200
    assert a.get("/livez", token=None, source="127.0.0.23")[0] == 200
    time.sleep(2.2)  # lockout_duration = 2s: the lock must lift by itself
    assert a.get("/destinations", source="127.0.0.23")[0] == 200
    assert a.metrics().get("switchyard_admin_auth_failures_total") >= 6


def test_token_precedence(switchyard, dovecot):
    """PROXY_ADMIN_TOKEN > bearer_token_file > bearer_token."""
    env_tok, file_tok, inline_tok = ("env-" + "e" * 40), ("file-" + "f" * 40), ("inline-" + "i" * 40)
    cases = [
        ({"PROXY_ADMIN_TOKEN": env_tok}, True, env_tok),
        ({}, True, file_tok),
        ({}, False, inline_tok),
    ]
    for env, with_file, expected in cases:
        admin_port = free_port()
        admin = {"bearer_token_file": "admin.token" if with_file else None}
        cfg = make_config({"imap": free_port()}, {"dovecot": dovecot.imap}, admin_port, admin=admin,
                          token=inline_tok)
        sy = switchyard(cfg, env=env, files={"admin.token": file_tok + "\n"} if with_file else None)
        a = Admin(admin_port)
        for tok in (env_tok, file_tok, inline_tok):
            st = a.get("/stats", token=tok)[0]
            assert st == (200 if tok == expected else 401), (env, with_file, tok, st)
        sy.stop()


def test_admin_tls(switchyard, dovecot, certs):
    admin_port = free_port()
    extra = f"""[tls.certificate.local]
cert = "{certs.localhost.cert}"
key = "{certs.localhost.key}"
"""
    cfg = make_config({"imap": free_port()}, {"dovecot": dovecot.imap}, admin_port,
                      admin={"tls": "implicit", "allow_plaintext": None}, extra=extra)
    switchyard(cfg)
    a = Admin(admin_port, tls_ctx=certs.client_context())
    assert a.get("/livez", token=None)[:3:2] == (200, "ok\n")
    assert a.get("/stats")[0] == 200
    # Plain HTTP on the TLS port gets no HTTP answer.
    s = connect(admin_port)
    s.sendall(b"GET /livez HTTP/1.1\r\n\r\n")
    data, _ = expect_closed(s)
    assert not data.startswith(b"HTTP/"), data


# --- destinations ------------------------------------------------------------------------------------

def test_destinations_and_reset(switchyard, dovecot):
    dead = free_port()
    ports = {"imap": free_port()}
    admin_port = free_port()
    extra = """[cluster.pool]
template = "dovecot"
nodes = ["dovecot", "dead"]
"""
    sy = switchyard(make_config(ports, {"dovecot": dovecot.imap, "dead": dead}, admin_port, default="dead",
                                server={"host_down_threshold": 2, "backend_connect_retries": 0}, extra=extra))
    a = Admin(admin_port)
    for _ in range(2):
        c = Imap(ports["imap"])
        assert b" NO " in c.login(*ALICE)
        c.close()
    lst = a.json("GET", "/destinations")["destinations"]
    by = {d["destination"]: d for d in lst}
    assert by["dead"]["down"] is True and by["dead"]["consecutive_failures"] == 2
    assert by["dovecot"]["down"] is False and by["dovecot"]["consecutive_failures"] == 0
    pool = by["pool"]
    assert pool["cluster"] is True and pool["template"] == "dovecot"
    assert [m["destination"] for m in pool["members"]] == ["dovecot", "dead"]
    assert pool["down"] is False  # one member is up

    st, _, body = a.post("/destinations/reset?destination=dead")
    assert (st, body) == (200, "ok\n"), body
    by = {d["destination"]: d for d in a.json("GET", "/destinations")["destinations"]}
    assert by["dead"]["down"] is False and by["dead"]["consecutive_failures"] == 0
    assert a.post("/destinations/reset?destination=nosuch")[0] == 404
    assert a.post("/destinations/reset")[0] == 400
    assert a.post("/destinations/reset?destination=")[0] == 400
    assert a.post("/destinations/reset?destination=pool")[0] == 200


# --- connections -------------------------------------------------------------------------------------

def test_kick_closes_bridged_sessions(proxy):
    port = proxy.ports["imap"]
    alice1, alice2, bob = login_ok(port), login_ok(port), login_ok(port, BOB)
    pre = Imap(port)  # not logged in: never kicked
    mark = proxy.log_mark()
    st, _, body = proxy.admin.post("/connections/kick?identifier=alice%40example.com")
    assert (st, body) == (200, "kicked 2\n")
    for c in (alice1, alice2):
        expect_closed(c.sock)
    proxy.wait_log(r"sessions kicked identifier=alice@example.com sessions=2", since=mark)
    # Bob and the pre-auth client are untouched.
    assert b" OK " in bob.command("NOOP")[0]
    assert b" OK " in pre.command("NOOP")[0]
    # The client reconnects and logs in again.
    again = login_ok(port)
    assert b" OK " in again.command("NOOP")[0]
    # Master-user suffixes are cut like a login's.
    st, _, body = proxy.admin.post("/connections/kick?identifier=alice@example.com%25master")
    assert (st, body) == (200, "kicked 1\n")
    expect_closed(again.sock)
    assert proxy.admin.post("/connections/kick?identifier=nobody@example.com")[2] == "kicked 0\n"
    assert proxy.admin.post("/connections/kick")[0] == 400
    assert proxy.admin.post("/connections/kick?identifier=a%20b")[0] == 400
    for c in (bob, pre):
        c.close()


def test_delay_holds_logins(proxy):
    a = proxy.admin
    port = proxy.ports["imap"]
    assert a.post("/connections/delay?identifier=alice@example.com&seconds=121")[0] == 400
    assert a.post("/connections/delay?identifier=alice@example.com")[0] == 400
    assert a.post("/connections/delay?seconds=5")[0] == 400
    assert a.post("/connections/delay?identifier=alice@example.com&seconds=x")[0] == 400
    st, _, body = a.post("/connections/delay?identifier=alice@example.com&seconds=2")
    assert (st, body) == (200, "ok\n"), body

    c = Imap(port)
    t0 = time.monotonic()
    assert b" OK " in c.login(*ALICE)
    held = time.monotonic() - t0
    assert held >= 1.5, held
    # Others are not held.
    c2 = Imap(port)
    t0 = time.monotonic()
    assert b" OK " in c2.login(*BOB)
    assert time.monotonic() - t0 < 1.5
    # seconds=0 lifts a hold at once.
    assert a.post("/connections/delay?identifier=carol@example.com&seconds=60")[0] == 200
    assert a.post("/connections/delay?identifier=carol@example.com&seconds=0")[0] == 200
    c3 = Imap(port)
    t0 = time.monotonic()
    assert b" OK " in c3.login(*CAROL)
    assert time.monotonic() - t0 < 1.5
    for x in (c, c2, c3):
        x.close()


# --- reload --------------------------------------------------------------------------------------------

def configmap_publish(cmdir, name, content, stamp):
    """Publish `content` the way the kubelet updates a ConfigMap volume: a
    new `..<timestamp>` directory, a temporary symlink to it renamed over
    `..data`, the old directory removed; `<name>` -> `..data/<name>` exists
    from the first publication on."""
    ts_dir = os.path.join(cmdir, stamp)
    os.mkdir(ts_dir)
    with open(os.path.join(ts_dir, name), "w") as f:
        f.write(content)
    data = os.path.join(cmdir, "..data")
    old = os.readlink(data) if os.path.islink(data) else None
    tmp = os.path.join(cmdir, "..data_tmp")
    os.symlink(stamp, tmp)
    os.rename(tmp, data)
    link = os.path.join(cmdir, name)
    if not os.path.islink(link):
        os.symlink(os.path.join("..data", name), link)
    if old:
        shutil.rmtree(os.path.join(cmdir, old))


def test_reload_configmap_keeps_idle_sessions(switchyard, make_dovecot):
    """50 IMAP IDLE sessions stay up through a ConfigMap-style update that
    adds a destination and a listener, a SIGHUP and an API reload, and an
    invalid update that is rejected while the old configuration serves."""
    users = {f"user{i:02d}@example.com": f"pass{i:02d}" for i in range(50)}
    dv = make_dovecot(users=users, listeners={"imap": ("plain",)},
                      extra_conf="protocol imap {\n  mail_max_userip_connections = 200\n}\n")
    ports = {"imap": free_port()}
    admin_port = free_port()
    v1 = make_config(ports, {"dovecot": dv.imap}, admin_port)
    sy = switchyard(v1, start=False)
    cmdir = os.path.join(sy.dir, "configmap")
    os.mkdir(cmdir)
    configmap_publish(cmdir, "switchyard.toml", v1, "..2026_11_21_12_00_00.123")
    sy.start(args=[os.path.join(cmdir, "switchyard.toml")])
    a = Admin(admin_port)

    idlers = []
    for user, pw in users.items():
        c = login_ok(ports["imap"], (user, pw))
        c.idle()
        idlers.append(c)

    # 1. The kubelet swaps in v2: a new destination and a new listener.
    ports2 = dict(ports, imap2=free_port())
    v2 = make_config(ports2, {"dovecot": dv.imap, "second": dv.imap}, admin_port)
    mark = sy.log_mark()
    configmap_publish(cmdir, "switchyard.toml", v2, "..2026_11_21_12_01_00.456")
    sy.wait_log(r'configuration reloaded trigger="file change"', since=mark)
    assert "second" in {d["destination"] for d in a.json("GET", "/destinations")["destinations"]}
    c = login_ok(ports2["imap2"], ("user00@example.com", "pass00"))
    c.close()

    # 2. SIGHUP and the API reload the same content (no change needed).
    mark = sy.log_mark()
    sy.send_signal(signal.SIGHUP)
    sy.wait_log(r"configuration reloaded trigger=SIGHUP", since=mark)
    body = a.json("POST", "/config/reload")
    assert body["reloaded"] is True and body["listeners"] == 2 and body["destinations"] == 2

    # 3. An invalid update: rejected, logged, counted; v2 keeps serving.
    before = a.metrics().get("switchyard_config_reloads_total", result="error")
    bad = v2.replace('default_destination = "dovecot"', 'default_destination = "nosuch"')
    mark = sy.log_mark()
    configmap_publish(cmdir, "switchyard.toml", bad, "..2026_11_21_12_02_00.789")
    sy.wait_log(r'configuration reload failed.*trigger="file change".*routing\.default_destination',
                since=mark)
    st, hdrs, body = a.post("/config/reload")
    assert st == 400 and hdrs["content-type"].startswith("text/plain"), (st, body)
    assert body.startswith("reload failed: ") and "routing.default_destination" in body, body
    assert a.metrics().get("switchyard_config_reloads_total", result="error") == before + 2
    c = login_ok(ports2["imap2"], ("user01@example.com", "pass01"))
    c.close()
    assert "second" in {d["destination"] for d in a.json("GET", "/destinations")["destinations"]}

    # Every IDLE session is still there and answers.
    for c in idlers:
        line = c.done()
        assert b" OK " in line, line
        line, _ = c.command("NOOP")
        assert b" OK " in line, line
        c.close()
    assert a.get("/readyz", token=None)[0] == 200


def test_reload_adds_and_removes_listeners(proxy, dovecot):
    """API reload binds a new listener; a SIGHUP reload that removes it stops
    accepting there while its established session continues."""
    a = proxy.admin
    old_ports = dict(proxy.ports)
    new_ports = dict(old_ports, extra=free_port())
    admin_port = a.port
    cfg2 = make_config(new_ports, {"dovecot": dovecot.imap}, admin_port,
                       admin={"lockout_threshold": 3, "lockout_duration": "2s"})
    proxy.write_config(cfg2)
    body = a.json("POST", "/config/reload")
    assert body["reloaded"] is True and body["listeners"] == 2
    on_extra = login_ok(new_ports["extra"])
    m = a.metrics()
    assert m.get("switchyard_connections_accepted_total", listener="extra", protocol="imap") == 1
    assert m.get("switchyard_config_reloads_total", result="success") >= 1

    # Remove it again with SIGHUP.
    cfg3 = make_config(old_ports, {"dovecot": dovecot.imap}, admin_port,
                       admin={"lockout_threshold": 3, "lockout_duration": "2s"})
    proxy.write_config(cfg3)
    mark = proxy.log_mark()
    proxy.send_signal(signal.SIGHUP)
    proxy.wait_log(r"configuration reloaded trigger=SIGHUP", since=mark)
    assert closed_or_refused(new_ports["extra"])
    # The session accepted there goes on.
    assert b" OK " in on_extra.command("NOOP")[0]
    on_extra.close()
    # The remaining listener still works.
    login_ok(old_ports["imap"]).close()

    # An invalid config through the API: 400 with the key, old config kept.
    proxy.write_config(cfg3.replace('tls = "plain"', 'tls = "sometimes"', 1))
    mark = proxy.log_mark()
    st, _, body = a.post("/config/reload")
    assert st == 400, body
    assert body.startswith("reload failed: ") and "listener.imap.tls" in body, body
    proxy.wait_log(r"configuration reload failed.*listener\.imap\.tls", since=mark)
    login_ok(old_ports["imap"]).close()


def test_reload_bind_conflict_keeps_config(proxy, dovecot):
    """A new listener whose port is taken fails the whole reload."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        cfg = make_config(dict(proxy.ports, extra=port), {"dovecot": dovecot.imap, "more": dovecot.imap},
                          proxy.admin.port)
        proxy.write_config(cfg)
        st, _, body = proxy.admin.post("/config/reload")
        assert st == 400 and "listener.extra.bind" in body, body
        assert "more" not in {d["destination"] for d in proxy.admin.json("GET", "/destinations")["destinations"]}
    finally:
        busy.close()


# --- mappings ------------------------------------------------------------------------------------------

@pytest.fixture
def cutover(switchyard, dovecot, make_dovecot):
    """Two backends (old = the shared Dovecot, new = a private one with the
    same users) and a file mapping: alice -> old."""
    new = make_dovecot(listeners={"imap": ("plain",)})
    ports = {"imap": free_port()}
    admin_port = free_port()
    extra = """[mapping]
source = "file"
normalize = "lowercase"
[mapping.file]
path = "mappings.tsv"
"""
    cfg = make_config(ports, {"old": dovecot.imap, "new": new.imap}, admin_port, default="old", extra=extra)
    sy = switchyard(cfg, files={"mappings.tsv": "alice@example.com old\n"})
    sy.ports = ports
    sy.admin = Admin(admin_port)
    sy.old, sy.new = dovecot, new
    return sy


def landed_on(dv, mark, user="alice@example.com"):
    dv.wait_log(rf"imap-login: Info: Login: user=<{re.escape(user)}>", since=mark)


def test_mapping_cutover(cutover):
    sy, a = cutover, cutover.admin
    e = a.json("GET", "/mappings?identifier=Alice@Example.com")
    assert e["identifier"] == "Alice@Example.com" and e["normalized"] == "alice@example.com"
    assert e["destination"] == "old" and e["routed_to_default"] is False
    e = a.json("GET", "/mappings?identifier=bob@example.com")
    assert e["destination"] == "old" and e["routed_to_default"] is True

    mark = sy.old.log_mark()
    session = login_ok(sy.ports["imap"])
    landed_on(sy.old, mark)

    # The cutover recipe: PUT the new mapping, then kick.
    st, _, body = a.request("PUT", "/mappings?identifier=alice@example.com&destination=new")
    assert (st, body) == (200, "ok\n")
    with open(sy.path("mappings.tsv")) as f:
        assert re.search(r"^alice@example\.com\s+new$", f.read(), re.M)
    e = a.json("GET", "/mappings?identifier=alice@example.com")
    assert e["destination"] == "new" and e["routed_to_default"] is False
    st, _, body = a.post("/connections/kick?identifier=alice@example.com")
    assert (st, body) == (200, "kicked 1\n")
    expect_closed(session.sock)
    mark = sy.new.log_mark()
    again = login_ok(sy.ports["imap"])
    landed_on(sy.new, mark)
    again.close()

    # Errors and the other verbs.
    st, _, body = a.request("PUT", "/mappings?identifier=alice@example.com&destination=nosuch")
    assert (st, body) == (400, "unknown destination: nosuch\n")
    assert a.request("PUT", "/mappings?identifier=alice@example.com")[0] == 400
    assert a.get("/mappings")[0] == 400
    st, _, body = a.request("DELETE", "/mappings?identifier=alice@example.com")
    assert (st, body) == (200, "removed\n")
    st, _, body = a.request("DELETE", "/mappings?identifier=alice@example.com")
    assert (st, body) == (200, "absent\n")
    assert a.post("/cache/invalidate?identifier=alice@example.com")[:3:2] == (200, "ok\n")
    assert a.post("/cache/invalidate")[:3:2] == (200, "ok\n")
    stats = a.json("GET", "/stats")
    assert stats["cache_misses"] >= 1


def test_mappings_reload(cutover):
    sy, a = cutover, cutover.admin
    sy.write_file("mappings.tsv", "alice@example.com new\nbob@example.com new\n")
    assert a.post("/mappings/reload")[:3:2] == (200, "reloaded\n")
    assert a.json("GET", "/mappings?identifier=bob@example.com")["destination"] == "new"
    # All or nothing: an undeclared destination keeps the old table.
    sy.write_file("mappings.tsv", "alice@example.com old\nbob@example.com nosuch\n")
    st, _, body = a.post("/mappings/reload")
    assert st == 500 and body.startswith("reload failed: ") and "nosuch" in body, (st, body)
    assert a.json("GET", "/mappings?identifier=alice@example.com")["destination"] == "new"


# --- compatibility with the reference system's management API -----------------------------------------

def curl(port, method, path, token=TOKEN):
    """A request made with curl, as an operator's script would: (status, content type, body)."""
    import subprocess
    cmd = ["curl", "-s", "-g", "-X", method, "-o", "-", "-w", "\n%{http_code} %{content_type}",
           f"http://127.0.0.1:{port}{path}"]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    body, _, tail = p.stdout.rpartition("\n")  # -w starts its line with a newline
    status, _, ctype = tail.partition(" ")
    return int(status), ctype, body


def test_trailing_slash_is_the_same_path(cutover):
    """Every path answers the same with a trailing slash (or several), as in
    the reference; `/` itself is not an endpoint."""
    port = cutover.admin.port
    cases = [
        ("GET", "/livez/", None, 200, "ok\n"),
        ("GET", "/healthz/", None, 200, "ok\n"),
        ("GET", "/readyz/", None, 200, "ok\n"),
        ("GET", "/metrics/", None, 200, None),
        ("GET", "/stats/", TOKEN, 200, None),
        ("GET", "/stats//", TOKEN, 200, None),
        ("GET", "/destinations/", TOKEN, 200, None),
        ("POST", "/destinations/reset/?destination=old", TOKEN, 200, "ok\n"),
        ("GET", "/mappings/?identifier=alice@example.com", TOKEN, 200, None),
        ("PUT", "/mappings/?identifier=dave@example.com&destination=new", TOKEN, 200, "ok\n"),
        ("DELETE", "/mappings/?identifier=dave@example.com", TOKEN, 200, "removed\n"),
        ("POST", "/mappings/reload/", TOKEN, 200, "reloaded\n"),
        ("POST", "/cache/invalidate/?identifier=alice@example.com", TOKEN, 200, "ok\n"),
        ("POST", "/cache/invalidate/", TOKEN, 200, "ok\n"),
        ("POST", "/connections/kick/?identifier=nobody@example.com", TOKEN, 200, "kicked 0\n"),
        ("POST", "/connections/delay/?identifier=nobody@example.com&seconds=0", TOKEN, 200, "ok\n"),
        ("POST", "/config/reload/", TOKEN, 200, None),
        ("GET", "/cache/invalidate/", TOKEN, 405, None),
        ("GET", "/stats/", None, 401, None),
        ("GET", "/", TOKEN, 404, None),
        ("GET", "/nope/", TOKEN, 404, None),
    ]
    for method, path, token, want_status, want_body in cases:
        st, ctype, body = curl(port, method, path, token)
        assert st == want_status, (method, path, st, body)
        if want_body is not None:
            assert body == want_body, (method, path, body)
    # The JSON ones are the JSON of the path without the slash.
    st, _, body = curl(port, "GET", "/destinations/")
    assert [d["destination"] for d in json.loads(body)["destinations"]] == ["old", "new"]
    st, _, body = curl(port, "GET", "/mappings/?identifier=alice@example.com")
    assert json.loads(body)["destination"] == "old"


def test_reference_response_shapes(cutover):
    """The bodies a script written for the reference system parses: JSON
    objects with the reference's fields (ours may add more), and the short
    text replies of the write endpoints."""
    sy, port = cutover, cutover.admin.port
    st, ctype, body = curl(port, "GET", "/stats")
    assert st == 200 and ctype.startswith("application/json")
    stats = json.loads(body)
    for k in ("cache_hits", "cache_misses", "cache_entries", "active_connections"):
        assert isinstance(stats[k], int) and not isinstance(stats[k], bool), (k, stats)
    assert isinstance(stats["hit_rate_pct"], (int, float))

    st, ctype, body = curl(port, "GET", "/destinations")
    assert st == 200 and ctype.startswith("application/json")
    top = json.loads(body)
    assert isinstance(top, dict) and isinstance(top["destinations"], list), top
    for d in top["destinations"]:
        assert isinstance(d["destination"], str)
        assert isinstance(d["consecutive_failures"], int)
        assert isinstance(d["down"], bool)

    st, ctype, body = curl(port, "GET", "/mappings?identifier=Alice@Example.com")
    m = json.loads(body)
    assert {k: m[k] for k in ("identifier", "normalized", "destination", "routed_to_default", "cached")} == {
        "identifier": "Alice@Example.com", "normalized": "alice@example.com", "destination": "old",
        "routed_to_default": False, "cached": m["cached"]}

    text = [
        ("PUT", "/mappings?identifier=erin@example.com&destination=new", 200, "ok\n"),
        ("DELETE", "/mappings?identifier=erin@example.com", 200, "removed\n"),
        ("DELETE", "/mappings?identifier=erin@example.com", 200, "absent\n"),
        ("POST", "/destinations/reset?destination=new", 200, "ok\n"),
        ("POST", "/cache/invalidate?identifier=alice@example.com", 200, "ok\n"),
        ("POST", "/cache/invalidate", 200, "ok\n"),
        ("POST", "/mappings/reload", 200, "reloaded\n"),
        ("POST", "/connections/delay?identifier=erin@example.com&seconds=1", 200, "ok\n"),
        ("POST", "/connections/kick?identifier=erin@example.com", 200, "kicked 0\n"),
        ("GET", "/healthz", 200, "ok\n"),
    ]
    for method, path, want_status, want_body in text:
        st, ctype, body = curl(port, method, path)
        assert (st, body) == (want_status, want_body), (method, path, st, body)
        assert ctype.startswith("text/plain"), (method, path, ctype)
    # Errors keep the reference's status codes, with text bodies.
    for method, path, want_status in [
        ("PUT", "/mappings?identifier=erin@example.com&destination=ghost", 400),
        ("PUT", "/mappings?identifier=erin@example.com", 400),
        ("DELETE", "/mappings", 400),
        ("GET", "/mappings", 400),
        ("POST", "/destinations/reset?destination=ghost", 404),
        ("POST", "/destinations/reset", 400),
        ("POST", "/connections/kick", 400),
        ("POST", "/connections/delay?identifier=erin@example.com&seconds=abc", 400),
        ("PATCH", "/mappings", 405),
        ("POST", "/nope", 404),
    ]:
        st, ctype, body = curl(port, method, path)
        assert st == want_status, (method, path, st, body)
        assert ctype.startswith("text/plain"), (method, path, ctype, body)

    # /config/reload: JSON with "reloaded" on success, text on failure.
    st, ctype, body = curl(port, "POST", "/config/reload")
    assert st == 200 and ctype.startswith("application/json") and json.loads(body)["reloaded"] is True
    good = open(sy.config_path).read()
    sy.write_config(good.replace('default_destination = "old"', 'default_destination = "nope"'))
    st, ctype, body = curl(port, "POST", "/config/reload")
    assert st == 400 and ctype.startswith("text/plain"), (st, body)
    assert body.startswith("reload failed: ") and "routing.default_destination" in body, body
    sy.write_config(good)


def test_read_only_store_answers_501_text(proxy):
    """No [mapping]: the writes are not implemented (501), in text."""
    a = proxy.admin
    for method in ("PUT", "DELETE"):
        st, hdrs, body = a.request(method, "/mappings?identifier=alice@example.com&destination=dovecot")
        assert st == 501 and hdrs["content-type"].startswith("text/plain"), (method, st, body)
        assert body.endswith("\n") and body.strip(), body
