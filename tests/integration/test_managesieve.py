"""ManageSieve (RFC 5804) through Switchyard to a real Dovecot (Pigeonhole).

One private Dovecot serves the whole module (it takes a second or more to
start and stop), with an extra implicit-TLS listener that requires a PROXY
header. Every proxy of the module declares one destination per backend leg
(implicit / STARTTLS / plain) and forwarding mode (proxy / xclient / none),
plus `hidden` (hide_auth_errors) and `down` (nothing listening), and has an
implicit-TLS, a STARTTLS and a plain client listener plus a strict one
(max_auth_attempts = 2); the proxies differ only in their default
destination, started on first use (`env.proxy(dest)`) and kept for the
module, so the tests do not depend on a mapping store. Tests tell their
traffic apart with per-test log marks. A few paths Dovecot never exercises
during login (literals in its replies, no STARTTLS, challenges, BYE, a
refused XCLIENT) are played by a scripted peer at the end.

Dovecot's log lines these tests rely on (managesieve-login):
  `Login: user=<u>, method=M, rip=<client ip>, ..., TLS, session=<id>`;
  `Disconnected: Authentication response too large ... method=OAUTHBEARER`.
Switchyard's: `login ... identifier=<id> ... destination=<dest> result=ok|failed|tempfail`.
"""

import base64
import json
import os
import random
import re
import socket
import subprocess
import threading

import pytest

from harness import Dovecot, Switchyard
from harness.util import HarnessError, connect, expect_closed, free_port

BTLS = ("implicit", "starttls", "plain")
FWD = ("proxy", "xclient", "none")
CLIENT_LEGS = ("implicit", "starttls", "plain")
SOURCE = "127.0.0.5"

USERS = {
    "alice@example.com": "alicepass",
    "bob@example.com": "bobpass",
    "carol@example.com": "carolpass",
    # A bearer token long enough that its base64 no longer fits a quoted
    # string: the replay must send it as a literal. Dovecot 2.3 checks
    # OAUTHBEARER tokens as the user's password.
    "tok@example.com": "t" * 1500,
}
for _b in BTLS:
    for _f in FWD:
        USERS[f"m-{_b}-{_f}@example.com"] = f"pw-{_b}-{_f}"

# Users whose backend login fails with Dovecot's own reason text (passwd-file
# `nologin reason=`): the backend's reply is distinguishable from the generic one.
NOLOGIN_REASON = "Account-disabled-by-test"
NOLOGIN_USERS = ("dave@example.com", "erin@example.com")


def q(s):
    """A TOML basic string (JSON string syntax is valid TOML)."""
    return json.dumps(s)


def b64(data):
    return base64.b64encode(data).decode()


def plain_ir(user, password):
    return b64(b"\0" + user.encode() + b"\0" + password.encode())


def dest_name(btls, fwd):
    return f"d-{btls}-{fwd}"


# The destination most tests use: TLS on the backend leg, XCLIENT forwarding.
MAIN = dest_name("starttls", "xclient")


class Env:
    pass


class Proxy:
    """One Switchyard of the module: every destination declared, `default`
    the routing.default_destination, the four listeners on fresh ports."""

    def __init__(self, env, default):
        self.default = default
        self.ports = {leg: free_port() for leg in CLIENT_LEGS}
        self.strict_port = free_port()
        self.config = proxy_config(env, self, default)
        self.sy = Switchyard(self.config)
        self.sy.start()


@pytest.fixture(scope="module")
def env(certs):
    """The module's Dovecot, and its proxies by default destination
    (`env.proxy(dest)` starts one on first use)."""
    e = Env()
    e.certs = certs
    e.sieves_haproxy = free_port()
    e.down_port = free_port()  # nothing listens there
    # Dovecot merges this block into the generated service: an implicit-TLS
    # listener that requires a PROXY header, for the proxy x implicit leg.
    extra = f"""
service managesieve-login {{
  inet_listener sieves_haproxy {{
    address = 127.0.0.1
    port = {e.sieves_haproxy}
    ssl = yes
    haproxy = yes
  }}
}}
"""
    d = Dovecot(certs, users=USERS, listeners={"sieve": ("plain", "tls", "haproxy")}, extra_conf=extra)
    proxies = {}

    def proxy(default=MAIN):
        if default not in proxies:
            proxies[default] = Proxy(e, default)
        return proxies[default]

    e.proxy = proxy
    e.proxies = proxies
    try:
        d.start()
        with open(os.path.join(d.dir, "users"), "a") as f:
            for u in NOLOGIN_USERS:
                f.write(f"{u}:{{PLAIN}}nologinpass:65534:65534::{d.home(u)}::nologin "
                        f"reason={NOLOGIN_REASON}\n")
        e.dovecot = d
        yield e
    finally:
        errors = []
        for p in proxies.values():
            try:
                p.sy.stop(check=True)
            except AssertionError as ex:
                errors.append(str(ex))
            finally:
                p.sy.cleanup()
        d.cleanup()
        assert not errors, "\n".join(errors)


CAPS_DEFAULT = """
[capabilities.managesieve]
allow_plain_auth_without_tls = true
"""


