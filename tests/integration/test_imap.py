"""IMAP through Switchyard (src/proto/imap.c on the interactive framework)
against a real Dovecot, with real clients (imaplib, curl, raw sockets for the
wire-level cases).

One private Dovecot serves the whole module (module-scoped fixture): the
shared one lacks what these tests need, namely an implicit-TLS listener that
also takes a PROXY header (`imaps_haproxy`), the client port in the login log
line (`rport=`), and users whose password is a bearer token or contains
quotes and spaces. Switchyard instances are module-scoped too and shared by
the tests that use the same configuration (`sy_pool`); routing is by the
default destination only, so there is one Switchyard per (backend leg,
forwarding) combination, each with an implicit, a STARTTLS and a plain
listener.

Every client binds its own loopback source address (127.0.0.5 and up, one
per test) so that Dovecot's log line for a login can be told apart and the
address Dovecot saw can be checked.

Dovecot 2.3 log lines matched here (login_log_format_elements set below):
  imap-login: Info: Login: user=<u>, method=M, rip=IP, rport=PORT, lip=IP, mpid=N, TLS|secured, session=<..>
  auth: Info: ... Master user logging in as <user>
Switchyard's: `login listener=.. protocol=imap client=.. identifier=.. mechanism=.. destination=.. result=ok|failed|tempfail`.

Small fake IMAP backends (FakeImap) stand in where Dovecot cannot show the
point: a backend that does not advertise STARTTLS, one without SASL-IR and ID
(continuation replay, no ID sent), the exact ID attributes, and 16 KiB bearer
tokens: Dovecot 2.3's imap-login refuses a SASL response longer than 8 KiB of
base64 ("Authentication response too large" and a disconnect), so those tests
check the replayed token byte for byte at the fake instead.
"""

import base64
import imaplib
import itertools
import json
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
import time

import pytest

from harness import Dovecot, Switchyard, clients
from harness.clients import make_jwt
from harness.dovecot import DEFAULT_USERS
from harness.util import HarnessError, connect, expect_closed, free_port, wait_ports_listening

ALICE = ("alice@example.com", "alicepass")
BOB = ("bob@example.com", "bobpass")




DAVE = "dave@example.com"
DAVE_JWT = make_jwt({"email": DAVE, "sub": "1234"})
# A 16 KiB bearer token (a padding claim).
BIG_JWT = make_jwt({"email": DAVE, "pad": "P" * 12200})
assert 16384 <= len(BIG_JWT) < 17000, len(BIG_JWT)
# The largest kind of token Dovecot 2.3's imap-login still takes (< 8 KiB of base64 on the wire).
MID_JWT = make_jwt({"email": "erin@example.com", "pad": "M" * 3500})
QUOTE_USER = "quote@example.com"
QUOTE_PASS = 'p a"s\\s w'  # space, double quote, backslash
LOCKED_USER = "locked@example.com"  # nologin with a reason: Dovecot's own failure text

GENERIC_FAIL = b"NO [AUTHENTICATIONFAILED] Authentication failed."


# --- helpers ----------------------------------------------------------------------------------

def q(s):
    return json.dumps(s)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return q(v)


def toml_table(name, values):
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items() if v is not None)


_sources = itertools.count(5)


def next_source():
    """A loopback address no other test in this module uses."""
    n = next(_sources)
    return f"127.0.{n // 250}.{n % 250 + 2}" if n >= 250 else f"127.0.0.{n}"


def rx(s):
    return re.escape(s)


def login_re(user, ip, port=None, method=None):
    method = method or r"\S+"
    port = r"\d+" if port is None else str(port)
    return rf"imap-login: Info: Login: user=<{rx(user)}>, method={method}, rip={rx(ip)}, rport={port}, "


class Raw:
    """A line-oriented raw IMAP client over a socket (optionally TLS)."""

    def __init__(self, port, source=None, tls_ctx=None, greeting=True):
        self.source = source or next_source()
        self.sock = connect(port, source=self.source)
        self.client_port = self.sock.getsockname()[1]
        if tls_ctx is not None:
            self.sock = tls_ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.greeting = self.line() if greeting else None

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self, timeout=10.0):
        """One line with its CRLF; b'' on EOF."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return out + b"\n"

    def tagged(self, tag, timeout=10.0):
        """Lines up to and including the one tagged `tag` (stripped of CRLF)."""
        lines = []
        t = tag.encode() + b" "
        while True:
            l = self.line(timeout)
            if not l:
                raise HarnessError(f"EOF waiting for {tag!r}; got {lines!r}")
            lines.append(l.rstrip(b"\r\n"))
            if l.startswith(t):
                return lines

    def cmd(self, tag, text):
        self.send(f"{tag} {text}\r\n")
        return self.tagged(tag)

    def starttls(self, ctx, tag="tls"):
        r = self.cmd(tag, "STARTTLS")
        assert r[-1].startswith(f"{tag} OK".encode()), r
        assert self.buf == b""
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def closed(self, timeout=5.0):
        """Waits for EOF; returns (bytes received before it, elapsed)."""
        data, elapsed = expect_closed(self.sock, timeout)
        return self.buf + data, elapsed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def imap_client(leg, port, certs, source=None):
    """An imaplib session on a Switchyard listener of kind `leg` (implicit,
    starttls, plain), connected from `source`; returns (imap, source, client port)."""
    source = source or next_source()
    sock = connect(port, source=source)
    cport = sock.getsockname()[1]
    if leg == "implicit":
        sock = certs.client_context().wrap_socket(sock, server_hostname="localhost")
    m = clients.imap_on(sock)
    if leg == "starttls":
        m.starttls(ssl_context=certs.client_context())
    return m, source, cport


def caps_of(line):
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", line)
    assert m, line
    return m.group(1).split()


# --- a fake IMAP backend ------------------------------------------------------------------------

class FakeImap:
    """A tiny IMAP server for what Dovecot cannot show: it greets with the
    given capabilities, answers CAPABILITY and ID, and takes AUTHENTICATE
    (SASL-IR or a continuation); the login succeeds when `accept(mech,
    message)` says so. Each connection is recorded in `conns` as
    {"lines": [every line received], "auths": [(mech, decoded message)]}."""

    def __init__(self, caps="IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER",
                 accept=lambda mech, msg: True):
        self.conns = []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.request.settimeout(20)
                rec = {"lines": [], "auths": []}
                owner.conns.append(rec)
                w = self.wfile

                def readline():
                    line = self.rfile.readline(1 << 20)
                    rec["lines"].append(line)
                    return line

                w.write(f"* OK [CAPABILITY {caps}] fake ready\r\n".encode())
                try:
                    while True:
                        line = readline()
                        if not line:
                            return
                        parts = line.rstrip(b"\r\n").split(b" ")
                        if len(parts) < 2:
                            w.write(b"* BAD what\r\n")
                            continue
                        tag, cmd = parts[0], parts[1].upper()
                        if cmd == b"CAPABILITY":
                            w.write(f"* CAPABILITY {caps}\r\n".encode() + tag + b" OK done\r\n")
                        elif cmd == b"ID":
                            w.write(b"* ID NIL\r\n" + tag + b" OK ID done\r\n")
                        elif cmd == b"AUTHENTICATE":
                            mech = parts[2].decode()
                            if len(parts) > 3:
                                resp = parts[3]
                            else:
                                w.write(b"+ \r\n")
                                resp = readline().rstrip(b"\r\n")
                            msg = base64.b64decode(resp)
                            rec["auths"].append((mech, msg))
                            if accept(mech, msg):
                                w.write(tag + b" OK [CAPABILITY IMAP4rev1 FAKE-AFTER-LOGIN] Logged in\r\n")
                            else:
                                w.write(tag + b" NO [AUTHENTICATIONFAILED] fake says no\r\n")
                        elif cmd == b"LOGOUT":
                            w.write(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                            return
                        else:
                            w.write(tag + b" OK " + cmd + b" done\r\n")
                except OSError:
                    return

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- fixtures ------------------------------------------------------------------------------------

class ImapDovecot(Dovecot):
    """The module's Dovecot: imap listeners only, plus an implicit-TLS
    listener with haproxy = yes, rport in the login log line, and users with
    extra fields (nologin with a reason)."""

    def __init__(self, certs):
        self.imaps_haproxy = free_port()
        users = dict(DEFAULT_USERS)
        users.update({DAVE: DAVE_JWT, "erin@example.com": MID_JWT, QUOTE_USER: QUOTE_PASS,
                      LOCKED_USER: "lockedpass"})
        extra = f"""
