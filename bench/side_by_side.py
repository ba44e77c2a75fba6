#!/usr/bin/python3
"""Plain IMAP logins through Switchyard, nginx's mail proxy, Dovecot as a
login proxy and the floor relay, all in front of one real Dovecot, in ONE
invocation (issue 16).

    /usr/bin/python3 bench/side_by_side.py [--n 1000] [--concurrency 16]
        [--repeat 3] [--bin build/switchyard] [--only switchyard,nginx,...]
        [--before OLD_BINARY]   (adds target before-1: a before/after in one run)
        [--tls [--resume] [--floor-tickets]]

--workload login (default) | idle | fetch:
  login  the above
  idle   --sessions N (default 200) sessions held open in IMAP IDLE (login,
         SELECT INBOX, IDLE, "+ idling"), after 20 warm-up sessions; the
         figure is the growth of the Pss (smaps_rollup, so shared pages count
         once) summed over the target's processes, per session. The floor is
         serial (one session at a time) and is left out.
  fetch  one message of --mb MiB (default 16) put in alice's Maildir, fetched
         --fetches times (default 8) with `FETCH 1 BODY.PEEK[]` per round on
         one logged-in session; MB/s seen by the client and target CPU per MiB.

--tls puts implicit TLS on the client leg of every target (imaps; the
backend leg stays plain): Switchyard `tls = "implicit"`, nginx `listen ...
ssl`, Dovecot's proxy on an imaps listener, the floor relay with --tls. All
use the harness's localhost certificate (EC P-256) and their default TLS
settings (TLS 1.3; Switchyard, nginx and Dovecot send session tickets).
sy-loadgen does full handshakes unless --resume (then it offers the last
ticket it got). --floor-tickets makes the floor send OpenSSL's default two
tickets per handshake too (by default it sends none: a login does not need
them).

Needs nginx with its mail module (`apt-get install nginx-light
libnginx-mod-mail`), Dovecot, and the release build (build/switchyard,
build/sy-loadgen, build/sy-floor-relay). The load is sy-loadgen (C, libuv):
`--concurrency` sessions of connect / greeting / LOGIN / LOGOUT until `--n`
logins. For each target the figure is the CPU (utime + stime) of every
process of the target over the run, divided by the logins: Switchyard's one
process, nginx's master, worker (and its auth_http answer, served by the
same nginx), Dovecot proxy's whole process tree (master, imap-login, auth,
...), the floor relay's one process. Targets run in turn, `--repeat` rounds;
the report is the median per target with its spread, and the median of the
per-round ratios to nginx and to the floor. Nothing is asserted.

Targets:
  switchyard-1   threads = 1 (nginx runs one worker process here)
  switchyard     threads = 0 (one per core)
  nginx          mail { proxy on; auth_http to a location of the same nginx }
  dovecot        a second Dovecot: passdb static proxy=y nopassword=y
  floor          bench/floor_relay.c: serial, blocking, the syscalls a
                 proxied login cannot avoid
  floor-tickets  (--tls only, not in the default list) the floor sending two
                 TLS 1.3 session tickets per handshake, as the proxies do
  switchyard-1-keys  (--tls only, not in the default list) switchyard-1 with
                 [tls] ticket_key_file (one generated key): tickets through
                 Switchyard's key callback instead of OpenSSL's own keys
"""

import argparse
import base64
import os
import re
import socket
import ssl
import time
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import benchlib  # noqa: E402
from benchlib import cpu_seconds, free_port, remove_tree  # noqa: E402

USER, PASS = "alice@example.com", "alicepass"
BUILD = os.path.join(benchlib.REPO, "build")


def descendants(pid):
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            pass
    return out


def tree_cpu(pid):
    total = 0.0
    for p in descendants(pid):
        try:
            total += cpu_seconds(p)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def wait_port(port, timeout=15):
    import socket
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


LOADGEN_FLAGS = []


def loadgen(port, n, conc):
    out = subprocess.run([os.path.join(BUILD, "sy-loadgen"), *LOADGEN_FLAGS, "127.0.0.1", str(port),
                          USER, PASS, str(conc), str(n)], capture_output=True, text=True)
    m = re.search(r"logins=(\d+) errors=(\d+) seconds=([\d.]+)", out.stdout)
    if not m:
        raise SystemExit(f"sy-loadgen said: {out.stdout}{out.stderr}")
    r = re.search(r"resumed=(\d+)", out.stdout)
    LAST_RESUMED[0] = int(r.group(1)) if r else None
    return int(m.group(1)), int(m.group(2)), float(m.group(3))


