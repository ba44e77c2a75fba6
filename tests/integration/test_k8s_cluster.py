"""Kubernetes discovery in the proxy: cluster nodes from EndpointSlices (the
fake API server of harness/fake_k8s.py) pin 200 accounts to four real
Dovecot "pods", each on its own loopback address with the same port, as the
pods behind one Service listen alike.

Which pod served a login is read from the mailbox: every pod delivered one
message per account whose subject names the pod. Pinning is checked against
the rendezvous hash computed here independently of the proxy
(harness.clients.rendezvous_score).
"""

import concurrent.futures
import http.client
import imaplib
import json
import os
import re
import socket
import time

import pytest

from harness.clients import rendezvous_score
from harness.dovecot import Dovecot
from harness.fake_k8s import FakeK8s, endpoint
from harness.util import free_port, make_tempdir, remove_tree

TOKEN = "k8s-cluster-test-admin-token-0123456789"
ACCOUNTS = {f"user{i:03d}@example.com": f"pw{i:03d}" for i in range(200)}
PODS = {"pod-a": "127.0.0.2", "pod-b": "127.0.0.3", "pod-c": "127.0.0.4", "pod-d": "127.0.0.5"}
WAIT = 15.0


def subject_of(pod):
    return f"Served by {pod}"


def deliver(addr, port, rcpts, subject):
    """One LMTP transaction to many recipients (LMTP answers DATA once per
    recipient, which smtplib.LMTP.sendmail does not read)."""
    with socket.create_connection((addr, port), timeout=WAIT) as sock:
        f = sock.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                assert line[:1] in b"2345", line
                if line[3:4] != b"-":
                    return line

        def cmd(text, want=b"2"):
            sock.sendall(text.encode() + b"\r\n")
            line = reply()
            assert line.startswith(want), (text, line)

        assert reply().startswith(b"220")
        cmd("LHLO setup.test")
        cmd("MAIL FROM:<setup@example.com>")
        for r in rcpts:
            cmd(f"RCPT TO:<{r}>")
        cmd("DATA", b"354")
        sock.sendall(f"From: setup@example.com\r\nSubject: {subject}\r\n\r\nHello.\r\n.\r\n".encode())
        for r in rcpts:
            line = reply()
            assert line.startswith(b"250"), (r, line)
        cmd("QUIT")


@pytest.fixture(scope="module")
def pods(certs, smtp_sink):
    """Four Dovecots, one per pod address, on the ports of the first."""
    out = {}
    try:
        first = None
        for name, addr in PODS.items():
            d = Dovecot(certs, users=ACCOUNTS, listeners={"imap": ("plain",), "lmtp": ("plain",)},
                        address=addr, ports_of=first, relay=(smtp_sink.host, smtp_sink.port))
            first = first or d
            out[name] = d
            d.start()
            users = list(ACCOUNTS)
            for i in range(0, len(users), 50):
                deliver(addr, d.lmtp, users[i:i + 50], subject_of(name))
        yield out
    finally:
        for d in out.values():
            d.cleanup()


@pytest.fixture
def tmp():
    d = make_tempdir("k8s-cluster")
    yield d
    remove_tree(d)


@pytest.fixture
def fakes(certs):
    started = []

    def factory(**kw):
        f = FakeK8s(certs, **kw)
        started.append(f)
        return f

    yield factory
    for f in started:
        f.stop()


def config(pods, imap_port, admin_port, api_url, token_file, ca_file, clusters=("pool",)):
    d = next(iter(pods.values()))
    parts = [f"""
[server]
threads = 2
backend_timeout = "5s"
host_down_threshold = 0
shutdown_grace = "3s"

[routing]
default_destination = "{clusters[0]}"

[capabilities.imap]
allow_plain_auth_without_tls = true

[listener.imap]
protocol = "imap"
tls = "plain"
bind = ["127.0.0.1:{imap_port}"]

[destination.pod]
host = "pod.invalid"
forwarding = "none"
allow_plaintext_auth = true
[destination.pod.protocol.imap]
port = {d.imap}
tls = "plain"

[admin]
bind = "127.0.0.1:{admin_port}"
tls = "plain"
allow_plaintext = true
bearer_token = "{TOKEN}"
"""]
    for c in clusters:
        parts.append(f"""
[cluster.{c}]
template = "pod"
[cluster.{c}.kubernetes]
service = "{c if c != 'pool' else 'mail'}"
namespace = "mail"
api_url = "{api_url}"
token_file = "{token_file}"
ca_file = "{ca_file}"
watch_timeout = "30s"
backoff_initial = "100ms"
backoff_max = "400ms"
""")
    return "".join(parts)