login_log_format_elements = user=<%u> method=%m rip=%r rport=%{{rport}} lip=%l mpid=%e %c session=<%{{session}}>
service imap-login {{
  inet_listener imaps_haproxy {{
    address = 127.0.0.1
    port = {self.imaps_haproxy}
    ssl = yes
    haproxy = yes
  }}
}}
"""
        super().__init__(certs, users=users, listeners={"imap": ("plain", "tls", "haproxy")}, extra_conf=extra)

    def _write_files(self):
        super()._write_files()
        # passwd-file extra fields: a user whose correct password still fails
        # with Dovecot's own reason text.
        path = f"{self.dir}/users"
        with open(path) as f:
            lines = f.read().splitlines()
        with open(path, "w") as f:
            for l in lines:
                if l.startswith(LOCKED_USER + ":"):
                    l += "nologin reason=Mailbox_is_being_migrated"
                f.write(l + "\n")

    def start(self, *a, **kw):
        super().start(*a, **kw)
        wait_ports_listening([self.imaps_haproxy], 10, "dovecot imaps_haproxy")
        return self


@pytest.fixture(scope="module")
def dv(certs):
    d = ImapDovecot(certs)
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="module")
def fakes():
    """Fake IMAP backends: `sasl-ir` (SASL-IR and ID), `no-sasl-ir` (neither),
    `plain-caps` (no STARTTLS, for a STARTTLS leg). They accept any login
    whose SASL message carries a known password or token."""
    def accept(mech, msg):
        return any(t.encode() in msg for t in (BIG_JWT, DAVE_JWT, ALICE[1]))

    out = {"sasl-ir": FakeImap(accept=accept),
           "no-sasl-ir": FakeImap(caps="IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER", accept=accept),
           "plain-caps": FakeImap(caps="IMAP4rev1 SASL-IR AUTH=PLAIN", accept=accept)}
    yield out
    for f in out.values():
        f.stop()


class SyPool:
    """Switchyards shared by the tests that ask for the same key; stopped at
    the end of the module (each must exit 0)."""

    def __init__(self):
        self.instances = {}

    def get(self, key, config, ports):
        sy = self.instances.get(key)
        if sy is None:
            sy = Switchyard(config, name="switchyard-imap")
            sy.ports = ports
            self.instances[key] = sy
            sy.start(timeout=10)
        return sy


@pytest.fixture(scope="module")
def sy_pool():
    pool = SyPool()
    yield pool
    errors = []
    for sy in pool.instances.values():
        try:
            if sy.running():
                sy.stop(check=True)
        except AssertionError as e:
            errors.append(str(e))
        finally:
            sy.cleanup()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture(autouse=True)
def _logs_on_failure(request, dv, sy_pool):
    """On a failure, print what Dovecot and every pooled Switchyard logged during the test."""
    dmark = dv.log_mark()
    smarks = {k: s.log_mark() for k, s in sy_pool.instances.items()}
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and not rep.failed:
        return
    print(f"--- dovecot log during the test ---\n{dv.log_text(dmark)[-15000:]}")
    for k, s in sy_pool.instances.items():
        lines = s.log_lines()[smarks.get(k, 0):]
        if lines:
            print(f"--- switchyard {k} ({s.config_path}) ---\n" + "\n".join(lines)[-15000:])


def imap_config(certs, backend_port, *, backend_tls="plain", forwarding="none", listeners=None,
                caps=None, destination=None, server=None, pin=True):
    """Switchyard config text: the listeners {name: (port, tls, extra)} and one
    default destination `backend` on 127.0.0.1:backend_port (imap only)."""
    server = {"log_level": "info", "shutdown_grace": "2s", "host_down_threshold": 0, **(server or {})}
    dest = {"host": "127.0.0.1", "forwarding": forwarding}
    if backend_tls != "plain":
        dest["tls_server_name"] = "localhost"
        if pin:
            dest["tls_pinned_cert_sha256"] = certs.localhost.sha256
    else:
        dest["allow_plaintext_auth"] = True
    dest.update(destination or {})
    parts = [
        toml_table("server", server),
        toml_table("tls.certificate.local", {"cert": certs.localhost.cert, "key": certs.localhost.key,
                                             "default": True}),
        toml_table("destination.backend", dest),
        toml_table("destination.backend.protocol.imap", {"port": backend_port, "tls": backend_tls}),
        toml_table("routing", {"default_destination": "backend"}),
    ]
    if caps:
        parts.append(toml_table("capabilities.imap", caps))
    for name, (port, tls, extra) in listeners.items():
        parts.append(toml_table(f"listener.{name}", {"protocol": "imap", "bind": [f"127.0.0.1:{port}"],
                                                     "tls": tls, **(extra or {})}))
    return "\n".join(parts)


def three_listeners(extra=None):
    return {"implicit": (free_port(), "implicit", extra), "starttls": (free_port(), "starttls", extra),
            "plain": (free_port(), "plain", extra)}


def pooled(sy_pool, key, certs, backend_port, listeners, **kw):
    """A pooled Switchyard; `sy.ports[name]` gives each listener's port."""
    return sy_pool.get(key, imap_config(certs, backend_port, listeners=listeners, **kw),
                       {n: p for n, (p, _, _) in listeners.items()})


@pytest.fixture
def lax(sy_pool, dv, certs):
    """Plain backend leg to Dovecot, forwarding none, cleartext auth allowed
    everywhere: the config the wire-level tests use (listener `plain`)."""
    return pooled(sy_pool, "lax", certs, dv.imap, three_listeners(), backend_tls="plain", forwarding="none",
                  caps={"allow_plain_auth_without_tls": True})


@pytest.fixture
def strict(sy_pool, dv, certs):
    """STARTTLS backend leg with ID forwarding, default capabilities
    (cleartext auth needs TLS); listeners: starttls, implicit, `limited`
    (max_auth_attempts = 2) and `short` (preauth_timeout = 1s)."""
    listeners = {"starttls": (free_port(), "starttls", None), "implicit": (free_port(), "implicit", None),
                 "limited": (free_port(), "implicit", {"max_auth_attempts": 2}),
                 "short": (free_port(), "starttls", {"preauth_timeout": "1s"})}
    return pooled(sy_pool, "strict", certs, dv.imap, listeners, backend_tls="starttls", forwarding="xclient")


