#!/usr/bin/python3
"""Plain IMAP logins through Switchyard, nginx's mail proxy, Dovecot as a
login proxy and the floor relay, all in front of one real Dovecot, in ONE
invocation (issue 16).

    /usr/bin/python3 bench/side_by_side.py [--n 1000] [--concurrency 16]
        [--repeat 3] [--bin build/switchyard] [--only switchyard,nginx,...]
        [--before OLD_BINARY]   (adds target before-1: a before/after in one run)

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
"""

import argparse
import os
import re
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


def loadgen(port, n, conc):
    out = subprocess.run([os.path.join(BUILD, "sy-loadgen"), "127.0.0.1", str(port), USER, PASS,
                          str(conc), str(n)], capture_output=True, text=True)
    m = re.search(r"logins=(\d+) errors=(\d+) seconds=([\d.]+)", out.stdout)
    if not m:
        raise SystemExit(f"sy-loadgen said: {out.stdout}{out.stderr}")
    return int(m.group(1)), int(m.group(2)), float(m.group(3))


def start_switchyard(d, binary, backend, threads, name):
    port = free_port()
    cfg = os.path.join(d, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[server]
threads = {threads}
log_level = "warn"
[routing]
default_destination = "dovecot"
[capabilities.imap]
allow_plain_auth_without_tls = true
[listener.imap]
protocol = "imap"
tls = "plain"
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


def start_nginx(d, backend):
    port, auth = free_port(), free_port()
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
        listen 127.0.0.1:{port};
        protocol imap;
        proxy on;
    }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", d, "-g", "daemon off;"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p, p.pid, port


def start_dovecot_proxy(pki, backend):
    from harness import Dovecot

    class DovecotProxy(Dovecot):
        def config_text(self):
            c = super().config_text()
            start = c.index("passdb {")
            end = c.index("hostname = ")
            return (c[:start] + "passdb {\n  driver = static\n"
                    f"  args = proxy=y host=127.0.0.1 port={backend} nopassword=y\n}}\n\n" + c[end:])

    dp = DovecotProxy(pki, listeners={"imap": ("plain",)})
    dp.start()
    pid = dp._master_pids()[0]
    return dp, pid, dp.imap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default=benchlib.DEFAULT_BIN)
    ap.add_argument("--only", default="switchyard-1,switchyard,nginx,dovecot,floor")
    ap.add_argument("--before", help="another switchyard binary, run as target 'before-1' (threads = 1)")
    a = ap.parse_args()
    wanted = a.only.split(",")
    benchlib.raise_nofile(65536)

    from harness import Dovecot, TestPKI
    d = tempfile.mkdtemp(prefix="sy-side-")
    stops = []
    try:
        pki = TestPKI()
        stops.append(pki.cleanup)
        backend = Dovecot(pki, listeners={"imap": ("plain",)},
                          extra_conf="service imap {\n  process_limit = 1024\n}\n"
                                     "service imap-login {\n  process_min_avail = 4\n}\n")
        backend.start()
        stops.append(backend.cleanup)
        targets = {}
        if "switchyard-1" in wanted:
            p, pid, port = start_switchyard(d, a.bin, backend.imap, 1, "sy1")
            stops.append(p.kill)
            targets["switchyard-1"] = (pid, port)
        if a.before:
            p, pid, port = start_switchyard(d, a.before, backend.imap, 1, "before")
            stops.append(p.kill)
            targets["before-1"] = (pid, port)
        if "switchyard" in wanted:
            p, pid, port = start_switchyard(d, a.bin, backend.imap, 0, "sy")
            stops.append(p.kill)
            targets["switchyard"] = (pid, port)
        if "nginx" in wanted:
            p, pid, port = start_nginx(d, backend.imap)
            stops.append(p.terminate)
            targets["nginx"] = (pid, port)
        if "dovecot" in wanted:
            dp, pid, port = start_dovecot_proxy(pki, backend.imap)
            stops.append(dp.cleanup)
            targets["dovecot"] = (pid, port)
        if "floor" in wanted:
            port = free_port()
            p = subprocess.Popen([os.path.join(BUILD, "sy-floor-relay"), str(port), str(backend.imap)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stops.append(p.kill)
            wait_port(port)
            targets["floor"] = (p.pid, port)

        for name, (pid, port) in targets.items():  # warm up every path once
            loadgen(port, 100, a.concurrency)
        res = {k: [] for k in targets}
        for r in range(a.repeat):
            for name, (pid, port) in targets.items():
                c0 = tree_cpu(pid)
                n, errs, secs = loadgen(port, a.n, a.concurrency)
                us = (tree_cpu(pid) - c0) / n * 1e6
                res[name].append(us)
                print(f"round {r + 1} {name:13s} {n / secs:7.0f} logins/s  {us:7.1f} us CPU/login"
                      f"  errors={errs}", flush=True)
        print()
        for name, v in res.items():
            print(f"{name:13s} median {statistics.median(v):7.1f} us/login (min {min(v):.1f}, max {max(v):.1f})")
        for base in ("nginx", "floor"):
            if base not in res:
                continue
            for name in res:
                if name == base:
                    continue
                ratios = [x / y for x, y in zip(res[name], res[base])]
                print(f"{name:13s} / {base:6s} median {statistics.median(ratios):.2f} "
                      f"(spread {min(ratios):.2f}-{max(ratios):.2f})")
    finally:
        for s in reversed(stops):
            try:
                s()
            except Exception:
                pass
        remove_tree(d)


if __name__ == "__main__":
    main()
