"""Kubernetes discovery (src/k8s/), driven through build/k8s-driver
(tests/k8s/k8s_driver.c) against the fake API server in
harness/fake_k8s.py.

The driver prints one line per member-set change (`MEMBERS id=addr:status
...`, sorted) and per state change (`STATE SYNCED synced=1`), so each test
waits for the line it expects (a bounded wait on the driver's stdout, never a
sleep) and, where it matters, for the request the fake server recorded.
Every test ends by closing the driver's stdin: it stops the watch and must
exit 0, which it only does when every libuv handle was closed.
"""

import base64
import os
import queue
import re
import subprocess
import threading
import time

import pytest

from harness.fake_k8s import FakeK8s, endpoint
from harness.switchyard import binary_path
from harness.util import make_tempdir, remove_tree

WAIT = 10.0
FAST = {"backoff": "100", "backoff_max": "800", "watch_timeout": "30"}


def driver_path():
    path = os.environ.get("K8S_DRIVER") or os.path.join(os.path.dirname(binary_path()), "k8s-driver")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it with `cmake --build build --target k8s-driver`")
    return path


class Driver:
    def __init__(self, env=None, **args):
        argv = [driver_path()] + [f"{k}={v}" for k, v in args.items()]
        full_env = dict(os.environ)
        for k in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            full_env.pop(k, None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, env=full_env)
        self.lines = queue.Queue()
        self.seen = []
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        self._err = threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True)
        self._err.start()

    @staticmethod
    def _pump(stream, sink):
        for line in iter(stream.readline, ""):
            sink(line.rstrip("\n"))
        sink(None)

    def stderr_text(self):
        return "\n".join(x for x in self.stderr if x)

    def expect(self, pattern, timeout=WAIT):
        """The next stdout line matching the regex (earlier lines are kept in
        `seen`); fails after `timeout` or when the driver exits."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n"
                                     + "\n".join(self.seen[-30:]) + "\nstderr:\n" + self.stderr_text()[-4000:])
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"driver exited ({self.proc.wait()}) before {pattern!r}; output:\n"
                                     + "\n".join(self.seen[-30:]) + "\nstderr:\n" + self.stderr_text()[-4000:])
            self.seen.append(line)
            if rx.search(line):
                return line

    def members(self, timeout=WAIT):
        """Asks for the current list and returns it as {id: "addr:status"}."""
        self.send("members")
        return parse_members(self.expect(r"^MEMBERS", timeout))

    def stats(self):
        self.send("stats")
        line = self.expect(r"^STATS ")
        return dict(kv.split("=", 1) for kv in line.split()[1:])

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=15.0):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout)
        rest = []
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                break
            rest.append(line)
        self._err.join(5)
        self.seen.extend(rest)
        assert rc == 0, f"k8s-driver exited {rc}; stderr:\n{self.stderr_text()[-6000:]}"
        assert "STOPPED" in rest, rest
        return rest

    def wait_exit(self, timeout=WAIT):
        rc = self.proc.wait(timeout)
        out = []
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                break
            out.append(line)
        self.seen.extend(out)
        return rc, out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def parse_members(line):
    assert line.startswith("MEMBERS"), line
    out = {}
    for item in line.split()[1:]:
        k, _, v = item.partition("=")
        out[k] = v
    return out


@pytest.fixture
def tmp(request):
    d = make_tempdir("k8s")
    yield d
    remove_tree(d)


@pytest.fixture
def fake(certs):
    servers = []

    def factory(**kw):
        f = FakeK8s(certs, **kw)
        servers.append(f)
        return f.start()

    yield factory
    for f in servers:
        f.stop()


@pytest.fixture
def driver(request):
    started = []

    def factory(**kw):
        d = Driver(**kw)
        started.append(d)
        return d

    yield factory
    for d in started:
        if d.proc.poll() is None:
            d.kill()
        if hasattr(request.node, "rep_call") and request.node.rep_call.failed:
            print("--- k8s-driver output ---\n" + "\n".join(d.seen[-60:]))
            print("--- k8s-driver stderr ---\n" + d.stderr_text()[-8000:])


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def token_args(tmp, fake, certs, token="token-one"):
    return {"api_url": fake.url, "token_file": write(os.path.join(tmp, "token"), token + "\n"),
            "ca_file": certs.ca_cert, "namespace": "mail", "service": "mail", **FAST}


def three_pods(fake):
    fake.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0"), endpoint("127.0.0.12", pod="mail-1"),
                                endpoint("127.0.0.13", pod="mail-2")])


# --- tests ---------------------------------------------------------------------


def test_first_list_syncs_with_members(fake, driver, tmp, certs):
    f = fake()
    three_pods(f)
    # Another Service's slice and another namespace's must not show up.
    f.put_slice("other-x", [endpoint("127.0.0.99", pod="other-0")], service="other")
    f.put_slice("mail-elsewhere", [endpoint("127.0.0.98", pod="else-0")], ns="elsewhere")
    d = driver(**token_args(tmp, f, certs))
    d.expect(r"^TARGET https://127\.0\.0\.1:\d+ ns=mail source=in-cluster$")
    d.expect(r"^STATE SYNCED synced=1$")
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m == {"mail-0": "127.0.0.11:eligible", "mail-1": "127.0.0.12:eligible",
                 "mail-2": "127.0.0.13:eligible"}
    lst = f.wait_request(lambda r: r["kind"] == "list")
    assert lst["selector"] == "kubernetes.io/service-name=mail"
    assert lst["path"] == "/apis/discovery.k8s.io/v1/namespaces/mail/endpointslices"
    assert lst["token"] == "token-one"
    w = f.wait_request(lambda r: r["kind"] == "watch")
    assert w["query"]["allowWatchBookmarks"] == "true" and w["query"]["watch"] == "1"
    assert w["rv"] == str(f.rv) and w["timeout"] == "30"
    d.finish()


def test_membership_changes_follow_events(fake, driver, tmp, certs):
    f = fake()
    three_pods(f)
    d = driver(**token_args(tmp, f, certs))
    d.expect(r"^STATE SYNCED")
    d.expect(r"^MEMBERS")
    f.wait_request(lambda r: r["kind"] == "watch")

    # A fourth endpoint joins.
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0"), endpoint("127.0.0.12", pod="mail-1"),
                             endpoint("127.0.0.13", pod="mail-2"), endpoint("127.0.0.14", pod="mail-3")])
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m["mail-3"] == "127.0.0.14:eligible" and len(m) == 4

    # mail-1 starts terminating (still serving): not eligible for new logins.
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0"),
                             endpoint("127.0.0.12", pod="mail-1", ready=False, serving=True, terminating=True),
                             endpoint("127.0.0.13", pod="mail-2"), endpoint("127.0.0.14", pod="mail-3")])
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m["mail-1"] == "127.0.0.12:terminating"
    assert sum(v.endswith(":eligible") for v in m.values()) == 3

    # Not ready and no serving condition: not eligible. No conditions at
    # all: ready (the API's "unknown means ready").
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0", ready=False),
                             endpoint("127.0.0.13", pod="mail-2", conditions=False)])
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m == {"mail-0": "127.0.0.11:notserving", "mail-2": "127.0.0.13:eligible"}

    # A second slice, IPv6, with an endpoint without targetRef (id = its address).
    f.put_slice("mail-v6", [endpoint("fd00::7"), endpoint("fd00::8", pod="mail-2")], address_type="IPv6")
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m["fd00::7"] == "fd00::7:eligible"
    assert m["mail-2"] == "127.0.0.13:eligible"  # the dual-stack pod keeps its IPv4 entry

    # Deleting a slice removes its endpoints only.
    f.delete_slice("mail-abc")
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m == {"fd00::7": "fd00::7:eligible", "mail-2": "fd00::8:eligible"}
    f.delete_slice("mail-v6")
    assert d.expect(r"^MEMBERS") == "MEMBERS"
    st = d.stats()
    assert st["state"] == "SYNCED" and int(st["events"]) >= 6 and st["lists"] == "1"
    d.finish()
    log = d.stderr_text()
    assert re.search(r"INFO k8s member joined cluster=mail node=mail-3 address=127\.0\.0\.14 eligible=true", log)
    assert re.search(r"INFO k8s member terminating cluster=mail node=mail-1 address=127\.0\.0\.12", log)
    assert re.search(r"INFO k8s member left cluster=mail node=mail-1", log)
    assert re.search(r"INFO k8s member changed cluster=mail node=mail-0 address=127\.0\.0\.11 eligible=false", log)


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_gone_mid_watch_relists_and_converges(fake, driver, tmp, certs, as_http):
    f = fake()
    f.gone_as_http = as_http
    three_pods(f)
    d = driver(**token_args(tmp, f, certs))
    d.expect(r"^MEMBERS")
    f.wait_request(lambda r: r["kind"] == "watch")
    mark = f.mark()
    # Changes the watch never sees as events: only a relist can learn them.
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0"), endpoint("127.0.0.15", pod="mail-4")], silent=True)
    if as_http:
        # The next watch finds its version compacted away: HTTP 410.
        f.compact()
        f.expire_watches(bookmark=False)
    else:
        f.inject_gone()
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m == {"mail-0": "127.0.0.11:eligible", "mail-4": "127.0.0.15:eligible"}
    f.wait_request(lambda r: r["kind"] == "list", start=mark)
    w = f.wait_request(lambda r: r["kind"] == "watch" and r["status"] == 200 and int(r["rv"]) >= f.compacted,
                       start=mark)
    assert w["rv"] == str(f.rv)
    st = d.stats()
    assert st["restarts_gone"] == "1" and st["lists"] == "2" and st["state"] == "SYNCED"
    # Still watching: a later event arrives.
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0")])
    assert parse_members(d.expect(r"^MEMBERS")) == {"mail-0": "127.0.0.11:eligible"}
    d.finish()


def test_watch_expiry_rewatches_from_last_version(fake, driver, tmp, certs):
    f = fake()
    three_pods(f)
    args = token_args(tmp, f, certs)
    args["watch_timeout"] = "1"
    d = driver(**args)
    d.expect(r"^MEMBERS")
    first = f.wait_request(lambda r: r["kind"] == "watch")
    assert first["timeout"] == "1"
    mark = f.mark()
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0")])
    event_rv = f.rv
    d.expect(r"^MEMBERS mail-0=127\.0\.0\.11:eligible$")
    # The watch ends after timeoutSeconds; the next one starts from the
    # version of the last event.
    f.wait_request(lambda r: r["kind"] == "watch" and r["rv"] == str(event_rv), start=mark)
    # The cluster moves on without our Service changing: the bookmark sent
    # at the end of the watch carries the new version, and the next watch
    # starts from it.
    mark = f.mark()
    bumped = f.bump()
    f.wait_request(lambda r: r["kind"] == "watch" and r["rv"] == str(bumped), start=mark, timeout=5)
    st = d.stats()
    assert int(st["restarts_expired"]) >= 2 and st["lists"] == "1" and st["restarts_gone"] == "0"
    d.finish()


def test_api_server_down_keeps_members_then_catches_up(fake, driver, tmp, certs):
    f = fake()
    three_pods(f)
    d = driver(**token_args(tmp, f, certs))
    before = parse_members(d.expect(r"^MEMBERS"))
    f.wait_request(lambda r: r["kind"] == "watch")
    f.stop()
    d.expect(r"^STATE DEGRADED synced=1 error=watch: ")
    # While the API server is away, the cluster changes.
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0"), endpoint("127.0.0.12", pod="mail-1")])
    # Several failed reconnects later (the retries give no event: poll the
    # counters, bounded) the last known members are still there.
    deadline = time.monotonic() + WAIT
    while int(d.stats()["watch_errors"]) < 3:
        assert time.monotonic() < deadline, "no reconnect attempts"
        time.sleep(0.1)
    st = d.stats()
    assert st["state"] == "DEGRADED" and st["synced"] == "1"
    assert d.members() == before
    mark = f.mark()
    f.start()  # the same port
    # The watch answers (SYNCED), then replays what it missed.
    d.expect(r"^STATE SYNCED synced=1$")
    m = parse_members(d.expect(r"^MEMBERS"))
    assert m == {"mail-0": "127.0.0.11:eligible", "mail-1": "127.0.0.12:eligible"}
    # It went on watching from the last version it had, without a relist.
    w = f.wait_request(lambda r: r["kind"] == "watch", start=mark)
    assert int(w["rv"]) < f.rv
    st = d.stats()
    assert st["lists"] == "1" and int(st["watch_errors"]) >= 1
    d.finish()


def test_wrong_token_401_then_rotated_file_recovers(fake, driver, tmp, certs):
    f = fake(token="token-two")
    three_pods(f)
    args = token_args(tmp, f, certs, token="token-one")
    d = driver(**args)
    d.expect(r"^STATE DEGRADED synced=0 error=list: HTTP 401")
    f.wait_request(lambda r: r["status"] == 401)
    # The projected token rotates: the file is re-read after the next 401.
    mark = f.mark()
    write(args["token_file"], "token-two")
    d.expect(r"^STATE SYNCED synced=1$")
    d.expect(r"^MEMBERS")
    r = f.wait_request(lambda r: r["token_ok"], start=mark)
    assert r["token"] == "token-two"

    # The server rotates while watching; the file follows; the re-watch
    # after the 401 uses the new token at once.
    write(args["token_file"], "token-three\n")
    f.rotate_token("token-three")
    mark = f.mark()
    f.expire_watches()
    f.wait_request(lambda r: r["kind"] == "watch" and r["status"] == 401, start=mark)
    ok = f.wait_request(lambda r: r["kind"] == "watch" and r["token_ok"], start=mark)
    assert ok["token"] == "token-three"
    st = d.stats()
    assert int(st["restarts_unauthorized"]) >= 2 and st["lists"] == "1"
    d.finish()


def test_in_cluster_defaults_from_service_account_dir(fake, driver, tmp, certs):
    f = fake()
    three_pods(f)
    sa = os.path.join(tmp, "sa")
    os.mkdir(sa)
    write(os.path.join(sa, "token"), "token-one")
    write(os.path.join(sa, "namespace"), "mail")
    with open(certs.ca_cert) as src:
        write(os.path.join(sa, "ca.crt"), src.read())
    d = driver(env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(f.port)},
               sa_dir=sa, service="mail", **FAST)
    d.expect(rf"^TARGET https://127\.0\.0\.1:{f.port} ns=mail source=in-cluster$")
    d.expect(r"^STATE SYNCED")
    assert len(parse_members(d.expect(r"^MEMBERS"))) == 3
    d.finish()


def test_untrusted_server_certificate_is_an_error(fake, driver, tmp, certs):
    f = fake()
    three_pods(f)
    args = token_args(tmp, f, certs)
    args["ca_file"] = certs.selfsigned.cert  # not the server's CA
    d = driver(**args)
    line = d.expect(r"^STATE DEGRADED synced=0 error=list: ")
    assert "certificate" in line.lower() or "ssl" in line.lower(), line
    assert not any(x.startswith("MEMBERS ") for x in d.seen)
    d.finish()


def kubeconfig(tmp, server, user, ca=None, ca_data=None, name="kubeconfig", namespace="mail"):
    cluster = [f"    server: {server}"]
    if ca:
        cluster.append(f"    certificate-authority: {ca}")
    if ca_data:
        cluster.append(f"    certificate-authority-data: {ca_data}")
    text = "\n".join([
        "apiVersion: v1",
        "kind: Config",
        "current-context: test",
        "preferences: {}",
        "clusters:",
        "- name: fake",
        "  cluster:",
        *cluster,
        "contexts:",
        "- name: other",
        "  context: {cluster: nowhere, user: nobody}",
        "- name: test",
        "  context:",
        "    cluster: fake",
        "    user: me",
        f"    namespace: {namespace}",
        "users:",
        "- name: me",
        "  user:",
        *[f"    {line}" for line in user],
        "",
    ])
    return write(os.path.join(tmp, name), text)


def b64file(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def test_kubeconfig_with_token(fake, driver, tmp, certs):
    f = fake(token="kube-token")
    three_pods(f)
    # The CA by a path relative to the kubeconfig's directory.
    with open(certs.ca_cert) as src:
        write(os.path.join(tmp, "cluster-ca.pem"), src.read())
    path = kubeconfig(tmp, f.url, ["token: kube-token"], ca="cluster-ca.pem")
    d = driver(kubeconfig=path, service="mail", **FAST)
    d.expect(rf"^TARGET {re.escape(f.url)} ns=mail source=kubeconfig {re.escape(path)} context test$")
    d.expect(r"^STATE SYNCED")
    assert len(parse_members(d.expect(r"^MEMBERS"))) == 3
    d.finish()


def test_kubeconfig_from_env_with_token_file(fake, driver, tmp, certs):
    f = fake(token="file-token")
    three_pods(f)
    write(os.path.join(tmp, "tok"), "file-token\n")
    # A host name (resolved off the loop by libcurl's threaded resolver);
    # the certificate carries DNS:localhost.
    server = f"https://localhost:{f.port}/"
    path = kubeconfig(tmp, server, ["tokenFile: tok"], ca_data=b64file(certs.ca_cert))
    d = driver(env={"KUBECONFIG": path}, service="mail", **FAST)
    d.expect(rf"^TARGET https://localhost:{f.port} ns=mail source=kubeconfig ")
    d.expect(r"^STATE SYNCED")
    d.expect(r"^MEMBERS")
    d.finish()


@pytest.mark.parametrize("form", ["data", "files"])
def test_kubeconfig_with_client_certificate(fake, driver, tmp, certs, form):
    f = fake(token=None, require_client_cert=True)
    three_pods(f)
    if form == "data":
        user = [f"client-certificate-data: {b64file(certs.client.cert)}",
                f"client-key-data: {b64file(certs.client.key)}"]
    else:
        os.mkdir(os.path.join(tmp, "pki"))
        for src, dst in ((certs.client.cert, "pki/me.crt"), (certs.client.key, "pki/me.key")):
            with open(src) as s:
                write(os.path.join(tmp, dst), s.read())
        user = ["client-certificate: pki/me.crt", "client-key: pki/me.key"]
    path = kubeconfig(tmp, f.url, user, ca_data=b64file(certs.ca_cert))
    d = driver(kubeconfig=path, service="mail", **FAST)
    d.expect(r"^STATE SYNCED")
    assert len(parse_members(d.expect(r"^MEMBERS"))) == 3
    assert f.wait_request(lambda r: r["kind"] == "list")["token"] is None
    d.finish()


def test_client_certificate_required_without_one_fails(fake, driver, tmp, certs):
    f = fake(token="kube-token", require_client_cert=True)
    path = kubeconfig(tmp, f.url, ["token: kube-token"], ca_data=b64file(certs.ca_cert))
    d = driver(kubeconfig=path, service="mail", **FAST)
    d.expect(r"^STATE DEGRADED synced=0 error=list: ")
    d.finish()


@pytest.mark.parametrize("plugin", ["exec", "auth-provider"])
def test_kubeconfig_plugin_user_is_a_clear_error(driver, tmp, plugin):
    if plugin == "exec":
        user = ["exec:", "  apiVersion: client.authentication.k8s.io/v1beta1", "  command: aws",
                "  args: [eks, get-token]"]
    else:
        user = ["auth-provider:", "  name: gcp"]
    path = kubeconfig(tmp, "https://127.0.0.1:1", user)
    d = driver(kubeconfig=path, service="mail")
    rc, out = d.wait_exit()
    assert rc == 2
    assert len(out) == 1 and out[0].startswith("RESOLVE_ERROR "), out
    assert path in out[0] and 'user "me"' in out[0] and plugin in out[0], out[0]


def test_missing_token_file_is_a_start_error(driver, tmp):
    d = driver(api_url="https://127.0.0.1:1", token_file=os.path.join(tmp, "absent"), namespace="mail",
               service="mail")
    rc, out = d.wait_exit()
    assert rc == 2 and out[0].startswith("RESOLVE_ERROR token_file: cannot read "), out


def test_unreachable_api_degrades_and_stops_cleanly(driver, tmp, certs):
    from harness.util import free_port
    port = free_port()  # nothing listens there
    d = driver(api_url=f"https://127.0.0.1:{port}", token_file=write(os.path.join(tmp, "t"), "x"),
               ca_file=certs.ca_cert, namespace="mail", service="mail", **FAST)
    line = d.expect(r"^STATE DEGRADED synced=0 error=list: ")
    assert "onnect" in line, line
    deadline = time.monotonic() + WAIT
    while int(d.stats()["list_errors"]) < 4:  # backoff retries give no event: bounded poll
        assert time.monotonic() < deadline
        time.sleep(0.1)
    d.finish()
    # The outage stays readable: one error line, not one per retry.
    errors = [l for l in d.stderr if l and "k8s discovery error" in l]
    assert len(errors) == 1, errors


def test_stop_before_the_first_answer_and_on_sigterm(fake, driver, tmp, certs):
    f = fake()
    three_pods(f)
    # End of input at once: the stop races the first request.
    d = driver(**token_args(tmp, f, certs))
    d.finish()
    # SIGTERM while watching.
    d = driver(**token_args(tmp, f, certs))
    d.expect(r"^MEMBERS")
    f.wait_request(lambda r: r["kind"] == "watch")
    d.proc.terminate()
    rc, out = d.wait_exit()
    assert rc == 0 and "STOPPED" in out, (rc, out, d.stderr_text())


@pytest.mark.parametrize("garbage", ["malformed", "oversized"])
def test_bad_watch_line_relists_and_converges(fake, driver, tmp, certs, garbage):
    f = fake()
    three_pods(f)
    d = driver(**token_args(tmp, f, certs))
    d.expect(r"^MEMBERS")
    f.wait_request(lambda r: r["kind"] == "watch")
    mark = f.mark()
    # A change the stream will not deliver (silent), then a line the client
    # must refuse: it restarts from a list and so learns the change.
    f.put_slice("mail-abc", [endpoint("127.0.0.11", pod="mail-0")], silent=True)
    if garbage == "malformed":
        f.inject_raw(b'{"type":"MODIFIED","object":{"metadata":\n')
        want = r"error=watch: malformed watch event"
    else:
        f.inject_raw(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"' + b"9" * (1 << 20) + b'"}}}\n')
        want = r"error=watch: watch event line longer than 1048576 bytes"
    d.expect(r"^STATE DEGRADED synced=1 " + want)
    d.expect(r"^STATE SYNCED")
    assert parse_members(d.expect(r"^MEMBERS")) == {"mail-0": "127.0.0.11:eligible"}
    f.wait_request(lambda r: r["kind"] == "list", start=mark)
    assert d.stats()["lists"] == "2"
    d.finish()


def test_kubeconfig_insecure_skip_tls_verify(fake, driver, tmp):
    f = fake(token="t0")
    three_pods(f)
    path = kubeconfig(tmp, f.url, ["token: t0"])
    text = open(path).read().replace(f"    server: {f.url}\n",
                                     f"    server: {f.url}\n    insecure-skip-tls-verify: true\n")
    write(path, text)
    d = driver(kubeconfig=path, service="mail", **FAST)
    d.expect(r"^STATE SYNCED")
    d.expect(r"^MEMBERS")
    d.finish()