@pytest.fixture
def hidden(sy_pool, dv, certs):
    """Like lax, but the destination has hide_auth_errors."""
    return pooled(sy_pool, "hidden", certs, dv.imap, three_listeners(), backend_tls="plain",
                  forwarding="none", caps={"allow_plain_auth_without_tls": True},
                  destination={"hide_auth_errors": True})


def login_logged(sy, since, identifier, result="ok"):
    return sy.wait_log(rf"\blogin\b.*protocol=imap.*identifier={rx(identifier)}\b.*result={result}",
                       since=since)


# --- 1. the matrix ------------------------------------------------------------------------------

BACKEND_LEGS = ("implicit", "starttls", "plain")
FORWARDINGS = ("proxy", "xclient", "none")
CLIENT_LEGS = ("implicit", "starttls", "plain")


def matrix_backend_port(dv, leg, fwd):
    if fwd == "proxy":
        return dv.imaps_haproxy if leg == "implicit" else dv.imap_haproxy
    return dv.imaps if leg == "implicit" else dv.imap


@pytest.mark.parametrize("client_leg", CLIENT_LEGS)
@pytest.mark.parametrize("forwarding", FORWARDINGS)
@pytest.mark.parametrize("backend_leg", BACKEND_LEGS)
def test_login_matrix(dv, certs, sy_pool, backend_leg, forwarding, client_leg):
    """LOGIN and SELECT INBOX through the bridge, for every client leg x
    backend leg x forwarding; Dovecot logs the client's address and port for
    proxy and xclient forwarding, the proxy's for none; a TLS backend leg
    shows as TLS in Dovecot's log (STARTTLS really happened)."""
    sy = pooled(sy_pool, f"matrix-{backend_leg}-{forwarding}", certs,
                matrix_backend_port(dv, backend_leg, forwarding), three_listeners(),
                backend_tls=backend_leg, forwarding=forwarding, caps={"allow_plain_auth_without_tls": True})
    dmark, smark = dv.log_mark(), sy.log_mark()
    m, source, cport = imap_client(client_leg, sy.ports[client_leg], certs)
    typ, data = m.login(*ALICE)
    assert typ == "OK", data
    # The tagged OK is Dovecot's, with its post-login capabilities.
    assert b"[CAPABILITY " in data[0] and b"Logged in" in data[0], data
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    m.logout()
    login_logged(sy, smark, ALICE[0])
    if forwarding == "none":
        line = dv.wait_log(login_re(ALICE[0], "127.0.0.1") + r".*", since=dmark).group(0)
        assert source not in dv.log_text(dmark)
    else:
        line = dv.wait_log(login_re(ALICE[0], source, cport) + r".*", since=dmark).group(0)
    if backend_leg != "plain":
        assert re.search(r", TLS[,:]", line), line
    if forwarding == "xclient":
        # The ID's x-session-id becomes Dovecot's session id.
        assert re.search(r"session=<[0-9a-f]{16}>", line), line


@pytest.mark.parametrize("client_leg", CLIENT_LEGS)
def test_curl(dv, certs, sy_pool, client_leg):
    """curl (imaps://, imap:// with --ssl-reqd, cleartext imap://) selects
    INBOX and searches it through the proxy; the backend leg is STARTTLS with
    ID forwarding, so Dovecot logs curl's address."""
    sy = pooled(sy_pool, "matrix-starttls-xclient", certs, dv.imap, three_listeners(),
                backend_tls="starttls", forwarding="xclient", caps={"allow_plain_auth_without_tls": True})
    dmark = dv.log_mark()
    source = next_source()
    scheme = "imaps" if client_leg == "implicit" else "imap"
    cmd = ["curl", "-sS", "--max-time", "10", "--interface", source, "--cacert", certs.ca_cert,
           "-u", f"{BOB[0]}:{BOB[1]}", f"{scheme}://localhost:{sy.ports[client_leg]}/INBOX?ALL"]
    if client_leg == "starttls":
        cmd.insert(1, "--ssl-reqd")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("* SEARCH"), p.stdout
    dv.wait_log(login_re(BOB[0], source), since=dmark)


# --- 2. failures, hide_auth_errors, retry, max_auth_attempts ---------------------------------------

def test_wrong_password_then_retry(dv, lax):
    """Dovecot's failure reply reaches the client under the client's tag; the
    client retries on the same connection and gets in."""
    c = Raw(lax.ports["plain"])
    r = c.cmd("a1", 'LOGIN "alice@example.com" "wrong"')
    assert r[-1] == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.", r
    r = c.cmd("a2", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"a2 OK [CAPABILITY "), r
    assert c.cmd("a3", "SELECT INBOX")[-1].startswith(b"a3 OK"), "select"
    c.close()


def test_backend_reason_passed_through(dv, lax):
    """A backend failure text other than the generic one (Dovecot's nologin
    reason) goes to the client verbatim."""
    c = Raw(lax.ports["plain"])
    r = c.cmd("x", f'LOGIN "{LOCKED_USER}" "lockedpass"')
    assert r[-1].startswith(b"x NO "), r
    assert b"Mailbox_is_being_migrated" in r[-1], r
    c.close()


def test_hide_auth_errors(dv, hidden):
    """hide_auth_errors: exactly the generic reply, whatever Dovecot said; a
    retry on the same connection still works."""
    c = Raw(hidden.ports["plain"])
    assert c.cmd("h1", f'LOGIN "{LOCKED_USER}" "lockedpass"')[-1] == b"h1 " + GENERIC_FAIL
    assert c.cmd("h2", 'LOGIN "alice@example.com" "nope"')[-1] == b"h2 " + GENERIC_FAIL
    r = c.cmd("h3", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"h3 OK"), r
    c.close()


def test_max_auth_attempts(dv, strict, certs):
    """max_auth_attempts = 2: the second failure is answered, then BYE and close."""
    c = Raw(strict.ports["limited"], tls_ctx=certs.client_context())
    assert c.cmd("m1", 'LOGIN "alice@example.com" "bad1"')[-1].startswith(b"m1 NO [AUTHENTICATIONFAILED]")
    assert c.cmd("m2", 'LOGIN "alice@example.com" "bad2"')[-1].startswith(b"m2 NO [AUTHENTICATIONFAILED]")
    rest, _ = c.closed()
    assert rest.startswith(b"* BYE "), rest
    c.close()


# --- 3. authentication forms ---------------------------------------------------------------------

def sasl_plain(user, pw, authz=""):
    return base64.b64encode(f"{authz}\0{user}\0{pw}".encode()).decode()


def assert_logged_in(c, tag, reply):
    assert reply[-1].startswith(f"{tag} OK".encode()), reply
    assert c.cmd("s1", "SELECT INBOX")[-1].startswith(b"s1 OK")
    r = c.cmd("lo", "LOGOUT")
    assert r[-1].startswith(b"lo OK"), r


def test_authenticate_plain_sasl_ir(dv, lax):
    dmark, smark = dv.log_mark(), lax.log_mark()
    c = Raw(lax.ports["plain"])
    assert_logged_in(c, "p1", c.cmd("p1", "AUTHENTICATE PLAIN " + sasl_plain(*ALICE)))
    login_logged(lax, smark, ALICE[0])
    dv.wait_log(login_re(ALICE[0], "127.0.0.1", method="PLAIN"), since=dmark)