def module_listeners(p):
    return f"""
[listener.sieve-implicit]
protocol = "managesieve"
tls = "implicit"
bind = ["127.0.0.1:{p.ports['implicit']}"]

[listener.sieve-starttls]
protocol = "managesieve"
tls = "starttls"
bind = ["127.0.0.1:{p.ports['starttls']}"]

[listener.sieve-plain]
protocol = "managesieve"
tls = "plain"
bind = ["127.0.0.1:{p.ports['plain']}"]

[listener.sieve-strict]
protocol = "managesieve"
tls = "plain"
bind = ["127.0.0.1:{p.strict_port}"]
max_auth_attempts = 2
"""


def proxy_config(e, p, default, caps=CAPS_DEFAULT, listeners=None):
    """A proxy config for the module: every destination, `default` as
    routing.default_destination; `caps` and `listeners` replace the
    [capabilities.managesieve] table and the listeners of Proxy `p`."""
    d = e.dovecot
    certs = e.certs
    parts = [f"""
[server]
backend_timeout = "3s"
host_down_threshold = 0
shutdown_grace = "5s"

[tls.certificate.main]
cert = {q(certs.localhost.cert)}
key = {q(certs.localhost.key)}
default = true
{caps}
[routing]
default_destination = {q(default)}
{module_listeners(p) if listeners is None else listeners}
"""]
    for btls in BTLS:
        for fwd in FWD:
            if fwd == "proxy":
                port = e.sieves_haproxy if btls == "implicit" else d.sieve_haproxy
            else:
                port = d.sieves if btls == "implicit" else d.sieve
            parts.append(f"""
[destination.{dest_name(btls, fwd)}]
host = "127.0.0.1"
tls_server_name = "localhost"
tls_pinned_cert_sha256 = {q(certs.localhost.sha256)}
forwarding = {q(fwd)}
allow_plaintext_auth = {"true" if btls == "plain" else "false"}
[destination.{dest_name(btls, fwd)}.protocol.managesieve]
port = {port}
tls = {q(btls)}
""")
    parts.append(f"""
[destination.hidden]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true
hide_auth_errors = true
[destination.hidden.protocol.managesieve]
port = {d.sieve}
tls = "plain"

[destination.down]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true
[destination.down.protocol.managesieve]
port = {e.down_port}
tls = "plain"
""")
    return "".join(parts)


@pytest.fixture
def marks(env, request):
    """Log offsets at the start of the test (`marks.of(proxy)` for a proxy's
    log; 0 for one started during the test); the logs from there on are
    printed if the test fails."""
    m = Env()
    m.dovecot = env.dovecot.log_mark()
    start = {k: p.sy.log_mark() for k, p in env.proxies.items()}
    m.of = lambda p: start.get(p.default, 0)
    yield m
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"--- dovecot log during the test ---\n{env.dovecot.log_text(m.dovecot)[-10000:]}")
        for k, p in env.proxies.items():
            lines = p.sy.log_lines()[start.get(k, 0):]
            if lines:
                print(f"--- switchyard ({k}) log during the test ---\n" + "\n".join(lines)[-10000:])


# --- a small ManageSieve client over a socket ------------------------------------------------

FINAL_RE = re.compile(rb"^(OK|NO|BYE)\b", re.I)
LITERAL_RE = re.compile(rb"\{(\d+)\+?\}\r\n$")


class Sieve:
    """Reads ManageSieve responses (literals included) from a socket."""

    def __init__(self, sock, timeout=10.0):
        self.sock = sock
        self.buf = b""
        sock.settimeout(timeout)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HarnessError(f"connection closed; buffered {self.buf!r}")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def item(self):
        """One logical line: a line plus any literal it announces."""
        out = self.line()
        while True:
            m = LITERAL_RE.search(out)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += self.buf[:n]
            self.buf = self.buf[n:]
            out += self.line()

    def response(self):
        """(data lines, final OK/NO/BYE line)."""
        items = []
        while True:
            it = self.item()
            if FINAL_RE.match(it):
                return items, it
            items.append(it)

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def cmd(self, data):
        self.send(data)
        return self.response()

    def final(self, data):
        return self.cmd(data)[1]

    def starttls(self, ctx):
        assert self.buf == b"", f"bytes after the STARTTLS go-ahead: {self.buf!r}"
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        return self.response()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def open_client(env, leg, proxy=None, source=SOURCE, port=None):
    """A Sieve session on the listener for `leg` of `proxy` (default: the
    main one), greeting read, TLS up for implicit and STARTTLS legs.
    Returns (client, capability lines)."""
    port = port or (proxy or env.proxy()).ports[leg]
    sock = connect(port, source=source)
    if leg == "implicit":
        sock = env.certs.client_context().wrap_socket(sock, server_hostname="localhost")
    c = Sieve(sock)
    caps, ok = c.response()
    assert ok.startswith(b"OK"), ok
    if leg == "starttls":
        assert c.final("STARTTLS\r\n") == b'OK "Begin TLS negotiation now."\r\n'
        caps, ok = c.starttls(env.certs.client_context())
        assert ok == b'OK "TLS negotiation successful."\r\n'
    return c, caps


def caps_dict(lines):
    out = {}
    for l in lines:
        m = re.match(rb'^"([^"]+)"(?: "(.*)")?\r\n$', l)
        assert m, l
        out[m.group(1).decode()] = m.group(2).decode() if m.group(2) is not None else None
    return out


