"""The submission protocol (RFC 6409 with AUTH, RFC 4954, and STARTTLS,
RFC 3207) through Switchyard to a real Dovecot submission service, which
relays accepted mail to the harness's SMTP sink.

One private Dovecot serves the whole module: a user per backend-leg
combination (tls implicit / starttls / plain x forwarding proxy / xclient /
none), alice/bob/carol, the master user, a token user whose password is a
bearer token, a static passdb that refuses `moved*@example.com` with a reason
of its own (so the backend's failure text differs from the proxy's generic
one), and an extra implicit-TLS listener that requires a PROXY header (the
harness's haproxy listener is cleartext only).

Proxies are started per default destination on first use (the router sends
every login to the default destination), each with an implicit-TLS, a
STARTTLS, a plain and an IPv6 submission listener
(allow_plain_auth_without_tls = true so that the plain leg can log in).
Policy tests that need the default (strict) capabilities start their own.

Tests tell their traffic apart by user, by source address (127.0.0.x, each
test its own) and by log offsets.

Dovecot wording relied on (2.3.19): submission logins are logged as
`submission-login: Info: Login: user=<u>, method=PLAIN, rip=<ip>, ...`, master
logins as `Master user logging in as <u>`; its submission-login refuses AUTH
lines and SASL responses above 8 KiB with `500 5.5.2 Line too long`.
"""

import base64
import itertools
import json
import re
import smtplib
import subprocess
import types

import pytest

from harness import Dovecot, SmtpSink, Switchyard, clients
from harness.dovecot import DEFAULT_MASTERS, DEFAULT_USERS
from harness.util import connect, expect_closed, free_port, recv_line

LEGS = ("implicit", "starttls", "plain")
FORWARDINGS = ("proxy", "xclient", "none")
HOSTNAME = "proxy.test"
BANNER = "Switchyard ESMTP ready"
GENERIC = "535 5.7.8 Authentication failed."

MOVED_REASON = "Moved_to_the_new_server"


def sw1_token(account, body="sig"):
    return clients.sw1_token(account, body)


# Dovecot 2.3 checks OAUTHBEARER/XOAUTH2 tokens as the user's password, so the
# token user's password is the token itself. Dovecot's submission-login takes
# AUTH lines up to 8 KiB only: the 5000-byte token logs in end to end, the
# 16 KiB one shows that the proxy takes and replays it (Dovecot then refuses
# the line, and that refusal is what the client gets).
TOKEN_USER = "token@example.com"
TOKEN = sw1_token(TOKEN_USER, "t" * 5000)
BIG_TOKEN_USER = "big@example.com"
BIG_TOKEN = sw1_token(BIG_TOKEN_USER, "b" * 16500)

_source_ips = itertools.count(10)


def source_ip():
    """A loopback source address no other test in this module uses."""
    n = next(_source_ips)
    assert n < 255, "out of loopback source addresses"
    return f"127.0.0.{n}"


def combo_user(btls, fwd):
    return f"{btls}-{fwd}@example.com"


def combo_pass(btls, fwd):
    return f"pw-{btls}-{fwd}"


def combo_dest(btls, fwd):
    return f"d_{btls}_{fwd}"


def q(s):
    return json.dumps(s)


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def rip_re(user, ip):
    return (rf"submission-login: Info: Login: user=<{re.escape(user)}>, method=PLAIN, "
            rf"rip={re.escape(ip)},")


# --- fixtures -----------------------------------------------------------------------


def dovecot_extra_conf(tls_haproxy_port):
    return f"""
service submission-login {{
  inet_listener submissions_haproxy {{
    address = 127.0.0.1
    port = {tls_haproxy_port}
    ssl = yes
    haproxy = yes
  }}
}}
# Known account, right password, refused with a reason of its own (so that
# the backend's failure reply differs from the proxy's generic one).
passdb {{
  driver = static
  username_filter = moved*@example.com
  args = password=movedpass nologin=y reason={MOVED_REASON}
}}
"""