def test_authenticate_plain_continuation(dv, lax):
    """imaplib sends AUTHENTICATE without an initial response and answers the continuation."""
    m = clients.imap_on(connect(lax.ports["plain"], source=next_source()))
    typ, data = m.authenticate("PLAIN", lambda _: f"\0{BOB[0]}\0{BOB[1]}".encode())
    assert typ == "OK", data
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_authenticate_plain_empty_continuation_then_cancel(dv, lax):
    """'*' cancels an AUTHENTICATE; the connection stays usable."""
    c = Raw(lax.ports["plain"])
    c.send("c1 AUTHENTICATE PLAIN\r\n")
    assert c.line().startswith(b"+"), "continuation"
    c.send("*\r\n")
    r = c.tagged("c1")
    assert r[-1].startswith(b"c1 BAD"), r
    assert_logged_in(c, "c2", c.cmd("c2", "AUTHENTICATE PLAIN " + sasl_plain(*ALICE)))


def test_authenticate_login(dv, lax):
    """AUTHENTICATE LOGIN is never advertised but accepted (replayed as PLAIN)."""
    dmark = dv.log_mark()
    c = Raw(lax.ports["plain"])
    assert b"AUTH=LOGIN" not in c.greeting
    c.send("l1 AUTHENTICATE LOGIN\r\n")
    assert c.line().rstrip() == b"+ VXNlcm5hbWU6"
    c.send(base64.b64encode(ALICE[0].encode()) + b"\r\n")
    assert c.line().rstrip() == b"+ UGFzc3dvcmQ6"
    c.send(base64.b64encode(ALICE[1].encode()) + b"\r\n")
    assert_logged_in(c, "l1", c.tagged("l1"))
    dv.wait_log(login_re(ALICE[0], "127.0.0.1", method="PLAIN"), since=dmark)


def test_login_quoted_specials(dv, lax):
    """Quoted strings with spaces, an escaped quote and an escaped backslash."""
    c = Raw(lax.ports["plain"])
    quoted = '"' + QUOTE_PASS.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert_logged_in(c, "q1", c.cmd("q1", f'LOGIN "{QUOTE_USER}" {quoted}'))


def test_login_imaplib_quoting(dv, lax):
    """imaplib's own quoting of the same password."""
    m = clients.imap_on(connect(lax.ports["plain"], source=next_source()))
    assert m.login(QUOTE_USER, QUOTE_PASS)[0] == "OK"
    m.logout()


def test_login_synchronizing_literals(dv, lax):
    """{n} literals: the proxy sends a continuation for each before the client sends the bytes."""
    c = Raw(lax.ports["plain"])
    pw = QUOTE_PASS.encode()
    c.send(f"k1 LOGIN {{{len(QUOTE_USER)}}}\r\n")
    assert c.line().startswith(b"+ "), "continuation for the user literal"
    c.send(f"{QUOTE_USER} {{{len(pw)}}}\r\n")
    assert c.line().startswith(b"+ "), "continuation for the password literal"
    c.send(pw + b"\r\n")
    assert_logged_in(c, "k1", c.tagged("k1"))


def test_login_literal_plus(dv, lax):
    """{n+} literals in one packet: no continuation, straight to the login."""
    c = Raw(lax.ports["plain"])
    pw = QUOTE_PASS.encode()
    c.send(f"k2 LOGIN {{{len(QUOTE_USER)}+}}\r\n{QUOTE_USER} {{{len(pw)}+}}\r\n".encode() + pw + b"\r\n")
    r = c.tagged("k2")
    assert not any(l.startswith(b"+") for l in r), r
    assert_logged_in(c, "k2", r)


def test_login_mixed_literal_and_quoted(dv, lax):
    c = Raw(lax.ports["plain"])
    c.send(f'k3 LOGIN {{{len(ALICE[0])}+}}\r\n{ALICE[0]} "{ALICE[1]}"\r\n')
    assert_logged_in(c, "k3", c.tagged("k3"))


def test_literal_with_crlf_inside(dv, lax):
    """A literal's bytes may contain CRLF: they stay inside the argument
    (one tagged reply, no stray line parsed as a command)."""
    c = Raw(lax.ports["plain"])
    pw = b"alice\r\npass"
    c.send(f"k4 LOGIN {ALICE[0]} {{{len(pw)}+}}\r\n".encode() + pw + b"\r\nk5 NOOP\r\n")
    r = c.tagged("k4")
    assert r == [b"k4 NO [AUTHENTICATIONFAILED] Authentication failed."], r
    assert c.tagged("k5") == [b"k5 OK NOOP completed."]
    c.close()


@pytest.mark.parametrize("plus", ["", "+"])
def test_zero_length_literal(lax, plus):
    """{0} is a valid (empty) literal: the command gets its own tagged reply
    (it used to be dropped: client_line could not ask for 0 literal bytes)."""
    c = Raw(lax.ports["plain"])
    c.send(f"k6 LOGIN {ALICE[0]} {{0{plus}}}\r\n")
    if not plus:
        assert c.line().startswith(b"+")
    c.send("\r\n")
    r = c.tagged("k6", timeout=3)
    assert r[-1].startswith((b"k6 NO", b"k6 BAD")), r


def test_pipelined_preauth_commands(lax):
    c = Raw(lax.ports["plain"])
    c.send("p1 CAPABILITY\r\np2 NOOP\r\np3 ID NIL\r\np4 NOOP\r\n")
    assert c.tagged("p1")[-1] == b"p1 OK Capability completed."
    assert c.tagged("p2") == [b"p2 OK NOOP completed."]
    assert c.tagged("p3")[-1] == b"p3 OK ID completed."
    assert c.tagged("p4") == [b"p4 OK NOOP completed."]
    c.close()


def test_pipelined_after_login(dv, lax):
    """Commands pipelined behind LOGIN reach the backend once it accepted the
    login; behind a failed LOGIN they are served by the proxy again."""
    c = Raw(lax.ports["plain"])
    c.send(f'p1 LOGIN {ALICE[0]} wrong\r\np2 LOGIN {ALICE[0]} {ALICE[1]}\r\n'
           'p3 SELECT INBOX\r\np4 LOGOUT\r\n')
    assert c.tagged("p1") == [b"p1 NO [AUTHENTICATIONFAILED] Authentication failed."]
    assert c.tagged("p2")[-1].startswith(b"p2 OK [CAPABILITY ")
    assert c.tagged("p3")[-1].startswith(b"p3 OK [READ-WRITE]")
    r = c.tagged("p4")
    assert r[0].startswith(b"* BYE") and r[-1].startswith(b"p4 OK"), r
    rest, _ = c.closed()
    assert rest == b""


def test_oauthbearer_failure(dv, lax):
    """A wrong bearer token: Dovecot answers OAUTHBEARER with an error
    challenge, the proxy completes the exchange and the client gets the NO."""
    smark = lax.log_mark()
    c = Raw(lax.ports["plain"])
    r = c.cmd("f1", "AUTHENTICATE OAUTHBEARER " + oauthbearer(DAVE, DAVE_JWT + "x"))
    assert r == [b"f1 NO [AUTHENTICATIONFAILED] Authentication failed."], r
    login_logged(lax, smark, DAVE, "failed")
    assert_logged_in(c, "f2", c.cmd("f2", "AUTHENTICATE OAUTHBEARER " + oauthbearer(DAVE, DAVE_JWT)))


