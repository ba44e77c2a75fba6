"""HTTP routing against real servers (issue 11): keep-alive with per-request
routing, response framing, streaming, WebSocket, DAV and the migration of an
account, through real clients (http.client, curl, python3-websockets).

Backends: two nginx ("legacy", "new"; every response names its backend in
X-Backend, the access log shows the backend connection of each request),
two Radicale, two WebSocket echo servers, and scripted servers only for
responses no real server gives on demand (a 304 with a Content-Length, 103
before 100, a final answer without 100 Continue, Server-Sent Events paced by
the test)."""

import asyncio
import http.client
import re
import socket
import socketserver
import subprocess
import threading

import pytest

from harness.clients import basic_auth, make_jwt, sw1_token
from harness.util import free_port, recv_until
from harness.web import Nginx, Radicale, WebSocketEcho

TOKEN = "http-admin-token-0123456789abcdef0123"
WAIT = 10.0


def basic(user, pw="pw"):
    return basic_auth(user, pw)




def config(port, admin_port, dests, http_extra="", routes=None, listener_extra=""):
    """dests: name -> backend port."""
    routes = routes if routes is not None else """
[[http.route]]
match = "/.well-known/**"
destination = "legacy"

[[http.route]]
match = "/login"
extract = { from = "body", regex = "user=([^&]+)" }
fallback = "default"

[[http.route]]
match = "/**"
extract = { from = "authorization" }
fallback = "default"
"""
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
preauth_timeout = "2s"
{listener_extra}

[admin]
bind = "127.0.0.1:{admin_port}"
tls = "plain"
allow_plaintext = true
bearer_token = "{TOKEN}"

[http]
{http_extra}
{routes}
"""]
    for name, p in dests.items():
        parts.append(f"""
[destination.{name}]
host = "127.0.0.1"
allow_plaintext_auth = true
[destination.{name}.protocol.http]
port = {p}
tls = "plain"
""")
    return "\n".join(parts)


MAPPINGS = "bob@example.com\tnew\n"


@pytest.fixture(scope="module")
def nginxes():
    out = {}
    try:
        for name in ("legacy", "new"):
            out[name] = Nginx(name, files={"static/hello.txt": f"hello from {name}\n" * 50,
                                           "static/page.html": "<p>" + "x" * 4000 + "</p>\n"}).start()
        yield out
    finally:
        for n in out.values():
            n.cleanup()


@pytest.fixture
def proxy(switchyard, nginxes):
    port, admin = free_port(), free_port()
    sy = switchyard(config(port, admin, {n: x.port for n, x in nginxes.items()}),
                    files={"mappings.tsv": MAPPINGS})
    sy.port, sy.admin = port, admin
    return sy


def admin_call(port, method, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        c.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def conn_of(nginx, path):
    """The backend connection serial and request count nginx logged for the
    latest request of `path`."""
    nginx.wait_log(re.escape(f" {path} HTTP/1.1"))
    lines = [ln for ln in nginx.log() if f" {path} HTTP/1.1" in ln]
    serial, count = lines[-1].split()[:2]
    return int(serial), int(count)


# --- keep-alive and per-request routing --------------------------------------------------------


def test_keepalive_reuses_one_backend_connection(proxy, nginxes):
    """Several requests on one client connection, each routed on its own,
    travel over one kept-alive backend connection."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    seen = []
    for i in range(3):
        c.request("GET", f"/static/hello.txt?i={i}", headers={"Authorization": basic("bob@example.com")})
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and r.getheader("X-Backend") == "new"
        assert body == b"hello from new\n" * 50
        seen.append(conn_of(nginxes["new"], f"/static/hello.txt?i={i}"))
    c.close()
    assert len({s for s, _ in seen}) == 1, seen
    assert [n for _, n in seen] == [seen[0][1], seen[0][1] + 1, seen[0][1] + 2]
    assert not [ln for ln in nginxes["new"].log() if "connection=[" in ln and "hello.txt?i=" in ln
                and "connection=[-]" not in ln], "the client's Connection header reached the backend"


