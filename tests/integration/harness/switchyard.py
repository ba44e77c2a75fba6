"""The Switchyard process under test.

The binary comes from $SWITCHYARD_BIN (default /work/main/build/switchyard,
i.e. <repo>/build/switchyard). Each instance gets its own temp dir holding the
TOML config (written from the string a test gives) and a copy of everything
the process writes to stderr (its log).

Readiness: the proxy logs an info event with the message `ready` once every
listener is bound (text format: `2026-...Z INFO ready listeners=2`; json:
`"msg":"ready"`). stderr is read through a pipe by a thread, so waiting for a
log line is waiting for an event, not polling.
"""

import os
import re
import signal
import subprocess
import threading

from .util import DEFAULT_TIMEOUT, HarnessError, make_tempdir, remove_tree, track, untrack

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
READY_RE = re.compile(r'(\bINFO\s+ready\b|"msg"\s*:\s*"ready")')


def binary_path():
    return os.environ.get("SWITCHYARD_BIN") or os.path.join(REPO_ROOT, "build", "switchyard")


class Switchyard:
    """One proxy process. `config` is the TOML text. `env` adds environment
    variables (e.g. {"PROXY_LOG": "debug"}); `files` maps names to contents
    written beside the config before start (mapping files, tokens, ...)."""

    def __init__(self, config, env=None, files=None, name="switchyard"):
        self.bin = binary_path()
        self.dir = make_tempdir(name)
        track(self)
        self.config_path = os.path.join(self.dir, "switchyard.toml")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.env = dict(os.environ)
        # Sanitizer builds: keep reports readable and on stderr.
        self.env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        self.env.update(env or {})
        for fname, content in (files or {}).items():
            self.write_file(fname, content)
        self.write_config(config)
        self.proc = None
        self._lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None
        self.returncode = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_file(self, name, content, mode=0o644):
        p = self.path(name)
        with open(p, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.chmod(p, mode)
        return p

    def write_config(self, config):
        """(Re)write the config file; a running proxy sees it on reload."""
        self.config_text = config
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config)
        os.replace(tmp, self.config_path)

    # --- lifecycle -----------------------------------------------------------

    def start(self, timeout=DEFAULT_TIMEOUT, args=None, wait_ready=True):
        if not os.access(self.bin, os.X_OK):
            raise HarnessError(
                f"switchyard binary not found or not executable: {self.bin} "
                "(build it, or set SWITCHYARD_BIN)"
            )
        cmd = [self.bin] + (args if args is not None else [self.config_path])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.env, cwd=self.dir)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def _read_stderr(self):
        with open(self.stderr_path, "wb") as copy:
            for raw in iter(self.proc.stderr.readline, b""):
                copy.write(raw)
                copy.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        """Wait for the `ready` event, failing with stderr if the process exits
        first or the bound passes."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._eof or any(READY_RE.search(l) for l in self._lines), timeout
            )
            ready = any(READY_RE.search(l) for l in self._lines)
        if ready:
            return
        if self._eof:
            rc = self.proc.wait(timeout)
            self.returncode = rc
            raise HarnessError(f"switchyard exited with {rc} before ready; stderr:\n{self.log_text()}")
        raise HarnessError(f"switchyard not ready within {timeout}s; stderr:\n{self.log_text()}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        """Wait for the process to exit; returns its exit code (raises on timeout)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"switchyard still running after {timeout}s; stderr:\n{self.log_text()}")
        self._reader.join(timeout)
        self.returncode = rc
        return rc

    def stop(self, timeout=20.0, check=True, sig=signal.SIGTERM):
        """SIGTERM and wait. Returns the exit code; with check, a non-zero exit
        (including a sanitizer report's exit code) fails with stderr."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._reader.join(timeout)
                raise HarnessError(
                    f"switchyard did not exit within {timeout}s of {sig!r}; killed. stderr:\n{self.log_text()}"
                )
        self._reader.join(timeout)
        rc = self.returncode = self.proc.returncode
        if check and rc != 0:
            raise HarnessError(f"switchyard exited with {rc}; stderr:\n{self.log_text()}")
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)

    def cleanup(self):
        self.kill()
        untrack(self)
        remove_tree(self.dir)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                self.stop()
        finally:
            self.cleanup()

    # --- log -----------------------------------------------------------------

    def log_lines(self):
        with self._cond:
            return list(self._lines)

    def log_text(self):
        return "\n".join(self.log_lines())

    def log_mark(self):
        """Number of lines logged so far; pass as `since` to wait_log to look
        only at what comes after."""
        with self._cond:
            return len(self._lines)

    def wait_log(self, pattern, timeout=DEFAULT_TIMEOUT, since=0, flags=re.I):
        """Wait for a log line (from line index `since`) matching the regex.
        Returns the match object. Fails early if the process exits without it."""
        rx = re.compile(pattern, flags)

        def find():
            for l in self._lines[since:]:
                m = rx.search(l)
                if m:
                    return m
            return None

        with self._cond:
            m = None

            def done():
                nonlocal m
                m = find()
                return m is not None or self._eof

            self._cond.wait_for(done, timeout)
        if m is None:
            state = "exited" if self._eof else "still running"
            raise HarnessError(
                f"no log line matching {pattern!r} within {timeout}s (process {state}); log:\n"
                + "\n".join(self.log_lines()[since:])[-8000:]
            )
        return m

    def wait_log_count(self, pattern, count, timeout=DEFAULT_TIMEOUT, since=0, flags=re.I):
        """Wait until at least `count` log lines (from `since`) match the
        regex, and return how many do. The log reaches the harness through a
        pipe and a reader thread, so a line the proxy wrote before answering
        a client may still be on its way when the client has the answer."""
        rx = re.compile(pattern, flags)

        def seen():
            return sum(1 for l in self._lines[since:] if rx.search(l))

        with self._cond:
            self._cond.wait_for(lambda: seen() >= count or self._eof, timeout)
            return seen()

    def log_count(self, pattern, since=0, flags=re.I):
        rx = re.compile(pattern, flags)
        return sum(1 for l in self.log_lines()[since:] if rx.search(l))


def check_config(config_text, timeout=DEFAULT_TIMEOUT, env=None):
    """Run `switchyard --check-config` on a config string; returns
    (exit code, combined output)."""
    sy = Switchyard(config_text, env=env, name="switchyard-check")
    try:
        if not os.access(sy.bin, os.X_OK):
            raise HarnessError(f"switchyard binary not found: {sy.bin}")
        p = subprocess.run([sy.bin, "--check-config", sy.config_path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=sy.env, cwd=sy.dir, timeout=timeout, text=True)
        return p.returncode, p.stdout
    finally:
        sy.cleanup()