def test_unsupported_mechanism(lax):
    c = Raw(lax.ports["plain"])
    assert c.cmd("u1", "AUTHENTICATE CRAM-MD5")[-1].startswith(b"u1 NO")
    assert c.cmd("u2", "AUTHENTICATE")[-1].startswith(b"u2 BAD")
    assert c.cmd("u3", "LOGIN onlyuser")[-1].startswith(b"u3 BAD")
    assert c.cmd("u4", 'LOGIN "unterminated')[-1].startswith(b"u4 BAD")
    assert c.cmd("u5", "NOOP") == [b"u5 OK NOOP completed."]
    c.close()


# --- 4. pre-authentication dialogue -------------------------------------------------------------

def test_preauth_starttls_listener(dv, strict, certs):
    c = Raw(strict.ports["starttls"])
    g = c.greeting
    assert g.startswith(b"* OK [CAPABILITY "), g
    caps = caps_of(g)
    assert b"STARTTLS" in caps and b"LOGINDISABLED" in caps and b"AUTH=PLAIN" not in caps, caps
    assert c.cmd("t1", "CAPABILITY") == [b"* CAPABILITY " + b" ".join(caps), b"t1 OK Capability completed."]
    r = c.cmd("t2", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"t2 NO [PRIVACYREQUIRED]"), r
    r = c.cmd("t3", "AUTHENTICATE PLAIN " + sasl_plain(*ALICE))
    assert r[-1].startswith(b"t3 NO [PRIVACYREQUIRED]"), r
    # Tags are echoed as sent, whatever their shape.
    assert c.cmd("X.1-z", "NOOP") == [b"X.1-z OK NOOP completed."]
    r = c.cmd("i1", 'ID ("name" "test")')
    assert r[0].startswith(b"* ID ") and r[-1].startswith(b"i1 OK"), r
    assert c.cmd("s1", "SELECT INBOX")[-1].startswith(b"s1 BAD"), "select before login"
    assert c.cmd("u1", "FROBNICATE now")[-1].startswith(b"u1 BAD")
    c.send("garbage\r\n")
    assert c.line().startswith(b"* BAD"), "a line without tag and command"
    c.starttls(certs.client_context(), tag="t4")
    r = c.cmd("t5", "CAPABILITY")
    caps = r[0].split()[2:]
    assert r[0].startswith(b"* CAPABILITY ") and r[-1].startswith(b"t5 OK"), r
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps, caps
    assert c.cmd("t6", "STARTTLS")[-1].startswith(b"t6 BAD"), "second STARTTLS"
    r = c.cmd("t7", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"t7 OK [CAPABILITY "), r
    c.close()


def test_logout_before_login(dv, strict):
    c = Raw(strict.ports["starttls"])
    c.send("z9 LOGOUT\r\n")
    assert c.line().startswith(b"* BYE ")
    assert c.line().startswith(b"z9 OK")
    rest, _ = c.closed()
    assert rest == b""


def test_implicit_listener_greeting(dv, strict, certs):
    """On an implicit-TLS listener cleartext auth is allowed from the start."""
    c = Raw(strict.ports["implicit"], tls_ctx=certs.client_context())
    caps = caps_of(c.greeting)
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps, caps
    c.close()


# --- 5. master user ------------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["alice@example.com%master", "alice@example.com*master"])
def test_master_user_unquoted_from_imaplib(dv, lax, user):
    """Python's imaplib sends the user name unquoted: LOGIN
    alice@example.com%master "masterpass". The list wildcards % and * are
    not RFC 3501 atom characters, but every server this proxy replaces
    accepts them in LOGIN, so the proxy must too. '%' is this proxy's and
    Dovecot's master separator: that login reaches alice's mailbox; '*' is
    neither's, so that login is the backend's to refuse (NO, not BAD)."""
    dmark, smark = dv.log_mark(), lax.log_mark()
    m = imaplib.IMAP4("127.0.0.1", lax.ports["plain"])
    try:
        if "%" in user:
            assert m.login(user, "masterpass")[0] == "OK"
            login_logged(lax, smark, ALICE[0])
            dv.wait_log(r"Master user logging in as alice@example\.com", since=dmark)
        else:
            with pytest.raises(imaplib.IMAP4.error) as e:
                m.login(user, "masterpass")
            assert "AUTHENTICATIONFAILED" in str(e.value), e.value
            login_logged(lax, smark, user, result="failed")
    finally:
        m.shutdown()


def test_unquoted_credentials_with_wildcards(dv, lax):
    """A raw client's unquoted password with % and * is taken as one atom."""
    c = Raw(lax.ports["plain"])
    r = c.cmd("w1", "LOGIN alice@example.com al%ce*pass")
    assert r[-1].startswith(b"w1 NO"), r
    r = c.cmd("w2", "LOGIN alice@example.com alicepass")
    assert_logged_in(c, "w2", r)


def test_master_user(dv, lax):
    """alice@example.com%master routes by alice and logs into alice's mailbox."""
    dmark, smark = dv.log_mark(), lax.log_mark()
    c = Raw(lax.ports["plain"])
    assert_logged_in(c, "ms", c.cmd("ms", 'LOGIN "alice@example.com%master" "masterpass"'))
    login_logged(lax, smark, ALICE[0])
    dv.wait_log(r"Master user logging in as alice@example\.com", since=dmark)
    dv.wait_log(r"imap-login: Info: Login: user=<alice@example\.com>", since=dmark)


# --- 6. capabilities after login -----------------------------------------------------------------

def test_capabilities_after_login_are_backends(dv, lax):
    c = Raw(lax.ports["plain"])
    pre = caps_of(c.greeting)
    r = c.cmd("c1", 'LOGIN "alice@example.com" "alicepass"')
    post = caps_of(r[-1])
    # Dovecot's post-login list, not the proxy's pre-login one.
    assert b"THREAD=REFERENCES" in post and b"THREAD=REFERENCES" not in pre, (pre, post)
    r = c.cmd("c2", "CAPABILITY")
    assert set(r[0].split()[2:]) == set(post), r
    c.close()


# --- 7. backend unavailable ---------------------------------------------------------------------

def test_backend_down(sy_pool, certs):
    dead = free_port()
    sy = pooled(sy_pool, "down", certs, dead, three_listeners(), backend_tls="plain", forwarding="none",
                caps={"allow_plain_auth_without_tls": True})
    smark = sy.log_mark()
    c = Raw(sy.ports["plain"])
    r = c.cmd("d1", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"d1 NO [UNAVAILABLE] "), r
    login_logged(sy, smark, ALICE[0], "tempfail")
    assert c.cmd("d2", "CAPABILITY")[-1] == b"d2 OK Capability completed."
    r = c.cmd("d3", "AUTHENTICATE PLAIN " + sasl_plain(*ALICE))
    assert r[-1].startswith(b"d3 NO [UNAVAILABLE] "), r
    c.close()


