"""The container image, run for real with podman: read-only root filesystem,
uid 65532, host network, in front of two test Dovecots on 127.0.0.1.

The configuration directory is mounted (as a directory, like the chart's
ConfigMap) over /etc/switchyard: switchyard.toml, mappings.tsv (alice -> new,
everyone else -> the default, legacy), the admin token and a test
certificate. Which Dovecot served a login is read from its log, as
tests/integration/test_routing.py does.
"""

import imaplib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
import uuid

import pytest

from harness import Dovecot
from harness.util import Backoff, free_port, make_tempdir, remove_tree

TOKEN = "container-test-token-0123456789abcdefghij"
WAIT = 20.0
READY_RE = re.compile(r"\bINFO\s+ready\b")


def podman(env, *args, check=True, timeout=60, input=None):
    p = subprocess.run(["podman", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def backends(certs):
    started = {}
    try:
        for name in ("legacy", "new"):
            d = Dovecot(certs, listeners={"imap": ("plain", "tls")})
            started[name] = d
            d.start()
        yield started
    finally:
        for d in started.values():
            d.cleanup()


def proxy_config(backends, imap_port, admin_port):
    out = [f"""
[server]
threads = 2
shutdown_grace = "20s"
backend_timeout = "5s"
host_down_threshold = 0

[tls.certificate.test]
cert = "tls.crt"
key = "tls.key"
default = true

[capabilities.imap]
allow_plain_auth_without_tls = true

[listener.imap]
protocol = "imap"
tls = "plain"
bind = ["127.0.0.1:{imap_port}"]

[routing]
default_destination = "legacy"

[mapping]
source = "file"
normalize = "lowercase"
[mapping.file]
path = "mappings.tsv"

[admin]
bind = "127.0.0.1:{admin_port}"
tls = "implicit"
bearer_token_file = "admin.token"
"""]
    for name, d in backends.items():
        out.append(f"""
[destination.{name}]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true
[destination.{name}.protocol.imap]
port = {d.imap}
tls = "plain"
""")
    return "".join(out)


class Container:
    """One detached container; its log is followed by a thread so that
    readiness is an awaited event (the `ready` log line)."""

    def __init__(self, env, image, confdir, name):
        self.env, self.image, self.confdir, self.name = env, image, confdir, name
        self.lines = []
        self.cond = threading.Condition()
        self.follower = None

    def run(self, *args):
        # --read-only-tmpfs=false: not even /tmp, /run or /var/tmp is writable.
        podman(self.env, "run", "-d", "--name", self.name, "--read-only", "--read-only-tmpfs=false",
               "--user", "65532:65532",
               "--network", "host", "-v", f"{self.confdir}:/etc/switchyard:ro", self.image, *args)
        self.follower = subprocess.Popen(["podman", "logs", "-f", self.name], env=self.env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self):
        for line in self.follower.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of the log
            self.cond.notify_all()

    def wait_log(self, rx, timeout=WAIT):
        def found():
            return any(l is None or rx.search(l) for l in self.lines)
        with self.cond:
            self.cond.wait_for(found, timeout)
            if not any(l is not None and rx.search(l) for l in self.lines):
                raise AssertionError(f"no log line matching {rx.pattern!r}; log:\n{self.log()}")

    def wait_count(self, rx, n, timeout=WAIT):
        """Wait until `n` log lines match."""
        def count():
            return sum(1 for l in self.lines if l is not None and rx.search(l))
        with self.cond:
            self.cond.wait_for(lambda: count() >= n or None in self.lines, timeout)
            if count() < n:
                raise AssertionError(f"{count()} log lines matching {rx.pattern!r}, wanted {n}; log:\n{self.log()}")

    def log(self):
        with self.cond:
            return "\n".join(l for l in self.lines if l is not None)

    def host_pid(self):
        return int(podman(self.env, "inspect", "-f", "{{.State.Pid}}", self.name).stdout.strip())

    def remove(self):
        podman(self.env, "rm", "-f", "-t", "0", self.name, check=False)
        if self.follower is not None:
            try:
                self.follower.wait(10)
            except subprocess.TimeoutExpired:
                self.follower.kill()
                self.follower.wait()


@pytest.fixture
def confdir(backends, certs):
    d = make_tempdir("container-conf")
    ports = {"imap": free_port(), "admin": free_port()}
    with open(os.path.join(d, "switchyard.toml"), "w") as f:
        f.write(proxy_config(backends, ports["imap"], ports["admin"]))
    with open(os.path.join(d, "mappings.tsv"), "w") as f:
        f.write("alice@example.com new\n")
    with open(os.path.join(d, "admin.token"), "w") as f:
        f.write(TOKEN + "\n")
    shutil.copy(certs.localhost.cert, os.path.join(d, "tls.crt"))
    shutil.copy(certs.localhost.key, os.path.join(d, "tls.key"))
    for n in os.listdir(d):
        os.chmod(os.path.join(d, n), 0o644)  # readable by uid 65532
    yield d, ports
    remove_tree(d)


@pytest.fixture
def container(podman_env, image, confdir, request):
    made = []

    def factory():
        c = Container(podman_env, image, confdir[0], f"switchyard-test-{uuid.uuid4().hex[:10]}")
        made.append(c)
        return c

    yield factory
    for c in made:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            print(f"--- container {c.name} log ---\n{c.log()[-8000:]}")
        c.remove()


def https_get(certs, port, path, token=None):
    ctx = certs.client_context()
    req = urllib.request.Request(f"https://localhost:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_status(certs, port, path, want, timeout=WAIT):
    b = Backoff(timeout)
    last = None
    while True:
        try:
            last = https_get(certs, port, path)
            if last[0] == want:
                return last
        except (OSError, ssl.SSLError) as e:
            last = e
        if not b.pause():
            raise AssertionError(f"GET {path} did not answer {want} within {timeout}s (last: {last!r})")


def login_count(d, user, since):
    return len(re.findall(r"imap-login: Info: Login: user=<" + re.escape(user) + ">", d.log_text(since)))


def test_check_config_in_the_image(podman_env, image, confdir):
    d, _ = confdir
    run = ["run", "--rm", "--read-only", "--user", "65532:65532", "--network", "none",
           "-v", f"{d}:/etc/switchyard:ro", image]
    p = podman(podman_env, *run, "--check-config", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "configuration ok" in p.stdout + p.stderr
    # The image's own default configuration validates too (no mount).
    p = podman(podman_env, "run", "--rm", "--read-only", "--user", "65532:65532", "--network", "none", image,
               "--check-config", check=False)
    assert p.returncode == 0 and "configuration ok" in p.stdout + p.stderr, p.stdout + p.stderr
    # A broken mapping (undeclared destination) is reported, exit 1.
    with open(os.path.join(d, "mappings.tsv"), "a") as f:
        f.write("bob@example.com nowhere\n")
    p = podman(podman_env, *run, "--check-config", check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "mapping.file.path" in p.stdout + p.stderr and "nowhere" in p.stdout + p.stderr


def test_image_metadata(podman_env, image):
    info = json.loads(podman(podman_env, "image", "inspect", image).stdout)[0]
    cfg = info["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/usr/local/bin/switchyard"]
    assert "PROXY_CONFIG=/etc/switchyard/switchyard.toml" in cfg["Env"]
    labels = cfg["Labels"]
    for k in ("source", "version", "licenses", "revision"):
        assert labels.get(f"org.opencontainers.image.{k}"), k
    exposed = {p.split("/")[0] for p in cfg["ExposedPorts"]}
    assert exposed == {"1143", "1993", "1110", "1995", "1587", "1465", "4190", "8443", "9443"}
    assert all(int(p) >= 1024 for p in exposed)
    assert info["Size"] < 100 * 1000 * 1000, f"image is {info['Size']} bytes"
    # The chart's preStop hook runs /bin/sleep in the image.
    p = podman(podman_env, "run", "--rm", "--read-only", "--user", "65532:65532", "--network", "none",
               "--entrypoint", "/bin/sleep", image, "0", check=False)
    assert p.returncode == 0, p.stderr


def test_routes_probes_and_drains(podman_env, image, confdir, container, backends, certs):
    _, ports = confdir
    marks = {n: d.log_mark() for n, d in backends.items()}
    c = container()
    c.run()
    c.wait_log(READY_RE)
    status, body = wait_status(certs, ports["admin"], "/readyz", 200)
    assert body.strip() == "ok"

    # The process runs as 65532:65532 (host network, no user namespace: the
    # host's view of the container's pid 1 shows the real ids).
    with open(f"/proc/{c.host_pid()}/status") as f:
        st = f.read()
    assert re.search(r"^Uid:\s+65532\s+65532\s+65532\s+65532$", st, re.M), st
    assert re.search(r"^Gid:\s+65532\s+65532\s+65532\s+65532$", st, re.M), st

    # alice is mapped to "new"; bob is not mapped and goes to the default.
    for user, pw, want in (("alice@example.com", "alicepass", "new"), ("bob@example.com", "bobpass", "legacy")):
        m = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=WAIT)
        try:
            typ, _ = m.login(user, pw)
            assert typ == "OK"
            assert m.noop()[0] == "OK"
        finally:
            m.logout()
        other = "legacy" if want == "new" else "new"
        assert login_count(backends[want], user, marks[want]) == 1, backends[want].log_text(marks[want])
        assert login_count(backends[other], user, marks[other]) == 0, backends[other].log_text(marks[other])

    # The management API works with the mounted token.
    st, body = https_get(certs, ports["admin"], "/mappings?identifier=Alice@Example.com", TOKEN)
    assert st == 200 and json.loads(body)["destination"] == "new", body

    # SIGTERM with a bridged session open: readiness fails at once, the
    # session keeps working while the proxy drains, and once it ends the
    # process exits 0.
    m = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=WAIT)
    try:
        assert m.login("carol@example.com", "carolpass")[0] == "OK"
        podman(podman_env, "kill", "-s", "TERM", c.name)
        c.wait_log(re.compile(r"shutting down"))
        wait_status(certs, ports["admin"], "/readyz", 503)
        assert m.noop()[0] == "OK"  # still bridged during the drain
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.logout()
    p = podman(podman_env, "wait", c.name, timeout=60)
    assert p.stdout.strip() == "0", f"exit status {p.stdout.strip()}; log:\n{c.log()}"


def kubelet_configmap_dir(root, files, stamp):
    """Write `files` the way the kubelet's atomic writer lays a ConfigMap
    volume out: a timestamped directory, `..data` pointing at it, and one
    symlink per key through `..data`. Called again, it swaps `..data` to a new
    directory with one rename, like a ConfigMap update."""
    ts_dir = f"..{stamp}"
    os.makedirs(os.path.join(root, ts_dir), mode=0o755)
    for name, text in files.items():
        p = os.path.join(root, ts_dir, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o644)
    tmp = os.path.join(root, "..data_tmp")
    os.symlink(ts_dir, tmp)
    os.rename(tmp, os.path.join(root, "..data"))
    for name in files:
        link = os.path.join(root, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)


def test_chart_config_runs_and_reloads_in_the_image(podman_env, image, helm4_bin, container, certs, tmp_path):
    """The chart's rendered default configuration (with a cert-manager
    certificate) in the image, with the pod's mounts at the pod's paths:
    it starts read-only as 65532, reloads when the ConfigMap volume is
    swapped, keeps running on an invalid edit, and exits 0 on SIGTERM."""
    from chart import config_map, render
    objs = render(helm4_bin, "cert-manager-values.yaml")
    data = config_map(objs)["data"]
    root = str(tmp_path)
    os.chmod(root, 0o755)
    cm, tls, admin = (os.path.join(root, n) for n in ("cm", "tls", "admin"))
    for d in (cm, tls, admin):
        os.makedirs(d, mode=0o755)
    kubelet_configmap_dir(cm, data, "2026_01_01_00_00_00.000000001")
    shutil.copy(certs.mail.cert, os.path.join(tls, "tls.crt"))
    shutil.copy(certs.mail.key, os.path.join(tls, "tls.key"))
    with open(os.path.join(admin, "token"), "w") as f:
        f.write(TOKEN)
    for d in (tls, admin):
        for n in os.listdir(d):
            os.chmod(os.path.join(d, n), 0o644)

    c = container()
    admin_port = free_port()
    # Its own network namespace (it binds 0.0.0.0 there); only the admin port
    # is published, on 127.0.0.1, to play the kubelet's probes.
    podman(c.env, "run", "-d", "--name", c.name, "--read-only", "--user", "65532:65532",
           "-p", f"127.0.0.1:{admin_port}:9443",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-v", f"{cm}:/etc/switchyard:ro", "-v", f"{tls}:/run/secrets/switchyard/tls:ro",
           "-v", f"{admin}:/run/secrets/switchyard/admin:ro", image, "/etc/switchyard/switchyard.toml")
    c.follower = subprocess.Popen(["podman", "logs", "-f", c.name], env=c.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
    threading.Thread(target=c._follow, daemon=True).start()
    c.wait_log(re.compile(r'"msg"\s*:\s*"ready"'))

    # The probes as the kubelet sends them: HTTPS, certificate not verified.
    kubelet = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    kubelet.check_hostname = False
    kubelet.verify_mode = ssl.CERT_NONE
    for path in ("/readyz", "/livez"):
        b = Backoff(WAIT)
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{admin_port}{path}", context=kubelet, timeout=5) as r:
                    assert r.status == 200 and r.read().strip() == b"ok"
                break
            except (OSError, ssl.SSLError) as e:
                if not b.pause():
                    raise AssertionError(f"{path}: {e!r}; log:\n{c.log()}")
    # The certificate served is the one mounted from the TLS Secret.
    ctx = certs.client_context()
    with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="mail.example.com") as tls_sock:
            assert tls_sock.getpeercert(binary_form=True) == certs.mail.der
    # The token file from the Secret mount is the one the API accepts.
    req = urllib.request.Request(f"https://127.0.0.1:{admin_port}/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, context=kubelet, timeout=5) as r:
        assert r.status == 200 and "cache_hits" in json.loads(r.read())

    # A ConfigMap update: a new mapping line and log level; the proxy notices
    # the ..data swap and reloads.
    changed = dict(data)
    changed["switchyard.toml"] = data["switchyard.toml"].replace('log_format = "json"', 'log_format = "json"\nlog_level = "debug"')
    assert changed["switchyard.toml"] != data["switchyard.toml"]
    kubelet_configmap_dir(cm, changed, "2026_01_01_00_01_00.000000002")
    reloaded = re.compile(r"configuration reloaded")
    c.wait_count(reloaded, 1)

    # Only the mapping file changes (helm upgrade --set-file mappings=...):
    # the chart's checksum line in switchyard.toml changes with it, so the
    # proxy (which watches the configuration file) reloads and re-reads it.
    remapped = config_map(render(helm4_bin, "cert-manager-values.yaml",
                                 sets=["mappings=alice@example.com legacy"]))["data"]
    assert remapped["mappings.tsv"] != data["mappings.tsv"]
    remapped["switchyard.toml"] = remapped["switchyard.toml"].replace('log_format = "json"',
                                                                      'log_format = "json"\nlog_level = "debug"')
    kubelet_configmap_dir(cm, remapped, "2026_01_01_00_01_30.000000004")
    c.wait_count(reloaded, 2)
    c.wait_count(re.compile(r"mapping file reloaded"), 2)

    # An invalid edit is refused; the process keeps running on the old one.
    broken = dict(remapped)
    broken["switchyard.toml"] = remapped["switchyard.toml"].replace('default_destination = "legacy"',
                                                                  'default_destination = "nowhere"')
    kubelet_configmap_dir(cm, broken, "2026_01_01_00_02_00.000000003")
    c.wait_log(re.compile(r"configuration reload failed"))
    assert podman(c.env, "inspect", "-f", "{{.State.Running}}", c.name).stdout.strip() == "true"

    podman(c.env, "kill", "-s", "TERM", c.name)
    p = podman(c.env, "wait", c.name, timeout=60)
    assert p.stdout.strip() == "0", f"exit status {p.stdout.strip()}; log:\n{c.log()}"