class Proxy:
    def __init__(self, switchyard, pods, fake_url, certs, tmp, token="token-one", clusters=("pool",)):
        self.imap = free_port()
        self.admin = free_port()
        self.token_file = f"{tmp}/token"
        if token is not None:  # None: no token file at all
            with open(self.token_file, "w") as f:
                f.write(token + "\n")
        self.text = config(pods, self.imap, self.admin, fake_url, self.token_file, certs.ca_cert,
                           clusters)
        self.sy = switchyard(self.text)

    def request(self, method, path, auth=True):
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"} if auth else {})
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def ready(self):
        return self.request("GET", "/readyz?verbose")

    def wait_ready(self, want=200, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.ready()
            if status == want:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz stayed {status}: {body}\nlog:\n{self.sy.log_text()[-3000:]}")
            time.sleep(0.05)

    def members(self, cluster="pool"):
        status, body = self.request("GET", "/destinations")
        assert status == 200, body
        for d in json.loads(body)["destinations"]:
            if d["destination"] == cluster:
                return d
        raise AssertionError(body)

    def wait_members(self, want, cluster="pool", timeout=WAIT):
        """Waits until the cluster's eligible members are exactly `want` (ids)."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.members(cluster)
            got = {m["destination"] for m in c["members"] if m["eligible"]}
            if got == set(want):
                return c
            if time.monotonic() > deadline:
                raise AssertionError(f"eligible members {got}, want {set(want)}: {c}")
            time.sleep(0.05)

    def metrics(self):
        status, body = self.request("GET", "/metrics", auth=False)
        assert status == 200
        return body


def served_by(port, user):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=WAIT)
    try:
        m.login(user, ACCOUNTS[user])
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", data
        text = data[0][1].decode()
        found = re.search(r"Served by (pod-\w)", text)
        assert found, text
        return found.group(1)
    finally:
        try:
            m.logout()
        except Exception:
            pass


def landing(port, users=ACCOUNTS):
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return dict(zip(users, ex.map(lambda u: served_by(port, u), users)))


def pinned(users, nodes):
    return {u: max(nodes, key=lambda n: rendezvous_score(n, u)) for u in users}


def slice_of(names, terminating=()):
    return [endpoint(PODS[n], pod=n, ready=n not in terminating, serving=True,
                     terminating=n in terminating) for n in names]


def test_pinning_follows_endpoint_changes(switchyard, pods, fakes, certs, tmp):
    """Readiness waits for the first list; 200 accounts land on their
    rendezvous pod; a 4th endpoint moves 15-35 % of them, all to the new
    pod; deleting an endpoint moves only its accounts; metrics and
    /destinations show the members."""
    api_port = free_port()
    fake = fakes(port=api_port)
    fake.put_slice("mail-1", slice_of(["pod-a", "pod-b", "pod-c"]))
    # The API server is not up yet: the proxy runs but is not ready.
    p = Proxy(switchyard, pods, fake.url, certs, tmp)
    status, body = p.ready()
    assert status == 503, body
    assert "[-]discovery:pool" in body, body
    fake.start()
    body = p.wait_ready()
    assert "[+]discovery:pool synced" in body, body

    three = ["pod-a", "pod-b", "pod-c"]
    p.wait_members(three)
    before = landing(p.imap)
    assert before == pinned(ACCOUNTS, three)
    assert set(before.values()) == set(three)

    c = p.members()
    assert c["kubernetes_service"] == "mail" and c["discovery"] == "synced"
    addr = {m["destination"]: m["address"] for m in c["members"]}
    assert addr == {n: PODS[n] for n in three}
    text = p.metrics()
    assert 'switchyard_discovery_endpoints{cluster="pool",state="eligible"} 3' in text
    assert 'switchyard_discovery_synced{cluster="pool"} 1' in text

    # A 4th pod: only the accounts it now wins move, all of them to it.
    fake.put_slice("mail-2", slice_of(["pod-d"]))
    four = three + ["pod-d"]
    p.wait_members(four)
    after = landing(p.imap)
    assert after == pinned(ACCOUNTS, four)
    moved = [u for u in ACCOUNTS if after[u] != before[u]]
    assert all(after[u] == "pod-d" for u in moved)
    assert 0.15 <= len(moved) / len(ACCOUNTS) <= 0.35, len(moved)

    # pod-b goes away: only its accounts move.
    fake.put_slice("mail-1", slice_of(["pod-a", "pod-c"]))
    rest = ["pod-a", "pod-c", "pod-d"]
    p.wait_members(rest)
    gone = landing(p.imap)
    assert gone == pinned(ACCOUNTS, rest)
    for u in ACCOUNTS:
        if after[u] != "pod-b":
            assert gone[u] == after[u], u
    assert 'switchyard_discovery_endpoints{cluster="pool",state="eligible"} 3' in p.metrics()


def test_terminating_pod_keeps_its_sessions(switchyard, pods, fakes, certs, tmp):
    """A terminating pod gets no new logins (its accounts go to their
    next-ranked pod) while an IMAP IDLE session bridged to it stays up."""
    fake = fakes().start()
    nodes = ["pod-a", "pod-b", "pod-c"]
    fake.put_slice("mail-1", slice_of(nodes))
    p = Proxy(switchyard, pods, fake.url, certs, tmp)
    p.wait_ready()
    p.wait_members(nodes)
    owners = pinned(ACCOUNTS, nodes)
    user = next(u for u, n in owners.items() if n == "pod-b")

    idle = imaplib.IMAP4("127.0.0.1", p.imap, timeout=WAIT)
    idle.login(user, ACCOUNTS[user])
    idle.select("INBOX")
    tag = idle._new_tag().decode()
    idle.send(f"{tag} IDLE\r\n".encode())
    assert idle.readline().startswith(b"+")

    fake.put_slice("mail-1", slice_of(nodes, terminating=["pod-b"]))
    c = p.wait_members(["pod-a", "pod-c"])
    b = next(m for m in c["members"] if m["destination"] == "pod-b")
    assert b["terminating"] is True and b["eligible"] is False
    assert 'switchyard_discovery_endpoints{cluster="pool",state="terminating"} 1' in p.metrics()

    land = landing(p.imap)
    assert land == pinned(ACCOUNTS, ["pod-a", "pod-c"])
    assert "pod-b" not in land.values()

    # The IDLE session on pod-b is still bridged and answers.
    idle.send(b"DONE\r\n")
    assert idle.readline().startswith(f"{tag} OK".encode())
    typ, _ = idle.noop()
    assert typ == "OK"
    idle.logout()


def test_api_outage_keeps_routing_then_catches_up(switchyard, pods, fakes, certs, tmp):
    """With the API server gone the proxy stays ready and routes on the last
    known members; when it returns, a change made meanwhile is applied."""
    api_port = free_port()
    fake = fakes(port=api_port).start()
    nodes = ["pod-a", "pod-b", "pod-c"]
    fake.put_slice("mail-1", slice_of(nodes))
    p = Proxy(switchyard, pods, fake.url, certs, tmp)
    p.wait_ready()
    p.wait_members(nodes)
    mark = p.sy.log_mark()  # before the stop: the proxy may log its error at once
    fake.stop()
    p.sy.wait_log(r"k8s discovery (state|error)", since=mark)
    assert p.ready()[0] == 200
    sample = list(ACCOUNTS)[:40]
    assert landing(p.imap, sample) == pinned(sample, nodes)
    assert p.members()["discovery"] == "degraded"

    fake.put_slice("mail-1", slice_of(["pod-a", "pod-b", "pod-c", "pod-d"]))
    fake.start()
    p.wait_members(["pod-a", "pod-b", "pod-c", "pod-d"])
    assert landing(p.imap, sample) == pinned(sample, ["pod-a", "pod-b", "pod-c", "pod-d"])
    text = p.metrics()
    assert re.search(r'switchyard_discovery_errors_total\{cluster="pool",request="(list|watch)"\} [1-9]',
                     text), text


def test_rotated_token_is_used_after_401(switchyard, pods, fakes, certs, tmp):
    """The API starts refusing the token (401); the proxy re-reads the
    rotated token file at once and follows the next change."""
    fake = fakes().start()
    fake.put_slice("mail-1", slice_of(["pod-a", "pod-b"]))
    p = Proxy(switchyard, pods, fake.url, certs, tmp)
    p.wait_ready()
    p.wait_members(["pod-a", "pod-b"])
    with open(p.token_file + ".new", "w") as f:
        f.write("token-two\n")
    os.replace(p.token_file + ".new", p.token_file)
    fake.rotate_token("token-two")
    fake.expire_watches()
    fake.put_slice("mail-1", slice_of(["pod-a", "pod-b", "pod-c"]))
    p.wait_members(["pod-a", "pod-b", "pod-c"])
    fake.wait_request(lambda r: r.get("token") == "token-two" and r.get("token_ok"))
    assert 'reason="unauthorized"} 0' not in p.metrics()


def test_reload_adds_and_removes_discovered_clusters(switchyard, pods, fakes, certs, tmp):
    """A reload that adds a discovered cluster starts its watch (and the
    proxy is ready once it has listed); one that removes it stops the watch.
    Sessions survive both."""
    fake = fakes().start()
    fake.put_slice("mail-1", slice_of(["pod-a", "pod-b"]))
    fake.put_slice("other-1", slice_of(["pod-c", "pod-d"]), service="other")
    p = Proxy(switchyard, pods, fake.url, certs, tmp)
    p.wait_ready()
    user = "user000@example.com"
    s = imaplib.IMAP4("127.0.0.1", p.imap, timeout=WAIT)
    s.login(user, ACCOUNTS[user])

    both = config(pods, p.imap, p.admin, fake.url, p.token_file, certs.ca_cert, ("other", "pool"))
    p.sy.write_config(both)
    status, body = p.request("POST", "/config/reload")
    assert status == 200, body
    c = p.wait_members(["pod-c", "pod-d"], cluster="other")
    assert c["kubernetes_service"] == "other"
    p.wait_ready()
    # The default is now the "other" cluster.
    assert served_by(p.imap, user) == pinned([user], ["pod-c", "pod-d"])[user]

    p.sy.write_config(p.text)
    mark = p.sy.log_mark()
    status, body = p.request("POST", "/config/reload")
    assert status == 200, body
    p.sy.wait_log(r"k8s discovery stopped", since=mark)
    assert "discovery:other" not in p.ready()[1]
    assert served_by(p.imap, user) == pinned([user], ["pod-a", "pod-b"])[user]
    typ, _ = s.noop()
    assert typ == "OK"
    s.logout()


def test_discovery_that_cannot_start_keeps_readiness_false(switchyard, pods, certs, tmp):
    """No token file: the proxy runs, says why in the log and in
    /readyz?verbose, stays unready, and keeps retrying."""
    p = Proxy(switchyard, pods, "https://127.0.0.1:1", certs, tmp, token=None)
    p.sy.wait_log(r"k8s discovery cannot start.*token")
    status, body = p.ready()
    assert status == 503, body
    assert re.search(r"\[-\]discovery:pool failed: .*token", body), body
    assert p.members()["discovery"] == "failed"
    mark = p.sy.log_mark()
    p.sy.wait_log(r"k8s discovery cannot start", since=mark)  # retried
