#!/usr/bin/python3
"""Memory per idle bridged session.

Starts a silent backend (accepts and holds connections), Switchyard with an
SMTP pass-through listener (plain, or implicit TLS on the client leg, or TLS
on both legs), opens N client connections through it, waits until Switchyard
reports them bridged (its log line count is not used: the backend's accepted
count is the event), and reports the growth of Switchyard's VmRSS divided by N.

usage: bench/idle_sessions.py [--n 1000] [--mode plain|tls|tls2] [--bin build/switchyard]
"""

import argparse
import os
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class HoldingBackend:
    """Accepts connections (optionally TLS) and keeps them open, silently."""

    def __init__(self, port, tls_ctx=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4096)
        self.tls_ctx = tls_ctx
        self.conns = []
        self.accepted = 0
        self.cond = threading.Condition()
        self.stop = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.tls_ctx:
                try:
                    c = self.tls_ctx.wrap_socket(c, server_side=True)
                except (ssl.SSLError, OSError):
                    c.close()
                    continue
            with self.cond:
                self.conns.append(c)
                self.accepted += 1
                self.cond.notify_all()

    def wait(self, n, timeout):
        end = time.time() + timeout
        with self.cond:
            while self.accepted < n:
                left = end - time.time()
                if left <= 0:
                    raise SystemExit(f"backend accepted only {self.accepted}/{n}")
                self.cond.wait(left)


def make_cert(d):
    crt, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key,
                    "-out", crt], check=True, capture_output=True)
    return crt, key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--mode", choices=["plain", "tls", "tls2"], default="plain")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                   "switchyard"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 3 * args.n + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    d = tempfile.mkdtemp(prefix="sy-bench-")
    crt, key = make_cert(d)
    lport, bport = free_port(), free_port()
    backend_ctx = None
    if args.mode == "tls2":
        backend_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        backend_ctx.load_cert_chain(crt, key)
    backend = HoldingBackend(bport, backend_ctx)
    cfg = f"""
[server]
threads = {args.threads}
log_level = "info"
[tls.certificate.main]
cert = "{crt}"
key = "{key}"
[listener.smtp]
protocol = "smtp"
bind = ["127.0.0.1:{lport}"]
tls = "{'plain' if args.mode == 'plain' else 'implicit'}"
max_connections = {args.n + 100}
[destination.b]
host = "127.0.0.1"
tls_server_name = "localhost"
tls_allow_invalid_certs = true
proxy_protocol = false
[destination.b.protocol.smtp]
port = {bport}
tls = "{'implicit' if args.mode == 'tls2' else 'plain'}"
[routing]
default_destination = "b"
smtp_passthrough_destination = "b"
"""
    path = os.path.join(d, "bench.toml")
    with open(path, "w") as f:
        f.write(cfg)
    proc = subprocess.Popen([args.bin, path], stderr=subprocess.PIPE, text=True)
    # Wait for the "ready" event on stderr.
    for line in proc.stderr:
        if " ready" in line or '"ready"' in line:
            break
    else:
        raise SystemExit("switchyard did not start")
    threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    # Warm up with a few sessions so allocator arenas and TLS contexts exist.
    warm = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", lport))
        if args.mode != "plain":
            s = client_ctx.wrap_socket(s, server_hostname="localhost")
        warm.append(s)
    backend.wait(20, 30)
    time.sleep(0.2)
    base = vmrss_kib(proc.pid)
    clients = []
    for _ in range(args.n):
        s = socket.create_connection(("127.0.0.1", lport))
        if args.mode != "plain":
            s = client_ctx.wrap_socket(s, server_hostname="localhost")
        clients.append(s)
    backend.wait(20 + args.n, 120)
    time.sleep(0.5)  # let the last handshakes' transient buffers be released
    after = vmrss_kib(proc.pid)
    per = (after - base) / args.n
    print(f"mode={args.mode} sessions={args.n} rss_before={base}KiB rss_after={after}KiB "
          f"per_session={per:.2f}KiB")
    for s in clients + warm:
        s.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    backend.stop = True
    subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