def proxy_config(env, ports, default):
    """The module's proxy configuration; `default` is the default
    destination, which is where every login of that proxy goes."""
    certs = env.certs
    parts = [f"""
[server]
log_level = "debug"
hostname = {q(HOSTNAME)}
backend_timeout = "5s"
shutdown_grace = "5s"

[tls.certificate.main]
cert = {q(certs.localhost.cert)}
key = {q(certs.localhost.key)}
default = true

[capabilities.submission]
allow_plain_auth_without_tls = true

[routing]
default_destination = {q(default)}

[listener.sub_implicit]
protocol = "submission"
bind = ["127.0.0.1:{ports['implicit']}"]
tls = "implicit"

[listener.sub_starttls]
protocol = "submission"
bind = ["127.0.0.1:{ports['starttls']}"]
tls = "starttls"
max_auth_attempts = 3

[listener.sub_plain]
protocol = "submission"
bind = ["127.0.0.1:{ports['plain']}"]
tls = "plain"

[listener.sub_v6]
protocol = "submission"
bind = ["[::1]:{ports['ipv6']}"]
tls = "plain"
"""]

    def destination(dest_id, port, tls, forwarding, extra=""):
        parts.append(f"""
[destination.{dest_id}]
host = "127.0.0.1"
tls_server_name = "localhost"
tls_pinned_cert_sha256 = {q(certs.localhost.sha256)}
allow_plaintext_auth = true
forwarding = {q(forwarding)}
{extra}
[destination.{dest_id}.protocol.submission]
port = {port}
tls = {q(tls)}
""")

    d = env.dovecot
    for btls in LEGS:
        for fwd in FORWARDINGS:
            if btls == "implicit":
                port = env.tls_haproxy_port if fwd == "proxy" else d.submissions
            else:
                port = d.submission_haproxy if fwd == "proxy" else d.submission
            destination(combo_dest(btls, fwd), port, btls, fwd)
    destination("d_hidden", d.submission, "starttls", "xclient", "hide_auth_errors = true")
    destination("d_down", env.down_port, "plain", "none")
    destination("d_bare_starttls", env.bare.port, "starttls", "none")
    destination("d_bare_plain", env.bare.port, "plain", "none")
    return "".join(parts)


class Env:
    """The module's Dovecot, a bare SMTP server (the harness sink: neither
    STARTTLS nor AUTH) and the proxies, one per default destination (started
    on first use, stopped at the end of the module). The router sends every
    login to the default destination, so a test picks the backend leg under
    test by picking the proxy."""

    def __init__(self, certs, sink):
        self.certs = certs
        self.sink = sink
        self.tls_haproxy_port = free_port()
        self.down_port = free_port()
        users = dict(DEFAULT_USERS)
        for btls in LEGS:
            for fwd in FORWARDINGS:
                users[combo_user(btls, fwd)] = combo_pass(btls, fwd)
        users[TOKEN_USER] = TOKEN
        self.dovecot = Dovecot(certs, users=users, masters=DEFAULT_MASTERS,
                               listeners={"submission": ("plain", "tls", "haproxy")},
                               relay=(sink.host, sink.port), extra_conf=dovecot_extra_conf(self.tls_haproxy_port))
        self.bare = SmtpSink(banner="bare.test ESMTP")
        self.proxies = {}
        self.used = []

    def proxy(self, default="d_plain_none"):
        px = self.proxies.get(default)
        if px is None:
            ports = {leg: free_port() for leg in LEGS}
            ports["ipv6"] = free_port("::1")
            sy = Switchyard(proxy_config(self, ports, default))
            px = self.proxies[default] = types.SimpleNamespace(sy=sy, ports=ports, certs=self.certs,
                                                               sink=self.sink, dest=default)
            sy.start()
        px.mark = px.sy.log_mark()
        self.used.append((px, px.mark))
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
        self.bare.stop()
        self.dovecot.cleanup()
        if errors:
            raise AssertionError("\n".join(errors))


@pytest.fixture(scope="module")
def env(certs, smtp_sink):
    e = Env(certs, smtp_sink)
    try:
        e.dovecot.start()
        yield e
    finally:
        e.close()


@pytest.fixture
def marks(env, request):
    """The Dovecot log offset at the start of a test; on failure that log and
    the logs of the proxies the test used are printed from there on."""
    env.used = []
    m = env.dovecot.log_mark()
    yield m
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"--- dovecot log ---\n{env.dovecot.log_text(m)[-15000:]}")
        for px, since in env.used:
            print(f"--- switchyard log ({px.dest}) ---\n" + "\n".join(px.sy.log_lines()[since:])[-15000:])


# --- clients ---------------------------------------------------------------------------


def smtp_client(px, leg, source=None, ehlo=True):
    """An smtplib session to a proxy's `leg` listener (TLS established for
    implicit and starttls) that has said EHLO."""
    src = (source, 0) if source else None
    ctx = px.certs.client_context()
    if leg == "implicit":
        s = smtplib.SMTP_SSL("127.0.0.1", px.ports[leg], local_hostname="client.test", context=ctx,
                             source_address=src, timeout=15)
    else:
        s = smtplib.SMTP("127.0.0.1", px.ports[leg], local_hostname="client.test", source_address=src,
                         timeout=15)
        if leg == "starttls":
            s.ehlo()
            code, _ = s.starttls(context=ctx)
            assert code == 220
    if ehlo:
        s.ehlo()
    return s


