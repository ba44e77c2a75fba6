"""POP3 through Switchyard to a real Dovecot: the proxy's own pre-login
dialogue (RFC 1939 USER/PASS, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH),
then the backend handshake and replay on every kind of leg.

One Dovecot serves the whole module (module-scoped, its own users): pop3
(plain, STLS available), pop3s (implicit TLS), pop3_haproxy (plain, PROXY
header required) and an extra pop3s_haproxy (implicit TLS, PROXY header
required). A static passdb refuses `moved*@example.com` (right password)
with a reason text of its own, so that the backend's failure reply can be
told apart from the proxy's generic one.

Every proxy the module starts declares the same destinations: one per
backend leg, `d-<tls>-<forwarding>` for tls in implicit/starttls/plain and
forwarding in proxy/xclient/none, plus `hidden` (hide_auth_errors) and
`down` (a closed port), and four listeners: `implicit`, `starttls`, `plain`
(cleartext auth allowed everywhere: [capabilities.pop3]
allow_plain_auth_without_tls) and `strict` (plain, max_auth_attempts = 2).
They differ only in routing.default_destination, which selects the leg under
test (one proxy per default, started on first use and shared by the module).

Dovecot's log line for a login (2.3.19):
  pop3-login: Info: Login: user=<u>, method=PLAIN, rip=<ip>, lip=<ip>,
  mpid=<n>, <TLS|secured|...>, session=<id>
Clients bind to distinct loopback addresses so the forwarded address is
visible as rip.
"""

import base64
import poplib
import re
import subprocess

import pytest

from harness import Dovecot, Switchyard, clients, free_port
from harness.util import connect, expect_closed, recv_line, recv_until

TLS_MODES = ("implicit", "starttls", "plain")
FORWARDINGS = ("proxy", "xclient", "none")
CLIENT_LEGS = ("implicit", "starttls", "plain")

SY_LINE_MAX = 32767
BANNER = "Switchyard test POP3 ready."
GENERIC_FAIL = b"-ERR [AUTH] Authentication failed."
MOVED_REASON = "Moved_to_the_new_server"
PLAINTEXT_DISALLOWED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections."


def sw1_token(account, body="sig"):
    return clients.sw1_token(account, body)


def matrix_user(tls, fwd):
    return f"u-{tls}-{fwd}@example.com"


def matrix_pass(tls, fwd):
    return f"pw-{tls}-{fwd}"


SHORT_TOKEN = sw1_token("tok@example.com")
# Long enough to force the RFC 5034 continuation on the backend leg, short
# enough for Dovecot's 8 KiB limit on SASL responses.
LONG_TOKEN = sw1_token("long@example.com", "L" * 5000)

USERS = {
    "alice@example.com": "alicepass",
    "bob@example.com": "bobpass",
    "tok@example.com": SHORT_TOKEN,
    "long@example.com": LONG_TOKEN,
    **{matrix_user(t, f): matrix_pass(t, f) for t in TLS_MODES for f in FORWARDINGS},
}


