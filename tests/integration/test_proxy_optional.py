"""`proxy_protocol = "optional"` on listeners whose peer is trusted: a PROXY
v1/v2 header is honoured when the peer sends one, and a connection without
one goes on as if the listener had no PROXY handling at all.

Without a header the first bytes of the connection are the client's own: a
TLS ClientHello on an implicit-TLS listener (it must reach the handshake
whole), or nothing at all on a listener whose server speaks first (plain
IMAP, LMTP pass-through), where the greeting must still come (the proxy
waits a short, bounded time for a header, src/session/session.c).

Clients are real ones (Python's ssl, imaplib, smtplib.LMTP), bound to
127.0.0.5 so that the address Dovecot logs tells the socket address (no
header) from the one a header claims (192.0.2.7). The destination forwards
with a PROXY v2 header to Dovecot's haproxy=yes listeners, so Dovecot logs
the client address the proxy settled on: `imap-login: ... rip=<ip>` and
`lmtp(<pid>): Connect from <ip>`.
"""

import json
import re
import time

import pytest

from harness import clients, proxyproto
from harness.util import connect, expect_closed, free_port, recv_line, recv_until

CLAIMED = "192.0.2.7"
CLIENT_IP = "127.0.0.5"
ALICE = ("alice@example.com", "alicepass")


def config(certs, dovecot, ports, mode="optional"):
    def listener(name, proto, tls):
        return (f'[listener.{name}]\nprotocol = "{proto}"\ntls = "{tls}"\nbind = ["127.0.0.1:{ports[name]}"]\n'
                f'proxy_protocol = "{mode}"\nproxy_trusted = ["127.0.0.0/8"]\n')

    return f"""
[server]
log_level = "debug"
shutdown_grace = "5s"

[tls.certificate.local]
cert = {json.dumps(certs.localhost.cert)}
key = {json.dumps(certs.localhost.key)}
default = true

[capabilities.imap]
allow_plain_auth_without_tls = true

[destination.dovecot]
host = "127.0.0.1"
forwarding = "proxy"
allow_plaintext_auth = true
[destination.dovecot.protocol.imap]
port = {dovecot.imap_haproxy}
tls = "plain"
[destination.dovecot.protocol.lmtp]
port = {dovecot.lmtp_haproxy}
tls = "plain"
[destination.dovecot.protocol.smtp]
port = {dovecot.submission_haproxy}
tls = "plain"

[routing]
default_destination = "dovecot"
smtp_passthrough_destination = "dovecot"

{listener("imaps", "imap", "implicit")}
{listener("imap", "imap", "plain")}
{listener("imap-starttls", "imap", "starttls")}
{listener("lmtp", "lmtp", "plain")}
"""


@pytest.fixture
def proxy(switchyard, dovecot, certs):
    ports = {n: free_port() for n in ("imaps", "imap", "imap-starttls", "lmtp")}
    sy = switchyard(config(certs, dovecot, ports))
    sy.ports = ports
    return sy


def header(version, port):
    build = proxyproto.v1 if version == 1 else proxyproto.v2
    return build(CLAIMED, 34567, "127.0.0.1", port)


def imap_login_logged(dovecot, since, ip):
    dovecot.wait_log(rf"imap-login: Info: Login: user=<alice@example\.com>.*\brip={re.escape(ip)}\b",
                     since=since)


def imaplib_login(sock):
    c = clients.imap_on(sock)
    typ, _ = c.login(*ALICE)
    assert typ == "OK"
    typ, data = c.select("INBOX")
    assert typ == "OK", data
    c.logout()


# --- implicit TLS: the ClientHello is the first thing the peer sends -----------------------------------


def test_implicit_tls_without_header(proxy, dovecot, dovecot_log, certs):
    """A trusted peer that sends no header: its ClientHello reaches the
    handshake whole and the session is served with the socket address."""
    raw = connect(proxy.ports["imaps"], source=CLIENT_IP)
    tls = certs.client_context().wrap_socket(raw, server_hostname="localhost")
    assert tls.getpeercert(binary_form=True) == certs.localhost.der
    imaplib_login(tls)
    imap_login_logged(dovecot, dovecot_log, CLIENT_IP)


def test_implicit_tls_without_header_openssl_s_client(proxy, certs):
    """The same with openssl s_client, which sends its ClientHello in one
    write the moment it connects."""
    import subprocess

    p = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{proxy.ports['imaps']}", "-servername", "localhost",
         "-CAfile", certs.ca_cert, "-verify_return_error", "-quiet"],
        input=b"a1 LOGOUT\r\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    out = p.stdout.decode("utf-8", "replace")
    assert out.startswith("* OK"), (out, p.stderr.decode("utf-8", "replace"))
    assert "a1 OK" in out, out


@pytest.mark.parametrize("version", [1, 2])
def test_implicit_tls_with_header(proxy, dovecot, dovecot_log, certs, version):
    """A header followed by the ClientHello (here in separate writes): the
    header's address is the client's, the TLS session works."""
    port = proxy.ports["imaps"]
    raw = connect(port, source=CLIENT_IP)
    raw.sendall(header(version, port))
    tls = certs.client_context().wrap_socket(raw, server_hostname="localhost")
    imaplib_login(tls)
    imap_login_logged(dovecot, dovecot_log, CLAIMED)


# --- plain listeners: the server speaks first --------------------------------------------------------