def send_test_mail(px, s, sender):
    """Sends one message on a logged-in session; returns what the relay got."""
    subject = clients.unique_subject("sy-submission")
    refused = s.sendmail(sender, ["rcpt@example.org"], clients.make_message(subject, sender, "rcpt@example.org"))
    assert refused == {}
    m = px.sink.wait_message(lambda m: subject.encode() in m.data)
    assert m.mail_from == sender and m.rcpts == ["rcpt@example.org"]
    return m


class Wire:
    """A raw client connection for assertions on the exact bytes."""

    def __init__(self, px, leg="plain", source=None, port=None):
        self.certs = px.certs
        self.sock = connect(port or px.ports[leg], source=source or source_ip(), timeout=10)
        if leg == "implicit":
            self.starttls_wrap()
        self.greeting = self.reply()

    def starttls_wrap(self):
        self.sock = self.certs.client_context().wrap_socket(self.sock, server_hostname="localhost")

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        l = recv_line(self.sock, limit=70000)
        assert l.endswith(b"\r\n"), f"incomplete line {l!r}"
        return l[:-2].decode()

    def reply(self):
        """One complete reply: a list of lines ('250-...', ..., '250 ...')."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def cmd1(self, line):
        r = self.cmd(line)
        assert len(r) == 1, r
        return r[0]

    def closed(self):
        data, _ = expect_closed(self.sock)
        return data

    def close(self):
        self.sock.close()


def plain_ir(user, password):
    return b64(f"\0{user}\0{password}")


# --- the login matrix ---------------------------------------------------------------


@pytest.mark.parametrize("fwd", FORWARDINGS)
@pytest.mark.parametrize("btls", LEGS, ids=lambda v: f"backend-{v}")
@pytest.mark.parametrize("leg", LEGS, ids=lambda v: f"client-{v}")
def test_login_and_relay(env, marks, leg, btls, fwd):
    """AUTH PLAIN through every client leg x backend leg x forwarding, then a
    message Dovecot relays to the sink. Dovecot's log shows the real client
    address with proxy and xclient forwarding, the proxy's without."""
    px = env.proxy(combo_dest(btls, fwd))
    user, password = combo_user(btls, fwd), combo_pass(btls, fwd)
    ip = source_ip()
    s = smtp_client(px, leg, source=ip)
    try:
        assert s.esmtp_features["auth"].split() == ["PLAIN", "OAUTHBEARER", "XOAUTH2"]
        code, msg = s.login(user, password)
        assert code == 235, msg
        m = send_test_mail(px, s, user)
        s.quit()
    finally:
        s.close()
    login = env.dovecot.wait_log(rip_re(user, ip if fwd != "none" else "127.0.0.1") + r".*", since=marks)
    if btls != "plain":
        assert ", TLS" in login.group(0), login.group(0)
    if fwd == "xclient":
        # XCLIENT HELO= carried the client's EHLO name, SESSION= our session id.
        assert m.data.startswith(b"Received: from client.test ")
        assert re.search(r"session=<[0-9a-f]{16}>", login.group(0)), login.group(0)
    px.sy.wait_log(rf"login .*identifier={re.escape(user)} mechanism=PLAIN "
                   rf"destination={combo_dest(btls, fwd)} result=ok", since=px.mark)


@pytest.mark.parametrize("initial_response", [True, False], ids=["ir", "no-ir"])
def test_auth_login_mechanism(env, marks, initial_response):
    """AUTH LOGIN (never advertised, accepted and replayed as PLAIN) with and
    without an initial response, through smtplib."""
    px = env.proxy("d_starttls_xclient")
    user, password = combo_user("starttls", "xclient"), combo_pass("starttls", "xclient")
    s = smtp_client(px, "starttls", source=source_ip())
    try:
        assert "LOGIN" not in s.esmtp_features["auth"].split()
        s.user, s.password = user, password
        code, msg = s.auth("LOGIN", s.auth_login, initial_response_ok=initial_response)
        assert code == 235, msg
        send_test_mail(px, s, user)
        s.quit()
    finally:
        s.close()
    px.sy.wait_log(rf"login .*identifier={re.escape(user)} mechanism=LOGIN .*result=ok", since=px.mark)
    env.dovecot.wait_log(rf"Login: user=<{re.escape(user)}>, method=PLAIN,", since=marks)