def q(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Proxy:
    """One running Switchyard whose default destination is the leg under
    test, with the four listeners of the module."""

    def __init__(self, sy, ports, certs):
        self.sy = sy
        self.ports = ports
        self.certs = certs

    def connect(self, leg, source="127.0.0.1"):
        """A raw socket to a listener, TLS already up on the implicit one;
        the greeting is not read."""
        sock = connect(self.ports[leg], source=source)
        if leg == "implicit":
            sock = self.certs.client_context().wrap_socket(sock, server_hostname="localhost")
        return sock

    def client(self, leg, source="127.0.0.1"):
        """A poplib client on a listener; on the starttls listener STLS is done."""
        p = clients.pop3_on(self.connect(leg, source))
        if leg == "starttls":
            p.stls(context=self.certs.client_context())
        return p

    def wait_log(self, pattern, since):
        return self.sy.wait_log(pattern, since=since)


class Env:
    """The module's Dovecot and its proxies, one per default destination
    (started on first use, stopped at the end of the module)."""

    def __init__(self, dovecot, certs, pop3s_haproxy):
        self.dovecot = dovecot
        self.certs = certs
        self.pop3s_haproxy = pop3s_haproxy
        self.down_port = free_port()
        self.proxies = {}
        self.used = []

    def proxy(self, default):
        px = self.proxies.get(default)
        if px is None:
            ports = {leg: free_port() for leg in ("implicit", "starttls", "plain", "strict")}
            sy = Switchyard(proxy_config(self.dovecot, ports, self.pop3s_haproxy, self.certs, self.down_port,
                                         default))
            px = self.proxies[default] = Proxy(sy, ports, self.certs)
            sy.start()
        self.used.append((px, px.sy.log_mark()))
        return px

    def close(self):
        errors = []
        for px in self.proxies.values():
            try:
                px.sy.stop(check=True)
            except AssertionError as e:
                errors.append(str(e))
            finally:
                px.sy.cleanup()
        if errors:
            raise AssertionError("\n".join(errors))


def dovecot_extra_conf(haproxy_tls_port):
    return f"""
service pop3-login {{
  inet_listener pop3s_haproxy {{
    address = 127.0.0.1
    port = {haproxy_tls_port}
    ssl = yes
    haproxy = yes
  }}
}}
# Known account, right password, refused with a reason of its own.
passdb {{
  driver = static
  username_filter = moved*@example.com
  args = password=movedpass nologin=y reason={MOVED_REASON}
}}
"""


def proxy_config(d, ports, pop3s_haproxy, certs, down_port, default):
    backend_port = {
        ("implicit", "proxy"): pop3s_haproxy,
        ("starttls", "proxy"): d.pop3_haproxy,
        ("plain", "proxy"): d.pop3_haproxy,
        ("implicit", "xclient"): d.pop3s,
        ("starttls", "xclient"): d.pop3,
        ("plain", "xclient"): d.pop3,
        ("implicit", "none"): d.pop3s,
        ("starttls", "none"): d.pop3,
        ("plain", "none"): d.pop3,
    }
    out = [
        "[server]",
        'log_level = "debug"',
        'shutdown_grace = "2s"',
        'backend_timeout = "5s"',
        "",
        "[capabilities.pop3]",
        f"banner = {q(BANNER)}",
        "allow_plain_auth_without_tls = true",
        "",
        "[tls.certificate.local]",
        f"cert = {q(certs.localhost.cert)}",
        f"key = {q(certs.localhost.key)}",
        "",
        "[routing]",
        f"default_destination = {q(default)}",
        "",
    ]

    def destination(name, port, tls, fwd, extra=()):
        out.extend([
            f"[destination.{name}]",
            'host = "127.0.0.1"',
            'tls_server_name = "localhost"',
            f"tls_pinned_cert_sha256 = {q(certs.localhost.sha256)}",
            f"forwarding = {q(fwd)}",
        ])
        if tls == "plain":
            out.append("allow_plaintext_auth = true")
        out.extend(extra)
        out.extend([f"[destination.{name}.protocol.pop3]", f"port = {port}", f"tls = {q(tls)}", ""])

    for t in TLS_MODES:
        for f in FORWARDINGS:
            destination(f"d-{t}-{f}", backend_port[(t, f)], t, f)
    destination("hidden", d.pop3s, "implicit", "none", ["hide_auth_errors = true"])
    destination("down", down_port, "plain", "none")
    for leg, port in ports.items():
        tls = "plain" if leg == "strict" else leg
        out.extend([f"[listener.{leg}]", 'protocol = "pop3"', f"tls = {q(tls)}", f'bind = ["127.0.0.1:{port}"]'])
        if leg == "strict":
            out.append("max_auth_attempts = 2")
        out.append("")
    return "\n".join(out)


MAIN = "d-implicit-none"


@pytest.fixture(scope="module")
def env(certs):
    pop3s_haproxy = free_port()
    d = Dovecot(certs, users=USERS, listeners={"pop3": ("plain", "tls", "haproxy")},
                extra_conf=dovecot_extra_conf(pop3s_haproxy))
    e = None
    try:
        d.start()
        e = Env(d, certs, pop3s_haproxy)
        yield e
    finally:
        try:
            if e is not None:
                e.close()
        finally:
            d.cleanup()


@pytest.fixture
def marks(env, request):
    """The Dovecot log offset at the start of the test; on failure, that log
    and the logs of the proxies the test used are printed from there on."""
    env.used = []
    m = env.dovecot.log_mark()
    yield m
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"--- dovecot log during the test ---\n{env.dovecot.log_text(m)[-20000:]}")
        for px, since in env.used:
            print(f"--- switchyard log ({px.sy.config_path}) ---\n" + "\n".join(px.sy.log_lines()[since:])[-20000:])