def test_jmap_session_document_and_curl_keepalive(proxy, nginxes):
    """curl fetching several URLs reuses its connection; the JMAP session
    document comes from the fixed route, the rest by the account."""
    url = f"http://127.0.0.1:{proxy.port}"
    r = subprocess.run(["curl", "-s", "-u", "alice@example.com:pw", "-w", "%{num_connects} ",
                        url + "/.well-known/jmap", url + "/.well-known/jmap"],
                       capture_output=True, text=True, timeout=20)
    docs = re.findall(r'\{.*?"username":"(\w+)"\}', r.stdout)
    assert docs == ["legacy", "legacy"], r.stdout
    assert r.stdout.strip().endswith("0"), r.stdout  # the second URL reused the connection


def test_request_resolving_elsewhere_gets_421_and_close(proxy, nginxes):
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    c.request("GET", "/static/hello.txt", headers={"Authorization": basic("bob@example.com")})
    r = c.getresponse()
    assert (r.status, r.getheader("X-Backend")) == (200, "new")
    r.read()
    c.request("GET", "/static/hello.txt?other", headers={"Authorization": basic("alice@example.com")})
    r = c.getresponse()
    assert r.status == 421 and r.getheader("Connection") == "close"
    r.read()
    assert r.will_close
    assert not [ln for ln in nginxes["legacy"].log() if "hello.txt?other" in ln]