def test_backend_without_starttls(sy_pool, certs, fakes):
    """A STARTTLS backend leg to a backend that does not advertise STARTTLS:
    no credentials go out, the client gets NO [UNAVAILABLE]."""
    fake = fakes["plain-caps"]
    sy = pooled(sy_pool, "nostarttls", certs, fake.port, three_listeners(), backend_tls="starttls",
                forwarding="none", caps={"allow_plain_auth_without_tls": True})
    smark = sy.log_mark()
    c = Raw(sy.ports["plain"])
    r = c.cmd("n1", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"n1 NO [UNAVAILABLE] "), r
    sy.wait_log(r"result=tempfail.*STARTTLS", since=smark)
    assert c.cmd("n2", "NOOP")[-1].startswith(b"n2 OK")
    conn = fake.conns[-1]
    assert conn["auths"] == []
    assert not any(b"AUTHENTICATE" in l or b"LOGIN" in l or b"alicepass" in l for l in conn["lines"]), conn
    c.close()


@pytest.mark.parametrize("ttl", [1, 2])
def test_loop_guard_ttl(sy_pool, certs, fakes, ttl):
    """ID forwarding hands the next hop proxy_ttl - 1. With proxy_ttl = 1
    that budget would be 0: the login is refused as a loop with the
    temporary failure, and the backend is never dialled. With 2 the next
    hop gets "x-proxy-ttl" "1" and the login goes through."""
    fake = fakes["sasl-ir"]
    sy = pooled(sy_pool, f"ttl{ttl}", certs, fake.port, three_listeners(), backend_tls="plain",
                forwarding="xclient", caps={"allow_plain_auth_without_tls": True},
                server={"proxy_ttl": ttl})
    smark, before = sy.log_mark(), len(fake.conns)
    c = Raw(sy.ports["plain"])
    r = c.cmd("t1", 'LOGIN "alice@example.com" "alicepass"')
    if ttl == 1:
        assert r[-1].startswith(b"t1 NO [UNAVAILABLE] "), r
        sy.wait_log(r"routing loop.*time-to-live", since=smark)
        login_logged(sy, smark, ALICE[0], "tempfail")
        assert len(fake.conns) == before, "the backend was dialled"
        assert c.cmd("t2", "NOOP")[-1].startswith(b"t2 OK")
    else:
        assert r[-1].startswith(b"t1 OK"), r
        ids = [l for l in fake.conns[-1]["lines"] if b" ID (" in l]
        assert ids and b'"x-proxy-ttl" "1"' in ids[0], fake.conns[-1]["lines"]
    c.close()


@pytest.fixture(scope="module")
def silent_port():
    """A port that accepts TCP connections (kernel backlog) and never says anything."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def silent(sy_pool, certs, silent_port):
    """A destination that never greets; backend_timeout = 1s."""
    return pooled(sy_pool, "silent", certs, silent_port, three_listeners(), backend_tls="plain",
                  forwarding="none", caps={"allow_plain_auth_without_tls": True},
                  server={"backend_timeout": "1s"})


def test_backend_timeout(silent):
    """A backend that accepts but never greets: NO [UNAVAILABLE] once
    backend_timeout passes, and the connection stays usable."""
    c = Raw(silent.ports["plain"])
    t0 = time.monotonic()
    r = c.cmd("w1", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"w1 NO [UNAVAILABLE] "), r
    assert 0.8 <= time.monotonic() - t0 < 5
    assert c.cmd("w2", "NOOP") == [b"w2 OK NOOP completed."]
    c.close()


@pytest.mark.parametrize("backend", ["silent", "dovecot"])
def test_client_gone_during_login(request, backend, certs):
    """The client hangs up while its login is with the backend: the proxy
    cleans up and keeps serving."""
    sy = request.getfixturevalue("silent" if backend == "silent" else "lax")
    for i in range(5):
        c = Raw(sy.ports["plain"])
        c.send(f"g{i} LOGIN alice@example.com alicepass\r\ng{i}b SELECT INBOX\r\n")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # RST
    c = Raw(sy.ports["plain"])
    assert c.cmd("g9", "NOOP") == [b"g9 OK NOOP completed."]
    c.close()
    assert sy.running()


@pytest.mark.parametrize("leg", ["implicit", "starttls"])
def test_backend_tls_verification_failure(sy_pool, certs, dv, leg):
    """The backend's certificate does not match the pin: no credentials go
    out, the client gets NO [UNAVAILABLE] and may go on."""
    sy = pooled(sy_pool, f"badpin-{leg}", certs, dv.imaps if leg == "implicit" else dv.imap, three_listeners(),
                backend_tls=leg, forwarding="none", caps={"allow_plain_auth_without_tls": True},
                destination={"tls_pinned_cert_sha256": certs.mail.sha256})
    smark = sy.log_mark()
    c = Raw(sy.ports["plain"])
    r = c.cmd("v1", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"v1 NO [UNAVAILABLE] "), r
    login_logged(sy, smark, ALICE[0], "tempfail")
    assert c.cmd("v2", "NOOP") == [b"v2 OK NOOP completed."]
    c.close()
    sy.wait_log(r"result=tempfail.*(verif|pin|fingerprint|certificate)", since=smark)


@pytest.mark.parametrize("user", ['"bad user@example.com"', '"bad\\"q@example.com"', "{17+}\r\nbad\x01x@example.com"])
def test_identifier_forbidden_characters(lax, user):
    """An identifier with a space, a double quote or a control character is
    refused with the backend-unavailable reply (no lookup, no backend)."""
    smark = lax.log_mark()
    c = Raw(lax.ports["plain"])
    c.send(f"f1 LOGIN {user} alicepass\r\n".encode())
    r = c.tagged("f1")
    assert r[-1].startswith(b"f1 NO [UNAVAILABLE] "), r
    lax.wait_log(r"result=tempfail.*forbidden", since=smark)
    assert c.cmd("f2", "NOOP") == [b"f2 OK NOOP completed."]
    c.close()


def test_shutdown_notice(certs, dv):
    """SIGTERM: a client still before login gets BYE and is closed; the
    process exits 0 without waiting for the grace period."""
    listeners = three_listeners()
    sy = Switchyard(imap_config(certs, dv.imap, listeners=listeners, server={"shutdown_grace": "20s"},
                                caps={"allow_plain_auth_without_tls": True}), name="switchyard-imap")
    try:
        sy.start()
        c = Raw(listeners["plain"][0])
        t0 = time.monotonic()
        sy.send_signal(signal.SIGTERM)
        data, _ = c.closed(timeout=10)
        assert data.startswith(b"* BYE "), data
        assert sy.wait_exit(timeout=10) == 0
        assert time.monotonic() - t0 < 5
    finally:
        sy.cleanup()


# --- 8. hostile input -----------------------------------------------------------------------------

def test_overlong_line(lax):
    c = Raw(lax.ports["plain"])
    try:
        c.send(b"a LOGIN " + b"x" * (40 * 1024) + b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    first = c.line()
    assert first.startswith(b"* BAD"), first
    rest, _ = c.closed()
    assert rest == b"", rest


def test_huge_literal_announcement(lax):
    c = Raw(lax.ports["plain"])
    c.send("a LOGIN {999999999}\r\n")
    first = c.line()
    assert first.startswith(b"* BAD") or first.startswith(b"a BAD"), first
    rest, _ = c.closed()
    assert rest == b"", rest


def test_literals_adding_up_too_long(lax):
    """Literals each within bounds but together over the line limit: BAD and close."""
    c = Raw(lax.ports["plain"])
    c.send(b"a LOGIN {20000+}\r\n" + b"u" * 20000 + b" {20000+}\r\n" + b"p" * 20000 + b"\r\n")
    first = c.line()
    assert b"BAD" in first, first
    rest, _ = c.closed()
    assert rest == b"", rest


def test_starttls_not_offered_on_plain_listener(lax):
    c = Raw(lax.ports["plain"])
    assert b"STARTTLS" not in caps_of(c.greeting)
    assert c.cmd("t1", "STARTTLS")[-1].startswith(b"t1 BAD")
    assert c.cmd("t2", "NOOP") == [b"t2 OK NOOP completed."]
    c.close()


def test_huge_literal_plus_announcement(lax):
    c = Raw(lax.ports["plain"])
    c.send("a LOGIN {999999999+}\r\nxx")
    first = c.line()
    assert b"BAD" in first, first
    rest, _ = c.closed()
    assert rest == b"", rest


def test_broken_base64(lax):
    c = Raw(lax.ports["plain"])
    r = c.cmd("b1", "AUTHENTICATE PLAIN !!!not*base64")
    assert r[-1].startswith(b"b1 BAD"), r
    c.send("b2 AUTHENTICATE PLAIN\r\n")
    assert c.line().startswith(b"+")
    c.send("%%%%\r\n")
    assert c.tagged("b2")[-1].startswith(b"b2 BAD")
    # Valid base64 of a malformed PLAIN message (no NULs).
    r = c.cmd("b3", "AUTHENTICATE PLAIN " + base64.b64encode(b"just-a-user").decode())
    assert r[-1] == b"b3 NO [AUTHENTICATIONFAILED] Malformed PLAIN response.", r
    c.close()


@pytest.mark.parametrize("message", [b"just-a-user", b"\0alice@example.com\0", b"\0\0alicepass", b""])
def test_malformed_plain_is_an_auth_failure(lax, message):
    """Well-formed base64 of a malformed PLAIN message (no NULs, an empty
    user or password) is a failed authentication: imaplib raises its
    ordinary error for a NO (a client then asks for the password again),
    not the one for BAD, and the failure counts toward max_auth_attempts."""
    m = imaplib.IMAP4("127.0.0.1", lax.ports["plain"])
    try:
        with pytest.raises(imaplib.IMAP4.error) as e:
            m.authenticate("PLAIN", lambda _: message)
        assert "AUTHENTICATIONFAILED" in str(e.value), e.value
        assert not isinstance(e.value, imaplib.IMAP4.abort)
        # Still a working pre-auth session.
        assert m.login(*ALICE)[0] == "OK"
    finally:
        m.shutdown()


def test_nul_bytes(dv, lax):
    """NUL bytes anywhere in a command line are refused without harm."""
    c = Raw(lax.ports["plain"])
    # Trailing bytes after an argument-less command are ignored (like any trailing text).
    assert c.cmd("n0", "NOOP\x00junk") == [b"n0 OK NOOP completed."]
    for tag, line in ((b"n2", b'n2 LOGIN "ali\x00ce@example.com" "alicepass"'),
                      (b"n3", b"n3 LOGIN alice@example.com\x00 alicepass"),
                      (b"n4", b"n4 LOGIN {18+}\r\nalice@example.com\x00 alicepass")):
        c.send(line + b"\r\n")
        r = c.tagged(tag.decode())
        assert r[-1].startswith(tag + b" BAD") or r[-1].startswith(tag + b" NO"), (line, r)
    # Text after the mechanism name that does not start with SP is ignored:
    # the proxy asks for the response; "*" cancels.
    c.send(b"n5 AUTHENTICATE PLAIN\x00\r\n")
    assert c.line().startswith(b"+")
    c.send(b"*\r\n")
    assert c.tagged("n5")[-1].startswith(b"n5 BAD")
    c.send(b"\x00\x00\x00\r\n")
    assert c.line().startswith(b"* BAD")
    assert_logged_in(c, "n6", c.cmd("n6", 'LOGIN "alice@example.com" "alicepass"'))


def test_starttls_pipelining_discarded(strict, certs):
    """Plaintext pipelined after STARTTLS in the same packet is dropped: after
    the handshake nothing answers it, only the new command's reply arrives."""
    c = Raw(strict.ports["starttls"])
    c.send("a STARTTLS\r\nb CAPABILITY\r\n")
    assert c.line().startswith(b"a OK"), "STARTTLS go-ahead"
    assert c.buf == b"", c.buf  # nothing in plaintext after the go-ahead
    c.sock = certs.client_context().wrap_socket(c.sock, server_hostname="localhost")
    c.send("c NOOP\r\n")
    first = c.line()
    assert first == b"c OK NOOP completed.\r\n", first
    c.close()