def login_re(user, rip, method="PLAIN"):
    return (rf"pop3-login: Info: Login: user=<{re.escape(user)}>, method={method}, rip={re.escape(rip)}, "
            rf"lip=127\.0\.0\.1, mpid=\d+, (?P<sec>[^,]*), session=<(?P<session>[^>]*)>")


def cmd(sock, line):
    """Send one command line, return the one-line reply (without CRLF)."""
    sock.sendall(line + b"\r\n")
    return recv_line(sock).rstrip(b"\r\n")


def multiline(sock, line):
    """Send a command with a multi-line answer; the lines without CRLF."""
    sock.sendall(line + b"\r\n")
    data = recv_until(sock, rb"(^|\r\n)\.\r\n|^-ERR[^\r\n]*\r\n")
    return data.decode().split("\r\n")[:-1]


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s)


# --- the login matrix: client leg x backend leg x forwarding -----------------------------------


@pytest.mark.parametrize("fwd", FORWARDINGS)
@pytest.mark.parametrize("tls", TLS_MODES)
@pytest.mark.parametrize("leg", CLIENT_LEGS)
def test_login_matrix(env, marks, leg, tls, fwd):
    px = env.proxy(f"d-{tls}-{fwd}")
    mark = px.sy.log_mark()
    source = f"127.0.{CLIENT_LEGS.index(leg) + 1}.{10 + 3 * TLS_MODES.index(tls) + FORWARDINGS.index(fwd)}"
    user, password = matrix_user(tls, fwd), matrix_pass(tls, fwd)
    p = px.client(leg, source)
    assert p.getwelcome() == f"+OK {BANNER}".encode()
    p.user(user)
    assert p.pass_(password).startswith(b"+OK")
    # Bridged to Dovecot's mailbox session.
    assert p.stat() == (0, 0)
    assert p.quit().startswith(b"+OK")

    rip = source if fwd in ("proxy", "xclient") else "127.0.0.1"
    m = env.dovecot.wait_log(login_re(user, rip), since=marks)
    assert ("TLS" in m["sec"]) == (tls != "plain"), m.group(0)
    if fwd == "xclient":
        # Our session id went over in XCLIENT SESSION=.
        assert re.fullmatch(r"[0-9a-f]{16}", m["session"]), m.group(0)
    px.wait_log(rf"\blogin\b.*identifier={re.escape(user)}.*destination=d-{tls}-{fwd}\b.*result=ok", mark)


# --- the proxy's own dialogue ------------------------------------------------------------------


def test_greeting_and_capa(env, marks):
    s = env.proxy(MAIN).connect("plain")
    assert recv_line(s) == f"+OK {BANNER}\r\n".encode()
    caps = multiline(s, b"CAPA")
    assert caps[0].startswith("+OK")
    assert caps[1:] == ["USER", "SASL PLAIN OAUTHBEARER XOAUTH2", "TOP", "UIDL", "RESP-CODES", "PIPELINING",
                        "AUTH-RESP-CODE", "."]
    # The RFC 1734 listing form.
    assert multiline(s, b"AUTH") == ["+OK", "PLAIN", "OAUTHBEARER", "XOAUTH2", "."]
    assert cmd(s, b"QUIT") == b"+OK Logging out."
    assert expect_closed(s)[0] == b""


