"""HTTP routing (issue 11): a protocol = "http" listener routing each
request by [[http.route]], with the request-head rules.

Backends are small scripted HTTP/1.1 servers that record the exact bytes of
each request head they receive and answer with their own name, so routing and
the rewrite toward the backend are both visible."""

import http.client
import socket
import socketserver
import threading

import pytest

from harness.clients import basic_auth
from harness.util import free_port


class _Handler(socketserver.BaseRequestHandler):
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
        head = data.split(b"\r\n\r\n", 1)[0]
        self.server.heads.append(head)
        self.server.got.set()
        body = self.server.name.encode()
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))


class Backend(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, name):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.heads = []
        self.got = threading.Event()
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def backends():
    bs = {"legacy": Backend("legacy"), "new": Backend("new")}
    yield bs
    for b in bs.values():
        b.close()


def config(port, backends, mapping_file=True, forwarded_dest=False, listener_extra=""):
    parts = [f"""
[server]
threads = 1
backend_timeout = "3s"
host_down_threshold = 0
shutdown_grace = "2s"

[routing]
default_destination = "legacy"

[mapping]
source = "file"
normalize = "lowercase"
[mapping.file]
path = "mappings.tsv"

[listener.web]
protocol = "http"
bind = ["127.0.0.1:{port}"]
tls = "plain"
preauth_timeout = "1s"
{listener_extra}

[http]
max_head_size = 4096

[[http.route]]
match = "/fixed/**"
destination = "new"

[[http.route]]
match = "/q/*"
extract = {{ from = "query", param = "user" }}
fallback = "default"

[[http.route]]
match = "/**"
extract = {{ from = "authorization" }}
fallback = "default"
"""]
    for name, b in backends.items():
        parts.append(f"""
[destination.{name}]
host = "127.0.0.1"
allow_plaintext_auth = true
forwarded = {"true" if forwarded_dest else "false"}
[destination.{name}.protocol.http]
port = {b.port}
tls = "plain"
""")
    return "\n".join(parts)


MAPPINGS = "bob@example.com\tnew\n"


@pytest.fixture
def proxy(switchyard, backends):
    port = free_port()
    sy = switchyard(config(port, backends), files={"mappings.tsv": MAPPINGS})
    sy.port = port
    return sy