def authenticate(c, user, password):
    return c.final(f'AUTHENTICATE "PLAIN" "{plain_ir(user, password)}"\r\n')


def rip_re(ip, user):
    return rf"managesieve-login: Info: Login: user=<{re.escape(user)}>, [^\n]*rip={re.escape(ip)},"


# --- the login matrix --------------------------------------------------------------------------



# Dovecot 2.3's managesieve-login on an implicit-TLS listener (not a standard
# ManageSieve setup: RFC 5804 only has STARTTLS) now and then never answers
# a command that arrives right after its greeting: its log then shows
# "Disconnected: Connection closed (no auth attempts in N secs)" for a
# session that did send AUTHENTICATE. A plain Python client hits it too
# (about 1 login in 100; the proxy, being faster, about 1 in 10), the
# plaintext and STARTTLS listeners never. Logins over those listeners are
# retried when, and only when, Dovecot's log shows that stall.
DOVECOT_SSL_STALL = r"managesieve-login: Info: Disconnected: Connection closed \(no auth attempts in \d+ secs\)"


def login_retrying_dovecot_stall(env, p, leg, btls, user, password, mark):
    for attempt in range(6):
        c, _ = open_client(env, leg, p)
        r = authenticate(c, user, password)
        if r.startswith(b"OK") or btls != "implicit" or not r.startswith(b"NO (TRYLATER)"):
            return c, r
        c.close()
        env.dovecot.wait_log(DOVECOT_SSL_STALL, since=mark)
        mark = env.dovecot.log_mark()
    # Every attempt hit the backend's own stall, proven by its log line each
    # time: that says nothing about the proxy, so the case is skipped rather
    # than failed (a proxy bug would not produce Dovecot's stall line).
    pytest.skip("Dovecot's implicit-TLS managesieve-login stalled on every attempt")


@pytest.mark.parametrize("fwd", FWD)
@pytest.mark.parametrize("btls", BTLS)
@pytest.mark.parametrize("leg", CLIENT_LEGS)
def test_login_matrix(env, marks, leg, btls, fwd):
    """Client leg x backend leg x forwarding: the login reaches Dovecot over
    the configured leg, with the client's address for proxy and xclient
    forwarding, and the session is bridged afterwards."""
    user = f"m-{btls}-{fwd}@example.com"
    p = env.proxy(dest_name(btls, fwd))
    c, r = login_retrying_dovecot_stall(env, p, leg, btls, user, f"pw-{btls}-{fwd}", marks.dovecot)
    try:
        assert r == b'OK "Logged in."\r\n'
        # Bridged: Dovecot answers from here on.
        items, ok = c.cmd("LISTSCRIPTS\r\n")
        assert ok == b'OK "Listscripts completed."\r\n', ok
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    m = env.dovecot.wait_log(rip_re(SOURCE if fwd != "none" else "127.0.0.1", user) + r"[^\n]*",
                             since=marks.dovecot)
    line = m.group(0)
    if btls != "plain":
        assert re.search(r"\bTLS\b", line), line
    if fwd == "xclient":
        assert re.search(r"session=<[0-9a-f]{16}>", line), line
    p.sy.wait_log(rf"\blogin\b.*identifier={re.escape(user)}.*destination={dest_name(btls, fwd)}.*result=ok",
                  since=marks.of(p))


# --- pre-authentication dialogue ------------------------------------------------------------------


def test_greeting_and_capabilities(env, marks):
    p = env.proxy()
    c = Sieve(connect(p.ports["starttls"], source=SOURCE))
    try:
        caps, ok = c.response()
        assert ok == b'OK "Switchyard ManageSieve ready."\r\n'
        assert caps[0] == b'"IMPLEMENTATION" "Switchyard"\r\n'
        d = caps_dict(caps)
        assert d["SASL"] == "PLAIN OAUTHBEARER XOAUTH2"  # cleartext allowed by config; LOGIN never listed
        assert "STARTTLS" in d and d["STARTTLS"] is None
        assert d["VERSION"] == "1.0"
        assert "fileinto" in d["SIEVE"].split()
        again, ok = c.cmd("capability\r\n")
        assert ok == b'OK "Capability completed."\r\n' and again == caps
        assert c.final('NOOP "tag-1"\r\n') == b'OK (TAG "tag-1") "NOOP completed."\r\n'
        assert c.final("NOOP\r\n") == b'OK "NOOP completed."\r\n'
        # A zero-length literal: the command goes on after it.
        assert c.final("NOOP {0+}\r\n\r\n") == b'OK (TAG "") "NOOP completed."\r\n'
        assert c.final('NOOP {3}\r\nx"y\r\n') == b'OK (TAG "x\\"y") "NOOP completed."\r\n'
        for cmd in ("LISTSCRIPTS", 'PUTSCRIPT "a" {5+}\r\nkeep;', 'HAVESPACE "a" 1', "frob"):
            assert c.final(cmd + "\r\n") == b'NO "Authenticate first."\r\n', cmd
        assert c.final("STARTTLS\r\n") == b'OK "Begin TLS negotiation now."\r\n'
        after, ok = c.starttls(env.certs.client_context())
        assert ok == b'OK "TLS negotiation successful."\r\n'
        assert caps_dict(after) == {k: v for k, v in d.items() if k != "STARTTLS"}
        assert c.final("STARTTLS\r\n").startswith(b"NO ")
        assert c.final("LOGOUT\r\n") == b'OK "Logout completed."\r\n'
        assert expect_closed(c.sock)[0] == b""
    finally:
        c.close()
    # The implicit listener never offers STARTTLS; the plain one refuses it.
    for leg in ("implicit", "plain"):
        c, caps = open_client(env, leg)
        try:
            assert "STARTTLS" not in caps_dict(caps)
            assert c.final("STARTTLS\r\n").startswith(b"NO ")
        finally:
            c.close()


