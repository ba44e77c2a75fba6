#!/usr/bin/python3
"""Proxy CPU per megabyte bridged.

One SMTP pass-through session (src/proto/passthrough.c: bridged from the
first byte) carries --mb MiB between a client in this process and a backend in
its own process. --direction up: the client sends and the backend discards
(like an APPEND or a message submission); down: the backend sends and the
client discards (like a FETCH). The client leg is plain, or TLS with --tls
(the proxy decrypts on the way up and encrypts on the way down); the backend
leg is plain.

The number is the proxy process's utime + stime (/proc/<pid>/stat) over the
transfer, minus what the idle proxy burns in the same wall time, divided by
the MiB moved; the median of --repeat transfers.

With --strace the measured transfers run under `strace -f -c` and the
system calls per MiB are printed instead (the CPU figure is then strace's
too, and means nothing).

usage: bench/bridge_cpu.py [--mb 1024] [--direction up|down|both] [--tls] [--repeat 3]
                           [--perf FILE] [--strace] [--bin build/switchyard]
       SWITCHYARD_NO_SPLICE=1 bench/bridge_cpu.py ...   # the proxy's copy path, for comparison
"""

import argparse
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

CHUNK = 1 << 20


def backend_main(port, direction, jobs, ready, done):
    """Accepts one connection per transfer: discards what it receives (up)
    or sends the number of bytes taken from `jobs`, then closes (down)."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(16)
    ready.set()
    buf = bytearray(CHUNK)
    payload = b"x" * CHUNK
    while True:
        c, _ = ls.accept()
        got = 0
        nbytes = jobs.get() if direction == "down" else 0
        if direction == "up":
            while True:
                n = c.recv_into(buf)
                if n == 0:
                    break
                got += n
        else:
            left = nbytes
            while left > 0:
                n = min(left, CHUNK)
                c.sendall(payload[:n] if n < CHUNK else payload)
                left -= n
            c.shutdown(socket.SHUT_WR)
            while c.recv_into(buf):
                pass
            got = nbytes
        c.close()
        done.put(got)


def transfer(lport, direction, nbytes, ctx):
    s = socket.create_connection(("127.0.0.1", lport))
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    if direction == "up":
        payload = b"y" * CHUNK
        left = nbytes
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(payload if n == CHUNK else payload[:n])
            left -= n
        if ctx:
            s = s.unwrap()  # close_notify: the proxy passes the end on as a FIN
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    else:
        buf = bytearray(CHUNK)
        got = 0
        while True:
            try:
                n = s.recv_into(buf)
            except ssl.SSLZeroReturnError:
                n = 0
            if n == 0:
                break
            got += n
        if got != nbytes:
            raise SystemExit(f"client received {got} of {nbytes} bytes")
    s.close()


def proxy_config(lport, bport, tls, crt, key):
    return f"""
[server]
threads = 1
log_level = "info"
[tls.certificate.main]
cert = "{crt}"
key = "{key}"
[listener.smtp]
protocol = "smtp"
bind = ["127.0.0.1:{lport}"]
tls = "{'implicit' if tls else 'plain'}"
[destination.b]
host = "127.0.0.1"
proxy_protocol = false
[destination.b.protocol.smtp]
port = {bport}
tls = "plain"
[routing]
default_destination = "b"
smtp_passthrough_destination = "b"
"""


def start_strace(pid, out):
    st = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(pid)],
                          stderr=subprocess.PIPE, text=True)
    for line in st.stderr:  # "Process N attached": every thread is traced
        if "attached" in line:
            break
    return st


def report_strace(st, out, mib, direction, tls):
    st.send_signal(signal.SIGINT)
    st.wait()
    calls = []
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*(\w+)$", line)
            if m and m.group(3) != "total":
                calls.append((int(m.group(1)), m.group(3)))
    calls.sort(reverse=True)
    total = sum(n for n, _ in calls)
    print(f"direction={direction} client_leg={'tls' if tls else 'plain'} "
          f"syscalls_per_mib={total / mib:.1f}: "
          + ", ".join(f"{name} {n / mib:.1f}" for n, name in calls if n / mib >= 0.5))


def run(args, direction):
    nbytes = args.mb * CHUNK
    d = tempfile.mkdtemp(prefix="sy-bench-")
    crt, key = benchlib.make_cert(d)
    bport, lport = benchlib.free_port(), benchlib.free_port()
    ready, jobs, done = multiprocessing.Event(), multiprocessing.Queue(), multiprocessing.Queue()
    be = multiprocessing.Process(target=backend_main, args=(bport, direction, jobs, ready, done),
                                 daemon=True)
    be.start()
    proxy = None
    try:
        if not ready.wait(10):
            raise SystemExit("backend did not start")
        proxy = benchlib.Proxy(proxy_config(lport, bport, args.tls, crt, key), args.bin,
                               workdir=d)
        ctx = None
        if args.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        # Warm-up: pool blocks, allocator, TLS context.
        jobs.put(16 * CHUNK)
        transfer(lport, direction, 16 * CHUNK, ctx)
        done.get(30)
        idle = benchlib.idle_cpu_rate(proxy.pid, 1.0)
        stop_perf = benchlib.perf_record(proxy.pid, args.perf) if args.perf else None
        st = start_strace(proxy.pid, os.path.join(d, "strace")) if args.strace else None
        results = []
        for _ in range(args.repeat):
            with benchlib.Contention([proxy.pid, be.pid]) as other:
                c0, t0 = benchlib.cpu_seconds(proxy.pid), time.monotonic()
                jobs.put(nbytes)
                transfer(lport, direction, nbytes, ctx)
                got = done.get(120)
                time.sleep(0.1)
                cpu, wall = benchlib.cpu_seconds(proxy.pid) - c0, time.monotonic() - t0
            if got != nbytes:
                raise SystemExit(f"backend saw {got} of {nbytes} bytes")
            per = (cpu - idle * wall) * 1e3 / args.mb
            results.append(per)
            if args.repeat > 1:
                print(f"  run: wall={wall:.2f}s ({args.mb / wall:.0f} MiB/s) "
                      f"proxy_cpu={cpu * 1e3:.0f}ms per_mib={per:.3f}ms {other.text()}")
        if stop_perf:
            stop_perf()
        if st:
            report_strace(st, os.path.join(d, "strace"), args.mb * args.repeat, direction, args.tls)
            return
        med = sorted(results)[len(results) // 2]
        print(f"direction={direction} client_leg={'tls' if args.tls else 'plain'} "
              f"mib={args.mb}x{args.repeat} per_mib={med:.3f}ms (median)"
              + ("" if args.repeat > 1 else f" wall={wall:.2f}s {other.text()}"))
    finally:
        if proxy:
            proxy.stop()
        be.terminate()
        benchlib.remove_tree(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024, help="MiB per transfer")
    ap.add_argument("--direction", choices=["up", "down", "both"], default="both")
    ap.add_argument("--tls", action="store_true", help="TLS on the client leg")
    ap.add_argument("--repeat", type=int, default=3, help="transfers; the median is reported")
    ap.add_argument("--perf", metavar="FILE",
                    help="also record the measured transfer with `perf record -g` into FILE")
    ap.add_argument("--strace", action="store_true",
                    help="count the proxy's system calls per MiB instead of its CPU")
    ap.add_argument("--bin", default=benchlib.DEFAULT_BIN)
    args = ap.parse_args()
    for direction in (["up", "down"] if args.direction == "both" else [args.direction]):
        run(args, direction)


if __name__ == "__main__":
    main()