def test_capa_starttls_listener_and_stls(env, marks):
    s = env.proxy(MAIN).connect("starttls")
    recv_line(s)
    caps = multiline(s, b"capa")
    assert "STLS" in caps
    assert cmd(s, b"STLS extra") == b"-ERR STLS takes no arguments."
    assert cmd(s, b"STLS") == b"+OK Begin TLS negotiation now."
    t = env.certs.client_context().wrap_socket(s, server_hostname="localhost")
    caps = multiline(t, b"CAPA")
    assert "STLS" not in caps and "USER" in caps
    assert cmd(t, b"STLS") == b"-ERR TLS is already active."
    t.close()


def test_stls_not_offered_without_starttls_listener(env, marks):
    s = env.proxy(MAIN).connect("plain")
    recv_line(s)
    assert "STLS" not in multiline(s, b"CAPA")
    assert cmd(s, b"STLS") == b"-ERR STLS is not available."
    s.close()


def test_commands_before_login(env, marks):
    s = env.proxy(MAIN).connect("plain")
    recv_line(s)
    for c in (b"NOOP", b"RSET", b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 0"):
        assert cmd(s, c).startswith(b"-ERR "), c
    assert cmd(s, b"XYZZY") == b"-ERR Unknown command."
    assert cmd(s, b"") == b"-ERR Unknown command."
    assert cmd(s, b"APOP alice@example.com 0123456789abcdef0123456789abcdef").startswith(b"-ERR ")
    assert cmd(s, b"PASS alicepass") == b"-ERR No username given."
    assert cmd(s, b"USER") == b"-ERR Invalid user name."
    # NUL bytes: never a crash, never a login.
    assert cmd(s, b"US\x00R alice@example.com").startswith(b"-ERR ")
    assert cmd(s, b"USER al\x00ice@example.com") == b"-ERR Invalid user name."
    assert cmd(s, b"\x00\x00\x00") == b"-ERR Unknown command."
    assert cmd(s, b"AUTH FOO") == b"-ERR Unsupported authentication mechanism."
    assert cmd(s, b"AUTH PL\x00AIN") == b"-ERR Unsupported authentication mechanism."
    # Still serving.
    assert cmd(s, b"USER alice@example.com") == b"+OK"
    assert cmd(s, b"PASS alicepass").startswith(b"+OK")
    assert cmd(s, b"QUIT").startswith(b"+OK")
    s.close()


def test_user_pass_lowercase_and_password_with_spaces(env, marks):
    """Keywords are case-insensitive; PASS takes the rest of the line."""
    s = env.proxy(MAIN).connect("plain")
    recv_line(s)
    assert cmd(s, b"user bob@example.com") == b"+OK"
    assert cmd(s, b"pass bob pass") == GENERIC_FAIL  # "bob pass" is not "bobpass"
    assert cmd(s, b"pass bobpass") == b"-ERR No username given."  # USER again after PASS
    assert cmd(s, b"user bob@example.com") == b"+OK"
    assert cmd(s, b"pass bobpass").startswith(b"+OK")
    s.close()


# --- AUTH --------------------------------------------------------------------------------------


def test_auth_plain_initial_response(env, marks):
    s = env.proxy("d-plain-proxy").connect("implicit", "127.0.0.21")
    recv_line(s)
    r = cmd(s, b"AUTH PLAIN " + b64("\0alice@example.com\0alicepass"))
    assert r.startswith(b"+OK"), r
    assert cmd(s, b"STAT").startswith(b"+OK 0")
    s.close()
    env.dovecot.wait_log(login_re("alice@example.com", "127.0.0.21"), since=marks)


def test_auth_plain_continuation(env, marks):
    s = env.proxy(MAIN).connect("plain")
    recv_line(s)
    assert cmd(s, b"AUTH PLAIN") == b"+ "
    r = cmd(s, b64("\0bob@example.com\0bobpass"))
    assert r.startswith(b"+OK"), r
    s.close()


def test_auth_login_mechanism(env, marks):
    """LOGIN is never advertised but accepted, and replayed as PLAIN."""
    px = env.proxy(MAIN)
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"AUTH LOGIN") == b"+ " + b64("Username:")
    assert cmd(s, b64("bob@example.com")) == b"+ " + b64("Password:")
    assert cmd(s, b64("bobpass")).startswith(b"+OK")
    s.close()
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"AUTH LOGIN " + b64("bob@example.com")) == b"+ " + b64("Password:")
    assert cmd(s, b64("wrong")) == GENERIC_FAIL
    s.close()
    env.dovecot.wait_log(r"Login: user=<bob@example\.com>, method=PLAIN", since=marks)