LAST_RESUMED = [None]  # resumed= of the last sy-loadgen run (--resume), else None


def tree_pss_kib(pid):
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


class Imap:
    """A small blocking IMAP client (plain or implicit TLS) for idle and fetch."""

    def __init__(self, port, tls):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.line()  # greeting

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def exact(self, n):
        """Reads n bytes (a literal), without keeping them."""
        have = min(n, len(self.buf))
        self.buf = self.buf[have:]
        left = n - have
        while left > 0:
            d = self.sock.recv(min(left, 1 << 20))
            if not d:
                raise EOFError("closed")
            left -= len(d)

    def cmd(self, tag, text, until=None):
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        while True:
            ln = self.line()
            if until and ln.startswith(until):
                return ln
            if ln.startswith(tag.encode() + b" "):
                if not ln.startswith(tag.encode() + b" OK"):
                    raise RuntimeError(ln)
                return ln

    def login_select(self):
        self.cmd("a1", f"LOGIN {USER} {PASS}")
        self.cmd("a2", "SELECT INBOX")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def idle_open(port, tls, n):
    out = []
    for _ in range(n):
        c = Imap(port, tls)
        c.login_select()
        c.cmd("a3", "IDLE", until=b"+")
        out.append(c)
    return out


def run_stops(stops):
    """Stops what was started, last first; one failing stop does not keep the rest."""
    for s in reversed(stops):
        try:
            s()
        except Exception:
            pass


def run_idle(a, d, pki, backend, cert, wanted):
    """Each round starts every target afresh: a target that ran a round before
    would reuse the heap its earlier sessions freed, and grow by about 0."""
    res = {}
    for r in range(a.repeat):
        stops = []
        try:
            targets = start_targets(a, d, pki, backend, cert, wanted, stops)
            for name, (pid, port) in targets.items():
                warm = idle_open(port, a.tls, 20)
                time.sleep(0.3)
                base = tree_pss_kib(pid)
                t0 = time.monotonic()
                held = idle_open(port, a.tls, a.sessions)
                opened = time.monotonic() - t0
                time.sleep(0.5)
                per = (tree_pss_kib(pid) - base) / a.sessions
                for c in held + warm:
                    c.close()
                res.setdefault(name, []).append(per)
                print(f"round {r + 1} {name:13s} {per:8.2f} KiB per idle session (Pss, "
                      f"{a.sessions} opened in {opened:.1f}s)", flush=True)
                time.sleep(1.0)  # let the backend's imap processes go
        finally:
            run_stops(stops)
    return res, "KiB/session"


