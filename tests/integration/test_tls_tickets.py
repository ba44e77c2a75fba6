"""Inbound TLS session tickets under keys shared by every replica
(`[tls] ticket_key_file`, src/tls/server.c), on the real wire.

Each test starts Switchyard processes with an implicit-TLS IMAP listener in
front of the shared Dovecot (plain IMAP backend leg) and speaks TLS 1.3 to
them with Python's ssl module: a first connection gets a session (the
tickets arrive before the IMAP greeting, so reading the greeting is waiting
for them), a later connection offers it (`wrap_socket(session=...)`) and
`session_reused` says whether the server accepted the ticket. One client
SSLContext per test, as Python only resumes a session on the context that
made it. Every "does not resume" is paired with a control that the same
ticket does resume where it should, so a negative result means the keys
refused it, not that the client never offered it.

- same key file on two processes: A's ticket resumes on B, and an IMAP login
  through the resumed connection works;
- no key file: OpenSSL's per-process keys, A's ticket resumes on A but not
  on B (what the feature changes, and what the first test would see
  without it);
- rotation: A with [k1], B with [k2, k1] (k2 in base64, k1 in hex, a
  comment line): A's ticket resumes on B; B's own tickets are under k2, so
  they do not resume on A -- also the ticket B issues when it resumes A's
  (a decryption with an older key renews the ticket under the first key);
- TLS 1.3: a resumption gets a new ticket, as with OpenSSL's own keys;
- TLS 1.2: a ticket under an older key is renewed under the first one
  (the callback's "renew" answer; TLS 1.3 issues new tickets anyway);
- reload: the key file rewritten to a new key and SIGHUP: a ticket from
  before no longer resumes, a new one does, a session that was open across
  the reload still works; a malformed file on reload is refused and the
  keys stay;
- a malformed key file: `--check-config` and startup exit 1 naming
  tls.ticket_key_file; the keys never reach the log (trace level).
"""

import base64
import os
import re
import signal
import ssl
import subprocess

import pytest

from harness.util import HarnessError, connect, recv_line

ALICE = ("alice@example.com", "alicepass")


def new_key():
    return os.urandom(80)


def b64(key):
    return base64.b64encode(key).decode()


def key_file(*lines):
    return "".join(line + "\n" for line in lines)


def config(certs, dovecot, port, key_file=None, log_level="info"):
    tls = "[tls]\n"
    if key_file is not None:
        tls += f'ticket_key_file = "{key_file}"\n'
    return f"""[server]
threads = 2
shutdown_grace = "5s"
log_level = "{log_level}"

{tls}
[tls.certificate.main]
cert = "{certs.localhost.cert}"
key = "{certs.localhost.key}"

[listener.imaps]
protocol = "imap"
bind = ["127.0.0.1:{port}"]
tls = "implicit"

[destination.dovecot]
host = "127.0.0.1"
allow_plaintext_auth = true
proxy_protocol = false
[destination.dovecot.protocol.imap]
port = {dovecot.imap}
tls = "plain"

[routing]
default_destination = "dovecot"
"""


class Node:
    """One Switchyard process and its listener port."""

    def __init__(self, switchyard, certs, dovecot, keys=None, log_level="info"):
        from harness.util import free_port
        self.port = free_port()
        files = {"tickets.key": keys} if keys is not None else None
        self.sy = switchyard(config(certs, dovecot, self.port, "tickets.key" if keys is not None else None,
                                    log_level=log_level), files=files)

    def reload(self):
        mark = self.sy.log_mark()
        self.sy.send_signal(signal.SIGHUP)
        return self.sy.wait_log(r"configuration reload(ed| failed)", since=mark)


class Conn:
    """A TLS 1.3 IMAP connection; `session` is what a later connection may offer."""

    def __init__(self, ctx, node, session=None, version="TLSv1.3"):
        self.sock = ctx.wrap_socket(connect(node.port), server_hostname="localhost", session=session)
        assert self.sock.version() == version, self.sock.version()
        greeting = recv_line(self.sock)
        assert greeting.startswith(b"* OK"), greeting
        self.n = 0

    @property
    def reused(self):
        return self.sock.session_reused

    @property
    def session(self):
        s = self.sock.session
        assert s is not None and s.has_ticket, "the server sent no ticket"
        return s

    def command(self, text):
        self.n += 1
        tag = f"t{self.n}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        while True:
            line = recv_line(self.sock)
            assert line, "connection closed"
            if line.startswith(tag + b" "):
                return line

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def ctx(certs):
    return certs.client_context(minimum_version=ssl.TLSVersion.TLSv1_3,
                                maximum_version=ssl.TLSVersion.TLSv1_3)


