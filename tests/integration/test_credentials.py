"""Credentials never reach the proxy's log, and the process is not dumpable.

One private Dovecot (module-scoped) holds one user per login path, each with
a password nobody else uses, plus a user whose password is an sw1. bearer
token (Dovecot 2.3 checks OAUTHBEARER/XOAUTH2 tokens as the user's password).
A Switchyard at `log_level = "trace"` (text and json formats, one run each)
fronts it on plain listeners for IMAP, POP3, ManageSieve and submission
(cleartext auth allowed, so the test speaks every mechanism over raw sockets
without TLS on the client leg; the backend legs use STARTTLS with a pinned
certificate and XCLIENT/ID forwarding, the production shape). The test logs
in through every command and mechanism each protocol offers: IMAP LOGIN
(quoted and literal), AUTHENTICATE PLAIN (SASL-IR and continuation), LOGIN,
OAUTHBEARER, XOAUTH2; POP3 USER/PASS, AUTH PLAIN (both forms), LOGIN,
OAUTHBEARER, XOAUTH2; ManageSieve AUTHENTICATE PLAIN (both forms), LOGIN,
OAUTHBEARER; submission AUTH PLAIN (both forms), LOGIN, XOAUTH2 -- plus a
failed login with a wrong password (again unique) on every protocol, and
admin API requests with the right bearer token and a wrong one.

Then the proxy is stopped and all of its output (stderr is its log; stdout
stays empty) is searched for every secret the clients sent: each password,
token and wrong password as text, in hex, and as every base64 substring
that any base64 encoding containing it must include (whatever its offset in
the encoded blob: the SASL PLAIN message "\\0user\\0pass", the LOGIN
password step, the OAUTHBEARER/XOAUTH2 messages), plus every base64 blob
exactly as it went over the wire. None may appear.

A third run puts the four listeners on implicit TLS (the secrets then
cross the proxy decrypted, between a TLS client leg and a STARTTLS backend
leg). An SMTP pass-through listener gets the search as well
(test_no_credentials_in_passthrough_log): AUTH PLAIN and AUTH LOGIN relayed
as opaque bytes to Dovecot's submission service.

The http listener gets the same search (test_no_credentials_in_http_log):
requests routed by Basic and Bearer Authorization headers and by a query
parameter, carrying a password, an sw1. token, an opaque token, a token in
the query string and a session cookie, reach a scripted backend intact and
never the log.

Non-dumpable (src/main.c calls prctl(PR_SET_DUMPABLE, 0) first thing): the
test runs the proxy as uid 65534 and checks from outside that its
/proc/<pid> files are owned by root -- the kernel's visible consequence of
a dumpable attribute other than 1 (proc(5)) -- while /proc/<pid>/status
says the process runs as 65534; a control process started the same way
without the prctl owns its files.
"""

import base64
import http.client
import json
import os
import re
import secrets
import socketserver
import subprocess
import threading
import time

import pytest

from harness import Dovecot, Switchyard, clients
from harness.util import HarnessError, connect, free_port, recv_line

SOURCE = "127.0.0.9"
NOBODY = 65534


def tag():
    return secrets.token_hex(6)


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


# One user per login path: a leak names the path that leaked.
PATHS = [
    "imap-login-quoted", "imap-login-literal", "imap-plain-ir", "imap-plain-cont", "imap-login-mech",
    "pop3-userpass", "pop3-plain-ir", "pop3-plain-cont", "pop3-login-mech",
    "sieve-plain-ir", "sieve-plain-cont", "sieve-login-mech",
    "sub-plain-ir", "sub-plain-cont", "sub-login-mech",
    "pass-plain-ir", "pass-login-mech",
]
USERS = {f"{p}@example.com": f"Pw-{p}-{tag()}-Zq!" for p in PATHS}
TOKEN_USER = "tok@example.com"
TOKEN = clients.sw1_token(TOKEN_USER, "TokBody" + secrets.token_hex(16))
USERS[TOKEN_USER] = TOKEN
WRONG = {p: f"Wrong-{p}-{tag()}-Xk" for p in ("imap", "imap-plain", "pop3", "pop3-plain", "sieve", "sub")}
WRONG_TOKEN = clients.sw1_token(TOKEN_USER, "BadTok" + secrets.token_hex(16))
ADMIN_TOKEN = "adm-" + secrets.token_hex(20)
ADMIN_WRONG = "admwrong-" + secrets.token_hex(20)


