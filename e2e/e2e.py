#!/usr/bin/env python3
"""End-to-end checks against a kind cluster prepared by e2e/run.sh.

Mail goes through the proxy's NodePort (E2E_IMAP, default 127.0.0.1:30143,
mapped to the host by e2e/kind.yaml) so that it follows endpoint changes;
the management API is reached with `kubectl port-forward`, per pod where an
action applies to one replica. Each backend's INBOX holds a message
"Welcome to the <backend> server", which tells where a login landed.

    python3 e2e/e2e.py [routing cutover reload upgrade discovery rolling ...]

Standard library only (runs on a bare GitHub runner).
"""

import base64
import imaplib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

NS = os.environ.get("E2E_NAMESPACE", "switchyard")
RELEASE = os.environ.get("E2E_RELEASE", "switchyard")
IMAP_HOST, IMAP_PORT = os.environ.get("E2E_IMAP", "127.0.0.1:30143").rsplit(":", 1)
IMAP_PORT = int(IMAP_PORT)
ADMIN_PORT = 9443
SUBJECT_RE = re.compile(r"Subject: Welcome to the (\S+) server", re.I)
UNVERIFIED = ssl._create_unverified_context()  # the admin port's self-signed certificate


class Failed(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failed(msg)


def kubectl(*args, input=None, check_rc=True, timeout=120):
    p = subprocess.run(["kubectl", *args], input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if check_rc and p.returncode != 0:
        raise Failed(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def wait_until(what, fn, timeout=120.0, every=1.0):
    """Poll fn() until it returns a true value (there is no event to wait on
    in a remote cluster); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (OSError, Failed, imaplib.IMAP4.error) as e:
            last = e
        time.sleep(every)
    raise Failed(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# --- management API through kubectl port-forward ------------------------------------------------


class PortForward:
    def __init__(self, target, remote=ADMIN_PORT, namespace=NS):
        self.proc = subprocess.Popen(["kubectl", "-n", namespace, "port-forward", target, f":{remote}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 9443"
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            self.close()
            raise Failed(f"port-forward {target}: {line!r} {self.proc.stderr.read()}")
        self.port = int(m.group(1))
        # kubectl prints a line per connection: keep reading so it never blocks.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def token():
    out = kubectl("-n", NS, "get", "secret", f"{RELEASE}-admin-token", "-o", "jsonpath={.data.token}")
    return base64.b64decode(out).decode()


def admin(pf, method, path, tok=None):
    req = urllib.request.Request(f"https://127.0.0.1:{pf.port}{path}", method=method)
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, context=UNVERIFIED, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def pods(terminating=False):
    """The proxy's running pods (with `terminating`, also those shutting down)."""
    out = kubectl("-n", NS, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}",
                  "--field-selector=status.phase=Running", "-o", "json")
    return sorted(p["metadata"]["name"] for p in json.loads(out)["items"]
                  if terminating or not p["metadata"].get("deletionTimestamp"))


def metric(text, name, labels=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else "")) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
        elif not labels and line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def each_pod(fn):
    out = {}
    for p in pods():
        with PortForward(f"pod/{p}") as pf:
            out[p] = fn(pf)
    return out


# --- mail ------------------------------------------------------------------------------------------


def password(user):
    return "pw-" + user.split("@")[0]


def login(user):
    """Log in through the proxy and return the backend that served it."""
    m = imaplib.IMAP4(IMAP_HOST, IMAP_PORT, timeout=15)
    try:
        m.login(user, password(user))
        m.select("INBOX", readonly=True)
        _, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        names = [SUBJECT_RE.search(p[1].decode()).group(1) for p in data if isinstance(p, tuple)]
        check(len(names) == 1, f"{user}: unexpected INBOX {names}")
        return names[0]
    finally:
        try:
            m.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def redis_set(user, dest):
    kubectl("-n", "mail", "exec", "deploy/redis", "--", "redis-cli", "SET", f"route:{user}", dest)


# --- the checks ------------------------------------------------------------------------------------


def t_routing():
    redis_set("alice@example.com", "new")
    redis_set("erin@example.com", "legacy")
    check(login("alice@example.com") == "new", "alice is mapped to new")
    check(login("Alice@Example.COM") == "new", "identifiers are normalized (lowercase)")
    check(login("bob@example.com") == "legacy", "bob is unmapped: the default destination")
    check(login("erin@example.com") == "legacy", "erin is mapped to legacy")


def t_cutover():
    user = "carol@example.com"
    check(login(user) == "legacy", "carol starts on legacy")
    sess = imaplib.IMAP4(IMAP_HOST, IMAP_PORT, timeout=15)
    sess.login(user, password(user))
    sess.select("INBOX")
    tok = token()
    with PortForward(f"svc/{RELEASE}-admin") as pf:
        st, body = admin(pf, "PUT", f"/mappings?identifier={user}&destination=new", tok)
        check(st == 200, f"PUT /mappings: {st} {body}")
    kicked = 0
    for p, (inv, kick) in each_pod(lambda pf: (admin(pf, "POST", f"/cache/invalidate?identifier={user}", tok),
                                               admin(pf, "POST", f"/connections/kick?identifier={user}", tok))).items():
        check(inv[0] == 200 and kick[0] == 200, f"{p}: {inv} {kick}")
        kicked += int(re.search(r"kicked (\d+)", kick[1]).group(1))
    check(kicked == 1, f"exactly the one open session is kicked (got {kicked})")
    try:
        sess.noop()
        sess.noop()
        raise Failed("the kicked session still answers")
    except (imaplib.IMAP4.abort, OSError, EOFError):
        pass
    check(login(user) == "new", "after the cutover carol lands on new")


def t_reload():
    user = "dave@example.com"
    before = each_pod(lambda pf: metric(admin(pf, "GET", "/metrics")[1], "switchyard_config_reloads_total",
                                        'result="success"'))
    m = imaplib.IMAP4(IMAP_HOST, IMAP_PORT, timeout=200)
    m.login(user, password(user))
    m.select("INBOX")
    m.send(b"e2e1 IDLE\r\n")
    check(m.readline().startswith(b"+"), "IDLE accepted")
    cm = json.loads(kubectl("-n", NS, "get", "configmap", f"{RELEASE}-config", "-o", "json"))
    cm["data"]["switchyard.toml"] += f"\n# e2e edit {time.time()}\n"
    for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        cm["metadata"].pop(k, None)
    kubectl("apply", "-f", "-", input=json.dumps(cm))

    def reloaded():
        now = each_pod(lambda pf: metric(admin(pf, "GET", "/metrics")[1], "switchyard_config_reloads_total",
                                         'result="success"'))
        return all(now[p] > before.get(p, 0) for p in now) and now

    wait_until("every pod to reload the edited ConfigMap", reloaded, timeout=180, every=5)
    m.send(b"DONE\r\n")
    line = m.readline()
    while line.startswith(b"*"):
        line = m.readline()
    check(line.startswith(b"e2e1 OK"), f"the IDLE session survived the reload: {line!r}")
    check(m.noop()[0] == "OK", "the session still works")
    m.logout()
    errs = each_pod(lambda pf: metric(admin(pf, "GET", "/metrics")[1], "switchyard_config_reloads_total",
                                      'result="error"'))
    check(all(v == 0 for v in errs.values()), f"no reload errors: {errs}")


def t_discovery():
    users = [f"user{i:02d}@example.com" for i in range(64)]
    for u in users:
        redis_set(u, "stalwart")
    kubectl("-n", "mail", "scale", "statefulset/stalwart", "--replicas=3")
    kubectl("-n", "mail", "rollout", "status", "statefulset/stalwart", "--timeout=180s", timeout=200)

    def placement(want_nodes):
        got = {u: login(u) for u in users}
        nodes = set(got.values())
        return got if nodes == want_nodes else None

    three = {f"stalwart-{i}" for i in range(3)}
    before = wait_until("accounts spread over the 3 discovered nodes", lambda: placement(three), timeout=120, every=3)
    check(placement(three) == before, "each account is pinned to one node")
    kubectl("-n", "mail", "scale", "statefulset/stalwart", "--replicas=4")
    kubectl("-n", "mail", "rollout", "status", "statefulset/stalwart", "--timeout=180s", timeout=200)
    after = wait_until("accounts on the 4th node", lambda: placement(three | {"stalwart-3"}), timeout=120, every=3)
    moved = [u for u in users if after[u] != before[u]]
    check(all(after[u] == "stalwart-3" for u in moved), "accounts move only to the new node (rendezvous hashing)")
    frac = len(moved) / len(users)
    check(0.10 <= frac <= 0.45, f"about a quarter of the accounts move: {len(moved)}/{len(users)}")
    print(f"  discovery: {len(moved)}/{len(users)} accounts moved to stalwart-3")
    kubectl("-n", "mail", "scale", "statefulset/stalwart", "--replicas=3")


def t_rolling():
    user = "bob@example.com"
    stop = threading.Event()
    ok, failures = [0], []

    def loop():
        while not stop.is_set():
            try:
                check(login(user) == "legacy", "bob lands on legacy")
                ok[0] += 1
            except (OSError, EOFError, imaplib.IMAP4.error, Failed) as e:
                failures.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")

    old = set(pods())
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    wait_until("the login loop to run", lambda: ok[0] >= 5, timeout=60, every=0.5)
    kubectl("-n", NS, "rollout", "restart", f"deploy/{RELEASE}")
    kubectl("-n", NS, "rollout", "status", f"deploy/{RELEASE}", "--timeout=300s", timeout=320)
    # Until the old pods are gone (their drain ends), keep logging in.
    wait_until("the old pods to terminate", lambda: not (old & set(pods(terminating=True))), timeout=120, every=1)
    n = ok[0]
    wait_until("logins through the new pods", lambda: ok[0] >= n + 5, timeout=60, every=0.5)
    stop.set()
    t.join(30)
    new = set(pods())
    check(new and not (old & new), f"every pod was replaced: {old} -> {new}")
    check(not failures, f"{len(failures)} failed logins during the rolling restart:\n" + "\n".join(failures[:20]))
    print(f"  rolling restart: {ok[0]} logins, none failed")


def t_upgrade():
    """helm upgrade keeps the generated admin token (looked up in the cluster)."""
    before = token()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["helm", "upgrade", RELEASE, os.path.join(root, "charts", "switchyard"), "-n", NS,
                    "-f", os.path.join(root, "e2e", "values.yaml"), "--set-string", "podAnnotations.e2e-upgrade=1",
                    "--wait", "--timeout", "300s"], check=True, timeout=320)
    check(token() == before, "the admin token changed on helm upgrade")
    with PortForward(f"svc/{RELEASE}-admin") as pf:
        st, body = admin(pf, "GET", "/stats", before)
        check(st == 200, f"GET /stats with the kept token: {st} {body}")


TESTS = {"routing": t_routing, "cutover": t_cutover, "reload": t_reload, "upgrade": t_upgrade,
         "discovery": t_discovery, "rolling": t_rolling}


def main(argv):
    names = argv or list(TESTS)
    unknown = [n for n in names if n not in TESTS]
    if unknown:
        print(f"unknown tests {unknown}; known: {list(TESTS)}", file=sys.stderr)
        return 2
    socket.setdefaulttimeout(30)
    failed = []
    for n in names:
        t0 = time.monotonic()
        try:
            TESTS[n]()
            print(f"PASS {n} ({time.monotonic() - t0:.1f}s)")
        except Exception as e:  # report every test, then fail
            failed.append(n)
            print(f"FAIL {n} ({time.monotonic() - t0:.1f}s): {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