def test_auth_login_wire(env, marks):
    """The LOGIN prompts on the wire, then the bridged session is Dovecot's."""
    w = Wire(env.proxy(), "plain")
    try:
        assert w.cmd("EHLO wire.test")[-1].startswith("250 ")
        assert w.cmd1("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        assert w.cmd1(b64("bob@example.com")) == "334 UGFzc3dvcmQ6"
        assert w.cmd1(b64("bobpass")) == "235 2.7.0 Logged in."
        assert w.cmd1("MAIL FROM:<bob@example.com>") == "250 2.1.0 Ok"
        assert w.cmd1("QUIT").startswith("221 ")
    finally:
        w.close()


def test_sasl_continuation_plain(env, marks):
    """AUTH PLAIN without an initial response: '334 ' then the response."""
    w = Wire(env.proxy(), "plain")
    try:
        w.cmd("EHLO wire.test")
        assert w.cmd1("AUTH PLAIN") == "334 "
        assert w.cmd1(plain_ir("carol@example.com", "carolpass")) == "235 2.7.0 Logged in."
    finally:
        w.close()


def test_pipelined_commands_after_auth_reach_backend(env, marks):
    """Commands the client pipelined behind AUTH go to the backend once the
    session is bridged."""
    px = env.proxy()
    w = Wire(px, "plain")
    try:
        w.cmd("EHLO wire.test")
        w.send("AUTH PLAIN " + plain_ir("carol@example.com", "carolpass") + "\r\nMAIL FROM:<carol@example.com>\r\n"
               "RCPT TO:<rcpt@example.org>\r\n")
        assert w.line() == "235 2.7.0 Logged in."
        assert w.line() == "250 2.1.0 Ok"
        assert w.line() == "250 2.1.5 Ok"
    finally:
        w.close()


def test_master_user(env, marks):
    """user%master routes by the user and logs in as that user."""
    px = env.proxy("d_starttls_xclient")
    ip = source_ip()
    s = smtp_client(px, "implicit", source=ip)
    try:
        code, _ = s.login("alice@example.com%master", "masterpass")
        assert code == 235
        send_test_mail(px, s, "alice@example.com")
        s.quit()
    finally:
        s.close()
    env.dovecot.wait_log(r"Master user logging in as alice@example\.com", since=marks)
    env.dovecot.wait_log(rip_re("alice@example.com", ip), since=marks)
    px.sy.wait_log(r"login .*identifier=alice@example\.com .*destination=d_starttls_xclient result=ok",
                   since=px.mark)


def test_odd_ehlo_name_is_not_forwarded(env, marks):
    """An EHLO name that is not a plain domain or address literal is accepted
    from the client but not repeated to the backend: the backend EHLO and
    the relayed Received line carry the proxy's own name instead."""
    px = env.proxy("d_plain_xclient")
    user, password = combo_user("plain", "xclient"), combo_pass("plain", "xclient")
    s = smtp_client(px, "plain", ehlo=False)
    try:
        code, _ = s.ehlo("we!rd")
        assert code == 250
        assert s.login(user, password)[0] == 235
        m = send_test_mail(px, s, user)
        s.quit()
    finally:
        s.close()
    assert m.data.startswith(f"Received: from {HOSTNAME} ".encode()), m.data[:200]


def test_ipv6_client_xclient(env, marks):
    """An IPv6 client: XCLIENT sends ADDR=IPV6:::1 and Dovecot logs rip=::1."""
    px = env.proxy("d_plain_xclient")
    user, password = combo_user("plain", "xclient"), combo_pass("plain", "xclient")
    s = smtplib.SMTP("::1", px.ports["ipv6"], local_hostname="client.test", timeout=15)
    try:
        s.ehlo()
        code, _ = s.login(user, password)
        assert code == 235
        s.quit()
    finally:
        s.close()
    env.dovecot.wait_log(rip_re(user, "::1"), since=marks)


# --- failures ------------------------------------------------------------------------


def dovecot_direct(env, user, password):
    """What Dovecot itself answers to this login (over its STARTTLS listener)."""
    s = smtplib.SMTP("127.0.0.1", env.dovecot.submission, local_hostname="client.test", timeout=15)
    try:
        s.starttls(context=env.certs.client_context())
        s.ehlo()
        code, msg = s.docmd("AUTH", "PLAIN " + plain_ir(user, password))
        s.quit()
    finally:
        s.close()
    return f"{code} {msg.decode()}"


def test_wrong_password_gets_backend_reply(env, marks):
    px = env.proxy("d_starttls_xclient")
    moved = dovecot_direct(env, "moved@example.com", "movedpass")
    assert MOVED_REASON in moved
    w = Wire(px, "plain")
    try:
        w.cmd("EHLO wire.test")
        assert w.cmd1("AUTH PLAIN " + plain_ir("moved@example.com", "movedpass")) == moved
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "wrong")) == \
            dovecot_direct(env, "bob@example.com", "wrong")
        # The client may retry on the same connection (max_auth_attempts 3).
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass")) == "235 2.7.0 Logged in."
    finally:
        w.close()
    px.sy.wait_log(r"login .*identifier=moved@example\.com .*result=failed", since=px.mark)


