"""Helpers shared by the benches in this folder (not a test harness: the
benches measure, they assert nothing).

- free_port(), make_cert(dir)
- cpu_seconds(pid): utime + stime of a process from /proc/<pid>/stat
- vmrss_kib(pid)
- Proxy: writes a TOML config, starts the Switchyard binary, waits for its
  `ready` log event and drains its stderr (the log must never block the
  proxy on a full pipe), stops it with SIGTERM.
- idle_cpu_rate(pid): CPU seconds per wall second of an idle proxy (its
  heartbeat timers), to subtract from a measurement.
- raise_nofile(n): lift this process's RLIMIT_NOFILE (soft and, as root,
  hard) so the children inherit it.
"""

import os
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_BIN = os.path.join(REPO, "build", "switchyard")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_cert(d):
    crt, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key,
                    "-out", crt], check=True, capture_output=True)
    return crt, key


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads, dead ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_precise(pid):
    """Time on CPU of the live threads in nanoseconds, summed from
    /proc/<pid>/task/*/schedstat (the scheduler's own clock, not ticks): a
    cross-check of cpu_seconds() on short runs. Threads that exited are not
    counted (Switchyard's workers and libuv's pool live as long as the
    process)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def context_switches(pid):
    """Voluntary + involuntary context switches of all live threads."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy_seconds():
    """CPU seconds all cores spent busy since boot (/proc/stat): the
    difference over a run, less what the bench's own processes used, tells
    whether something else on the machine competed with the measurement."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


class Contention:
    """Measures the CPU the rest of the machine used while a run went on:
    busy time of all cores minus the given processes' (and this one's)."""

    def __init__(self, pids):
        self.pids = [p for p in pids if p]

    def _ours(self):
        total = sum(cpu_seconds(p) for p in self.pids + [os.getpid()])
        return total

    def __enter__(self):
        self.m0, self.o0, self.t0 = machine_busy_seconds(), self._ours(), time.monotonic()
        return self

    def __exit__(self, *exc):
        self.others = max(0.0, (machine_busy_seconds() - self.m0) - (self._ours() - self.o0))
        self.wall = time.monotonic() - self.t0
        return False

    def text(self):
        return f"others={self.others / self.wall * 100:.0f}%cpu"


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if n <= soft:
        return soft
    if n > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))  # root only
            return n
        except (ValueError, OSError):
            n = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    return n


def idle_cpu_rate(pid, seconds=2.0):
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def perf_record(pid, out):
    """Starts `perf record -g` on pid; returns the function that stops it."""
    p = subprocess.Popen(["perf", "record", "--call-graph", "dwarf,16384", "-F", "2999", "-o", out, "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)

    def stop():
        p.send_signal(signal.SIGINT)
        p.wait(60)
    return stop


class Proxy:
    """One Switchyard process on a config text. Its log (stderr) goes to a
    pipe drained by a thread (the default: like a log collector, every line
    wakes a reader), or with log_file to that file (no reader to wake)."""

    def __init__(self, config, binary=DEFAULT_BIN, env=None, workdir=None, log_file=None):
        self.own_dir = workdir is None  # removed by stop()
        self.dir = workdir or tempfile.mkdtemp(prefix="sy-bench-")
        self.path = os.path.join(self.dir, "bench.toml")
        with open(self.path, "w") as f:
            f.write(config)
        e = dict(os.environ)
        e.update(env or {})
        self.lines = []
        ready = threading.Event()
        if log_file:
            out = open(log_file, "wb")
            self.proc = subprocess.Popen([binary, self.path], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=out, env=e)
            out.close()
            end = time.monotonic() + 30
            while time.monotonic() < end and self.proc.poll() is None:
                with open(log_file, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
                if " ready" in text or '"ready"' in text:
                    ready.set()
                    break
                time.sleep(0.05)
            self.lines = [text]
        else:
            self.proc = subprocess.Popen([binary, self.path], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)

            def drain():
                for raw in iter(self.proc.stderr.readline, b""):
                    line = raw.decode("utf-8", "replace")
                    if len(self.lines) < 200:
                        self.lines.append(line)
                    if " ready" in line or '"ready"' in line:
                        ready.set()
                ready.set()

            threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or self.proc.poll() is not None:
            raise SystemExit("switchyard did not start:\n" + "".join(self.lines))
        self.pid = self.proc.pid

    def log_head(self):
        return "".join(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.own_dir:
            remove_tree(self.dir)


def pin_process(pid, cpus):
    """Sets the CPU affinity of every thread of pid."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, PermissionError):
            pass


def remove_tree(d):
    subprocess.run(["rm", "-rf", d], check=False)
