"""The bridge's byte pump under bulk traffic and backpressure
(src/session/bridge.c, src/net/stream.c).

Between two plaintext legs the bridge splices in the kernel
(sy_stream_read_start_splice); with TLS on a leg, or with the environment
variable SWITCHYARD_NO_SPLICE set, bytes go through user space. Each path
must deliver every byte in order, in both directions at once, also when the
receiver stalls and the proxy has to queue and stop reading (the splice path
then parks what the socket refused in the output queue).

The backend is a byte echo server written here: no installable server
echoes arbitrary binary data back, and the point is the bytes, not a
protocol. The client sends random data from a thread while the test reads
the echo, slowly at first so the echo fills every buffer on the way, then
compares length and SHA-256. The proxy's `session closed` line must count the
bytes too.
"""

import hashlib
import os
import socket
import ssl
import threading
import time

import pytest

from harness.util import connect
from test_passthrough import cert_table, passthrough_config

SIZE = 24 << 20  # well past the socket buffers on both legs


class EchoServer:
    """Accepts connections and echoes every byte back until the peer's FIN,
    then closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.errors = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c):
        try:
            with c:
                while True:
                    data = c.recv(1 << 16)
                    if not data:
                        return
                    c.sendall(data)
        except OSError as e:
            self.errors.append(e)

    def close(self):
        self.sock.close()


@pytest.fixture
def echo_server():
    s = EchoServer()
    yield s
    s.close()


def pump(sock, size, stall=1.0):
    """Sends `size` random bytes from a thread (then a FIN) and reads the echo
    on this one, after `stall` seconds of not reading (plain sockets only: an
    SSL object must not be used from two threads). Returns (sent digest,
    received digest, received length)."""
    payload = os.urandom(1 << 20)
    sent = hashlib.sha256()
    errors = []

    def sender():
        try:
            left = size
            while left > 0:
                chunk = payload[: min(left, len(payload))]
                sock.sendall(chunk)
                sent.update(chunk)
                left -= len(chunk)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    time.sleep(stall)
    got = hashlib.sha256()
    n = 0
    while True:
        data = sock.recv(1 << 16)
        if not data:
            break
        got.update(data)
        n += len(data)
    t.join(60)
    assert not errors, errors
    return sent.hexdigest(), got.hexdigest(), n


class SinkSource:
    """One command line per connection, then bulk bytes: `UP <n>` reads n
    bytes (after a stall, so the proxy must queue and stop reading) and
    answers with their SHA-256 in hex; `DOWN <n>` sends n bytes (the same
    pseudo-random stream pump_down regenerates), then closes."""

    def __init__(self, stall=1.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stall = stall
        self.errors = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            with c:
                f = c.makefile("rb")
                verb, n = f.readline().split()
                n = int(n)
                if verb == b"UP":
                    time.sleep(self.stall)
                    h = hashlib.sha256()
                    left = n
                    while left > 0:
                        data = f.read1(min(left, 1 << 16))
                        if not data:
                            break
                        h.update(data)
                        left -= len(data)
                    c.sendall(h.hexdigest().encode() + b"\n")
                else:
                    for chunk in stream_chunks(n):
                        c.sendall(chunk)
        except (OSError, ValueError) as e:
            self.errors.append(e)

    def close(self):
        self.sock.close()


def stream_chunks(n, seed=b"switchyard"):
    """n deterministic pseudo-random bytes, in chunks."""
    block = hashlib.sha256(seed).digest() * (1 << 15)  # 1 MiB
    i = 0
    while n > 0:
        k = min(n, len(block))
        yield bytes([i & 0xFF]) + block[1:k] if k > 1 else bytes([i & 0xFF])
        n -= k
        i += 1


@pytest.fixture
def sink_source():
    s = SinkSource()
    yield s
    s.close()


def free_port():
    from harness.util import free_port as fp
    return fp()


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
def test_plain_bulk_echo_with_backpressure(switchyard, echo_server, splice):
    port = free_port()
    sy = switchyard(passthrough_config(port, echo_server.port, protocol="smtp",
                                       destination={"proxy_protocol": False},
                                       server={"log_level": "info"}),
                    env=None if splice else {"SWITCHYARD_NO_SPLICE": "1"})
    mark = sy.log_mark()
    s = connect(port, source="127.0.0.5")
    s.settimeout(60)
    sent, got, n = pump(s, SIZE)
    s.close()
    assert n == SIZE
    assert got == sent
    sy.wait_log(rf"session closed.*bytes_in={SIZE}\b.*bytes_out={SIZE}\b", since=mark)
    assert not echo_server.errors


@pytest.mark.parametrize("client_tls", [False, True], ids=["plain", "tls-client-leg"])
def test_bulk_each_direction_with_stalled_receiver(switchyard, sink_source, certs, client_tls):
    """Upload to a backend that stalls before reading, then download to a
    client that stalls before reading; one session each."""
    port = free_port()
    sy = switchyard(passthrough_config(port, sink_source.port, protocol="smtp",
                                       listener_tls="implicit" if client_tls else "plain",
                                       destination={"proxy_protocol": False},
                                       server={"log_level": "info"},
                                       tail=cert_table("local", certs.localhost, default=True)))
    size = SIZE // 2

    def open_session(source):
        s = connect(port, source=source)
        s.settimeout(60)
        if client_tls:
            s = certs.client_context().wrap_socket(s, server_hostname="localhost")
        return s

    # Up.
    s = open_session("127.0.0.6")
    s.sendall(b"UP %d\n" % size)
    expect = hashlib.sha256()
    for chunk in stream_chunks(size):
        s.sendall(chunk)
        expect.update(chunk)
    answer = b""
    while not answer.endswith(b"\n"):
        data = s.recv(128)
        assert data, "closed before the digest"
        answer += data
    assert answer.strip().decode() == expect.hexdigest()
    s.close()

    # Down.
    mark = sy.log_mark()
    s = open_session("127.0.0.7")
    s.sendall(b"DOWN %d\n" % size)
    time.sleep(1.0)
    expect = hashlib.sha256()
    for chunk in stream_chunks(size):
        expect.update(chunk)
    got = hashlib.sha256()
    n = 0
    while True:
        try:
            data = s.recv(1 << 16)
        except ssl.SSLZeroReturnError:
            data = b""
        if not data:
            break
        got.update(data)
        n += len(data)
    s.close()
    assert n == size
    assert got.hexdigest() == expect.hexdigest()
    sy.wait_log(rf"session closed.*bytes_out={size}\b", since=mark)
    assert not sink_source.errors