def user(path):
    return f"{path}@example.com"


def pw(path):
    return USERS[user(path)]


def plain_msg(u, p):
    return b"\0" + u.encode() + b"\0" + p.encode()


def oauthbearer_msg(u, token):
    return f"n,a={u},\x01auth=Bearer {token}\x01\x01".encode()


def xoauth2_msg(u, token):
    return f"user={u}\x01auth=Bearer {token}\x01\x01".encode()


def b64_cores(secret):
    """The base64 substrings that every base64 encoding of a byte string
    containing `secret` includes, one per alignment (offset mod 3): the
    characters whose six bits all come from the secret."""
    s = secret.encode() if isinstance(secret, str) else secret
    out = set()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + s + b"\0\0").decode()
        lo, hi = 8 * k, 8 * (k + len(s))
        chars = [enc[i] for i in range(len(enc)) if 6 * i >= lo and 6 * i + 6 <= hi]
        if len(chars) >= 8:
            out.add("".join(chars))
    return out


def needles(secret):
    s = secret.encode() if isinstance(secret, str) else secret
    found = {s.decode("latin-1"), s.hex(), s.hex().upper()}
    found |= b64_cores(s)
    # base64url, as JWTs and sw1. footers are written
    found |= {c.replace("+", "-").replace("/", "_") for c in b64_cores(s)}
    return found


# --- wire clients -------------------------------------------------------------------------------

class Line:
    """A line client on one listener. `ep` is (port, ssl context or None):
    with a context the client leg is implicit TLS."""

    def __init__(self, ep):
        port, ctx = ep
        self.sock = connect(port, source=SOURCE)
        if ctx is not None:
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.sent_b64 = []

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self):
        got = recv_line(self.sock)
        if not got:
            raise HarnessError("connection closed")
        return got.decode("utf-8", "replace")

    def b64(self, data):
        s = b64(data)
        self.sent_b64.append(s)
        return s

    def until(self, pred):
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if pred(ln):
                return ln, lines

    def close(self):
        self.sock.close()


def imap(ep, how, u, p, expect_ok=True):
    c = Line(ep)
    assert c.line().startswith("* OK")
    final = lambda ln: ln.startswith("a ")  # noqa: E731
    if how == "login-quoted":
        c.send(f'a LOGIN "{u}" "{p}"\r\n')
    elif how == "login-literal":
        c.send(f"a LOGIN {{{len(u)}}}\r\n")
        assert c.line().startswith("+")
        c.send(f"{u} {{{len(p)}}}\r\n")
        assert c.line().startswith("+")
        c.send(f"{p}\r\n")
    elif how == "plain-ir":
        c.send(f"a AUTHENTICATE PLAIN {c.b64(plain_msg(u, p))}\r\n")
    elif how == "plain-cont":
        c.send("a AUTHENTICATE PLAIN\r\n")
        assert c.line().startswith("+")
        c.send(c.b64(plain_msg(u, p)) + "\r\n")
    elif how == "login-mech":
        c.send("a AUTHENTICATE LOGIN\r\n")
        assert c.line().startswith("+")
        c.send(c.b64(u) + "\r\n")
        assert c.line().startswith("+")
        c.send(c.b64(p) + "\r\n")
    elif how == "oauthbearer":
        c.send(f"a AUTHENTICATE OAUTHBEARER {c.b64(oauthbearer_msg(u, p))}\r\n")
    elif how == "xoauth2":
        c.send(f"a AUTHENTICATE XOAUTH2 {c.b64(xoauth2_msg(u, p))}\r\n")
    ln, lines = c.until(lambda ln: final(ln) or ln.startswith("+ "))
    if ln.startswith("+ "):  # an OAuth failure's error challenge
        c.send("\r\n")
        ln, more = c.until(final)
        lines += more
    ok = ln.startswith("a OK")
    assert ok == expect_ok, (how, u, lines)
    if ok:
        c.send("b LOGOUT\r\n")
        c.until(lambda ln: ln.startswith("b "))
    c.close()
    return c.sent_b64


