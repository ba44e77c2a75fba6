"""Small helpers shared by every fixture: ports, temp dirs, waiting, sockets.

Waiting rule (DESIGN.md convention 9): wait for an event when the thing we
wait for produces one (a log line read from a pipe, a process exit seen through
a pidfd, a condition variable). Polling with a short backoff is used only where
the other side gives no signal at all (a log file written by a daemon we did
not spawn as a child, a port that becomes bound), and always with a bound.
"""

import atexit
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time

# Generous bounds: these are upper limits on waits for events, not sleeps.
DEFAULT_TIMEOUT = 10.0

# Everything that owns a process or a temp dir registers here while it is
# live, so that an interpreter exit that skips fixture teardown (pytest
# interrupted, a script that raised) still stops daemons and removes dirs.
_live = []


def track(obj):
    """Register an object with a cleanup() method until untrack(obj)."""
    if obj not in _live:
        _live.append(obj)


def untrack(obj):
    if obj in _live:
        _live.remove(obj)


@atexit.register
def cleanup_all():
    for obj in reversed(list(_live)):
        try:
            obj.cleanup()
        except Exception:  # best effort at exit
            pass
    _live.clear()


class HarnessError(AssertionError):
    """A fixture could not reach the state a test needs (fails the test)."""


_handed_out = set()


def free_port(host="127.0.0.1"):
    """A TCP port that was free on `host` a moment ago (bind 0, read, close).
    The kernel may offer a port again once it is closed, so a port this
    process already handed out is never returned twice: two listeners of
    one test would otherwise collide now and then."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise HarnessError("no fresh free port after 100 tries")


def make_tempdir(prefix, mode=0o755):
    """mkdtemp with a mode other daemons' users can traverse (mkdtemp gives 0700)."""
    path = tempfile.mkdtemp(prefix=f"sy-{prefix}-")
    os.chmod(path, mode)
    return path


def remove_tree(path):
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def chown_tree(path, uid, gid):
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


class Backoff:
    """Deadline-bounded polling for things that give no event to wait on."""

    def __init__(self, timeout, first=0.005, cap=0.1):
        self.deadline = time.monotonic() + timeout
        self.delay = first
        self.cap = cap

    def expired(self):
        return time.monotonic() >= self.deadline

    def pause(self):
        """Sleep the next backoff step; False once the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(self.delay, left))
        self.delay = min(self.delay * 2, self.cap)
        return True


def listening_ports(host=None):
    """Ports in LISTEN state on this host (from /proc/net/tcp{,6}): lets us see
    that a daemon has bound its sockets without connecting to them (a probe
    connection would spawn processes and write log lines tests look at).
    With `host` (an IPv4 address), only sockets bound to that address."""
    want = None
    if host is not None:
        want = "%08X" % int.from_bytes(socket.inet_aton(host), "little")
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] != "0A":  # TCP_LISTEN
                        continue
                    addr, port = parts[1].rsplit(":", 1)
                    if want is None or addr == want:
                        ports.add(int(port, 16))
        except FileNotFoundError:
            pass
    return ports


def wait_ports_listening(ports, timeout=DEFAULT_TIMEOUT, what="daemon", host=None):
    ports = set(ports)
    b = Backoff(timeout)
    while True:
        missing = ports - listening_ports(host)
        if not missing:
            return
        if not b.pause():
            raise HarnessError(f"{what}: ports {sorted(missing)} not listening after {timeout}s")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_pid_exit(pid, timeout):
    """Wait for a process that is not our child to exit (pidfd: an event)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        r, _, _ = select.select([fd], [], [], timeout)
        return bool(r) or not pid_alive(pid)
    finally:
        os.close(fd)


def run(cmd, check=True, **kw):
    """subprocess.run with captured text output and a useful failure message."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and p.returncode != 0:
        raise HarnessError(f"{cmd!r} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def wait_file_regex(path, pattern, timeout=DEFAULT_TIMEOUT, start=0):
    """Wait until the file at `path`, from byte offset `start`, matches the
    regex. Used for daemon log files (no event to wait on). Returns the match."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    b = Backoff(timeout, first=0.01, cap=0.05)
    while True:
        try:
            with open(path, "r", errors="replace") as f:
                f.seek(start)
                m = rx.search(f.read())
                if m:
                    return m
        except FileNotFoundError:
            pass
        if not b.pause():
            text = read_text(path, start)
            raise HarnessError(
                f"pattern {rx.pattern!r} not found in {path} within {timeout}s; content:\n{text[-6000:]}"
            )


def read_text(path, start=0):
    try:
        with open(path, "r", errors="replace") as f:
            f.seek(start)
            return f.read()
    except FileNotFoundError:
        return ""


def file_size(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


# --- sockets -----------------------------------------------------------------


def connect(port, host="127.0.0.1", source=None, timeout=DEFAULT_TIMEOUT):
    """A connected TCP socket, optionally bound to a source address first
    (e.g. 127.0.0.5) so that the address a backend logs is distinguishable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def recv_line(sock, timeout=DEFAULT_TIMEOUT, limit=65536):
    """Read one CRLF/LF-terminated line (bytes, terminator included); b'' on EOF."""
    sock.settimeout(timeout)
    buf = bytearray()
    while not buf.endswith(b"\n") and len(buf) < limit:
        c = sock.recv(1)
        if not c:
            break
        buf += c
    return bytes(buf)


def recv_until(sock, pattern, timeout=DEFAULT_TIMEOUT, limit=1 << 20):
    """Read until the accumulated bytes match the regex (bytes); returns them."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while not rx.search(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(f"timed out waiting for {pattern!r}; got {bytes(buf)!r}")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise HarnessError(f"connection closed waiting for {pattern!r}; got {bytes(buf)!r}")
        buf += chunk
        if len(buf) > limit:
            raise HarnessError("too much data")
    return bytes(buf)


def expect_closed(sock, timeout=5.0):
    """Assert the peer closes the connection within `timeout` (EOF or reset),
    returning whatever bytes arrived before the close (tests usually assert
    they are empty: "closed without a banner"). Returns the elapsed seconds as
    the second element."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    got = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(
                f"connection still open after {timeout}s (received {bytes(got)!r})"
            )
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            break
        except socket.timeout:
            continue
        except OSError as e:  # ssl errors on a reset TLS connection
            if "timed out" in str(e):
                continue
            break
        if not chunk:
            break
        got += chunk
    return bytes(got), time.monotonic() - t0


def closed_or_refused(port, host="127.0.0.1", source=None, timeout=5.0):
    """True if a new connection is refused, or accepted and then closed without
    any byte from the server (a listener that is being torn down)."""
    try:
        s = connect(port, host=host, source=source, timeout=timeout)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    with s:
        data, _ = expect_closed(s, timeout)
        return data == b""