def test_custom_capabilities_and_cleartext_policy(env, marks, switchyard):
    """Default policy (no cleartext auth before TLS) and configured strings:
    PLAIN is not listed, "SASL" "" when nothing else remains, ENCRYPT-NEEDED
    for PLAIN and LOGIN, and PLAIN offered and working after STARTTLS."""
    port = free_port()
    caps = """
[capabilities.managesieve]
sasl = ["PLAIN", "LOGIN"]
banner = 'Sieve "front" door'
implementation = 'Yard\\Sieve'
sieve = ["fileinto", "vacation"]
"""
    listeners = f"""
[listener.s]
protocol = "managesieve"
tls = "starttls"
bind = ["127.0.0.1:{port}"]
"""
    sy = switchyard(proxy_config(env, None, dest_name("plain", "none"), caps, listeners))
    c = Sieve(connect(port, source=SOURCE))
    try:
        caps, ok = c.response()
        assert ok == b'OK "Sieve \\"front\\" door"\r\n'
        assert caps == [b'"IMPLEMENTATION" "Yard\\\\Sieve"\r\n', b'"SIEVE" "fileinto vacation"\r\n',
                        b'"SASL" ""\r\n', b'"STARTTLS"\r\n', b'"VERSION" "1.0"\r\n']
        enc = b'NO (ENCRYPT-NEEDED) "Plaintext authentication disallowed on non-secure connections."\r\n'
        assert authenticate(c, "m-plain-none@example.com", "pw-plain-none") == enc
        assert c.final('AUTHENTICATE "LOGIN"\r\n') == enc
        assert c.final('AUTHENTICATE "OAUTHBEARER" "AAAA"\r\n') == b'NO "Unsupported authentication mechanism."\r\n'
        assert c.final("STARTTLS\r\n").startswith(b"OK")
        caps, ok = c.starttls(env.certs.client_context())
        assert b'"SASL" "PLAIN"\r\n' in caps and b'"STARTTLS"\r\n' not in caps
        assert authenticate(c, "m-plain-none@example.com", "pw-plain-none") == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    sy.wait_log(r"login.*identifier=m-plain-none@example\.com.*result=ok")


def test_sasl_dialogues(env, marks):
    """PLAIN with an empty challenge answered by a literal, LOGIN (never
    advertised, accepted), abort with "*", OAUTHBEARER and XOAUTH2 (the
    token is the password for Dovecot 2.3)."""
    p = env.proxy()
    c, _ = open_client(env, "plain")
    try:
        c.send('AUTHENTICATE "PLAIN"\r\n')
        assert c.item() == b'""\r\n'
        assert c.final('"*"\r\n') == b'NO "Authentication aborted."\r\n'
        c.send('Authenticate "login"\r\n')
        assert c.item() == b'"VXNlcm5hbWU6"\r\n'
        c.send('"' + b64(b"bob@example.com") + '"\r\n')
        assert c.item() == b'"UGFzc3dvcmQ6"\r\n'
        assert c.final('"*"\r\n') == b'NO "Authentication aborted."\r\n'
        c.send('AUTHENTICATE "PLAIN"\r\n')
        assert c.item() == b'""\r\n'
        ir = plain_ir("bob@example.com", "bobpass")
        assert c.final(f"{{{len(ir)}+}}\r\n{ir}\r\n") == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    env.dovecot.wait_log(rip_re(SOURCE, "bob@example.com"), since=marks.dovecot)

    c, _ = open_client(env, "implicit")
    try:
        c.send('AUTHENTICATE "LOGIN" "' + b64(b"alice@example.com") + '"\r\n')
        assert c.item() == b'"UGFzc3dvcmQ6"\r\n'
        assert c.final('{12+}\r\n' + b64(b"alicepass") + '\r\n') == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    p.sy.wait_log(r"login.*identifier=alice@example\.com.*mechanism=LOGIN.*result=ok", since=marks.of(p))

    for mech, msg in (("OAUTHBEARER", b"n,a=bob@example.com,\x01auth=Bearer bobpass\x01\x01"),
                      ("XOAUTH2", b"user=bob@example.com\x01auth=Bearer bobpass\x01\x01")):
        c, _ = open_client(env, "implicit")
        try:
            assert c.final(f'AUTHENTICATE "{mech}" "{b64(msg)}"\r\n') == b'OK "Logged in."\r\n', mech
            assert c.final("LOGOUT\r\n").startswith(b"OK")
        finally:
            c.close()
    # OAUTHBEARER routes by a=; XOAUTH2 never trusts user= (an opaque token: no identifier).
    p.sy.wait_log(r"login.*identifier=bob@example\.com.*mechanism=OAUTHBEARER.*result=ok", since=marks.of(p))
    p.sy.wait_log(r"login.*identifier=- .*mechanism=XOAUTH2.*result=ok", since=marks.of(p))