def pop3(ep, how, u, p, expect_ok=True):
    c = Line(ep)
    assert c.line().startswith("+OK")
    if how == "userpass":
        c.send(f"USER {u}\r\n")
        assert c.line().startswith("+OK")
        c.send(f"PASS {p}\r\n")
    elif how == "plain-ir":
        c.send(f"AUTH PLAIN {c.b64(plain_msg(u, p))}\r\n")
    elif how == "plain-cont":
        c.send("AUTH PLAIN\r\n")
        assert c.line().startswith("+")
        c.send(c.b64(plain_msg(u, p)) + "\r\n")
    elif how == "login-mech":
        c.send("AUTH LOGIN\r\n")
        assert c.line().startswith("+")
        c.send(c.b64(u) + "\r\n")
        assert c.line().startswith("+")
        c.send(c.b64(p) + "\r\n")
    elif how == "oauthbearer":
        c.send(f"AUTH OAUTHBEARER {c.b64(oauthbearer_msg(u, p))}\r\n")
    elif how == "xoauth2":
        c.send(f"AUTH XOAUTH2 {c.b64(xoauth2_msg(u, p))}\r\n")
    ln = c.line()
    if ln.startswith("+ "):
        c.send("\r\n")
        ln = c.line()
    ok = ln.startswith("+OK")
    assert ok == expect_ok, (how, u, ln)
    if ok:
        c.send("QUIT\r\n")
        c.line()
    c.close()
    return c.sent_b64


def sieve_final(ln):
    return ln.startswith(("OK", "NO", "BYE"))


def sieve(ep, how, u, p, expect_ok=True):
    c = Line(ep)
    c.until(sieve_final)
    if how == "plain-ir":
        c.send(f'AUTHENTICATE "PLAIN" "{c.b64(plain_msg(u, p))}"\r\n')
    elif how == "plain-cont":
        c.send('AUTHENTICATE "PLAIN"\r\n')
        assert c.line().startswith('""') or True
        c.send(f'"{c.b64(plain_msg(u, p))}"\r\n')
    elif how == "login-mech":
        c.send('AUTHENTICATE "LOGIN"\r\n')
        c.line()
        c.send(f'"{c.b64(u)}"\r\n')
        c.line()
        c.send(f'"{c.b64(p)}"\r\n')
    elif how == "oauthbearer":
        c.send(f'AUTHENTICATE "OAUTHBEARER" "{c.b64(oauthbearer_msg(u, p))}"\r\n')
    ln, lines = c.until(lambda ln: sieve_final(ln) or ln.startswith(('"', "{")))
    if not sieve_final(ln):  # an OAuth failure's error challenge
        c.send('""\r\n')
        ln, more = c.until(sieve_final)
        lines += more
    ok = ln.startswith("OK")
    assert ok == expect_ok, (how, u, lines)
    if ok:
        c.send("LOGOUT\r\n")
        c.until(sieve_final)
    c.close()
    return c.sent_b64


def smtp_reply(c):
    ln, lines = c.until(lambda ln: re.match(r"^\d{3} ", ln) is not None)
    return ln, lines


def submission(ep, how, u, p, expect_ok=True):
    c = Line(ep)
    smtp_reply(c)
    c.send("EHLO client.test\r\n")
    ln, _ = smtp_reply(c)
    assert ln.startswith("250")
    if how == "plain-ir":
        c.send(f"AUTH PLAIN {c.b64(plain_msg(u, p))}\r\n")
    elif how == "plain-cont":
        c.send("AUTH PLAIN\r\n")
        assert c.line().startswith("334")
        c.send(c.b64(plain_msg(u, p)) + "\r\n")
    elif how == "login-mech":
        c.send("AUTH LOGIN\r\n")
        assert c.line().startswith("334")
        c.send(c.b64(u) + "\r\n")
        assert c.line().startswith("334")
        c.send(c.b64(p) + "\r\n")
    elif how == "xoauth2":
        c.send(f"AUTH XOAUTH2 {c.b64(xoauth2_msg(u, p))}\r\n")
    ln = c.line()
    if ln.startswith("334"):
        c.send("\r\n")
        ln = c.line()
    ok = ln.startswith("235")
    assert ok == expect_ok, (how, u, ln)
    c.send("QUIT\r\n")
    c.close()
    return c.sent_b64


def admin_get(port, path, token):
    c = connect(port, source=SOURCE)
    try:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        c.close()
    return int(data.split(b" ", 2)[1])


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend(certs, smtp_sink):
    d = Dovecot(certs, users=USERS, relay=(smtp_sink.host, smtp_sink.port),
                listeners={"imap": ("plain",), "pop3": ("plain",), "submission": ("plain",),
                           "sieve": ("plain",)})
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def q(s):
    return json.dumps(s)