def test_hide_auth_errors(env, marks):
    px = env.proxy("d_hidden")
    w = Wire(px, "plain")
    try:
        w.cmd("EHLO wire.test")
        assert w.cmd1("AUTH PLAIN " + plain_ir("moved@example.com", "movedpass")) == GENERIC
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass")) == "235 2.7.0 Logged in."
    finally:
        w.close()
    px.sy.wait_log(r"login .*identifier=moved@example\.com .*destination=d_hidden result=failed", since=px.mark)


def test_max_auth_attempts(env, marks):
    """max_auth_attempts = 3 on the STARTTLS listener: the third failure is
    answered, then 421 and the close."""
    px = env.proxy()
    w = Wire(px, "starttls")
    try:
        w.cmd("EHLO wire.test")
        assert w.cmd1("STARTTLS") == "220 2.0.0 Ready to start TLS"
        w.starttls_wrap()
        w.cmd("EHLO wire.test")
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "wrong1")).startswith("535 ")
        # A broken exchange counts too.
        assert w.cmd1("AUTH PLAIN %%%%") == "501 5.5.2 Invalid base64 data"
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "wrong3")).startswith("535 ")
        assert w.line() == "421 4.7.0 Too many authentication failures"
        assert w.closed() == b""
    finally:
        w.close()
    px.sy.wait_log(r"too many authentication failures", since=px.mark)


def test_backend_down(env, marks):
    px = env.proxy("d_down")
    w = Wire(px, "plain")
    try:
        w.cmd("EHLO wire.test")
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass")) == \
            "421 4.3.0 Backend server unavailable, try again later."
        assert w.closed() == b""
    finally:
        w.close()
    px.sy.wait_log(r"login .*identifier=bob@example\.com .*destination=d_down result=tempfail", since=px.mark)


@pytest.mark.parametrize("dest, why", [("d_bare_starttls", "STARTTLS"), ("d_bare_plain", "AUTH")])
def test_backend_lacks_extension(env, marks, dest, why):
    """A STARTTLS leg to a backend without STARTTLS, or a backend that does
    not offer AUTH: temporary failure, and no credentials sent."""
    px = env.proxy(dest)
    w = Wire(px, "plain")
    try:
        w.cmd("EHLO wire.test")
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "secret")).startswith("421 4.3.0 ")
        assert w.closed() == b""
    finally:
        w.close()
    px.sy.wait_log(rf"login .*identifier=bob@example\.com .*result=tempfail .*{why}", since=px.mark)


# --- bearer tokens -----------------------------------------------------------------------


def oauthbearer(user, token):
    return b64(f"n,a={user},\x01auth=Bearer {token}\x01\x01")


def test_oauthbearer(env, marks):
    """OAUTHBEARER routed by the token's sw1. account; a wrong token gets
    Dovecot's RFC 7628 error challenge, which the proxy answers with AQ==, and
    the client the final 535."""
    px = env.proxy("d_implicit_xclient")
    w = Wire(px, "implicit")
    try:
        w.cmd("EHLO wire.test")
        assert w.cmd1("AUTH OAUTHBEARER " + oauthbearer(TOKEN_USER, TOKEN[:-1] + "x")).startswith("535 ")
        assert w.cmd1("AUTH OAUTHBEARER") == "334 "
        assert w.cmd1(oauthbearer(TOKEN_USER, TOKEN)) == "235 2.7.0 Logged in."
    finally:
        w.close()
    px.sy.wait_log(rf"login .*identifier={re.escape(TOKEN_USER)} mechanism=OAUTHBEARER .*result=failed",
                   since=px.mark)
    px.sy.wait_log(rf"login .*identifier={re.escape(TOKEN_USER)} mechanism=OAUTHBEARER .*result=ok",
                   since=px.mark)