def get(port, path, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body, r


def raw(port, data, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out


def basic(user, pw="x"):
    return basic_auth(user, pw)


def test_basic_routes_by_mapping(proxy, backends):
    st, body, _ = get(proxy.port, "/jmap/session", {"Authorization": basic(" Bob@Example.com ")})
    assert (st, body) == (200, b"new")
    st, body, _ = get(proxy.port, "/jmap/session", {"Authorization": basic("alice@example.com")})
    assert (st, body) == (200, b"legacy")
    # no credentials: the fallback (default)
    st, body, _ = get(proxy.port, "/")
    assert (st, body) == (200, b"legacy")


def test_fixed_and_query_routes(proxy, backends):
    assert get(proxy.port, "/fixed/a/b")[:2] == (200, b"new")
    assert get(proxy.port, "/q/x?user=bob%40example.com")[:2] == (200, b"new")
    assert get(proxy.port, "/q/x?user=carol%40example.com")[:2] == (200, b"legacy")
    # the query never reaches the log
    assert "bob%40" not in proxy.log_text()
    assert "path=/q/x" in proxy.log_text()


def test_hop_by_hop_removed_and_close_requested(proxy, backends):
    out = raw(proxy.port, b"GET /fixed/x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n"
                          b"X-Secret: 1\r\nKeep-Alive: 5\r\nForwarded: for=6.6.6.6\r\n"
                          b"X-Forwarded-For: 6.6.6.6\r\nX-Ok: yes\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    head = backends["new"].heads[-1].lower()
    assert b"x-ok: yes" in head
    for bad in (b"x-secret", b"keep-alive", b"forwarded", b"x-forwarded-for", b"6.6.6.6"):
        assert bad not in head, bad
    # Persistent by default toward the backend: the client's Connection is
    # not forwarded, and none of the proxy's is needed.
    assert b"\r\nconnection:" not in head
    # no PROXY header on an HTTP leg
    assert head.startswith(b"get /fixed/x http/1.1")


@pytest.mark.parametrize("req,status", [
    (b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", 505),
    (b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 405),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431),
])
def test_malformed_requests(proxy, backends, req, status):
    out = raw(proxy.port, req)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:80]
    assert b"\r\nContent-Length: " in out and b"\r\nConnection: close\r\n" in out
    assert not backends["legacy"].heads and not backends["new"].heads


def test_equal_content_lengths_allowed_one_forwarded(proxy, backends):
    out = raw(proxy.port, b"POST /fixed/p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                          b"Content-Length: 2\r\n\r\nok")
    assert out.startswith(b"HTTP/1.1 200")
    assert backends["new"].heads[-1].lower().count(b"content-length") == 1


def test_head_timeout_408(proxy, backends):
    out = raw(proxy.port, b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert out.startswith(b"HTTP/1.1 408 ")


def test_backend_down_502(switchyard, backends):
    port = free_port()
    dead = free_port()
    cfg = config(port, backends).replace(f"port = {backends['new'].port}", f"port = {dead}")
    sy = switchyard(cfg, files={"mappings.tsv": MAPPINGS})
    assert get(port, "/fixed/x")[0] == 502


def test_forwarded_appended(switchyard, backends):
    port = free_port()
    sy = switchyard(config(port, backends, forwarded_dest=True, listener_extra='forwarded = "trust"'),
                    files={"mappings.tsv": MAPPINGS})
    out = raw(port, b"GET /fixed/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    head = backends["new"].heads[-1]
    assert b"X-Forwarded-For: 10.1.1.1" in head
    assert b"Forwarded: for=127.0.0.1" in head
    assert b"X-Forwarded-For: 127.0.0.1" in head


def test_no_route_404(switchyard, backends):
    port = free_port()
    cfg = config(port, backends).replace('match = "/**"', 'match = "/api"')
    sy = switchyard(cfg, files={"mappings.tsv": MAPPINGS})
    assert get(port, "/other")[0] == 404
    assert get(port, "/api")[0] == 200
    assert get(port, "/api/")[0] == 200


def test_bearer_sw1_and_opaque(proxy, backends):
    from harness.clients import sw1_token
    tok = sw1_token("bob@example.com")
    assert get(proxy.port, "/jmap", {"Authorization": "Bearer " + tok})[:2] == (200, b"new")
    assert get(proxy.port, "/jmap", {"Authorization": "Bearer opaque-token"})[:2] == (200, b"legacy")
    assert tok not in proxy.log_text()


def test_unmapped_basic_falls_back(proxy, backends):
    hdr = {"Authorization": basic("dave@example.com")}
    assert get(proxy.port, "/x", hdr)[:2] == (200, b"legacy")


def test_curl_clients(proxy, backends):
    import subprocess
    url = f"http://127.0.0.1:{proxy.port}"
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http1.0", url + "/"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "505"
    r = subprocess.run(["curl", "-s", "-u", "bob@example.com:pw", url + "/a", url + "/b"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "newnew"
    r = subprocess.run(["curl", "-s", "-H", "Transfer-Encoding: chunked", "--data-binary", "hello",
                        url + "/fixed/up"], capture_output=True, text=True, timeout=10)
    assert r.stdout == "new"
    assert b"transfer-encoding: chunked" in backends["new"].heads[-1].lower()


def test_expect_continue_relayed_to_backend(proxy, backends):
    """Not a body-extract route: Expect goes to the backend, which decides."""
    import subprocess
    r = subprocess.run(["curl", "-s", "-H", "Expect: 100-continue", "--data-binary", "x" * 2000,
                        f"http://127.0.0.1:{proxy.port}/fixed/e"], capture_output=True, text=True, timeout=10)
    assert r.stdout == "new"
    assert b"expect: 100-continue" in backends["new"].heads[-1].lower()


def test_proxy_protocol_inbound_feeds_forwarded(switchyard, backends):
    """A PROXY v1 header from a trusted peer gives the client address that
    the destination's Forwarded carries; no PROXY header toward the backend."""
    from harness.proxyproto import v1
    port = free_port()
    switchyard(config(port, backends, forwarded_dest=True,
                      listener_extra='proxy_protocol = "required"\nproxy_trusted = ["127.0.0.1"]'),
               files={"mappings.tsv": MAPPINGS})
    out = raw(port, v1("203.0.113.9", 4444, "127.0.0.1", port) +
              b"GET /fixed/pp HTTP/1.1\r\nHost: h\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    head = backends["new"].heads[-1]
    assert head.startswith(b"GET /fixed/pp HTTP/1.1\r\n")
    assert b"Forwarded: for=203.0.113.9\r\n" in head