def test_auth_abort_and_bad_base64(env, marks):
    px = env.proxy(MAIN)
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"AUTH PLAIN") == b"+ "
    assert cmd(s, b"*") == b"-ERR Authentication aborted by client."
    assert cmd(s, b"AUTH PLAIN !!!not-base64!!!") == b"-ERR Invalid base64 data in SASL response."
    s.close()
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"AUTH XOAUTH2") == b"+ "
    assert cmd(s, b"QUJD=") == b"-ERR Invalid base64 data in SASL response."
    # Valid base64, but not a PLAIN message (no NULs).
    assert cmd(s, b"AUTH PLAIN " + b64("no-nul-here")).startswith(b"-ERR [AUTH] Malformed PLAIN response")
    s.close()
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"AUTH PLAIN =").startswith(b"-ERR [AUTH] Malformed PLAIN response")
    assert cmd(s, b"AUTH LOGIN " + b64("a\0b")) == GENERIC_FAIL
    # Still usable after all that (limit 3 on this listener: 2 failures so far).
    assert cmd(s, b"AUTH PLAIN " + b64("\0bob@example.com\0bobpass")).startswith(b"+OK")
    s.close()


@pytest.mark.parametrize("mech", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("token_user, token", [("tok@example.com", SHORT_TOKEN), ("long@example.com", LONG_TOKEN)],
                         ids=["short-token", "long-token"])
def test_auth_bearer(env, marks, mech, token_user, token):
    """Identifier from the sw1. token; the short one is replayed inline, the
    long one (over RFC 2449's 255 octets) after Dovecot's "+ "."""
    if mech == "OAUTHBEARER":
        msg = f"n,a={token_user},\x01auth=Bearer {token}\x01\x01"
    else:
        msg = f"user={token_user}\x01auth=Bearer {token}\x01\x01"
    px = env.proxy("d-starttls-xclient")
    mark = px.sy.log_mark()
    s = px.connect("starttls")  # bearer tokens are not cleartext passwords
    recv_line(s)
    r = cmd(s, b"AUTH " + mech.encode() + b" " + b64(msg))
    assert r.startswith(b"+OK"), r
    s.close()
    env.dovecot.wait_log(rf"Login: user=<{re.escape(token_user)}>, method={mech}", since=marks)
    px.wait_log(rf"\blogin\b.*identifier={re.escape(token_user)}.*result=ok", mark)


def test_auth_bearer_bad_token_error_challenge(env, marks):
    """Dovecot answers a bad OAUTHBEARER token with an error challenge; the
    proxy finishes the exchange (AQ==) and relays the -ERR."""
    px = env.proxy(MAIN)
    mark = px.sy.log_mark()
    s = px.connect("plain")
    recv_line(s)
    msg = f"n,a=tok@example.com,\x01auth=Bearer {sw1_token('tok@example.com', 'wrong')}\x01\x01"
    assert cmd(s, b"AUTH OAUTHBEARER " + b64(msg)) == GENERIC_FAIL
    assert cmd(s, b"AUTH XOAUTH2") == b"+ "
    msg = f"user=tok@example.com\x01auth=Bearer {sw1_token('tok@example.com', 'wrong')}\x01\x01"
    assert cmd(s, b64(msg)) == GENERIC_FAIL
    s.close()
    px.wait_log(r"\blogin\b.*identifier=tok@example\.com.*result=failed", mark)


def test_auth_16k_bearer_token(env, marks):
    """A bearer token of 16 KiB is taken in one AUTH line and routed by its
    identifier. (Dovecot drops SASL responses over 8 KiB, so its verdict is
    a disconnect, which the client sees as the temporary failure.)"""
    token = sw1_token("big@example.com", "B" * 16384)
    px = env.proxy(MAIN)
    mark = px.sy.log_mark()
    s = px.connect("plain")
    recv_line(s)
    line = b"AUTH OAUTHBEARER " + b64(f"n,a=big@example.com,\x01auth=Bearer {token}\x01\x01")
    assert SY_LINE_MAX > len(line) > 16384
    r = cmd(s, line)
    assert r.startswith(b"-ERR [SYS/TEMP] "), r
    px.wait_log(r"\blogin\b.*identifier=big@example\.com.*result=tempfail", mark)
    env.dovecot.wait_log(r"Authentication response too large", since=marks)
    # The connection is still there.
    assert cmd(s, b"USER bob@example.com") == b"+OK"
    s.close()


# --- failures ----------------------------------------------------------------------------------


def test_wrong_password_then_retry(env, marks):
    px = env.proxy("d-starttls-xclient")
    mark = px.sy.log_mark()
    p = px.client("starttls", "127.0.0.22")
    p.user("alice@example.com")
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("wrong")
    assert e.value.args[0] == GENERIC_FAIL
    p.user("alice@example.com")
    assert p.pass_("alicepass").startswith(b"+OK")
    p.quit()
    px.wait_log(r"\blogin\b.*identifier=alice@example\.com.*result=failed", mark)
    env.dovecot.wait_log(login_re("alice@example.com", "127.0.0.22"), since=marks)


def test_backend_reply_relayed_verbatim(env, marks):
    s = env.proxy("d-plain-none").connect("plain")
    recv_line(s)
    assert cmd(s, b"USER moved@example.com") == b"+OK"
    assert cmd(s, b"PASS movedpass") == f"-ERR [AUTH] {MOVED_REASON}".encode()
    s.close()


def test_hide_auth_errors(env, marks):
    px = env.proxy("hidden")
    mark = px.sy.log_mark()
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"USER moved-hidden@example.com") == b"+OK"
    assert cmd(s, b"PASS movedpass") == GENERIC_FAIL
    s.close()
    px.wait_log(r"\blogin\b.*identifier=moved-hidden@example\.com.*destination=hidden.*result=failed", mark)