def test_304_head_and_gzip_chunked_on_one_connection(proxy, nginxes):
    """A 304 to If-None-Match, a HEAD with a Content-Length and a chunked
    (gzip) body, in a row on one connection: each has exactly the body its
    status and method allow, so the next response is read correctly."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    auth = {"Authorization": basic("bob@example.com")}
    c.request("GET", "/static/page.html", headers=auth)
    r = c.getresponse()
    etag = r.getheader("ETag")
    assert r.status == 200 and etag and len(r.read()) == 4008
    c.request("GET", "/static/page.html", headers={**auth, "If-None-Match": etag})
    r = c.getresponse()
    assert r.status == 304 and r.read() == b""
    c.request("HEAD", "/static/page.html", headers=auth)
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) == 4008 and r.read() == b""
    c.request("GET", "/static/page.html", headers={**auth, "Accept-Encoding": "gzip"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
    assert r.getheader("Content-Encoding") == "gzip"
    import gzip
    assert len(gzip.decompress(r.read())) == 4008
    c.request("GET", "/static/hello.txt?t304", headers=auth)
    r = c.getresponse()
    assert r.read() == b"hello from new\n" * 50
    c.close()
    # Unique paths: the module shares nginx, whose log of this request may lag.
    serials = {conn_of(nginxes["new"], p)[0] for p in ("/static/page.html", "/static/hello.txt?t304")}
    assert len(serials) == 1


def test_chunked_upload_and_expect_to_webdav(proxy, nginxes):
    """curl PUTs a chunked body with Expect: 100-continue: nginx (the
    backend) answers 100, the body follows, the file arrives whole."""
    data = b"0123456789" * 5000
    mark = nginxes["new"].log_mark()
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-",
                        "-H", "Transfer-Encoding: chunked", "-u", "bob@example.com:pw",
                        f"http://127.0.0.1:{proxy.port}/dav/up/file.bin"],
                       input=data, capture_output=True, timeout=20)
    assert r.stdout == b"201", r
    with open(f"{nginxes['new'].root}/dav/up/file.bin", "rb") as f:
        assert f.read() == data
    line = nginxes["new"].wait_line("/dav/up/file.bin", since=mark)
    assert "expect=[100-continue]" in line


def test_body_extract_answers_100_continue_itself(proxy, nginxes):
    """A body-extract route: the proxy answers Expect itself, reads the
    form, routes by it, and the backend never sees Expect."""
    mark = nginxes["new"].log_mark()
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", "-H", "Expect: 100-continue",
                        "--data-binary", "pw=x&user=bob%40example.com" + "&pad=" + "p" * 3000,
                        f"http://127.0.0.1:{proxy.port}/login"], capture_output=True, text=True, timeout=20)
    assert "X-Backend: new" in r.stdout, r.stdout
    assert r.stdout.startswith("HTTP/1.1 100 Continue"), r.stdout[:200]
    line = nginxes["new"].wait_line('"POST /login', since=mark)
    assert "expect=[-]" in line, line
    # No match: the fallback.
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-D", "-", "--data-binary", "nobody=here",
                        f"http://127.0.0.1:{proxy.port}/login"], capture_output=True, text=True, timeout=20)
    assert "X-Backend: legacy" in r.stdout


def test_keepalive_limits(switchyard, nginxes):
    """max_keepalive_requests: the last request asks the backend to close,
    and the client connection ends after it; keepalive_timeout: an idle
    connection is closed without a response."""
    port, admin = free_port(), free_port()
    switchyard(config(port, admin, {n: x.port for n, x in nginxes.items()},
                      http_extra='max_keepalive_requests = 2\nkeepalive_timeout = "1s"'),
               files={"mappings.tsv": MAPPINGS})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    mark = nginxes["new"].log_mark()
    for i in range(2):
        c.request("GET", f"/static/hello.txt?k={i}", headers={"Authorization": basic("bob@example.com")})
        r = c.getresponse()
        r.read()
        assert r.status == 200
    assert r.will_close  # nginx said Connection: close to the second
    line = nginxes["new"].wait_line("hello.txt?k=1", since=mark)
    assert "connection=[close]" in line, line
    c.close()

    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    s.sendall(b"GET /static/hello.txt HTTP/1.1\r\nHost: h\r\nAuthorization: " +
              basic("bob@example.com").encode() + b"\r\n\r\n")
    got = recv_until(s, rb"hello from new\n" * 50)
    assert got.startswith(b"HTTP/1.1 200")
    assert s.recv(100) == b""  # closed at keepalive_timeout, nothing more sent
    s.close()


def test_reload_swaps_routes_for_the_next_request(switchyard, nginxes):
    port, admin = free_port(), free_port()
    dests = {n: x.port for n, x in nginxes.items()}
    routes = '[[http.route]]\nmatch = "/static/**"\ndestination = "new"\n'
    sy = switchyard(config(port, admin, dests, routes=routes), files={"mappings.tsv": MAPPINGS})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    c.request("GET", "/static/hello.txt")
    r = c.getresponse()
    assert r.status == 200 and r.read()
    sy.write_config(config(port, admin, dests, routes=routes + '[[http.route]]\nmatch = "/.well-known/**"\n'
                                                               'destination = "new"\n'))
    assert admin_call(admin, "POST", "/config/reload")[0] == 200
    c.request("GET", "/.well-known/jmap")
    r = c.getresponse()
    assert (r.status, r.getheader("X-Backend")) == (200, "new"), r.getheaders()
    assert b'"username":"new"' in r.read()
    c.close()


# --- migration ----------------------------------------------------------------------------------


def test_migration_moves_an_account(proxy, nginxes):
    """bob's Basic, sw1. and JWT requests land on his mapped backend; a
    mapping change plus a kick moves them (a kept-alive connection is closed
    by the kick); an opaque token goes to the default."""
    tokens = {"basic": basic("bob@example.com"), "sw1": "Bearer " + sw1_token("bob@example.com"),
              "jwt": "Bearer " + make_jwt({"email": "bob@example.com", "sub": "1"})}

    def where(auth, conn=None):
        c = conn or http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
        c.request("GET", "/static/hello.txt", headers={"Authorization": auth})
        r = c.getresponse()
        r.read()
        if not conn:
            c.close()
        return r.getheader("X-Backend")

    assert {k: where(v) for k, v in tokens.items()} == {"basic": "new", "sw1": "new", "jwt": "new"}
    assert where("Bearer opaque-token-123") == "legacy"
    kept = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    assert where(tokens["basic"], kept) == "new"
    assert admin_call(proxy.admin, "PUT", "/mappings?identifier=bob@example.com&destination=legacy") == (200, "ok\n")
    status, body = admin_call(proxy.admin, "POST", "/connections/kick?identifier=bob@example.com")
    assert (status, body) == (200, "kicked 1\n")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        where(tokens["basic"], kept)
    assert {k: where(v) for k, v in tokens.items()} == {"basic": "legacy", "sw1": "legacy", "jwt": "legacy"}
    log = proxy.log_text()
    assert tokens["sw1"][7:] not in log and "Basic " not in log and "?i=" not in log


def test_http_metrics(proxy, nginxes):
    for _ in range(2):
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
        c.request("GET", "/static/missing.txt", headers={"Authorization": basic("bob@example.com")})
        assert c.getresponse().status == 404
        c.close()
    c = http.client.HTTPConnection("127.0.0.1", proxy.admin, timeout=WAIT)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    assert re.search(r'^switchyard_http_requests_total\{listener="web",code="4xx"\} 2$', text, re.M), text
    assert 'switchyard_http_upgrades_total{listener="web"} 0' in text


# --- scripted responses ---------------------------------------------------------------------------


class Scripted(socketserver.ThreadingTCPServer):
    """Answers each request head with script(handler, head) and records
    every byte received after heads in `extra`."""
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, script):
        outer = self
        self.heads, self.extra = [], b""
        self.script = script
        self.done = threading.Event()

        class H(socketserver.BaseRequestHandler):
            def handle(self):
                s = self.request
                s.settimeout(WAIT)
                buf = b""
                try:
                    while True:
                        while b"\r\n\r\n" not in buf:
                            chunk = s.recv(65536)
                            if not chunk:
                                return
                            buf += chunk
                        head, buf = buf.split(b"\r\n\r\n", 1)
                        outer.heads.append(head)
                        buf = outer.script(s, head, buf)
                        if buf is None:
                            return
                except OSError:
                    return
                finally:
                    outer.done.set()

        super().__init__(("127.0.0.1", 0), H)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def scripted(switchyard):
    made = []

    def make(script):
        b = Scripted(script)
        made.append(b)
        port, admin = free_port(), free_port()
        routes = '[[http.route]]\nmatch = "/**"\ndestination = "new"\n'
        sy = switchyard(config(port, admin, {"legacy": b.port, "new": b.port}, routes=routes),
                        files={"mappings.tsv": ""})
        sy.port = port
        return b, sy

    yield make
    for b in made:
        b.close()


def test_304_with_content_length_has_no_body(scripted):
    """A 304 claiming Content-Length: 100 ends at its head: the next
    response on the connection is read as a response, not as those 100
    bytes."""
    def script(s, head, rest):
        if b" /first " in head:
            s.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n")
        else:
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        return rest

    b, sy = scripted(script)
    c = http.client.HTTPConnection("127.0.0.1", sy.port, timeout=WAIT)
    c.request("GET", "/first")
    r = c.getresponse()
    assert r.status == 304
    r.read()
    c.request("GET", "/second")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"second")
    c.close()


def test_early_hints_then_continue_relayed_in_order(scripted):
    def script(s, head, rest):
        s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"
                  b"HTTP/1.1 100 Continue\r\n\r\n")
        body = rest
        while len(body) < 5:
            body += s.recv(100)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return body[5:]

    b, sy = scripted(script)
    s = socket.create_connection(("127.0.0.1", sy.port), timeout=WAIT)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    got = recv_until(s, rb"100 Continue\r\n\r\n")
    assert got.index(b"103 Early Hints") < got.index(b"100 Continue")
    s.sendall(b"hello")
    got += recv_until(s, rb"\r\n\r\nok")
    assert got.count(b"HTTP/1.1 ") == 3
    s.close()


def test_final_answer_without_continue_withholds_the_body(scripted):
    """The backend refuses at the head (no 100 Continue): the client gets the
    401, the connection then closes, and the body the client sends after it
    never reaches the backend."""
    def script(s, head, rest):
        s.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")
        while True:  # record everything else until the proxy closes
            chunk = s.recv(65536)
            if not chunk:
                return None
            b_holder[0].extra += chunk

    b_holder = [None]
    b, sy = scripted(script)
    b_holder[0] = b
    s = socket.create_connection(("127.0.0.1", sy.port), timeout=WAIT)
    s.sendall(b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    got = recv_until(s, rb"nope")
    assert got.startswith(b"HTTP/1.1 401")
    try:
        s.sendall(b"SECRETBODY")
    except OSError:
        pass
    s.settimeout(WAIT)
    while True:
        try:
            chunk = s.recv(100)
        except ConnectionResetError:
            break
        if not chunk:
            break
    s.close()
    assert b.done.wait(WAIT)
    assert b"SECRETBODY" not in b.extra


def test_server_sent_events_stream_event_by_event(scripted):
    """The second event is sent only after the client has received the
    first through the proxy: a buffering proxy would deadlock here."""
    first_seen = threading.Event()

    def script(s, head, rest):
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        ev = b"data: one\n\n"
        s.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
        assert first_seen.wait(WAIT)
        ev = b"data: two\n\n"
        s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev))
        return rest

    b, sy = scripted(script)
    c = http.client.HTTPConnection("127.0.0.1", sy.port, timeout=WAIT)
    c.request("GET", "/events", headers={"Accept": "text/event-stream"})
    r = c.getresponse()
    assert r.readline() == b"data: one\n"
    assert r.readline() == b"\n"
    first_seen.set()
    assert r.readline() == b"data: two\n"
    c.close()


def test_body_until_close_ends_the_client_connection(scripted):
    def script(s, head, rest):
        s.sendall(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        return None

    b, sy = scripted(script)
    s = socket.create_connection(("127.0.0.1", sy.port), timeout=WAIT)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    got = b""
    while True:
        chunk = s.recv(1000)
        if not chunk:
            break
        got += chunk
    assert got.endswith(b"\r\n\r\nall of it")
    s.close()


# --- WebSocket ---------------------------------------------------------------------------------


def test_websocket_routed_by_account_and_bridged(switchyard):
    import websockets
    echoes = {n: WebSocketEcho(n).start() for n in ("legacy", "new")}
    try:
        port, admin = free_port(), free_port()
        switchyard(config(port, admin, {n: e.port for n, e in echoes.items()}),
                   files={"mappings.tsv": MAPPINGS})

        async def talk(user):
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                          extra_headers={"Authorization": basic(user)}) as ws:
                out = []
                for m in ("a", "b" * 70000, "c"):
                    await ws.send(m)
                    out.append(await ws.recv())
                return out

        got = asyncio.run(talk("bob@example.com"))
        assert got == ["new:a", "new:" + "b" * 70000, "new:c"]
        assert asyncio.run(talk("alice@example.com"))[0] == "legacy:a"
        assert {k.lower() for k in echoes["new"].headers[0]} >= {"authorization", "upgrade"}
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=WAIT)
        c.request("GET", "/metrics")
        assert 'switchyard_http_upgrades_total{listener="web"} 2' in c.getresponse().read().decode()
    finally:
        for e in echoes.values():
            e.cleanup()


def test_declined_upgrade_is_an_ordinary_response(proxy, nginxes):
    """nginx serving a static file ignores Upgrade: the 200 is relayed cut
    at its length, and the connection goes on as HTTP."""
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    s.sendall(b"GET /static/hello.txt HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Authorization: " + basic("bob@example.com").encode() + b"\r\n\r\n")
    got = recv_until(s, rb"(hello from new\n){50}")
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello from new\n")
    s.sendall(b"GET /.well-known/jmap HTTP/1.1\r\nHost: h\r\n\r\n")
    s.settimeout(WAIT)
    rest = b""
    while b"username" not in rest:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    # The jmap route is fixed to legacy: a different destination, so 421.
    assert rest.startswith(b"HTTP/1.1 421")
    s.close()


# --- DAV ---------------------------------------------------------------------------------------


PROPFIND = (b'<?xml version="1.0" encoding="utf-8"?>'
            b'<propfind xmlns="DAV:"><prop><current-user-principal/><resourcetype/></prop></propfind>')


def test_caldav_carddav_propfind_reaches_each_users_server(switchyard):
    users = {"alice@example.com": "alicepw", "bob@example.com": "bobpw"}
    rads = {n: Radicale(users).start() for n in ("legacy", "new")}
    try:
        port, admin = free_port(), free_port()
        switchyard(config(port, admin, {n: r.port for n, r in rads.items()}),
                   files={"mappings.tsv": MAPPINGS})
        for user, home in (("alice@example.com", "legacy"), ("bob@example.com", "new")):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
            for path in (f"/{user}/", "/.well-known/caldav", f"/{user}/"):
                hdrs = {"Authorization": basic(user, users[user]), "Depth": "0",
                        "Content-Type": "application/xml"}
                if path.startswith("/.well-known"):
                    continue  # fixed to legacy in this config; not a DAV test
                c.request("PROPFIND", path, body=PROPFIND, headers=hdrs)
                r = c.getresponse()
                body = r.read()
                assert r.status == 207, (r.status, body[:200])
                assert f"/{user.replace('@', '%40')}/".encode() in body
            c.request("REPORT", f"/{user}/", body=b'<?xml version="1.0"?><sync-collection xmlns="DAV:">'
                      b'<sync-token/><sync-level>1</sync-level><prop><getetag/></prop></sync-collection>',
                      headers={"Authorization": basic(user, users[user]), "Content-Type": "application/xml"})
            r = c.getresponse()
            r.read()
            assert r.status in (207, 403, 409), r.status  # answered over the same connection
            c.close()
            assert user in rads[home].principals()
            other = "new" if home == "legacy" else "legacy"
            assert user not in rads[other].principals()
    finally:
        for r in rads.values():
            r.cleanup()


# --- TLS ---------------------------------------------------------------------------------------


def test_implicit_tls_listener_offers_http11_only(switchyard, nginxes, certs):
    """tls = "implicit": ALPN selects http/1.1 when offered, never h2; a
    client offering only h2 gets no ALPN and speaks HTTP/1.1 anyway."""
    port, admin = free_port(), free_port()
    cfg = config(port, admin, {n: x.port for n, x in nginxes.items()}).replace(
        'tls = "plain"\npreauth_timeout', 'tls = "implicit"\npreauth_timeout', 1)
    cfg += (f'\n[tls.certificate.web]\ncert = "{certs.localhost.cert}"\nkey = "{certs.localhost.key}"\n'
            'default = true\n')
    switchyard(cfg, files={"mappings.tsv": MAPPINGS})
    for offer, want in ((["h2", "http/1.1"], "http/1.1"), (["h2"], None)):
        ctx = certs.client_context()
        ctx.set_alpn_protocols(offer)
        c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=WAIT)
        c.connect()
        assert c.sock.selected_alpn_protocol() == want
        c.request("GET", "/static/hello.txt", headers={"Authorization": basic("bob@example.com")})
        r = c.getresponse()
        assert (r.status, r.getheader("X-Backend")) == (200, "new")
        r.read()
        c.close()


def test_client_connection_close_is_honoured(proxy, nginxes):
    """The client's Connection: close reaches the backend as the proxy's own
    close request, and the client connection ends after the response."""
    mark = nginxes["new"].log_mark()
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    s.sendall(b"GET /static/hello.txt?bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\nAuthorization: " +
              basic("bob@example.com").encode() + b"\r\n\r\n")
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"hello from new\n")
    line = nginxes["new"].wait_line("hello.txt?bye", since=mark)
    assert "connection=[close]" in line, line


def test_forwarded_for_ipv6_client_is_bracketed(switchyard, nginxes):
    """A client on ::1 reaches a destination with forwarded = true as
    Forwarded: for="[::1]" and X-Forwarded-For: ::1."""
    port, admin = free_port(host="::1"), free_port()
    cfg = config(port, admin, {n: x.port for n, x in nginxes.items()}).replace(
        f'bind = ["127.0.0.1:{port}"]', f'bind = ["[::1]:{port}"]').replace(
        "allow_plaintext_auth = true\n", "allow_plaintext_auth = true\nforwarded = true\n")
    switchyard(cfg, files={"mappings.tsv": MAPPINGS})
    c = http.client.HTTPConnection("::1", port, timeout=WAIT)
    c.request("GET", "/echo-forwarded", headers={"Authorization": basic("bob@example.com")})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    assert r.status == 200, body
    assert 'forwarded=[for="[::1]"]' in body and "xff=[::1]" in body, body


def test_malformed_backend_response_is_502(scripted):
    """A status that is not one ("050", found by the fuzzer) or a response
    with both Content-Length and chunked: 502 to the client, nothing of it
    relayed."""
    answers = [b"HTTP/1.1 050 Odd\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]

    def script(s, head, rest):
        s.sendall(answers.pop(0))
        return None

    b, sy = scripted(script)
    for _ in range(2):
        c = http.client.HTTPConnection("127.0.0.1", sy.port, timeout=WAIT)
        c.request("GET", "/x")
        r = c.getresponse()
        assert (r.status, r.read()) == (502, b"502 Bad Gateway\n")
        c.close()


def test_pipelined_requests_answered_in_order_and_smuggling_checked_on_each(proxy, nginxes):
    """Two requests in one write are answered in order over one backend
    connection; a third, smuggling-shaped one (Content-Length with
    Transfer-Encoding) behind them gets 400 and the connection closes: the
    backend never sees it."""
    auth = b"Authorization: " + basic("bob@example.com").encode() + b"\r\n"
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=WAIT)
    s.sendall(b"GET /static/hello.txt?p1 HTTP/1.1\r\nHost: h\r\n" + auth + b"\r\n" +
              b"GET /static/page.html?p2 HTTP/1.1\r\nHost: h\r\n" + auth + b"\r\n" +
              b"POST /static/x?p3 HTTP/1.1\r\nHost: h\r\n" + auth +
              b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    first = got.index(b"hello from new")
    second = got.index(b"<p>xxx")
    third = got.index(b"HTTP/1.1 400 ")
    assert first < second < third, got[:300]
    nginxes["new"].wait_log(r"\?p1 ")
    nginxes["new"].wait_log(r"\?p2 ")
    log = "\n".join(nginxes["new"].log())
    assert "?p3" not in log and "/smuggled" not in log


def test_backend_connection_specific_headers_are_not_relayed(scripted):
    """The backend's Connection, the fields it names, Keep-Alive, Upgrade
    (not to an upgrade request) and Alt-Svc stay on the proxy's leg; its
    Connection: close becomes the proxy's own, and the connection ends."""
    def script(s, head, rest):
        s.sendall(b"HTTP/1.1 200 OK\r\nConnection: X-Private, close\r\nX-Private: secret\r\n"
                  b"Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nAlt-Svc: h2c=\":9999\"\r\n"
                  b"X-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
        return None

    b, sy = scripted(script)
    c = http.client.HTTPConnection("127.0.0.1", sy.port, timeout=WAIT)
    c.request("GET", "/x")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"ok")
    names = {k.lower() for k, _ in r.getheaders()}
    assert "x-kept" in names
    assert not names & {"x-private", "keep-alive", "upgrade", "alt-svc"}, r.getheaders()
    assert r.getheader("Connection") == "close" and r.will_close
    c.close()