def test_plain_without_header_is_greeted(proxy, dovecot, dovecot_log):
    """imaplib connects and waits for the greeting without sending
    anything: the proxy must greet (after its short wait for a header, far
    below preauth_timeout) and serve the socket address."""
    t0 = time.monotonic()
    sock = connect(proxy.ports["imap"], source=CLIENT_IP)
    greeting = recv_line(sock, timeout=10)
    elapsed = time.monotonic() - t0
    assert greeting.startswith(b"* OK"), greeting
    assert elapsed < 2.0, elapsed
    sock.close()

    c = clients.imap_on(connect(proxy.ports["imap"], source=CLIENT_IP))
    assert c.login(*ALICE)[0] == "OK"
    c.logout()
    imap_login_logged(dovecot, dovecot_log, CLIENT_IP)


@pytest.mark.parametrize("version", [1, 2])
def test_plain_with_header(proxy, dovecot, dovecot_log, version):
    port = proxy.ports["imap"]
    sock = connect(port, source=CLIENT_IP)
    sock.sendall(header(version, port))
    imaplib_login(sock)
    imap_login_logged(dovecot, dovecot_log, CLAIMED)


def test_plain_header_and_pipelined_command(proxy, dovecot, dovecot_log):
    """Header and the client's first command in one segment: the command
    reaches the line reader."""
    port = proxy.ports["imap"]
    sock = connect(port, source=CLIENT_IP)
    sock.sendall(header(2, port) + b'a1 LOGIN "alice@example.com" "alicepass"\r\n')
    assert recv_line(sock).startswith(b"* OK")
    assert re.search(rb"(?m)^a1 OK", recv_until(sock, rb"(?m)^a1 .*\r\n"))
    sock.close()
    imap_login_logged(dovecot, dovecot_log, CLAIMED)


def test_plain_client_bytes_without_header_reach_the_protocol(proxy):
    """A client that speaks before the greeting (no header): its bytes are
    not a header and go to the line reader, which answers after greeting."""
    sock = connect(proxy.ports["imap"], source=CLIENT_IP)
    sock.sendall(b"a1 CAPABILITY\r\n")
    assert recv_line(sock).startswith(b"* OK")
    data = recv_until(sock, rb"(?m)^a1 .*\r\n")
    assert re.search(rb"(?m)^\* CAPABILITY IMAP4rev1", data), data
    assert re.search(rb"(?m)^a1 OK", data), data
    sock.close()


def test_plain_stray_signature_prefix_is_not_a_header(proxy):
    """Bytes that could still begin a v2 signature (a stray CRLF) and then
    silence: not a header once the wait is over; the client is greeted and
    its bytes are the protocol's."""
    sock = connect(proxy.ports["imap"], source=CLIENT_IP)
    sock.sendall(b"\r\n")
    assert recv_line(sock, timeout=5).startswith(b"* OK")
    sock.sendall(b"a1 NOOP\r\n")
    assert re.search(rb"(?m)^a1 OK", recv_until(sock, rb"(?m)^a1 .*\r\n"))
    sock.close()


def test_starttls_listener_without_header(proxy, dovecot, dovecot_log, certs):
    """STARTTLS listener, no header: greeting, then the upgrade, then login."""
    c = clients.imap_on(connect(proxy.ports["imap-starttls"], source=CLIENT_IP))
    c.starttls(ssl_context=certs.client_context())
    assert c.login(*ALICE)[0] == "OK"
    c.logout()
    imap_login_logged(dovecot, dovecot_log, CLIENT_IP)


@pytest.mark.parametrize("first", [
    pytest.param(b"PROXY GARBAGE\r\n", id="v1-bad"),
    pytest.param(proxyproto.V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), id="v2-bad-version"),
])
@pytest.mark.parametrize("listener", ["imap", "imaps"])
def test_malformed_header_after_signature_rejected(proxy, first, listener):
    """Once the signature is there the peer has committed to a header: a bad
    one is refused as with `required`, never passed on as client bytes."""
    mark = proxy.log_mark()
    sock = connect(proxy.ports[listener], source=CLIENT_IP)
    sock.sendall(first)
    data, _ = expect_closed(sock)
    assert data == b"", data
    proxy.wait_log(r"invalid PROXY protocol header", since=mark)


# --- pass-through: the backend greets, and its PROXY header needs the client's address first -----------


def test_lmtp_without_header(proxy, dovecot, dovecot_log):
    subject, refused = clients.lmtp_deliver(proxy.ports["lmtp"], source=CLIENT_IP)
    assert refused == {}
    assert dovecot.has_message(ALICE[0], subject)
    dovecot.wait_log(rf"lmtp\(\d+\): Info: Connect from {re.escape(CLIENT_IP)}\b", since=dovecot_log)


@pytest.mark.parametrize("version", [1, 2])
def test_lmtp_with_header(proxy, dovecot, dovecot_log, version):
    port = proxy.ports["lmtp"]
    sock = connect(port, source=CLIENT_IP)
    sock.sendall(header(version, port))
    subject, refused = clients.lmtp_deliver(sock=sock)
    assert refused == {}
    assert dovecot.has_message(ALICE[0], subject)
    dovecot.wait_log(rf"lmtp\(\d+\): Info: Connect from {re.escape(CLAIMED)}\b", since=dovecot_log)
    assert f"Connect from {CLIENT_IP}" not in dovecot.log_text(dovecot_log)