def test_master_user(env, marks):
    px = env.proxy("d-starttls-xclient")
    mark = px.sy.log_mark()
    p = px.client("plain", "127.0.0.23")
    p.user("alice@example.com%master")
    assert p.pass_("masterpass").startswith(b"+OK")
    assert p.stat() == (0, 0)
    p.quit()
    env.dovecot.wait_log(r"Master user logging in as alice@example\.com", since=marks)
    env.dovecot.wait_log(login_re("alice@example.com", "127.0.0.23"), since=marks)
    # Routed by the account, not the master login.
    px.wait_log(r"\blogin\b.*identifier=alice@example\.com .*result=ok", mark)


def test_backend_down_tempfail(env, marks):
    px = env.proxy("down")
    mark = px.sy.log_mark()
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"USER down@example.com") == b"+OK"
    r = cmd(s, b"PASS whatever")
    assert r == b"-ERR [SYS/TEMP] Backend server unavailable, try again later.", r
    # The connection stays open; the failure did not count as a login failure.
    for _ in range(3):
        assert cmd(s, b"AUTH PLAIN " + b64("\0bob@example.com\0bobpass")).startswith(b"-ERR [SYS/TEMP] ")
    assert cmd(s, b"CAPA").startswith(b"+OK")
    s.close()
    px.wait_log(r"\blogin\b.*identifier=down@example\.com.*result=tempfail", mark)


