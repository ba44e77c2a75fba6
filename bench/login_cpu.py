#!/usr/bin/python3
"""Proxy CPU per plain IMAP login.

Each login is a whole client session through Switchyard: connect, greeting,
`LOGIN user pass`, the proxy routes (default destination), dials the backend,
replays the login as AUTHENTICATE PLAIN, bridges, then `LOGOUT` through the
bridge and both sides close. Client and backend legs are plain.

The number is the proxy process's utime + stime (/proc/<pid>/stat, all
threads) over N logins, minus what the idle proxy burns in the same wall time
(its heartbeat timers), divided by N.

Backends:
  --backend stub     (default) a tiny asyncio IMAP server in its own process
                     that answers greeting, CAPABILITY, ID, AUTHENTICATE, LOGIN
                     and LOGOUT at once: the stable number.
  --backend dovecot  the real Dovecot of tests/integration/harness (imap, plain
                     listener; users alice/bob/carol): Dovecot's own login and
                     imap processes share the 2 cores, so the proxy's number is
                     noisier and its wall time much longer.

Clients: --concurrency asyncio clients in this process, each running logins
back to back, bound to source addresses 127.0.0.2.. (one per client) so the
ephemeral ports of a long run never run short.

usage: bench/login_cpu.py [--n 2000] [--concurrency 8] [--backend stub|dovecot]
                          [--forwarding none|xclient|proxy] [--threads 2] [--repeat 3]
                          [--pin] [--log-file FILE] [--perf FILE] [--bin build/switchyard]
"""

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

STUB_CAPS = b"IMAP4rev1 SASL-IR ID LITERAL+ AUTH=PLAIN"
PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# --- the stub backend (its own process) --------------------------------------------------------

class StubImap(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""
        self.header_checked = False
        self.pending_ir = None  # tag of an AUTHENTICATE waiting for its response
        transport.write(b"* OK [CAPABILITY " + STUB_CAPS + b"] Stub ready.\r\n")

    def data_received(self, data):
        self.buf += data
        if not self.header_checked:
            if len(self.buf) < 16 and PROXY_V2_SIG.startswith(self.buf[:12]):
                return
            if self.buf.startswith(PROXY_V2_SIG):
                n = 16 + int.from_bytes(self.buf[14:16], "big")
                if len(self.buf) < n:
                    return
                self.buf = self.buf[n:]
            self.header_checked = True
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                return
            line, self.buf = self.buf[:i].rstrip(b"\r"), self.buf[i + 1:]
            self.line(line)

    def line(self, line):
        if self.pending_ir is not None:
            tag, self.pending_ir = self.pending_ir, None
            self.t.write(tag + b" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
            return
        parts = line.split(b" ", 3)
        if len(parts) < 2:
            self.t.write(b"* BAD\r\n")
            return
        tag, cmd = parts[0], parts[1].upper()
        if cmd == b"AUTHENTICATE":
            if len(parts) >= 4:
                self.t.write(tag + b" OK [CAPABILITY IMAP4rev1] Logged in\r\n")
            else:
                self.pending_ir = tag
                self.t.write(b"+ \r\n")
        elif cmd == b"LOGIN":
            self.t.write(tag + b" OK Logged in\r\n")
        elif cmd == b"CAPABILITY":
            self.t.write(b"* CAPABILITY " + STUB_CAPS + b"\r\n" + tag + b" OK Done.\r\n")
        elif cmd == b"ID":
            self.t.write(b"* ID NIL\r\n" + tag + b" OK ID completed.\r\n")
        elif cmd == b"LOGOUT":
            self.t.write(b"* BYE Logging out\r\n" + tag + b" OK Logout completed.\r\n")
            self.t.close()
        else:
            self.t.write(tag + b" OK\r\n")


def stub_main(port, ready):
    async def run():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(StubImap, "127.0.0.1", port, backlog=1024,
                                       reuse_address=True)
        ready.set()
        async with srv:
            await srv.serve_forever()
    asyncio.run(run())


# --- the clients --------------------------------------------------------------------------------

async def one_login(lport, source, user, password):
    s = socket.socket()
    s.setblocking(False)
    s.bind((source, 0))
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, ("127.0.0.1", lport))
    r, w = await asyncio.open_connection(sock=s)
    greet = await r.readline()
    if not greet.startswith(b"* OK"):
        raise RuntimeError(f"greeting: {greet!r}")
    w.write(b"a1 LOGIN " + user + b" " + password + b"\r\n")
    while True:
        line = await r.readline()
        if not line:
            raise RuntimeError("closed during login")
        if line.startswith(b"a1 "):
            if not line.startswith(b"a1 OK"):
                raise RuntimeError(f"login: {line!r}")
            break
    w.write(b"a2 LOGOUT\r\n")
    while await r.read(4096):
        pass
    w.close()


async def run_clients(lport, n, concurrency, users):
    counter = iter(range(n))

    async def worker(k):
        source = f"127.0.0.{2 + k % 200}"
        for i in counter:
            user, pw = users[i % len(users)]
            await one_login(lport, source, user, pw)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))