def test_long_token_replayed_as_literal(env, marks):
    """A response too long for a quoted string (over 1024 octets of base64)
    goes to the backend as a literal and logs in."""
    token = USERS["tok@example.com"]
    msg = b64(b"n,a=tok@example.com,\x01auth=Bearer " + token.encode() + b"\x01\x01")
    assert len(msg) > 1024
    c, _ = open_client(env, "starttls")
    try:
        assert c.final(f'AUTHENTICATE "OAUTHBEARER" {{{len(msg)}+}}\r\n{msg}\r\n') == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    env.dovecot.wait_log(r"Login: user=<tok@example\.com>, method=OAUTHBEARER", since=marks.dovecot)


def test_bearer_token_16k(env, marks):
    """A 20 KiB bearer token in a literal ({n+} and {n}) is read, routed by
    a= and replayed in full. Dovecot's login process caps SASL responses at
    8 KiB and hangs up ("Authentication response too large"), which the
    client sees as the temporary failure; the connection stays usable."""
    p = env.proxy()
    msg = b64(b"n,a=bob@example.com,\x01auth=Bearer " + b"x" * 20000 + b"\x01\x01")
    c, _ = open_client(env, "implicit")
    try:
        for plus in ("+", ""):
            r = c.final(f'AUTHENTICATE "OAUTHBEARER" {{{len(msg)}{plus}}}\r\n{msg}\r\n')
            assert r.startswith(b'NO (TRYLATER) "'), r
        assert c.final("NOOP\r\n") == b'OK "NOOP completed."\r\n'
    finally:
        c.close()
    env.dovecot.wait_log(r"Authentication response too large[^\n]*method=OAUTHBEARER", since=marks.dovecot)
    p.sy.wait_log(r"login.*identifier=bob@example\.com.*mechanism=OAUTHBEARER.*result=tempfail",
                  since=marks.of(p))


# --- failures ----------------------------------------------------------------------------------------


def test_wrong_password_then_retry(env, marks):
    p = env.proxy()
    c, _ = open_client(env, "starttls")
    try:
        assert authenticate(c, "bob@example.com", "wrong") == b'NO "Authentication failed."\r\n'
        # The backend's own reply text reaches the client.
        assert authenticate(c, "dave@example.com", "nologinpass") == f'NO "{NOLOGIN_REASON}"\r\n'.encode()
        assert authenticate(c, "bob@example.com", "bobpass") == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    p.sy.wait_log(r"login.*identifier=bob@example\.com.*result=failed", since=marks.of(p))
    # A rejected token: Dovecot's error challenge is answered with AQ== and
    # its NO passed on.
    c, _ = open_client(env, "implicit")
    try:
        msg = b64(b"n,a=bob@example.com,\x01auth=Bearer not-the-token\x01\x01")
        assert c.final(f'AUTHENTICATE "OAUTHBEARER" "{msg}"\r\n') == b'NO "Authentication failed."\r\n'
        assert c.final("NOOP\r\n").startswith(b"OK")
    finally:
        c.close()


def test_hide_auth_errors(env, marks):
    p = env.proxy("hidden")
    c, _ = open_client(env, "plain", p)
    try:
        assert authenticate(c, "erin@example.com", "nologinpass") == b'NO "Authentication failed."\r\n'
        assert c.final("NOOP\r\n").startswith(b"OK")
    finally:
        c.close()
    p.sy.wait_log(r"login.*identifier=erin@example\.com.*destination=hidden.*result=failed", since=marks.of(p))


def test_master_user(env, marks):
    """user%master routes by the user and logs in as that user with the full
    login replayed."""
    p = env.proxy()
    c, _ = open_client(env, "implicit")
    try:
        assert authenticate(c, "bob@example.com%master", "masterpass") == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    p.sy.wait_log(r"login.*identifier=bob@example\.com .*result=ok", since=marks.of(p))
    env.dovecot.wait_log(rip_re(SOURCE, "bob@example.com") + r"[^\n]*\bTLS\b", since=marks.dovecot)


def test_backend_down(env, marks):
    p = env.proxy("down")
    c, _ = open_client(env, "plain", p)
    try:
        r = authenticate(c, "carol@example.com", "carolpass")
        assert re.match(rb'^NO \(TRYLATER\) "[^"\r\n]+"\r\n$', r), r
        # The connection stays open and usable.
        assert c.final("NOOP\r\n") == b'OK "NOOP completed."\r\n'
        r = authenticate(c, "carol@example.com", "carolpass")
        assert r.startswith(b"NO (TRYLATER)"), r
    finally:
        c.close()
    p.sy.wait_log(r"login.*identifier=carol@example\.com.*destination=down.*result=tempfail", since=marks.of(p))