def test_preauth_timeout(strict):
    c = Raw(strict.ports["short"])
    data, elapsed = c.closed(timeout=6)
    assert data == b"* BYE Disconnected for inactivity.\r\n", data
    assert 0.5 <= elapsed <= 4, elapsed


# --- 9. bearer tokens -------------------------------------------------------------------------------

def xoauth2(user, token):
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def oauthbearer(user, token):
    return base64.b64encode(f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()).decode()


@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("form", ["sasl-ir", "continuation"])
def test_bearer_token(dv, lax, mech, form):
    dmark, smark = dv.log_mark(), lax.log_mark()
    msg = (xoauth2 if mech == "XOAUTH2" else oauthbearer)(DAVE, DAVE_JWT)
    c = Raw(lax.ports["plain"])
    if form == "sasl-ir":
        r = c.cmd("o1", f"AUTHENTICATE {mech} {msg}")
    else:
        c.send(f"o1 AUTHENTICATE {mech}\r\n")
        assert c.line().startswith(b"+")
        c.send(msg + "\r\n")
        r = c.tagged("o1")
    assert_logged_in(c, "o1", r)
    login_logged(lax, smark, DAVE)
    dv.wait_log(login_re(DAVE, "127.0.0.1", method=mech), since=dmark)


@pytest.mark.parametrize("mech, msg", [
    ("XOAUTH2", xoauth2("bob@example.com", DAVE_JWT)),
    ("OAUTHBEARER", oauthbearer("dave-without-domain", DAVE_JWT)),
], ids=["xoauth2-user-field", "oauthbearer-a-without-at"])
def test_bearer_routes_by_token(dv, lax, mech, msg):
    """XOAUTH2's user= field is never trusted for routing, nor an OAUTHBEARER
    a= without '@': the identifier comes from the token's email claim
    (Dovecot then refuses the mismatched login)."""
    smark = lax.log_mark()
    c = Raw(lax.ports["plain"])
    r = c.cmd("o2", f"AUTHENTICATE {mech} {msg}")
    assert r[-1].startswith(b"o2 NO"), r
    login_logged(lax, smark, DAVE, "failed")
    c.close()


def test_bearer_token_near_dovecot_limit(dv, lax):
    """A ~5 KiB token (the largest kind Dovecot 2.3's imap-login accepts)."""
    dmark = dv.log_mark()
    c = Raw(lax.ports["plain"])
    assert_logged_in(c, "o3", c.cmd("o3", "AUTHENTICATE XOAUTH2 " + xoauth2("erin@example.com", MID_JWT)))
    dv.wait_log(login_re("erin@example.com", "127.0.0.1", method="XOAUTH2"), since=dmark)


