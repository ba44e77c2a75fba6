#!/usr/bin/python3
"""Memory per idle bridged session.

Starts a silent backend (accepts and holds connections), Switchyard with an
SMTP pass-through listener (plain, or implicit TLS on the client leg, or TLS
on both legs), opens N client connections through it, waits until the backend
has accepted all of them (the event that says every session is bridged), and
reports the growth of Switchyard's VmRSS divided by N.

Large N (--n 50000) on loopback:
- descriptors: this process holds 2N sockets (clients and the backend's
  accepted ends) and the proxy 2N; the bench lifts RLIMIT_NOFILE (soft and, as
  root, hard) to what that needs, the proxy inherits it, and Switchyard raises
  its own soft limit to the hard one at startup anyway;
- ports: a source address has only the ephemeral range
  (net.ipv4.ip_local_port_range, about 28,000 ports) toward one destination
  address and port. Clients therefore connect from 127.0.0.2 .. 127.0.0.9 in
  turn (IP_BIND_ADDRESS_NO_PORT, so the kernel picks a port per 4-tuple), and
  when N exceeds what one address can carry toward the backend, the
  destination gets source_ips = 127.0.0.1, 127.0.0.10, 127.0.0.11, ... so the
  proxy's backend leg spreads over enough source addresses too.

usage: bench/idle_sessions.py [--n 1000] [--mode plain|tls|tls2] [--threads 1] [--bin build/switchyard]
"""

import argparse
import concurrent.futures
import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CLIENT_SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]


def ephemeral_ports():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return hi - lo + 1
    except OSError:
        return 28232


class HoldingBackend:
    """Accepts connections (optionally TLS, handshakes on a few threads) and
    keeps them open, silently."""

    def __init__(self, port, tls_ctx=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4096)
        self.tls_ctx = tls_ctx
        self.conns = []
        self.accepted = 0
        self.failed = 0
        self.cond = threading.Condition()
        self.stop = False
        self.pool = concurrent.futures.ThreadPoolExecutor(4) if tls_ctx else None
        threading.Thread(target=self.run, daemon=True).start()

    def _hold(self, c):
        if self.tls_ctx:
            try:
                c = self.tls_ctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError):
                c.close()
                with self.cond:
                    self.failed += 1
                return
        with self.cond:
            self.conns.append(c)
            self.accepted += 1
            self.cond.notify_all()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.pool:
                self.pool.submit(self._hold, c)
            else:
                self._hold(c)

    def wait(self, n, timeout):
        end = time.time() + timeout
        with self.cond:
            while self.accepted < n:
                left = end - time.time()
                if left <= 0:
                    raise SystemExit(f"backend accepted only {self.accepted}/{n} "
                                     f"({self.failed} TLS handshakes failed)")
                self.cond.wait(min(left, 1.0))

    def close(self):
        self.stop = True
        self.sock.close()
        with self.cond:
            for c in self.conns:
                c.close()
            self.conns = []
        if self.pool:
            self.pool.shutdown(wait=False)


def open_clients(lport, count, first, client_ctx, workers):
    """Opens `count` client connections, the k-th from source address
    CLIENT_SOURCES[(first + k) % 8]; returns the sockets."""

    def one(k):
        s = socket.socket()
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((CLIENT_SOURCES[(first + k) % len(CLIENT_SOURCES)], 0))
        s.connect(("127.0.0.1", lport))
        if client_ctx:
            s = client_ctx.wrap_socket(s, server_hostname="localhost")
        return s

    if workers <= 1 or count < 100:
        return [one(k) for k in range(count)]
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(one, range(count), chunksize=64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--mode", choices=["plain", "tls", "tls2"], default="plain")
    ap.add_argument("--bin", default=benchlib.DEFAULT_BIN)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connect-workers", type=int, default=8,
                    help="threads opening client connections")
    ap.add_argument("--backend-sources", type=int, default=0,
                    help="source addresses for the backend leg (default: as many as N needs)")
    args = ap.parse_args()

    warm_n = 20
    total = args.n + warm_n
    limit = benchlib.raise_nofile(2 * total + 1024)
    if limit < 2 * total + 64:
        raise SystemExit(f"RLIMIT_NOFILE is {limit} and cannot be raised (the hard limit, or no "
                         f"CAP_SYS_RESOURCE): this process and the proxy each need 2 descriptors "
                         f"per session, so at most about {(limit - 100) // 2 - warm_n} sessions "
                         f"fit, not {args.n}")

    # Source addresses for the proxy's backend leg, each good for the
    # ephemeral range toward the backend's one address and port.
    per_source = ephemeral_ports() - 1000
    nsources = args.backend_sources or -(-total // per_source)
    source_ips = ["127.0.0.1"] + [f"127.0.0.{10 + i}" for i in range(nsources - 1)]

    d = benchlib.tempfile.mkdtemp(prefix="sy-bench-")
    crt, key = benchlib.make_cert(d)
    lport, bport = benchlib.free_port(), benchlib.free_port()
    backend_ctx = None
    if args.mode == "tls2":
        backend_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        backend_ctx.load_cert_chain(crt, key)
    backend = HoldingBackend(bport, backend_ctx)
    sources_line = ""
    if nsources > 1:
        sources_line = "source_ips = [" + ", ".join(f'"{a}"' for a in source_ips) + "]"
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
max_connections = {total + 100}
[destination.b]
host = "127.0.0.1"
tls_server_name = "localhost"
tls_allow_invalid_certs = true
proxy_protocol = false
{sources_line}
[destination.b.protocol.smtp]
port = {bport}
tls = "{'implicit' if args.mode == 'tls2' else 'plain'}"
[routing]
default_destination = "b"
smtp_passthrough_destination = "b"
"""
    proxy = benchlib.Proxy(cfg, args.bin, workdir=d)
    clients, warm = [], []
    try:
        client_ctx = None
        if args.mode != "plain":
            client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client_ctx.check_hostname = False
            client_ctx.verify_mode = ssl.CERT_NONE
        # Warm up with a few sessions so allocator arenas and TLS contexts exist.
        warm = open_clients(lport, warm_n, 0, client_ctx, 1)
        backend.wait(warm_n, 30)
        time.sleep(0.2)
        base = benchlib.vmrss_kib(proxy.pid)
        t0 = time.monotonic()
        clients = open_clients(lport, args.n, warm_n, client_ctx, args.connect_workers)
        backend.wait(total, 120 + args.n * (0.01 if args.mode != "plain" else 0.002))
        opened = time.monotonic() - t0
        time.sleep(0.5)  # let the last handshakes' transient buffers be released
        after = benchlib.vmrss_kib(proxy.pid)
        per = (after - base) / args.n
        alive = proxy.proc.poll() is None
        print(f"mode={args.mode} sessions={args.n} rss_before={base}KiB rss_after={after}KiB "
              f"per_session={per:.2f}KiB opened_in={opened:.1f}s backend_sources={nsources} "
              f"proxy_alive={alive}")
    finally:
        for s in clients + warm:
            s.close()
        proxy.stop()
        backend.close()
        benchlib.remove_tree(d)


if __name__ == "__main__":
    main()
