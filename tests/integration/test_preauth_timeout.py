"""preauth_timeout on every interactive protocol: a client that says nothing
after the greeting gets the protocol's goodbye, then the close."""

import socket
import time

import pytest

from harness import free_port

PROTOS = {
    # protocol: (Dovecot port attribute, the goodbye)
    "imap": ("imap", b"* BYE Disconnected for inactivity.\r\n"),
    "pop3": ("pop3", b"-ERR Disconnected for inactivity.\r\n"),
    "managesieve": ("sieve", b'BYE "Disconnected for inactivity."\r\n'),
    "submission": ("submission", b"421 4.4.2 Timeout exceeded, closing connection\r\n"),
}


@pytest.fixture(scope="module")
def proxy(request, dovecot):
    from harness import Switchyard
    ports = {p: free_port() for p in PROTOS}
    listeners = "".join(f"""
[listener.{p}]
protocol = "{p}"
bind = ["127.0.0.1:{ports[p]}"]
tls = "plain"
preauth_timeout = "1s"
""" for p in PROTOS)
    legs = "".join(f"""
[destination.dv.protocol.{p}]
port = {getattr(dovecot, attr)}
tls = "plain"
""" for p, (attr, _) in PROTOS.items())
    sy = Switchyard(f"""
[server]
threads = 1
{listeners}
[destination.dv]
host = "127.0.0.1"
allow_plaintext_auth = true
proxy_protocol = false
{legs}
[routing]
default_destination = "dv"
""")
    sy.start()
    yield sy, ports
    sy.stop()
    sy.cleanup()


def read_until_closed(sock, limit):
    sock.settimeout(limit)
    data = b""
    start = time.monotonic()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


@pytest.mark.parametrize("proto", list(PROTOS))
def test_goodbye_then_close(proxy, proto):
    sy, ports = proxy
    goodbye = PROTOS[proto][1]
    with socket.create_connection(("127.0.0.1", ports[proto])) as s:
        data, elapsed = read_until_closed(s, 6)
    assert data.endswith(goodbye), data
    assert 0.5 <= elapsed <= 4, elapsed