@pytest.mark.parametrize("mech", ["OAUTHBEARER", "XOAUTH2"])
def test_16k_bearer_token(env, marks, mech):
    """A bearer token above 16 KiB on one AUTH line is taken, routed by its
    account and replayed; Dovecot refuses lines that long, and its reply is
    what the client gets (the session stays usable)."""
    assert len(BIG_TOKEN) > 16384
    px = env.proxy("d_starttls_none")
    if mech == "OAUTHBEARER":
        msg = oauthbearer(BIG_TOKEN_USER, BIG_TOKEN)
    else:
        msg = b64(f"user={BIG_TOKEN_USER}\x01auth=Bearer {BIG_TOKEN}\x01\x01")
    w = Wire(px, "implicit")
    try:
        w.cmd("EHLO wire.test")
        reply = w.cmd1(f"AUTH {mech} {msg}")
        assert reply[0] in "45" and not reply.startswith("421 4.3.0"), reply
        assert w.cmd1("NOOP") == "250 2.0.0 OK"
    finally:
        w.close()
    px.sy.wait_log(rf"login .*identifier={re.escape(BIG_TOKEN_USER)} mechanism={mech} "
                   rf"destination=d_starttls_none result=failed", since=px.mark)


def test_bearer_token_with_curl(env, marks, tmp_path):
    """curl --oauth2-bearer (curl picks OAUTHBEARER or XOAUTH2 from the EHLO
    list) over implicit TLS, then a message."""
    px = env.proxy("d_implicit_xclient")
    subject = clients.unique_subject("sy-curl-token")
    mail = tmp_path / "mail.txt"
    mail.write_bytes(clients.make_message(subject, TOKEN_USER, "rcpt@example.org"))
    p = subprocess.run(
        ["curl", "-sS", "--cacert", env.certs.ca_cert, f"smtps://localhost:{px.ports['implicit']}",
         "--user", TOKEN_USER, "--oauth2-bearer", TOKEN, "--mail-from", TOKEN_USER, "--mail-rcpt",
         "rcpt@example.org", "-T", str(mail)],
        capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    px.sink.wait_message(lambda m: subject.encode() in m.data)
    px.sy.wait_log(rf"login .*identifier={re.escape(TOKEN_USER)} mechanism=(XOAUTH2|OAUTHBEARER) .*result=ok",
                   since=px.mark)


# --- curl -------------------------------------------------------------------------------


@pytest.mark.parametrize("leg", ["implicit", "starttls"])
def test_curl(env, marks, tmp_path, leg):
    px = env.proxy("d_starttls_proxy")
    subject = clients.unique_subject("sy-curl")
    mail = tmp_path / "mail.txt"
    mail.write_bytes(clients.make_message(subject, "carol@example.com", "rcpt@example.org"))
    scheme = "smtps" if leg == "implicit" else "smtp"
    args = ["curl", "-sS", "--cacert", env.certs.ca_cert, f"{scheme}://localhost:{px.ports[leg]}",
            "--user", "carol@example.com:carolpass", "--login-options", "AUTH=PLAIN",
            "--mail-from", "carol@example.com", "--mail-rcpt", "rcpt@example.org", "-T", str(mail)]
    if leg == "starttls":
        args.append("--ssl-reqd")
    p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    px.sink.wait_message(lambda m: subject.encode() in m.data)


# --- the pre-authentication dialogue -------------------------------------------------------


def test_preauth_dialogue(env, marks):
    w = Wire(env.proxy(), "plain")
    try:
        assert w.greeting == [f"220 {HOSTNAME} {BANNER}"]
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass")) == "503 5.5.1 EHLO first"
        assert w.cmd1("HELO client.test") == f"250 {HOSTNAME}"
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass")) == "503 5.5.1 EHLO first"
        assert w.cmd1("EHLO") == "501 5.5.4 Syntax: EHLO hostname"
        ehlo = w.cmd("ehlo client.test")
        assert ehlo == [f"250-{HOSTNAME}", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES",
                        "250-CHUNKING", "250-SIZE 52428800",
                        "250 AUTH PLAIN OAUTHBEARER XOAUTH2"]
        for c in ("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA", "BDAT 0 LAST", "VRFY bob"):
            assert w.cmd1(c) == "530 5.7.0 Authentication required", c
        assert w.cmd1("RSET") == "250 2.0.0 OK"
        assert w.cmd1("NOOP") == "250 2.0.0 OK"
        assert w.cmd1("FROB") == "502 5.5.2 Command not recognized"
        assert w.cmd1("STARTTLS") == "502 5.5.1 STARTTLS not available"
        assert w.cmd1("AUTH CRAM-MD5") == "504 5.5.4 Unrecognized authentication type"
        assert w.cmd1("AUTH") == "501 5.5.4 Syntax: AUTH mechanism [initial-response]"
        assert w.cmd1("AUTH PLAIN") == "334 "
        assert w.cmd1("*") == "501 5.7.0 Authentication aborted"
        assert w.cmd1("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        assert w.cmd1("*") == "501 5.7.0 Authentication aborted"
        assert w.cmd1("AUTH PLAIN =") == "535 5.7.8 Malformed PLAIN response"
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "")) == \
            "535 5.7.8 Malformed PLAIN response: empty password"
        # Hostile bytes never crash: NULs in a command and in a domain.
        assert w.cmd1("NO\0OP") == "500 5.5.2 Syntax error, command unrecognized"
        assert w.cmd1("EHLO a\0b") == "501 5.5.4 Syntax: EHLO hostname"
        assert w.cmd1("QUIT") == "221 2.0.0 Bye"
        assert w.closed() == b""
    finally:
        w.close()


