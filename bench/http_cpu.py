#!/usr/bin/python3
"""HTTP keep-alive requests through Switchyard and through nginx as a plain
reverse proxy, in front of the same nginx backend, in one run (issue 11).

    /usr/bin/python3 bench/http_cpu.py [--bin build/switchyard] [--seconds 5]
        [--connections 16] [--repeat 3] [--threads 1]

Needs nginx and wrk (`apt-get install nginx-light wrk`). The load is wrk
(C, one thread) over `--connections` kept-alive connections, each request
carrying `Authorization: Basic` for one mapped account. Switchyard routes
every request by that account (cache hit after the first) over a reused
backend connection; nginx just proxies (`proxy_pass` to an upstream with
`keepalive`, HTTP/1.1, `Connection ""`), so it routes nothing. The figure
is the proxy's utime + stime (every process of it) divided by the requests
wrk completed, the median of `--repeat` alternating runs, with the spread.
Nothing is asserted: compare within one run only.
"""

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import DEFAULT_BIN, cpu_seconds, free_port, remove_tree  # noqa: E402

USER = "bench@example.com"
AUTH = "Basic " + base64.b64encode(f"{USER}:pw".encode()).decode()


def nginx(conf_body, d, name):
    conf = os.path.join(d, f"{name}.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""{user}worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/{name}-body;
    proxy_temp_path {d}/{name}-proxy;
    fastcgi_temp_path {d}/{name}-fcgi;
    uwsgi_temp_path {d}/{name}-uwsgi;
    scgi_temp_path {d}/{name}-scgi;
    {conf_body}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", d, "-g", "daemon off;"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p


def wait_port(port, timeout=10):
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def tree_cpu(pid):
    """CPU seconds of pid and its children (nginx master + workers)."""
    total = cpu_seconds(pid)
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        kids = []
    for k in kids:
        try:
            total += cpu_seconds(int(k))
        except FileNotFoundError:
            pass
    return total


def run_wrk(port, seconds, conns):
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-H", f"Authorization: {AUTH}",
                          f"http://127.0.0.1:{port}/hello.txt"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+) requests in", out)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m:
        raise SystemExit("wrk said:\n" + out)
    return int(m.group(1)), int(errs.group(1)) if errs else 0


def measure(pid, port, seconds, conns):
    run_wrk(port, 1, conns)  # warm up: connections, cache, page cache
    c0 = tree_cpu(pid)
    n, bad = run_wrk(port, seconds, conns)
    c1 = tree_cpu(pid)
    return n, bad, (c1 - c0) / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="Switchyard worker threads (nginx runs 1 worker)")
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="sy-httpbench-")
    procs = []
    try:
        root = os.path.join(d, "www")
        os.makedirs(root)
        with open(os.path.join(root, "hello.txt"), "w") as f:
            f.write("x" * 512)
        bport, nport, sport = free_port(), free_port(), free_port()
        procs.append(nginx(f"""server {{ listen 127.0.0.1:{bport}; root {root};
            keepalive_requests 100000000; keepalive_timeout 300s; }}""", d, "backend"))
        procs.append(nginx(f"""upstream be {{ server 127.0.0.1:{bport}; keepalive 64; }}
            server {{ listen 127.0.0.1:{nport}; keepalive_requests 100000000;
                location / {{ proxy_pass http://be; proxy_http_version 1.1;
                             proxy_set_header Connection ""; proxy_buffering on; }} }}""", d, "proxy"))
        wait_port(bport)
        wait_port(nport)
        with open(os.path.join(d, "map.tsv"), "w") as f:
            f.write(f"{USER}\tweb\n")
        cfg = os.path.join(d, "sy.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[server]
threads = {a.threads}
log_level = "warn"
[routing]
default_destination = "web"
[mapping]
source = "file"
[mapping.file]
path = "{d}/map.tsv"
[listener.web]
protocol = "http"
bind = ["127.0.0.1:{sport}"]
tls = "plain"
max_connections = 1000
[http]
max_keepalive_requests = 0
[[http.route]]
match = "/**"
extract = {{ from = "authorization" }}
fallback = "default"
[destination.web]
host = "127.0.0.1"
allow_plaintext_auth = true
[destination.web.protocol.http]
port = {bport}
tls = "plain"
""")
        # log_level = "warn": no line per request, as nginx runs with access_log off.
        sy = subprocess.Popen([a.bin, cfg], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(sy)
        wait_port(sport)
        targets = {"switchyard": (sy.pid, sport), "nginx": (procs[1].pid, nport)}
        res = {k: [] for k in targets}
        for r in range(a.repeat):
            for name, (pid, port) in targets.items():
                n, bad, us = measure(pid, port, a.seconds, a.connections)
                res[name].append((us, n / a.seconds, bad))
                print(f"run {r + 1} {name:10s} {n / a.seconds:9.0f} req/s  {us:6.1f} us CPU/request"
                      f"  non-2xx={bad}", flush=True)
        ratios = [s[0] / x[0] for s, x in zip(res["switchyard"], res["nginx"])]
        for name, rows in res.items():
            us = [x[0] for x in rows]
            print(f"{name:10s} median {statistics.median(us):6.1f} us/request "
                  f"(min {min(us):.1f}, max {max(us):.1f}), median {statistics.median([x[1] for x in rows]):.0f} req/s")
        print(f"ratio switchyard/nginx CPU per request: median {statistics.median(ratios):.2f} "
              f"(spread {min(ratios):.2f}-{max(ratios):.2f}), switchyard threads={a.threads}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        remove_tree(d)


if __name__ == "__main__":
    main()