def test_forbidden_identifier_tempfail(env, marks):
    """An identifier with a space or a quote is refused with the
    backend-unavailable reply (SPEC section 2), before any dial."""
    px = env.proxy(MAIN)
    mark = px.sy.log_mark()
    s = px.connect("plain")
    recv_line(s)
    for user in (b"al ice@example.com", b'al"ice@example.com'):
        assert cmd(s, b"USER " + user) == b"+OK"
        assert cmd(s, b"PASS alicepass").startswith(b"-ERR [SYS/TEMP] ")
    assert cmd(s, b"USER alice@example.com") == b"+OK"
    assert cmd(s, b"PASS alicepass").startswith(b"+OK")
    s.close()
    px.wait_log(r"\blogin\b.*result=tempfail.*forbidden characters", mark)


def test_max_auth_attempts(env, marks):
    px = env.proxy(MAIN)
    s = px.connect("strict")
    recv_line(s)
    assert cmd(s, b"USER alice@example.com") == b"+OK"
    assert cmd(s, b"PASS wrong1") == GENERIC_FAIL
    assert cmd(s, b"USER alice@example.com") == b"+OK"
    assert cmd(s, b"PASS wrong2") == GENERIC_FAIL
    assert expect_closed(s)[0] == b""
    # Malformed SASL counts too.
    s = px.connect("strict")
    recv_line(s)
    assert cmd(s, b"AUTH PLAIN %%%") == b"-ERR Invalid base64 data in SASL response."
    assert cmd(s, b"AUTH PLAIN " + b64("\0alice@example.com\0wrong")) == GENERIC_FAIL
    assert expect_closed(s)[0] == b""


# --- hostile input -----------------------------------------------------------------------------


def test_stls_pipelining_injection_discarded(env, marks):
    """Commands pipelined after STLS in the same packet are dropped (the
    CVE-2011-0411 class): the USER below must not survive the handshake."""
    s = env.proxy(MAIN).connect("starttls")
    recv_line(s)
    s.sendall(b"STLS\r\nUSER alice@example.com\r\n")
    assert recv_line(s) == b"+OK Begin TLS negotiation now.\r\n"
    t = env.certs.client_context().wrap_socket(s, server_hostname="localhost")
    assert cmd(t, b"PASS alicepass") == b"-ERR No username given."
    t.close()


def test_pipelined_login_and_commands(env, marks):
    """Commands pipelined after PASS reach the mailbox after the login."""
    s = env.proxy(MAIN).connect("plain")
    recv_line(s)
    s.sendall(b"USER bob@example.com\r\nPASS bobpass\r\nSTAT\r\nQUIT\r\n")
    data = recv_until(s, rb"Logging out\.?\r\n")
    lines = data.decode().split("\r\n")
    assert lines[0] == "+OK"
    assert lines[1].startswith("+OK")  # logged in
    assert lines[2] == "+OK 0 0"
    assert lines[3].startswith("+OK Logging out")
    s.close()


