"""Mapping-store backends: a private redis-server and a private PostgreSQL
cluster, each on a loopback port in its own temp dir."""

import os
import pwd
import signal
import socket
import subprocess
import threading

from .util import (DEFAULT_TIMEOUT, HarnessError, chown_tree, free_port, make_tempdir, read_text,
                   remove_tree, run, track, untrack)

def _pg_bin():
    """The newest installed PostgreSQL server binaries (Debian keeps them
    per major version under /usr/lib/postgresql/<major>/bin)."""
    import glob
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else "/usr/lib/postgresql/15/bin"


PG_BIN = _pg_bin()


class Redis:
    """redis-server --port P --bind 127.0.0.1 --save '' --appendonly no.

    Readiness is the "Ready to accept connections" line on its stdout (read
    through a pipe: an event), confirmed with PING -> PONG."""

    def __init__(self, password=None, persist=False, tls=None, cert=None, auth_clients=False):
        """tls: a harness TestPKI to serve TLS only (`--port 0 --tls-port P`)
        with `cert` (default: the PKI's localhost certificate, which names
        DNS:localhost and IP:127.0.0.1); auth_clients requires a client
        certificate issued by the PKI's CA."""
        self.persist = persist  # an append-only file synced on every write: survives SIGKILL
        self.port = free_port()
        self.host = "127.0.0.1"
        self.password = password
        self.tls = tls
        self.cert = cert or (tls.localhost if tls else None)
        self.auth_clients = auth_clients
        self.dir = make_tempdir("redis")
        track(self)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        self._ready = threading.Event()
        self._reader = None

    @property
    def url(self):
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    def cli_args(self):
        """redis-cli arguments that reach this server (TLS included)."""
        args = ["-h", self.host, "-p", str(self.port)]
        if self.tls:
            args += ["--tls", "--cacert", self.tls.ca_cert]
            if self.auth_clients:
                args += ["--cert", self.tls.client.cert, "--key", self.tls.client.key]
        return args

    def start(self, timeout=DEFAULT_TIMEOUT):
        cmd = ["redis-server", "--port", str(self.port), "--bind", self.host, "--save", "",
               "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--protected-mode", "no"]
        if self.tls:
            cmd[2] = "0"  # no plaintext port
            cmd += ["--tls-port", str(self.port), "--tls-cert-file", self.cert.cert, "--tls-key-file",
                    self.cert.key, "--tls-ca-cert-file", self.tls.ca_cert, "--tls-auth-clients",
                    "yes" if self.auth_clients else "no"]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.persist:
            cmd[cmd.index("--appendonly") + 1] = "yes"
            cmd += ["--appendfsync", "always"]
        self._ready = threading.Event()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise HarnessError(f"redis-server not ready within {timeout}s:\n{read_text(self.log_path)}")
        if self.command("PING") != "PONG":
            raise HarnessError("redis-server did not answer PING")
        return self

    def _read(self):
        with open(self.log_path, "wb") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                if b"Ready to accept connections" in raw:
                    self._ready.set()
        self._ready.set()  # EOF: let start() notice the exit

    def command(self, *args, timeout=5.0):
        """Send one command (RESP) and return the decoded reply: str, int,
        None, list, or raise for an error reply."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as raw:
            s = raw
            if self.tls:
                # The tests also serve certificates for other names, and
                # self-signed ones: this client only needs a connection.
                ctx = self.tls.client_context(verify=self.cert.ca_signed)
                ctx.check_hostname = False
                if self.auth_clients:
                    ctx.load_cert_chain(self.tls.client.cert, self.tls.client.key)
                s = ctx.wrap_socket(raw, server_hostname=self.host)
            f = s.makefile("rb")
            if self.password:
                s.sendall(_resp_encode(["AUTH", self.password]))
                _resp_read(f)
            s.sendall(_resp_encode(args))
            return _resp_read(f)

    def stop(self, timeout=DEFAULT_TIMEOUT):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader:
            self._reader.join(timeout)
        return self.proc.returncode

    def restart(self, timeout=DEFAULT_TIMEOUT):
        """Starts again on the same port (after stop() or a kill)."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        if self._reader:
            self._reader.join(timeout)
        return self.start(timeout)

    def cleanup(self):
        try:
            self.stop()
        finally:
            untrack(self)
            remove_tree(self.dir)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


def _resp_encode(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line:
        raise HarnessError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise HarnessError(f"redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise HarnessError(f"bad RESP reply {line!r}")


class Postgres:
    """A throwaway PostgreSQL 15 cluster: initdb and pg_ctl run as the
    `postgres` user in a temp dir owned by it; trust authentication on
    127.0.0.1 only; socket dir inside the temp dir. `pg_ctl -w` waits for
    the server to accept connections (its own readiness event)."""

    def __init__(self, user="postgres", database="postgres"):
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = user
        self.database = database
        self.dir = make_tempdir("pg")
        track(self)
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        pw = pwd.getpwnam("postgres")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        chown_tree(self.dir, self.uid, self.gid)
        self.started = False

    @property
    def url(self):
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def _as_postgres(self, cmd, timeout=60, check=True):
        return run(["runuser", "-u", "postgres", "--"] + cmd, check=check, timeout=timeout, cwd=self.dir)

    def start(self, timeout=30):
        self._as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                           "-E", "UTF8", "--no-sync", "--no-instructions"], timeout=120)
        opts = (f"-c listen_addresses={self.host} -p {self.port} -k {self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        p = self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log_path, "-o", opts,
                               "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 10, check=False)
        if p.returncode != 0:
            raise HarnessError(f"pg_ctl start failed:\n{p.stdout}{p.stderr}\n{read_text(self.log_path)}")
        self.started = True
        return self

    def psql(self, sql, database=None, check=True):
        """Run SQL with psql (unaligned, tuples only); returns stdout stripped."""
        p = run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port), "-U",
                 self.user, "-d", database or self.database, "-At", "-c", sql], check=check, timeout=30)
        return p.stdout.strip()

    def kill(self, timeout=30):
        """Stops at once, as a crash would (`pg_ctl -m immediate`: no
        shutdown checkpoint, clients cut off)."""
        self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t",
                           str(int(timeout)), "stop"], timeout=timeout + 10)
        self.started = False

    def restart(self, timeout=30):
        """Starts the existing cluster again on the same port (after kill())."""
        opts = (f"-c listen_addresses={self.host} -p {self.port} -k {self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        p = self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log_path, "-o", opts,
                               "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 10, check=False)
        if p.returncode != 0:
            raise HarnessError(f"pg_ctl start failed:\n{p.stdout}{p.stderr}\n{read_text(self.log_path)}")
        self.started = True
        return self

    def stop(self, timeout=30):
        # Also after a failed or interrupted start: whatever wrote a
        # postmaster.pid is asked to stop.
        if not self.started and not os.path.exists(os.path.join(self.data, "postmaster.pid")):
            return
        self.started = False
        self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", str(int(timeout)),
                           "stop"], timeout=timeout + 10)

    def cleanup(self):
        try:
            self.stop()
        finally:
            untrack(self)
            remove_tree(self.dir)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