def ticket_from(ctx, node):
    """A session from a full handshake with node."""
    c = Conn(ctx, node)
    try:
        assert not c.reused
        return c.session
    finally:
        c.close()


def resumes(ctx, node, session, version="TLSv1.3"):
    """Does node accept the session's ticket? (A new connection offers it.)"""
    c = Conn(ctx, node, session=session, version=version)
    try:
        return c.reused
    finally:
        c.close()


def test_shared_key_file_resumes_on_another_process(switchyard, certs, dovecot, ctx):
    keys = key_file(b64(new_key()))
    a = Node(switchyard, certs, dovecot, keys)
    b = Node(switchyard, certs, dovecot, keys)

    t = ticket_from(ctx, a)
    c = Conn(ctx, b, session=t)
    try:
        assert c.reused, "a ticket from A did not resume on B with the same key file"
        line = c.command(f"LOGIN {ALICE[0]} {ALICE[1]}")
        assert line.startswith(b"t1 OK"), line
        assert c.command("SELECT INBOX").startswith(b"t2 OK")
        assert c.command("LOGOUT").startswith(b"t3 OK")
    finally:
        c.close()
    # And back: B's tickets resume on A.
    assert resumes(ctx, a, ticket_from(ctx, b))


@pytest.mark.parametrize("with_keys", [True, False], ids=["key-file", "no-key-file"])
def test_tls13_resumption_renews_the_ticket(switchyard, certs, dovecot, ctx, with_keys):
    """A TLS 1.3 resumption gets a new ticket, with or without a key file:
    OpenSSL's own keys renew every resumed TLS 1.3 session, so the callback
    does too (the number of tickets sent does not change). The client's
    session id is the SHA-256 of its ticket, so a new id is a new ticket."""
    a = Node(switchyard, certs, dovecot, key_file(b64(new_key())) if with_keys else None)
    t = ticket_from(ctx, a)
    c = Conn(ctx, a, session=t)
    try:
        assert c.reused
        assert c.session.id != t.id, "no new ticket after a TLS 1.3 resumption"
    finally:
        c.close()


def test_without_key_file_no_resumption_elsewhere(switchyard, certs, dovecot, ctx):
    a = Node(switchyard, certs, dovecot)
    b = Node(switchyard, certs, dovecot)

    t = ticket_from(ctx, a)
    assert resumes(ctx, a, t), "control: A's ticket should resume on A (its own per-process keys)"
    assert not resumes(ctx, b, t), "without ticket_key_file B must not know A's ticket keys"


def test_rotation(switchyard, certs, dovecot, ctx):
    k1, k2 = new_key(), new_key()
    a = Node(switchyard, certs, dovecot, key_file(b64(k1)))
    b = Node(switchyard, certs, dovecot, key_file("# k2 encrypts, k1 still decrypts", b64(k2), "", k1.hex()))

    # A's ticket (k1) resumes on B, which knows k1 as an older key.
    t1 = ticket_from(ctx, a)
    c = Conn(ctx, b, session=t1)
    try:
        assert c.reused, "B with [k2, k1] must accept a ticket under k1"
        assert c.command(f"LOGIN {ALICE[0]} {ALICE[1]}").startswith(b"t1 OK")
        renewed = c.session  # what B issued on that resumption: under k2
    finally:
        c.close()

    # B's tickets are under k2: not on A, which only has k1; on B itself yes.
    t2 = ticket_from(ctx, b)
    assert resumes(ctx, b, t2), "control: B's ticket should resume on B"
    assert not resumes(ctx, a, t2), "a ticket under k2 must not resume on a process with only [k1]"
    assert resumes(ctx, b, renewed)
    assert not resumes(ctx, a, renewed), "the ticket B issued on resumption must be under its first key"


