"""JMAP through the HTTP routing module against two real Cyrus 3.6 servers
(issue 11): "legacy" and "new", each with alice@example.com and
bob@example.com; the mapping sends bob to new, everyone else goes to the
default, legacy. Each user has a folder named after the instance
(from-legacy / from-new), so every JMAP answer shows which Cyrus gave it,
and Cyrus's per-user telemetry logs show which instance saw the requests.

Real client: http.client with HTTP Basic (the account the route extracts)."""

import http.client
import json

import pytest

from harness.clients import basic_auth
from harness.cyrus import Cyrus, available
from harness.util import free_port

_missing = available()
if _missing:
    pytest.skip(f"Cyrus JMAP not available: {_missing}", allow_module_level=True)

WAIT = 10.0
USERS = {"alice@example.com": "alicepw", "bob@example.com": "bobpw"}
HOME = {"alice@example.com": "legacy", "bob@example.com": "new"}
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
MAPPINGS = "bob@example.com\tnew\n"


def basic(user, pw=None):
    return basic_auth(user, USERS[user] if pw is None else pw)


def config(port, dests):
    parts = [f"""
[server]
threads = 1
backend_timeout = "5s"
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
preauth_timeout = "5s"

[[http.route]]
match = "/**"
extract = {{ from = "authorization" }}
fallback = "default"
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


@pytest.fixture(scope="module")
def cyrus():
    out = {}
    try:
        for name in ("legacy", "new"):
            out[name] = Cyrus(name, USERS).start()
        yield out
    finally:
        for c in out.values():
            c.cleanup()


@pytest.fixture
def proxy(switchyard, cyrus):
    port = free_port()
    sy = switchyard(config(port, {n: c.http_port for n, c in cyrus.items()}),
                    files={"mappings.tsv": MAPPINGS})
    sy.port = port
    return sy


def get(conn, path, user, pw=None):
    conn.request("GET", path, headers={"Authorization": basic(user, pw)})
    r = conn.getresponse()
    return r, r.read()


def api(conn, user, calls):
    body = json.dumps({"using": USING, "methodCalls": calls})
    conn.request("POST", "/jmap/", body=body,
                 headers={"Authorization": basic(user), "Content-Type": "application/json",
                          "Accept": "application/json"})
    r = conn.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, r.getheaders(), data)
    return json.loads(data)["methodResponses"]


def session(conn, user, port):
    """GET /.well-known/jmap, following Cyrus's redirect by hand on the same
    connection; returns the session object and the redirect chain."""
    path, chain = "/.well-known/jmap", []
    for _ in range(5):
        r, body = get(conn, path, user)
        chain.append((path, r.status))
        if r.status in (301, 302, 307, 308):
            loc = r.getheader("Location")
            prefix = f"http://127.0.0.1:{port}"
            assert loc.startswith(prefix) or loc.startswith("/"), loc  # the proxy's Host, not Cyrus's
            path = loc[len(prefix):] if loc.startswith(prefix) else loc
            continue
        assert r.status == 200, (chain, r.getheaders(), body)
        assert r.getheader("Content-Type", "").startswith("application/json")
        return json.loads(body), chain
    raise AssertionError(f"redirect loop: {chain}")


def mailbox_names(responses):
    (name, args, tag), = responses
    assert name == "Mailbox/get", responses
    return sorted(m["name"] for m in args["list"])


def http_requests(cyrus_instance, user):
    """Request lines Cyrus's telemetry recorded for the user's HTTP sessions."""
    return [ln.split("<", 2)[-1] for ln in cyrus_instance.telemetry(user).splitlines()
            if ln.startswith("<") and " HTTP/1.1" in ln]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice@example.com", "bob@example.com"])
def test_session_object_from_the_users_server(proxy, cyrus, user):
    """The JMAP session object (after Cyrus's /.well-known/jmap redirect) is
    the user's own, from the Cyrus the account maps to; the other Cyrus never
    sees the user."""
    home = HOME[user]
    other = "new" if home == "legacy" else "legacy"
    before = {n: len(http_requests(c, user)) for n, c in cyrus.items()}
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    try:
        doc, chain = session(c, user, proxy.port)
    finally:
        c.close()
    assert chain[0] == ("/.well-known/jmap", 301), chain
    assert doc["username"] == user
    assert list(doc["accounts"]) == [user]
    assert doc["primaryAccounts"]["urn:ietf:params:jmap:mail"] == user
    assert "urn:ietf:params:jmap:mail" in doc["capabilities"]
    assert doc["apiUrl"] == "/jmap/"
    seen = http_requests(cyrus[home], user)[before[home]:]
    # Cyrus starts the user's telemetry at authentication: the redirect
    # (served before it) is not in it, the session request is
    assert [ln.split()[:2] for ln in seen] == [["GET", chain[-1][0]]], seen
    assert http_requests(cyrus[other], user)[before[other]:] == []


def test_mailbox_get_twice_on_one_kept_alive_connection(proxy, cyrus):
    """Two JMAP API calls on one client connection: both answered by the
    user's Cyrus, with the user's mailboxes, without reconnecting."""
    for user in USERS:
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
        try:
            first = api(c, user, [["Mailbox/get", {"accountId": user, "ids": None}, "0"]])
            sock = c.sock
            assert sock is not None, "the proxy closed the connection after the first response"
            names = mailbox_names(first)
            assert names == sorted(["Inbox", f"from-{HOME[user]}"]), names
            inbox = [m for m in first[0][1]["list"] if m["role"] == "inbox"]
            assert len(inbox) == 1
            second = api(c, user, [["Mailbox/get", {"accountId": user, "ids": [inbox[0]["id"]],
                                                    "properties": ["name", "role"]}, "1"]])
            assert c.sock is sock, "the second request needed a new connection"
            assert second[0][1]["list"] == [{"id": inbox[0]["id"], "name": "Inbox", "role": "inbox"}]
            assert second[0][1]["notFound"] == []
        finally:
            c.close()


def test_mailbox_set_reaches_only_the_users_server(proxy, cyrus):
    """A JMAP write (Mailbox/set create) through the proxy lands on bob's
    Cyrus (new), seen there by a JMAP call straight to it, and not on legacy."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    try:
        resp = api(c, "bob@example.com",
                   [["Mailbox/set", {"accountId": "bob@example.com",
                                     "create": {"k1": {"name": "via-proxy", "parentId": None}}}, "0"]])
    finally:
        c.close()
    (name, args, _), = resp
    assert name == "Mailbox/set" and "k1" in (args.get("created") or {}), resp

    def names(inst):
        direct = http.client.HTTPConnection("127.0.0.1", cyrus[inst].http_port, timeout=WAIT)
        try:
            return mailbox_names(api(direct, "bob@example.com", [["Mailbox/get", {"ids": None}, "0"]]))
        finally:
            direct.close()

    assert "via-proxy" in names("new")
    assert "via-proxy" not in names("legacy")
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    try:  # and away again, through the proxy: the other tests see bob's two folders
        resp = api(c, "bob@example.com", [["Mailbox/set", {"accountId": "bob@example.com",
                                                           "destroy": [args["created"]["k1"]["id"]]}, "1"]])
    finally:
        c.close()
    assert resp[0][1].get("destroyed") == [args["created"]["k1"]["id"]], resp
    assert "via-proxy" not in names("new")


def test_email_query_and_get_in_one_request(proxy, cyrus):
    """Email/query with a back-reference into Email/get, through the proxy:
    each user reads the welcome message of their own Cyrus."""
    for user in USERS:
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
        try:
            resp = api(c, user, [
                ["Email/query", {"accountId": user}, "q"],  # a filter needs a search engine
                ["Email/get", {"accountId": user, "properties": ["subject", "from"],
                               "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "g"]])
        finally:
            c.close()
        assert [r[0] for r in resp] == ["Email/query", "Email/get"], resp
        got = resp[1][1]["list"]
        assert [m["subject"] for m in got] == [f"welcome to {HOME[user]}"], got
        assert got[0]["from"][0]["email"] == "postmaster@example.com"


def test_wrong_password_is_cyrus_401(proxy, cyrus):
    """The proxy routes on the account and leaves authentication to Cyrus:
    a wrong password gets Cyrus's own 401 with its Basic challenge."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    try:
        r, _ = get(c, "/jmap/", "bob@example.com", pw="wrong")
        assert r.status == 401
        assert "basic" in (r.getheader("WWW-Authenticate") or "").lower()
    finally:
        c.close()


def test_backend_hop_by_hop_response_headers_not_relayed(proxy, cyrus):
    """Cyrus offers HTTP/2 on every response (`Connection: Upgrade`,
    `Upgrade: h2c`); those are for the proxy's leg only and must not reach
    the client, to which the proxy offers no HTTP/2."""
    direct = http.client.HTTPConnection("127.0.0.1", cyrus["legacy"].http_port, timeout=WAIT)
    try:
        r, _ = get(direct, "/jmap/", "alice@example.com")
        assert r.status == 200 and r.getheader("Upgrade") == "h2c"  # what Cyrus sends
    finally:
        direct.close()
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    try:
        r, _ = get(c, "/jmap/", "alice@example.com")
        assert r.status == 200
        assert r.getheader("Upgrade") is None, r.getheaders()
        assert "upgrade" not in (r.getheader("Connection") or "").lower(), r.getheaders()
        assert r.getheader("Alt-Svc") is None, r.getheaders()  # the backend's own port
    finally:
        c.close()


def test_jmap_over_websocket(proxy, cyrus):
    """RFC 8887 through the proxy, when the Cyrus build offers it."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=WAIT)
    try:
        doc, _ = session(c, "bob@example.com", proxy.port)
    finally:
        c.close()
    ws = doc["capabilities"].get("urn:ietf:params:jmap:websocket")
    if not ws:
        pytest.skip("this Cyrus build has no JMAP over WebSocket: the session object lacks "
                    "urn:ietf:params:jmap:websocket (Debian's Cyrus 3.6.1 is built without wslay; "
                    "cyr_buildinfo shows dependency.wslay false)")
    import asyncio
    import websockets
    url = ws["url"]
    if url.startswith("/"):
        url = f"ws://127.0.0.1:{proxy.port}{url}"

    async def exchange():
        async with websockets.connect(url, subprotocols=["jmap"], open_timeout=WAIT,
                                      extra_headers={"Authorization": basic("bob@example.com")}) as conn:
            assert conn.subprotocol == "jmap"
            await conn.send(json.dumps({"@type": "Request", "id": "r1", "using": USING,
                                        "methodCalls": [["Mailbox/get", {"ids": None}, "0"]]}))
            return json.loads(await asyncio.wait_for(conn.recv(), WAIT))

    resp = asyncio.run(exchange())
    assert resp["@type"] == "Response" and resp["requestId"] == "r1", resp
    assert mailbox_names(resp["methodResponses"]) == ["Inbox", "from-new"]