def test_starttls_injection_discarded(env, marks):
    p = env.proxy()
    c = Sieve(connect(p.ports["starttls"], source=SOURCE))
    try:
        c.response()
        ir = plain_ir("bob@example.com", "bobpass")
        c.send(f'STARTTLS\r\nAUTHENTICATE "PLAIN" "{ir}"\r\nNOOP "injected"\r\n')
        assert c.line() == b'OK "Begin TLS negotiation now."\r\n'
        assert c.buf == b""
        caps, ok = c.starttls(env.certs.client_context())
        assert ok == b'OK "TLS negotiation successful."\r\n'
        # The next response is to the first command sent over TLS.
        assert c.final('NOOP "after"\r\n') == b'OK (TAG "after") "NOOP completed."\r\n'
    finally:
        c.close()
    assert p.sy.log_count(r"login.*identifier=bob@example\.com", since=marks.of(p)) == 0


def test_overlong_line(env, marks):
    c, _ = open_client(env, "plain")
    try:
        c.send(b"NOOP " + b"a" * 40000)
        assert c.line() == b'BYE "Command line too long."\r\n'
        expect_closed(c.sock)
    finally:
        c.close()
    c, _ = open_client(env, "plain")
    try:
        c.send(b'AUTHENTICATE "PLAIN" {99999999+}\r\n')
        assert c.line() == b'BYE "Literal too large."\r\n'
        expect_closed(c.sock)
    finally:
        c.close()


def test_hostile_input(env, marks):
    """Broken base64, NUL bytes, malformed SASL messages and bad syntax get a
    NO and the session goes on."""
    c, _ = open_client(env, "plain")
    try:
        assert c.final('AUTHENTICATE "PLAIN" "@@@="\r\n') == b'NO "Invalid base64 data in SASL response."\r\n'
        assert c.final(b'NO\x00OP\r\n') == b'NO "Authenticate first."\r\n'
        assert c.final(b'NOOP "a\x00b"\r\n') == b'NO "Invalid NOOP arguments."\r\n'
        assert c.final('AUTHENTICATE "PLAIN" "abc\r\n').startswith(b"NO ")
        assert c.final('AUTHENTICATE\r\n') == b'NO "Missing SASL mechanism."\r\n'
        assert c.final('AUTHENTICATE "PLAIN" "AAAA" "extra"\r\n') == b'NO "Invalid AUTHENTICATE arguments."\r\n'
        assert c.final("\r\n") == b'NO "Authenticate first."\r\n'
        assert authenticate(c, "bob@example.com", "bobpass") == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    # Each malformed exchange counts toward max_auth_attempts (3 here).
    c, _ = open_client(env, "plain")
    try:
        r = c.final('AUTHENTICATE "PLAIN" "' + b64(b"no-nuls") + '"\r\n')
        assert re.match(rb'^NO "[^"]+"\r\n$', r), r
        c.send('AUTHENTICATE "PLAIN"\r\n')
        assert c.item() == b'""\r\n'
        assert c.final("not-a-string\r\n") == b'NO "Invalid SASL response."\r\n'
        assert authenticate(c, "bob@example.com", "bobpass") == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()


def test_random_input(env, marks):
    """Seeded junk built from the protocol's own tokens (literals of every
    kind, quotes, escapes, NULs, bare CR/LF, SASL starts): the proxy answers
    or closes, never crashes (a sanitizer build reports at teardown), and
    still serves a login afterwards."""
    rng = random.Random(5804)
    tokens = [b"AUTHENTICATE ", b"NOOP ", b"CAPABILITY", b"LOGOUT", b"STARTTLS", b'"PLAIN" ', b'"LOGIN" ',
              b'"OAUTHBEARER" ', b"{5+}\r\n", b"{0}\r\n", b"{0+}\r\n", b"{3}\r\n", b"{99999999999}\r\n", b'"',
              b"\\", b"\x00", b"\r", b"\n", b"\r\n", b'"*"\r\n', b'""\r\n', b"AGJvYgBw", b"=", b" ", b"(", b"}",
              b"{", b"+"]
    p = env.proxy()
    for _ in range(150):
        junk = b"".join(rng.choice(tokens) if rng.random() < 0.8 else bytes([rng.randrange(256)])
                        for _ in range(rng.randrange(1, 40)))
        sock = connect(p.ports["plain"], source=SOURCE)
        try:
            sock.settimeout(5)
            sock.sendall(junk + b"\r\nLOGOUT\r\n")
            sock.shutdown(socket.SHUT_WR)  # EOF ends a command left waiting for a literal
            while sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            sock.close()
    assert p.sy.running()
    c, _ = open_client(env, "plain")
    try:
        assert authenticate(c, "bob@example.com", "bobpass") == b'OK "Logged in."\r\n'
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()


def test_max_auth_attempts(env, marks):
    c = Sieve(connect(env.proxy().strict_port, source=SOURCE))
    try:
        c.response()
        assert c.final('AUTHENTICATE "PLAIN" "!!!!"\r\n') == b'NO "Invalid base64 data in SASL response."\r\n'
        c.send(f'AUTHENTICATE "PLAIN" "{plain_ir("bob@example.com", "wrong")}"\r\n')
        assert c.line() == b'NO "Authentication failed."\r\n'
        assert c.line() == b'BYE "Too many invalid authentication attempts."\r\n'
        expect_closed(c.sock)
    finally:
        c.close()