def test_rotation_renews_tls12_tickets(switchyard, certs, dovecot):
    """TLS 1.2 gets a new ticket on resumption only when the server asks for
    it: the callback does (returns 2) for a ticket under an older key, so the
    client's ticket moves to k2 and no longer resumes on [k1]; under the
    first key it does not (the client's ticket stays)."""
    ctx12 = certs.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    k1, k2 = new_key(), new_key()
    a = Node(switchyard, certs, dovecot, key_file(b64(k1)))
    b = Node(switchyard, certs, dovecot, key_file(b64(k2), b64(k1)))

    c = Conn(ctx12, a, version="TLSv1.2")
    t1 = c.session
    c.close()
    c = Conn(ctx12, b, session=t1, version="TLSv1.2")
    try:
        assert c.reused
        renewed = c.session
    finally:
        c.close()
    assert resumes(ctx12, a, t1, version="TLSv1.2"), "control: the k1 ticket resumes on A"
    assert not resumes(ctx12, a, renewed, version="TLSv1.2"), "B did not renew the k1 ticket under k2"
    assert resumes(ctx12, b, renewed, version="TLSv1.2")

    # Under B's first key: no renewal, the same ticket (session id) stays.
    c = Conn(ctx12, b, session=renewed, version="TLSv1.2")
    try:
        assert c.reused and c.session.id == renewed.id
    finally:
        c.close()


def test_reload_replaces_keys(switchyard, certs, dovecot, ctx):
    a = Node(switchyard, certs, dovecot, key_file(b64(new_key())))
    old = ticket_from(ctx, a)
    assert resumes(ctx, a, old), "control: the ticket should resume before the reload"

    # A session that is open across the reload.
    open_conn = Conn(ctx, a)
    try:
        assert open_conn.command(f"LOGIN {ALICE[0]} {ALICE[1]}").startswith(b"t1 OK")

        a.sy.write_file("tickets.key", key_file(b64(new_key())))
        m = a.reload()
        assert "reloaded" in m.group(0), a.sy.log_text()

        assert not resumes(ctx, a, old), "the key file was replaced: the old ticket must not resume"
        new = ticket_from(ctx, a)
        assert resumes(ctx, a, new), "a ticket under the new key should resume"
        assert open_conn.command("NOOP").startswith(b"t2 OK")

        # A malformed file on reload: refused, the running keys stay.
        a.sy.write_file("tickets.key", "not a key\n")
        m = a.reload()
        assert "failed" in m.group(0)
        a.sy.wait_log(r"tls\.ticket_key_file", since=a.sy.log_mark() - 5)
        assert resumes(ctx, a, new)
        assert open_conn.command("NOOP").startswith(b"t3 OK")
    finally:
        open_conn.close()


@pytest.mark.parametrize("content", [
    "not a key\n",
    b64(new_key())[:-4] + "\n",  # truncated
    "",  # no key
    (lambda k: key_file(b64(k), b64(k[:16] + new_key()[16:])))(new_key()),  # two keys, one name
], ids=["garbage", "truncated", "empty", "duplicate-name"])
def test_malformed_key_file(switchyard, certs, dovecot, content):
    port = 1  # never bound: the configuration is refused first
    sy = switchyard(config(certs, dovecot, port, "tickets.key"), files={"tickets.key": content}, start=False)
    p = subprocess.run([sy.bin, "--check-config", sy.config_path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=sy.env, cwd=sy.dir, timeout=30, text=True)
    assert p.returncode == 1, p.stdout
    assert "tls.ticket_key_file:" in p.stdout, p.stdout

    with pytest.raises(HarnessError, match=r"exited with 1 before ready"):
        sy.start()
    assert "tls.ticket_key_file:" in sy.log_text()


def test_keys_never_logged(switchyard, certs, dovecot, ctx):
    k1, k2 = new_key(), new_key()
    a = Node(switchyard, certs, dovecot, key_file(b64(k1), k2.hex()), log_level="trace")
    t = ticket_from(ctx, a)
    c = Conn(ctx, a, session=t)
    try:
        assert c.reused
        assert c.command(f"LOGIN {ALICE[0]} {ALICE[1]}").startswith(b"t1 OK")
    finally:
        c.close()
    a.sy.write_file("tickets.key", "x" * 107 + "\n")
    assert "failed" in a.reload().group(0)
    a.sy.stop()
    log = a.sy.log_text()
    for k in (k1, k2):
        for part in (k[:16], k[16:48], k[48:]):
            assert part.hex() not in log and part.hex().upper() not in log
        # Every 16-character window of the key's base64 (any part of it).
        enc = b64(k)
        assert not any(enc[i:i + 16] in log for i in range(0, len(enc) - 16)), "key material in the log"
    assert "x" * 16 not in log, "the rejected line was quoted in the log"