@pytest.mark.parametrize("backend", ["sasl-ir", "no-sasl-ir"])
@pytest.mark.parametrize("mech", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("form", ["sasl-ir", "continuation"])
def test_bearer_token_16k(sy_pool, certs, fakes, backend, mech, form):
    """A 16 KiB JWT through the proxy: routed by its email claim and replayed
    intact, with SASL-IR or after a continuation depending on the backend (a
    fake one: Dovecot 2.3 refuses SASL responses over 8 KiB)."""
    fake = fakes[backend]
    sy = pooled(sy_pool, f"fake-{backend}", certs, fake.port, three_listeners(), backend_tls="plain",
                forwarding="xclient", caps={"allow_plain_auth_without_tls": True})
    smark = sy.log_mark()
    msg = (xoauth2 if mech == "XOAUTH2" else oauthbearer)(DAVE, BIG_JWT)
    assert len(msg) > 20000
    c = Raw(sy.ports["plain"])
    if form == "sasl-ir":
        r = c.cmd("o4", f"AUTHENTICATE {mech} {msg}")
    else:
        c.send(f"o4 AUTHENTICATE {mech}\r\n")
        assert c.line().startswith(b"+")
        c.send(msg + "\r\n")
        r = c.tagged("o4")
    assert r[-1] == b"o4 OK [CAPABILITY IMAP4rev1 FAKE-AFTER-LOGIN] Logged in", r
    login_logged(sy, smark, DAVE)
    conn = fake.conns[-1]
    assert len(conn["auths"]) == 1, conn["auths"]
    got_mech, got_msg = conn["auths"][0]
    assert got_mech == mech
    assert f"auth=Bearer {BIG_JWT}\x01\x01".encode() in got_msg
    auth_line = next(l for l in conn["lines"] if b" AUTHENTICATE " in l)
    assert auth_line.startswith(b"o4 AUTHENTICATE " + mech.encode())
    assert (len(auth_line) > 20000) == (backend == "sasl-ir"), len(auth_line)
    # Bridged: the fake answers the next command.
    assert c.cmd("o5", "NOOP")[-1] == b"o5 OK NOOP done"
    c.close()


@pytest.mark.parametrize("client_leg", ["plain", "implicit"])
def test_id_forwarding_attributes(sy_pool, certs, fakes, client_leg):
    """xclient forwarding: the ID the backend gets carries the client's
    address and port, the listener's, the TTL minus one, a session id and the
    client transport, and comes before the AUTHENTICATE."""
    fake = fakes["sasl-ir"]
    sy = pooled(sy_pool, "fake-sasl-ir", certs, fake.port, three_listeners(), backend_tls="plain",
                forwarding="xclient", caps={"allow_plain_auth_without_tls": True})
    c = Raw(sy.ports[client_leg], tls_ctx=certs.client_context() if client_leg == "implicit" else None)
    r = c.cmd("i1", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"i1 OK"), r
    c.close()
    lines = fake.conns[-1]["lines"]
    ids = [i for i, l in enumerate(lines) if re.match(rb"\S+ ID ", l)]
    auth = next(i for i, l in enumerate(lines) if b" AUTHENTICATE " in l)
    assert len(ids) == 1 and ids[0] < auth, lines
    transport = "TLS" if client_leg == "implicit" else "insecure"
    want = (rf'\S+ ID \("x-originating-ip" "{rx(c.source)}" "x-originating-port" "{c.client_port}" '
            rf'"x-connected-ip" "127\.0\.0\.1" "x-connected-port" "{sy.ports[client_leg]}" '
            rf'"x-proxy-ttl" "6" "x-session-id" "[0-9a-f]+" "x-client-transport" "{transport}"\)\r\n')
    assert re.fullmatch(want.encode(), lines[ids[0]]), lines[ids[0]]


def proxy_recv_queue(proxy_port, source, client_port):
    """Bytes waiting unread in the proxy's socket of one client connection
    (its Recv-Q, from ss), or None while ss does not show it."""
    out = subprocess.run(["ss", "-tnH", "state", "established", "src", f"127.0.0.1:{proxy_port}",
                          "dst", f"{source}:{client_port}"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]) if out else None


def test_commands_sent_while_the_backend_decides_follow_the_login(sy_pool, certs):
    """While the backend has not yet answered the replayed login, the proxy
    reads nothing more from the client: bytes the client sends meanwhile wait
    in the kernel (the proxy's Recv-Q), are never lost or served by the proxy,
    and reach the backend in order once it accepted the login."""
    asked, verdict = threading.Event(), threading.Event()

    def accept(mech, msg):
        asked.set()
        verdict.wait(20)
        return True

    fake = FakeImap(accept=accept)
    try:
        sy = pooled(sy_pool, "fake-slow-verdict", certs, fake.port, three_listeners(),
                    backend_tls="plain", forwarding="none", caps={"allow_plain_auth_without_tls": True})
        c = Raw(sy.ports["plain"])
        c.send(f'w1 LOGIN "{ALICE[0]}" "{ALICE[1]}"\r\n')
        assert asked.wait(20)
        later = b"w2 NOOP\r\nw3 LOGOUT\r\n"
        c.send(later)
        end = time.monotonic() + 10
        while proxy_recv_queue(sy.ports["plain"], c.source, c.client_port) != len(later):
            assert time.monotonic() < end, "the bytes never waited unread in the proxy's socket"
            time.sleep(0.02)
        verdict.set()
        assert c.tagged("w1")[-1].startswith(b"w1 OK")
        assert c.tagged("w2") == [b"w2 OK NOOP done"]
        r = c.tagged("w3")
        assert r[0] == b"* BYE bye" and r[-1] == b"w3 OK bye", r
        lines = fake.conns[-1]["lines"]
        assert lines[-2:] == [b"w2 NOOP\r\n", b"w3 LOGOUT\r\n"], lines
    finally:
        verdict.set()
        fake.stop()


def test_no_id_when_not_advertised(sy_pool, certs, fakes):
    fake = fakes["no-sasl-ir"]
    sy = pooled(sy_pool, "fake-no-sasl-ir", certs, fake.port, three_listeners(), backend_tls="plain",
                forwarding="xclient", caps={"allow_plain_auth_without_tls": True})
    c = Raw(sy.ports["plain"])
    r = c.cmd("i2", 'LOGIN "alice@example.com" "alicepass"')
    assert r[-1].startswith(b"i2 OK"), r
    c.close()
    lines = fake.conns[-1]["lines"]
    assert not any(re.match(rb"\S+ ID ", l) for l in lines), lines
    # No SASL-IR at the backend: AUTHENTICATE PLAIN, then the response after "+".
    i = next(i for i, l in enumerate(lines) if b" AUTHENTICATE " in l)
    assert lines[i] == b"i2 AUTHENTICATE PLAIN\r\n", lines
    assert base64.b64decode(lines[i + 1].strip()) == b"\0alice@example.com\0alicepass"


def test_bearer_token_16k_to_dovecot(dv, lax):
    """Dovecot 2.3 hangs up on a SASL response over 8 KiB: the proxy turns that
    into NO [UNAVAILABLE] and the connection stays usable."""
    c = Raw(lax.ports["plain"])
    r = c.cmd("o6", "AUTHENTICATE XOAUTH2 " + xoauth2(DAVE, BIG_JWT))
    assert r[-1].startswith(b"o6 NO [UNAVAILABLE]"), r
    assert c.cmd("o7", "NOOP")[-1].startswith(b"o7 OK")
    c.close()