def put_message(backend, mib):
    from harness.dovecot import MAIL_GID, MAIL_UID
    md = backend.maildir(USER)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
        os.chown(os.path.join(md, sub), MAIL_UID, MAIL_GID)
    os.chown(md, MAIL_UID, MAIL_GID)
    path = os.path.join(md, "new", f"{int(time.time())}.bench.big")
    line = b"x" * 76 + b"\r\n"
    body = line * (mib * 1024 * 1024 // len(line))
    with open(path, "wb") as f:
        f.write(b"From: a@example.org\r\nTo: alice@example.com\r\nSubject: big\r\n\r\n" + body)
    os.chown(path, MAIL_UID, MAIL_GID)


def run_fetch(targets, a):
    res = {k: [] for k in targets}
    for r in range(a.repeat):
        for name, (pid, port) in targets.items():
            c = Imap(port, a.tls)
            c.login_select()
            c0, t0, total = tree_cpu(pid), time.monotonic(), 0
            for i in range(a.fetches):
                c.sock.sendall(f"f{i} FETCH 1 BODY.PEEK[]\r\n".encode())
                while True:
                    ln = c.line()
                    m = re.search(rb"\{(\d+)\}$", ln)
                    if m:
                        c.exact(int(m.group(1)))
                        total += int(m.group(1))
                    elif ln.startswith(f"f{i} ".encode()):
                        break
            secs, cpu = time.monotonic() - t0, tree_cpu(pid) - c0
            c.close()
            mib = total / (1 << 20)
            per = cpu / mib * 1e3
            res[name].append(per)
            print(f"round {r + 1} {name:13s} {mib / secs:7.0f} MiB/s  {per:6.3f} ms CPU/MiB", flush=True)
    return res, "ms/MiB"


def report(res, unit):
    print()
    for name, v in res.items():
        print(f"{name:13s} median {statistics.median(v):8.3f} {unit} (min {min(v):.3f}, max {max(v):.3f})")
    for base in ("nginx", "floor", "floor-tickets"):
        if base not in res:
            continue
        for name in res:
            if name == base:
                continue
            ratios = [x / y if y else float("nan") for x, y in zip(res[name], res[base])]
            print(f"{name:13s} / {base:6s} median {statistics.median(ratios):.2f} "
                  f"(spread {min(ratios):.2f}-{max(ratios):.2f})")


def start_switchyard(d, binary, backend, threads, name, cert=None, ticket_keys=False):
    port = free_port()
    cfg = os.path.join(d, f"{name}.toml")
    keys = ""
    if ticket_keys:
        kf = os.path.join(d, f"{name}-tickets.key")
        with open(kf, "w") as f:
            f.write(base64.b64encode(os.urandom(80)).decode() + "\n")
        keys = f'[tls]\nticket_key_file = "{kf}"\n'
    tls = keys + f"""[tls.certificate.main]
cert = "{cert.cert}"
key = "{cert.key}"
""" if cert else ""
    with open(cfg, "w") as f:
        f.write(f"""{tls}
[server]
threads = {threads}
log_level = "warn"
[routing]
default_destination = "dovecot"
[capabilities.imap]
allow_plain_auth_without_tls = true
[listener.imap]
protocol = "imap"
tls = "{'implicit' if cert else 'plain'}"
bind = ["127.0.0.1:{port}"]
max_connections = 1000
[destination.dovecot]
host = "127.0.0.1"
forwarding = "none"
allow_plaintext_auth = true
[destination.dovecot.protocol.imap]
port = {backend}
tls = "plain"
""")
    p = subprocess.Popen([binary, cfg], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_port(port)
    return p, p.pid, port


def start_nginx(d, backend, cert=None):
    port, auth = free_port(), free_port()
    ssl = f"""
        ssl_certificate {cert.cert};
        ssl_certificate_key {cert.key};""" if cert else ""
    conf = os.path.join(d, "nginx-mail.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""{user}load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes 1;
pid {d}/nginx-mail.pid;
error_log {d}/nginx-mail.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/nb; proxy_temp_path {d}/np; fastcgi_temp_path {d}/nf;
    uwsgi_temp_path {d}/nu; scgi_temp_path {d}/ns;
    server {{
        listen 127.0.0.1:{auth};
        location = /auth {{
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port {backend};
            return 204;
        }}
    }}
}}
mail {{
    server_name proxy.test;
    auth_http 127.0.0.1:{auth}/auth;
    imap_auth plain login;
    server {{
        listen 127.0.0.1:{port}{' ssl' if cert else ''};
        protocol imap;
        proxy on;{ssl}
    }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", d, "-g", "daemon off;"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p, p.pid, port


def start_dovecot_proxy(pki, backend, tls=False):
    from harness import Dovecot

    class DovecotProxy(Dovecot):
        def config_text(self):
            c = super().config_text()
            start = c.index("passdb {")
            end = c.index("hostname = ")
            return (c[:start] + "passdb {\n  driver = static\n"
                    f"  args = proxy=y host=127.0.0.1 port={backend} nopassword=y\n}}\n\n" + c[end:])

    # one imap-login process per connection (Dovecot's default high-security
    # mode): the default limit of 100 would refuse the idle workload
    dp = DovecotProxy(pki, listeners={"imap": ("tls" if tls else "plain",)},
                      extra_conf="service imap-login {\n  process_limit = 1024\n}\n")
    dp.start()
    pid = dp._master_pids()[0]
    return dp, pid, dp.imaps if tls else dp.imap


def start_targets(a, d, pki, backend, cert, wanted, stops):
    """Starts every wanted target in front of `backend`; their stop functions go
    to `stops`. Returns {name: (pid, port)}."""
    targets = {}
    if "switchyard-1" in wanted:
        p, pid, port = start_switchyard(d, a.bin, backend.imap, 1, "sy1", cert)
        stops.append(lambda p=p: (p.kill(), p.wait()))
        targets["switchyard-1"] = (pid, port)
    if "switchyard-1-keys" in wanted and cert:
        p, pid, port = start_switchyard(d, a.bin, backend.imap, 1, "sy1keys", cert, ticket_keys=True)
        stops.append(lambda p=p: (p.kill(), p.wait()))
        targets["switchyard-1-keys"] = (pid, port)
    if a.before:
        p, pid, port = start_switchyard(d, a.before, backend.imap, 1, "before", cert)
        stops.append(lambda p=p: (p.kill(), p.wait()))
        targets["before-1"] = (pid, port)
    if "switchyard" in wanted:
        p, pid, port = start_switchyard(d, a.bin, backend.imap, 0, "sy", cert)
        stops.append(lambda p=p: (p.kill(), p.wait()))
        targets["switchyard"] = (pid, port)
    if "nginx" in wanted:
        p, pid, port = start_nginx(d, backend.imap, cert)
        stops.append(lambda p=p: (p.terminate(), p.wait()))
        targets["nginx"] = (pid, port)
    if "dovecot" in wanted:
        dp, pid, port = start_dovecot_proxy(pki, backend.imap, a.tls)
        stops.append(dp.cleanup)
        targets["dovecot"] = (pid, port)
    for fname in ("floor", "floor-tickets"):
        if fname not in wanted or (fname == "floor-tickets" and not cert):
            continue
        port = free_port()
        fl = []
        if cert:
            tickets = a.floor_tickets or fname == "floor-tickets"
            fl = ["--tls", cert.cert, cert.key] + (["--tickets"] if tickets else [])
        p = subprocess.Popen([os.path.join(BUILD, "sy-floor-relay"), *fl, str(port), str(backend.imap)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stops.append(lambda p=p: (p.kill(), p.wait()))
        wait_port(port)
        targets[fname] = (p.pid, port)
    return targets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default=benchlib.DEFAULT_BIN)
    ap.add_argument("--only", default="switchyard-1,switchyard,nginx,dovecot,floor")
    ap.add_argument("--before", help="another switchyard binary, run as target 'before-1' (threads = 1)")
    ap.add_argument("--workload", choices=["login", "idle", "fetch"], default="login")
    ap.add_argument("--sessions", type=int, default=200, help="idle: sessions held")
    ap.add_argument("--mb", type=int, default=16, help="fetch: message size in MiB")
    ap.add_argument("--fetches", type=int, default=8, help="fetch: FETCHes per round")
    ap.add_argument("--tls", action="store_true", help="implicit TLS on the client leg")
    ap.add_argument("--resume", action="store_true", help="with --tls: sy-loadgen resumes sessions")
    ap.add_argument("--floor-tickets", action="store_true",
                    help="with --tls: the floor sends two session tickets per handshake")
    a = ap.parse_args()
    if a.tls:
        LOADGEN_FLAGS.append("--tls")
        if a.resume:
            LOADGEN_FLAGS.append("--resume")
    wanted = a.only.split(",")
    if a.workload == "idle" and "floor" in wanted:
        wanted.remove("floor")
    benchlib.raise_nofile(65536)

    from harness import Dovecot, TestPKI
    d = tempfile.mkdtemp(prefix="sy-side-")
    stops = []
    try:
        pki = TestPKI()
        stops.append(pki.cleanup)
        backend = Dovecot(pki, listeners={"imap": ("plain",)},
                          extra_conf="service imap {\n  process_limit = 1024\n}\n"
                                     # 16+ concurrent logins of one user from 127.0.0.1
                                     "protocol imap {\n  mail_max_userip_connections = 10000\n}\n"
                                     "service imap-login {\n  process_min_avail = 4\n}\n")
        backend.start()
        stops.append(backend.cleanup)
        if a.workload == "fetch":
            put_message(backend, a.mb)
        cert = pki.localhost if a.tls else None
        if a.workload == "idle":
            return report(*run_idle(a, d, pki, backend, cert, wanted))
        targets = start_targets(a, d, pki, backend, cert, wanted, stops)
        if a.workload == "fetch":
            return report(*run_fetch(targets, a))
        for name, (pid, port) in targets.items():  # warm up every path once
            loadgen(port, 100, a.concurrency)
        res = {k: [] for k in targets}
        for r in range(a.repeat):
            for name, (pid, port) in targets.items():
                c0 = tree_cpu(pid)
                n, errs, secs = loadgen(port, a.n, a.concurrency)
                us = (tree_cpu(pid) - c0) / n * 1e6
                res[name].append(us)
                resumed = f"  resumed={LAST_RESUMED[0]}" if LAST_RESUMED[0] is not None else ""
                print(f"round {r + 1} {name:13s} {n / secs:7.0f} logins/s  {us:7.1f} us CPU/login"
                      f"  errors={errs}{resumed}", flush=True)
        report(res, "us/login")
    finally:
        run_stops(stops)
        remove_tree(d)


if __name__ == "__main__":
    main()