def test_overlong_line(env, marks):
    px = env.proxy(MAIN)
    s = px.connect("plain")
    recv_line(s)
    s.sendall(b"A" * SY_LINE_MAX)
    data, _ = expect_closed(s)
    assert data == b"-ERR Command line too long.\r\n"
    # Far more than that: closed, and the proxy carries on.
    s = px.connect("plain")
    recv_line(s)
    try:
        s.sendall(b"USER " + b"x" * 200000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    expect_closed(s)
    s = px.connect("plain")
    assert recv_line(s).startswith(b"+OK")
    assert cmd(s, b"QUIT").startswith(b"+OK")
    s.close()


def test_overlong_sasl_continuation(env, marks):
    s = env.proxy(MAIN).connect("plain")
    recv_line(s)
    assert cmd(s, b"AUTH PLAIN") == b"+ "
    s.sendall(b"QUFB" * (SY_LINE_MAX // 4) + b"QUF")
    data, _ = expect_closed(s)
    assert data == b"-ERR Command line too long.\r\n"


# --- cleartext policy (default: no cleartext auth before TLS) ----------------------------------


@pytest.fixture
def strict_proxy(env, switchyard, certs):
    """A second proxy with the default [capabilities.pop3]: cleartext auth
    only over TLS."""
    ports = {"starttls": free_port(), "implicit": free_port(), "plain": free_port()}
    d = env.dovecot
    cfg = f"""
[server]
log_level = "debug"
shutdown_grace = "2s"
[tls.certificate.local]
cert = {q(certs.localhost.cert)}
key = {q(certs.localhost.key)}
[destination.dv]
host = "127.0.0.1"
allow_plaintext_auth = true
proxy_protocol = false
[destination.dv.protocol.pop3]
port = {d.pop3}
tls = "plain"
[routing]
default_destination = "dv"
""" + "".join(f'[listener.{leg}]\nprotocol = "pop3"\ntls = "{leg}"\nbind = ["127.0.0.1:{port}"]\n'
              for leg, port in ports.items())
    return Proxy(switchyard(cfg), ports, certs)


def test_plaintext_disallowed_before_tls(strict_proxy, marks):
    px = strict_proxy
    s = px.connect("starttls")
    assert recv_line(s) == b"+OK Switchyard POP3 ready.\r\n"  # the default banner
    caps = multiline(s, b"CAPA")
    assert "USER" not in caps
    assert "SASL OAUTHBEARER XOAUTH2" in caps and "STLS" in caps
    assert multiline(s, b"AUTH") == ["+OK", "OAUTHBEARER", "XOAUTH2", "."]
    assert cmd(s, b"USER alice@example.com") == PLAINTEXT_DISALLOWED
    assert cmd(s, b"PASS alicepass") == PLAINTEXT_DISALLOWED
    assert cmd(s, b"AUTH PLAIN " + b64("\0alice@example.com\0alicepass")) == PLAINTEXT_DISALLOWED
    assert cmd(s, b"AUTH LOGIN") == PLAINTEXT_DISALLOWED
    assert cmd(s, b"STLS").startswith(b"+OK")
    t = px.certs.client_context().wrap_socket(s, server_hostname="localhost")
    caps = multiline(t, b"CAPA")
    assert "USER" in caps and "SASL PLAIN OAUTHBEARER XOAUTH2" in caps
    assert cmd(t, b"USER alice@example.com") == b"+OK"
    assert cmd(t, b"PASS alicepass").startswith(b"+OK")
    t.close()
    # Implicit TLS: allowed from the start.
    p = px.client("implicit")
    assert "USER" in p.capa()
    p.user("bob@example.com")
    assert p.pass_("bobpass").startswith(b"+OK")
    p.quit()
    # A plain listener never allows it; tokens still work.
    s = px.connect("plain")
    recv_line(s)
    assert cmd(s, b"USER bob@example.com") == PLAINTEXT_DISALLOWED
    msg = f"n,a=tok@example.com,\x01auth=Bearer {SHORT_TOKEN}\x01\x01"
    assert cmd(s, b"AUTH OAUTHBEARER " + b64(msg)).startswith(b"+OK")
    s.close()


# --- a real client: curl ---------------------------------------------------------------------------


@pytest.mark.parametrize("leg", ["implicit", "starttls"])
def test_curl_lists_the_mailbox(env, marks, leg):
    """curl logs in through the proxy (pop3s://, or pop3:// with STLS) and
    lists the mailbox Dovecot serves."""
    p = env.proxy(MAIN)
    scheme = "pop3s" if leg == "implicit" else "pop3"
    args = ["curl", "-s", "--max-time", "20", "--cacert", env.certs.ca_cert,
            "--url", f"{scheme}://localhost:{p.ports[leg]}/", "-u", "bob@example.com:bobpass"]
    if leg == "starttls":
        args.insert(1, "--ssl-reqd")
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.returncode, r.stderr)
    # A LIST answer: "<n> <size>" lines (possibly none for an empty mailbox),
    # and the login reached Dovecot through the proxy.
    lines = [line.strip() for line in r.stdout.splitlines() if line.strip()]
    assert all(re.fullmatch(r"\d+ \d+", line) for line in lines), repr(r.stdout)
    env.dovecot.wait_log(r"pop3-login: Info: Login: user=<bob@example.com>", since=marks)