# --- scripts through the bridge ------------------------------------------------------------------------


def sieve_file(env, user, name):
    return os.path.join(env.dovecot.home(user), "sieve", name + ".sieve")


def test_putscript_and_setactive(env, marks):
    user = "m-starttls-proxy@example.com"
    p = env.proxy(dest_name("starttls", "proxy"))
    script = b'require "fileinto";\r\nif header :contains "subject" "sy-test" {\r\n  fileinto "INBOX";\r\n}\r\n'
    c, _ = open_client(env, "starttls", p)
    try:
        assert authenticate(c, user, "pw-starttls-proxy") == b'OK "Logged in."\r\n'
        assert c.final(b'PUTSCRIPT "sy-filter" {%d+}\r\n' % len(script) + script + b"\r\n").startswith(b"OK")
        assert c.final('SETACTIVE "sy-filter"\r\n').startswith(b"OK")
        items, ok = c.cmd("LISTSCRIPTS\r\n")
        assert ok.startswith(b"OK") and b'"sy-filter" ACTIVE\r\n' in items
        items, ok = c.cmd('GETSCRIPT "sy-filter"\r\n')
        assert ok.startswith(b"OK") and items == [b"{%d}\r\n" % len(script) + script + b"\r\n"]
        # A NO carrying a literal (the compile errors) comes through whole.
        bad = b"frobnicate;\r\n"
        r = c.final(b'PUTSCRIPT "broken" {%d+}\r\n' % len(bad) + bad + b"\r\n")
        assert r.startswith(b"NO {") and b"frobnicate" in r, r
        assert c.final("LOGOUT\r\n").startswith(b"OK")
    finally:
        c.close()
    with open(sieve_file(env, user, "sy-filter"), "rb") as f:
        assert f.read() == script
    active = os.path.join(env.dovecot.home(user), ".dovecot.sieve")
    assert os.path.realpath(active) == os.path.realpath(sieve_file(env, user, "sy-filter"))


def test_sieve_connect(env, marks, tmp_path):
    """The real sieve-connect client over the STARTTLS listener: upload,
    activate and list, non-interactively."""
    user = "m-starttls-xclient@example.com"
    p = env.proxy(dest_name("starttls", "xclient"))
    pw = tmp_path / "pw"
    pw.write_text(USERS[user] + "\n")
    local = tmp_path / "vacation.sieve"
    local.write_text('require "vacation";\nvacation :days 3 "Away.";\n')

    def run(*args):
        with open(pw) as f:
            return subprocess.run(
                ["sieve-connect", "--server", "127.0.0.1", "--port", str(p.ports["starttls"]), "--user", user,
                 "--passwordfd", str(f.fileno()), "--notlsverify", *args],
                pass_fds=(f.fileno(),), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )

    r = run("--upload", "--localsieve", str(local), "--remotesieve", "away")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("--activate", "--remotesieve", "away")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("--list")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^\"?away\"?\s+ACTIVE$", r.stdout, re.M), r.stdout
    with open(sieve_file(env, user, "away")) as f:
        assert "vacation" in f.read()
    env.dovecot.wait_log(rip_re("127.0.0.1", user) + r"[^\n]*\bTLS\b", since=marks.dovecot)


# --- replies Dovecot never sends during login: a scripted peer ------------------------------------------
#
# Dovecot quotes every login reply, always advertises STARTTLS and accepts
# XCLIENT from trusted networks, so the paths below cannot be reached with
# it. A scripted ManageSieve peer plays the backend for them.


class ScriptedBackend:
    """Accepts one connection and plays `script`: ("send", bytes) writes,
    ("expect", regex) reads until the regex matches what arrived since the
    last expect (the match is kept in .matches), ("close",) hangs up. After
    the script it reads until EOF into .rest. Errors are re-raised by
    finish()."""

    def __init__(self, script):
        self.script = script
        self.matches = []
        self.rest = b""  # what arrived after the script
        self.error = None
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.lsock.settimeout(10)
            conn, _ = self.lsock.accept()
            conn.settimeout(10)
            buf = b""
            with conn:
                for step in self.script:
                    if step[0] == "send":
                        conn.sendall(step[1])
                    elif step[0] == "close":
                        return
                    else:
                        rx = re.compile(step[1])
                        while not (m := rx.search(buf)):
                            chunk = conn.recv(65536)
                            if not chunk:
                                raise HarnessError(f"EOF waiting for {step[1]!r}; got {buf!r}")
                            buf += chunk
                        self.matches.append(m)
                        buf = buf[m.end():]
                while chunk := conn.recv(65536):
                    self.rest += chunk
        except Exception as ex:  # noqa: BLE001 - reported by finish()
            self.error = ex
        finally:
            self.lsock.close()

    def finish(self):
        self.thread.join(10)
        assert not self.thread.is_alive(), "scripted backend still running"
        if self.error:
            raise self.error