def proxy_config(d, certs, ports, admin_port, log_format, client_tls="plain"):
    legs = {"imap": d.imap, "pop3": d.pop3, "managesieve": d.sieve, "submission": d.submission}
    out = [f"""[server]
log_level = "trace"
log_format = {q(log_format)}
threads = 2
shutdown_grace = "2s"
backend_timeout = "5s"

[routing]
default_destination = "dovecot"

[destination.dovecot]
host = "127.0.0.1"
tls_server_name = "localhost"
tls_pinned_cert_sha256 = {q(certs.localhost.sha256)}
forwarding = "xclient"
"""]
    for proto, port in legs.items():
        out.append(f'[destination.dovecot.protocol.{proto}]\nport = {port}\ntls = "starttls"\n')
    for proto, port in ports.items():
        out.append(f'[listener.{proto}]\nprotocol = "{proto}"\nbind = ["127.0.0.1:{port}"]\ntls = {q(client_tls)}\n')
        if client_tls == "plain":
            out.append(f"[capabilities.{proto}]\nallow_plain_auth_without_tls = true\n")
    if client_tls == "implicit":
        out.append(f'[tls.certificate.mail]\ncert = {q(certs.localhost.cert)}\nkey = {q(certs.localhost.key)}\n'
                   'default = true\n')
    out.append(f"""[admin]
bind = "127.0.0.1:{admin_port}"
tls = "plain"
allow_plaintext = true
bearer_token = {q(ADMIN_TOKEN)}
""")
    return "\n".join(out)


# --- the tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format,client_tls", [("text", "plain"), ("json", "plain"), ("text", "implicit")])
def test_no_credentials_in_trace_log(backend, certs, switchyard, log_format, client_tls):
    """Every login path at trace level; the implicit-TLS run has the same
    secrets cross the proxy decrypted (the client leg is TLS, the backend
    leg STARTTLS), which is where a debugging dump would show them."""
    listen = {p: free_port() for p in ("imap", "pop3", "managesieve", "submission")}
    admin_port = free_port()
    sy = switchyard(proxy_config(backend, certs, listen, admin_port, log_format, client_tls))
    ctx = certs.client_context() if client_tls == "implicit" else None
    ports = {p: (port, ctx) for p, port in listen.items()}
    sent = []
    logins = 0

    for how in ("login-quoted", "login-literal", "plain-ir", "plain-cont", "login-mech"):
        sent += imap(ports["imap"], how, user(f"imap-{how}"), pw(f"imap-{how}"))
        logins += 1
    for how in ("oauthbearer", "xoauth2"):
        sent += imap(ports["imap"], how, TOKEN_USER, TOKEN)
        logins += 1
    for how in ("userpass", "plain-ir", "plain-cont", "login-mech"):
        sent += pop3(ports["pop3"], how, user(f"pop3-{how}"), pw(f"pop3-{how}"))
        logins += 1
    for how in ("oauthbearer", "xoauth2"):
        sent += pop3(ports["pop3"], how, TOKEN_USER, TOKEN)
        logins += 1
    for how in ("plain-ir", "plain-cont", "login-mech"):
        sent += sieve(ports["managesieve"], how, user(f"sieve-{how}"), pw(f"sieve-{how}"))
        logins += 1
    sent += sieve(ports["managesieve"], "oauthbearer", TOKEN_USER, TOKEN)
    logins += 1
    for how in ("plain-ir", "plain-cont", "login-mech"):
        sent += submission(ports["submission"], how, user(f"sub-{how}"), pw(f"sub-{how}"))
        logins += 1
    sent += submission(ports["submission"], "xoauth2", TOKEN_USER, TOKEN)
    logins += 1

    # Failed logins: wrong passwords and a wrong bearer token.
    failures = 0
    sent += imap(ports["imap"], "login-quoted", user("imap-login-quoted"), WRONG["imap"], expect_ok=False)
    sent += imap(ports["imap"], "plain-ir", user("imap-plain-ir"), WRONG["imap-plain"], expect_ok=False)
    sent += imap(ports["imap"], "oauthbearer", TOKEN_USER, WRONG_TOKEN, expect_ok=False)
    sent += pop3(ports["pop3"], "userpass", user("pop3-userpass"), WRONG["pop3"], expect_ok=False)
    sent += pop3(ports["pop3"], "plain-ir", user("pop3-plain-ir"), WRONG["pop3-plain"], expect_ok=False)
    sent += sieve(ports["managesieve"], "plain-ir", user("sieve-plain-ir"), WRONG["sieve"], expect_ok=False)
    sent += submission(ports["submission"], "login-mech", user("sub-login-mech"), WRONG["sub"],
                       expect_ok=False)
    failures += 7

    assert admin_get(admin_port, "/stats", ADMIN_TOKEN) == 200
    assert admin_get(admin_port, "/destinations", ADMIN_TOKEN) == 200
    assert admin_get(admin_port, "/stats", ADMIN_WRONG) == 401

    # The log did see every login (so it was not simply silent), at a level
    # that shows debug events.
    sy.wait_log(r"\bresult\W+ok\b" if log_format == "text" else r'"result":"ok"')
    assert sy.wait_log_count(r'login.*result\W+"?ok', logins) == logins, sy.log_text()[-4000:]
    assert sy.wait_log_count(r'login.*result\W+"?failed', failures) == failures, sy.log_text()[-4000:]
    assert sy.log_count(r"core dumps disabled \(not dumpable\)") == 1
    assert sy.wait_log_count(r"admin request", 2) >= 2
    sy.stop()
    with open(sy.stderr_path, "rb") as f:
        log = f.read().decode("latin-1")

    secrets_sent = list(USERS.values()) + list(WRONG.values()) + [TOKEN, WRONG_TOKEN, ADMIN_TOKEN,
                                                                  ADMIN_WRONG]
    # The secret part of each token alone (the sw1. footer is the account
    # name, which is logged as the identifier on purpose).
    secrets_sent += [t.split(".")[1] for t in (TOKEN, WRONG_TOKEN)]
    hits = []
    for s in secrets_sent:
        for n in needles(s):
            if n in log:
                hits.append((s, n))
    for blob in sent:
        if blob in log:
            hits.append(("wire base64", blob))
    assert not hits, f"credentials in the log: {hits[:10]}"
    assert len(sent) >= 20