def test_broken_base64(env, marks):
    w = Wire(env.proxy(), "plain")
    try:
        w.cmd("EHLO client.test")
        assert w.cmd1("AUTH PLAIN AGFsaWNl!") == "501 5.5.2 Invalid base64 data"
        assert w.cmd1("AUTH PLAIN") == "334 "
        assert w.cmd1("not base64") == "501 5.5.2 Invalid base64 data"
        assert w.cmd1("AUTH LOGIN " + b64("bob@example.com")) == "334 UGFzc3dvcmQ6"
        assert w.cmd1("Ym9icGFzcw") == "501 5.5.2 Invalid base64 data"  # padding missing
        assert w.line() == "421 4.7.0 Too many authentication failures"
        assert w.closed() == b""
    finally:
        w.close()


@pytest.mark.parametrize("message", ["just-a-user", "\0bob@example.com\0", "\0\0bobpass"])
def test_malformed_plain_is_an_auth_failure(env, marks, message):
    """smtplib sends well-formed base64 of a malformed PLAIN message (no
    NULs, an empty user or password): that is 535 5.7.8, which smtplib
    reports as SMTPAuthenticationError (clients ask for the password again),
    not the 501 of undecodable base64; the session stays usable."""
    px = env.proxy()
    s = smtp_client(px, "plain")
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", lambda challenge=None: message, initial_response_ok=True)
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8 "), e.value
        s.login("bob@example.com", "bobpass")
    finally:
        s.close()


@pytest.mark.parametrize("state", ["command", "sasl"])
def test_overlong_line(env, marks, state):
    px = env.proxy()
    w = Wire(px, "plain")
    try:
        if state == "sasl":
            w.cmd("EHLO client.test")
            assert w.cmd1("AUTH PLAIN") == "334 "
        w.send(b"x" * 40000)
        assert w.line() == ("500 5.5.2 Line too long" if state == "command" else
                            "500 5.5.6 Authentication Exchange line is too long")
        assert w.closed() == b""
    finally:
        w.close()
    px.sy.wait_log(r"client line too long", since=px.mark)


def test_bdat_chunk_is_not_read_as_commands(env, marks):
    """BDAT before login is refused, and its chunk (which here looks like
    commands) is skipped rather than executed."""
    w = Wire(env.proxy(), "plain")
    try:
        w.cmd("EHLO client.test")
        chunk = b"RSET\r\nNOOP\r\n"
        w.send(b"BDAT %d\r\n" % len(chunk) + chunk + b"BDAT 6 LAST\r\nNOOP\r\nQUIT\r\n")
        assert w.line() == "530 5.7.0 Authentication required"
        assert w.line() == "530 5.7.0 Authentication required"
        assert w.line() == "221 2.0.0 Bye"
        assert w.closed() == b""
    finally:
        w.close()


def test_starttls_injection_discarded(env, marks):
    """Commands pipelined after STARTTLS in the same packet are thrown away
    (the CVE-2011-0411 class): after the handshake they have no effect."""
    w = Wire(env.proxy(), "starttls")
    try:
        w.cmd("EHLO client.test")
        w.send("STARTTLS\r\nNOOP\r\nEHLO injected.example\r\n")
        assert w.line() == "220 2.0.0 Ready to start TLS"
        w.starttls_wrap()
        w.send("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass") + "\r\nQUIT\r\n")
        # The injected EHLO did not count: EHLO is needed again after TLS,
        # and no reply to the injected NOOP comes first.
        assert w.line() == "503 5.5.1 EHLO first"
        assert w.line() == "221 2.0.0 Bye"
    finally:
        w.close()