def timed_logins(pid, lport, n, concurrency, users):
    """(utime+stime seconds, precise on-CPU seconds, wall seconds) of the
    proxy over n logins."""
    c0, p0, t0 = benchlib.cpu_seconds(pid), benchlib.cpu_seconds_precise(pid), time.monotonic()
    x0 = benchlib.context_switches(pid)
    asyncio.run(run_clients(lport, n, concurrency, users))
    time.sleep(0.2)  # the proxy's last close callbacks
    timed_logins.switches = benchlib.context_switches(pid) - x0
    return (benchlib.cpu_seconds(pid) - c0, benchlib.cpu_seconds_precise(pid) - p0,
            time.monotonic() - t0)


# --- main ----------------------------------------------------------------------------------------

def proxy_config(lport, bport, forwarding, threads, log_level="info"):
    return f"""
[server]
threads = {threads}
log_level = "{log_level}"
host_down_threshold = 0
[capabilities.imap]
allow_plain_auth_without_tls = true
[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:{lport}"]
tls = "plain"
max_connections = 10000
[destination.b]
host = "127.0.0.1"
forwarding = "{forwarding}"
allow_plaintext_auth = true
[destination.b.protocol.imap]
port = {bport}
tls = "plain"
[routing]
default_destination = "b"
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--backend", choices=["stub", "dovecot"], default="stub")
    ap.add_argument("--forwarding", choices=["none", "xclient", "proxy"], default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs of N logins; the median is reported")
    ap.add_argument("--pin", action="store_true",
                    help="run the proxy on CPU 1 and the clients and the stub on CPU 0")
    ap.add_argument("--log-file", metavar="FILE",
                    help="send the proxy's log to FILE instead of a pipe read by this script")
    ap.add_argument("--perf", metavar="FILE",
                    help="also record the measured runs with `perf record -g` into FILE")
    ap.add_argument("--bin", default=benchlib.DEFAULT_BIN)
    args = ap.parse_args()

    cleanup = []
    stub_pid = None
    try:
        if args.backend == "stub":
            bport = benchlib.free_port()
            ready = multiprocessing.Event()
            stub = multiprocessing.Process(target=stub_main, args=(bport, ready), daemon=True)
            stub.start()
            cleanup.append(stub.terminate)
            stub_pid = stub.pid
            if not ready.wait(10):
                raise SystemExit("stub backend did not start")
            users = [(b"user%d@example.com" % i, b"secret") for i in range(16)]
        else:
            if args.forwarding == "proxy":
                raise SystemExit("--forwarding proxy needs a haproxy listener: use the stub")
            sys.path.insert(0, os.path.join(benchlib.REPO, "tests", "integration"))
            from harness import Dovecot, TestPKI
            pki = TestPKI()
            cleanup.append(pki.cleanup)
            dv = Dovecot(pki, listeners={"imap": ("plain",)})
            dv.start()
            cleanup.append(dv.cleanup)
            bport = dv.imap
            users = [(b"alice@example.com", b"alicepass"), (b"bob@example.com", b"bobpass"),
                     (b"carol@example.com", b"carolpass")]

        lport = benchlib.free_port()
        proxy = benchlib.Proxy(proxy_config(lport, bport, args.forwarding, args.threads), args.bin,
                               log_file=args.log_file)
        cleanup.append(proxy.stop)

        if args.pin:
            benchlib.pin_process(proxy.pid, {1})
            benchlib.pin_process(os.getpid(), {0})
            if stub_pid:
                benchlib.pin_process(stub_pid, {0})
        # Warm up: allocator arenas, the block pool, Dovecot's login processes.
        timed_logins(proxy.pid, lport, 100, args.concurrency, users)
        idle = benchlib.idle_cpu_rate(proxy.pid, 2.0)
        per, per_precise = [], []
        if args.perf:
            cleanup.append(benchlib.perf_record(proxy.pid, args.perf))
        for _ in range(args.repeat):
            with benchlib.Contention([proxy.pid, stub_pid]) as other:
                cpu, precise, wall = timed_logins(proxy.pid, lport, args.n, args.concurrency,
                                                  users)
            per.append((cpu - idle * wall) / args.n * 1e6)
            per_precise.append((precise - idle * wall) / args.n * 1e6)
            print(f"  run: wall={wall:.2f}s rate={args.n / wall:.0f}/s "
                  f"proxy_cpu={cpu * 1e3:.0f}ms (sched {precise * 1e3:.1f}ms) "
                  f"idle={idle * wall * 1e3:.1f}ms per_login={per[-1]:.1f}us "
                  f"(sched {per_precise[-1]:.1f}us) "
                  f"switches/login={timed_logins.switches / args.n:.1f} {other.text()}")
        med = sorted(per)[len(per) // 2]
        med_p = sorted(per_precise)[len(per_precise) // 2]
        print(f"backend={args.backend} forwarding={args.forwarding} threads={args.threads} "
              f"logins={args.n}x{args.repeat} concurrency={args.concurrency} "
              f"per_login={med:.1f}us (utime+stime, median) sched={med_p:.1f}us")
    finally:
        for f in reversed(cleanup):
            try:
                f()
            except Exception as e:  # keep cleaning up
                print(f"cleanup: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