def test_process_not_dumpable(switchyard, certs, backend):
    """Run as uid 65534, so that root ownership of /proc/<pid> can only be
    the kernel's doing for a non-dumpable process."""
    port = free_port()
    cfg = f"""[server]
threads = 1
shutdown_grace = "1s"
log_level = "debug"
[routing]
default_destination = "dovecot"
[destination.dovecot]
host = "127.0.0.1"
allow_plaintext_auth = true
[destination.dovecot.protocol.imap]
port = {backend.imap}
tls = "plain"
[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:{port}"]
tls = "plain"
"""
    sy = switchyard(cfg, start=False)
    os.chmod(sy.dir, 0o755)
    real = sy.bin
    sy.bin = "/usr/bin/setpriv"
    sy.start(args=[f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", real, sy.config_path])
    pid = sy.proc.pid
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    assert re.search(rf"^Uid:\s+{NOBODY}\s+{NOBODY}\s", status, re.M), status
    owners = {name: os.stat(f"/proc/{pid}/{name}").st_uid for name in ("status", "environ", "mem", "maps")}
    assert owners == dict.fromkeys(owners, 0), owners
    assert sy.log_count(r"core dumps disabled \(not dumpable\)") == 1

    # Control: the same way of starting a process, without the prctl, gives
    # a process that owns its /proc files (so the check above can fail).
    ctl = subprocess.Popen(["/usr/bin/setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            "/bin/sh", "-c", "echo up; exec sleep 30"], stdout=subprocess.PIPE)
    try:
        assert ctl.stdout.readline() == b"up\n"
        # sh execs sleep after printing; wait until the image is sleep.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.readlink(f"/proc/{ctl.pid}/exe") != "/usr/bin/sleep":
            time.sleep(0.01)
        assert os.stat(f"/proc/{ctl.pid}/status").st_uid == NOBODY
    finally:
        ctl.kill()
        ctl.wait()


def test_no_credentials_in_passthrough_log(backend, switchyard):
    """An SMTP pass-through listener in front of Dovecot's submission
    service: the proxy relays the client's AUTH PLAIN (initial response)
    and AUTH LOGIN untouched, the backend accepts them, and at trace level
    nothing of either reaches the proxy's log."""
    port = free_port()
    sy = switchyard(f"""[server]
log_level = "trace"
threads = 1
shutdown_grace = "2s"
[routing]
default_destination = "dovecot"
smtp_passthrough_destination = "dovecot"
[destination.dovecot]
host = "127.0.0.1"
forwarding = "none"
[destination.dovecot.protocol.smtp]
port = {backend.submission}
tls = "plain"
[listener.smtp]
protocol = "smtp"
bind = ["127.0.0.1:{port}"]
tls = "plain"
""")
    sent = []
    for how in ("pass-plain-ir", "pass-login-mech"):
        c = Line((port, None))
        assert c.line().startswith("220 ")
        c.send("EHLO client.test\r\n")
        c.until(lambda ln: ln.startswith("250 "))
        u, p = user(how), pw(how)
        if how == "pass-plain-ir":
            c.send(f"AUTH PLAIN {c.b64(plain_msg(u, p))}\r\n")
        else:
            c.send("AUTH LOGIN\r\n")
            assert c.line().startswith("334 ")
            c.send(c.b64(u) + "\r\n")
            assert c.line().startswith("334 ")
            c.send(c.b64(p) + "\r\n")
        assert c.line().startswith("235 "), how
        c.send("QUIT\r\n")
        assert c.line().startswith("221")
        c.close()
        sent += c.sent_b64
    assert sy.wait_log_count(r"session closed", 2) == 2
    sy.stop()
    with open(sy.stderr_path, "rb") as f:
        log = f.read().decode("latin-1")
    hits = [(s, n) for s in (pw("pass-plain-ir"), pw("pass-login-mech")) for n in needles(s) if n in log]
    hits += [("wire base64", b) for b in sent if b in log]
    assert not hits, f"credentials in the log: {hits[:10]}"


# --- HTTP ---------------------------------------------------------------------------------------

class _Recorder(socketserver.BaseRequestHandler):
    """A scripted HTTP/1.1 backend (as in test_http.py): records each
    request head and answers 200."""

    def handle(self):
        data = b""
        self.request.settimeout(5)
        try:
            while b"\r\n\r\n" not in data:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        self.server.heads.append(data.split(b"\r\n\r\n", 1)[0])
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def test_no_credentials_in_http_log(switchyard):
    """The http listener routes by the Authorization header (Basic and
    Bearer) and by a query parameter: none of the secrets a request carries
    (password, tokens, a token in the query, a session cookie) is logged at
    trace level, while the backend does receive them."""
    backend = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Recorder)
    backend.daemon_threads = True
    backend.heads = []
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        port = free_port()
        sy = switchyard(f"""[server]
log_level = "trace"
threads = 1
shutdown_grace = "2s"
[routing]
default_destination = "web"
[listener.web]
protocol = "http"
bind = ["127.0.0.1:{port}"]
tls = "plain"
[[http.route]]
match = "/q/*"
extract = {{ from = "query", param = "user" }}
fallback = "default"
[[http.route]]
match = "/**"
extract = {{ from = "authorization" }}
fallback = "default"
[destination.web]
host = "127.0.0.1"
allow_plaintext_auth = true
[destination.web.protocol.http]
port = {backend.server_address[1]}
tls = "plain"
""")
        basic_pw = "HttpPw-" + tag() + "-Zq"
        opaque = "opaque-" + secrets.token_hex(16)
        query_tok = "qtok-" + secrets.token_hex(16)
        cookie = "sess-" + secrets.token_hex(16)
        requests = [
            ("/jmap/session", {"Authorization": "Basic " + b64(f"alice@example.com:{basic_pw}")}),
            ("/jmap/session", {"Authorization": "Bearer " + TOKEN}),
            ("/jmap/session", {"Authorization": "Bearer " + opaque}),
            (f"/q/x?user=alice@example.com&access_token={query_tok}", {"Cookie": f"session={cookie}"}),
        ]
        for path, headers in requests:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", path, headers=headers)
            r = c.getresponse()
            assert (r.status, r.read()) == (200, b"ok")
            c.close()
        heads = b"\n".join(backend.heads).decode("latin-1")
        for s in (basic_pw, TOKEN, opaque, query_tok, cookie):
            assert s in heads or any(c in heads for c in b64_cores(s)), s
        assert sy.wait_log_count(r"http request", len(requests)) == len(requests)
        sy.stop()
        with open(sy.stderr_path, "rb") as f:
            log = f.read().decode("latin-1")
        hits = [(s, n) for s in (basic_pw, TOKEN.split(".")[1], TOKEN, opaque, query_tok, cookie)
                for n in needles(s) if n in log]
        assert not hits, f"credentials in the log: {hits[:10]}"
    finally:
        backend.shutdown()
        backend.server_close()