def test_starttls_listener_ehlo_and_tls(env, marks):
    """On a STARTTLS listener: STARTTLS is offered before TLS only, a second
    STARTTLS is refused, and the EHLO name is forgotten across the upgrade."""
    w = Wire(env.proxy(), "starttls")
    try:
        ehlo = w.cmd("EHLO client.test")
        assert ehlo[-2:] == ["250-AUTH PLAIN OAUTHBEARER XOAUTH2", "250 STARTTLS"]
        assert w.cmd1("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
        assert w.cmd1("STARTTLS") == "220 2.0.0 Ready to start TLS"
        w.starttls_wrap()
        ehlo = w.cmd("EHLO client.test")
        assert ehlo[-1] == "250 AUTH PLAIN OAUTHBEARER XOAUTH2"
        assert not any("STARTTLS" in l for l in ehlo)
        assert w.cmd1("STARTTLS") == "503 5.5.1 TLS already active"
    finally:
        w.close()


def strict_config(env, port, port2, sasl):
    certs = env.certs
    return f"""
[server]
log_level = "debug"
[tls.certificate.main]
cert = {q(certs.localhost.cert)}
key = {q(certs.localhost.key)}
default = true
[capabilities.submission]
banner = "Custom banner"
ehlo = ["8BITMIME", "AUTH LOGIN", "STARTTLS", "SIZE 1000"]
sasl = {json.dumps(sasl)}
[destination.dc]
host = "127.0.0.1"
tls_server_name = "localhost"
tls_pinned_cert_sha256 = {q(certs.localhost.sha256)}
forwarding = "none"
[destination.dc.protocol.submission]
port = {env.dovecot.submission}
tls = "starttls"
[routing]
default_destination = "dc"
[listener.sub]
protocol = "submission"
bind = ["127.0.0.1:{port}"]
tls = "starttls"
[listener.plain]
protocol = "submission"
bind = ["127.0.0.1:{port2}"]
tls = "plain"
"""


def test_strict_policy_and_capabilities(switchyard, env):
    """Default allow_plain_auth_without_tls = false on a STARTTLS listener:
    no PLAIN before TLS, PLAIN/LOGIN refused with 538; the configured banner
    and ehlo list (AUTH and STARTTLS in it are ignored: the proxy computes
    them); the address literal when server.hostname is unset."""
    port, port2 = free_port(), free_port()
    switchyard(strict_config(env, port, port2, ["PLAIN", "XOAUTH2"]))
    px = types.SimpleNamespace(certs=env.certs, ports={})
    w = Wire(px, port=port, leg="starttls")
    try:
        assert w.greeting == ["220 [127.0.0.1] Custom banner"]
        ehlo = w.cmd("EHLO client.test")
        assert ehlo == ["250-[127.0.0.1]", "250-8BITMIME", "250-SIZE 1000", "250-AUTH XOAUTH2", "250 STARTTLS"]
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass")) == \
            "538 5.7.11 Encryption required for requested authentication mechanism"
        assert w.cmd1("AUTH LOGIN") == "538 5.7.11 Encryption required for requested authentication mechanism"
        assert w.cmd1("AUTH OAUTHBEARER") == "504 5.5.4 Unrecognized authentication type"
        assert w.cmd1("STARTTLS") == "220 2.0.0 Ready to start TLS"
        w.starttls_wrap()
        ehlo = w.cmd("EHLO client.test")
        assert ehlo == ["250-[127.0.0.1]", "250-8BITMIME", "250-SIZE 1000", "250 AUTH PLAIN XOAUTH2"]
        assert w.cmd1("AUTH PLAIN " + plain_ir("bob@example.com", "bobpass")) == "235 2.7.0 Logged in."
    finally:
        w.close()
    # The plain listener: PLAIN is not allowed there, XOAUTH2 is.
    w = Wire(px, port=port2, leg="plain")
    try:
        assert w.cmd("EHLO client.test") == ["250-[127.0.0.1]", "250-8BITMIME", "250-SIZE 1000",
                                             "250 AUTH XOAUTH2"]
    finally:
        w.close()


def test_no_auth_line_without_mechanisms(switchyard, env):
    """With only PLAIN configured and no TLS, no mechanism is left: the EHLO
    reply has no AUTH line at all."""
    port, port2 = free_port(), free_port()
    switchyard(strict_config(env, port, port2, ["PLAIN"]))
    w = Wire(types.SimpleNamespace(certs=env.certs, ports={}), port=port2, leg="plain")
    try:
        assert w.cmd("EHLO client.test") == ["250-[127.0.0.1]", "250-8BITMIME", "250 SIZE 1000"]
    finally:
        w.close()