def scripted_proxy(switchyard, backend, tls="plain", fwd="none"):
    """A proxy whose default destination is the scripted backend; returns the
    port of its plain client listener (cleartext auth allowed)."""
    port = free_port()
    cfg = f"""
[server]
backend_timeout = "5s"
host_down_threshold = 0

[capabilities.managesieve]
allow_plain_auth_without_tls = true

[destination.fake]
host = "127.0.0.1"
tls_server_name = "localhost"
tls_allow_invalid_certs = true
forwarding = {q(fwd)}
allow_plaintext_auth = true
[destination.fake.protocol.managesieve]
port = {backend.port}
tls = {q(tls)}

[routing]
default_destination = "fake"

[listener.s]
protocol = "managesieve"
tls = "plain"
bind = ["127.0.0.1:{port}"]
"""
    switchyard(cfg)
    return port


CAPS_BLOCK = (b'"IMPLEMENTATION" {7}\r\nScripty\r\n"SASL" "PLAIN"\r\n"VERSION" "1.0"\r\n')
AUTH_RE = rb'AUTHENTICATE "PLAIN" "([A-Za-z0-9+/=]+)"\r\n'


def test_backend_literal_replies(switchyard):
    """Capability and NO responses carrying literals are assembled whole: a
    line inside a literal that looks like OK is not taken for the verdict,
    and the NO reaches the client byte for byte."""
    no = b"NO {25}\r\nline one\r\nOK not really\r\n\r\n"
    be = ScriptedBackend([("send", CAPS_BLOCK + b'OK "hi"\r\n'), ("expect", AUTH_RE), ("send", no)])
    port = scripted_proxy(switchyard, be)
    c = Sieve(connect(port, source=SOURCE))
    try:
        c.response()
        c.send(f'AUTHENTICATE "PLAIN" "{plain_ir("bob@example.com", "bobpass")}"\r\n')
        assert c.item() == no[:-2] + b"\r\n"
        assert c.final("NOOP\r\n") == b'OK "NOOP completed."\r\n'
    finally:
        c.close()
    be.finish()
    assert base64.b64decode(be.matches[0].group(1)) == b"\0bob@example.com\0bobpass"


def test_backend_without_starttls(switchyard):
    """A STARTTLS leg whose backend does not advertise it: the temporary
    failure, and nothing (credentials least of all) sent in cleartext."""
    be = ScriptedBackend([("send", CAPS_BLOCK + b'OK "hi"\r\n')])
    port = scripted_proxy(switchyard, be, tls="starttls")
    c = Sieve(connect(port, source=SOURCE))
    try:
        c.response()
        r = authenticate(c, "bob@example.com", "bobpass")
        assert r.startswith(b'NO (TRYLATER) "'), r
    finally:
        c.close()
    be.finish()
    assert be.rest == b""


def test_backend_challenge_and_bye(switchyard):
    """A challenge after the replayed PLAIN response is answered with "*"
    and the backend's NO passed on; a BYE instead of a verdict is the
    temporary failure."""
    be = ScriptedBackend([("send", CAPS_BLOCK + b'OK "hi"\r\n'), ("expect", AUTH_RE),
                          ("send", b'"Zm9v"\r\n'), ("expect", rb'\A"\*"\r\n'),
                          ("send", b'NO "Aborted by the proxy."\r\n')])
    port = scripted_proxy(switchyard, be)
    c = Sieve(connect(port, source=SOURCE))
    try:
        c.response()
        assert authenticate(c, "bob@example.com", "bobpass") == b'NO "Aborted by the proxy."\r\n'
    finally:
        c.close()
    be.finish()

    be = ScriptedBackend([("send", CAPS_BLOCK + b'OK "hi"\r\n'), ("expect", AUTH_RE),
                          ("send", b'BYE "Going away."\r\n')])
    port = scripted_proxy(switchyard, be)
    c = Sieve(connect(port, source=SOURCE))
    try:
        c.response()
        r = authenticate(c, "bob@example.com", "bobpass")
        assert r.startswith(b'NO (TRYLATER) "'), r
    finally:
        c.close()
    be.finish()


def test_backend_refuses_xclient(switchyard):
    """The XCLIENT line carries the documented attributes; a refusal still
    lets the login through; after OK the session is bridged."""
    xclient_re = (rb"\AXCLIENT ADDR=127\.0\.0\.5 PORT=(\d+) DESTADDR=127\.0\.0\.1 DESTPORT=(\d+) "
                  rb"SESSION=[0-9a-f]{16} TTL=6 CLIENT-TRANSPORT=insecure\r\n")
    be = ScriptedBackend([("send", CAPS_BLOCK + b'"XCLIENT"\r\nOK "hi"\r\n'), ("expect", xclient_re),
                          ("send", b'NO "Not from you."\r\n'), ("expect", AUTH_RE),
                          ("send", b'OK "Welcome."\r\n'), ("expect", rb"\ALISTSCRIPTS\r\n"),
                          ("send", b'OK "Listscripts completed."\r\n')])
    port = scripted_proxy(switchyard, be, fwd="xclient")
    sock = connect(port, source=SOURCE)
    c = Sieve(sock)
    try:
        c.response()
        assert authenticate(c, "bob@example.com", "bobpass") == b'OK "Welcome."\r\n'
        assert c.final("LISTSCRIPTS\r\n") == b'OK "Listscripts completed."\r\n'
        client_port = sock.getsockname()[1]
    finally:
        c.close()
    be.finish()
    assert int(be.matches[0].group(1)) == client_port
    assert int(be.matches[0].group(2)) == port
