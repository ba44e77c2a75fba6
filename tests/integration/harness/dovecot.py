"""A private Dovecot instance on loopback ports, configured from scratch in a
temp dir (see DESIGN.md "Test environment notes").

Gotchas baked in here (learned on these machines):
- Dovecot is started as root but refuses to run mail processes as root: test
  users get uid/gid 65534 (nobody/nogroup) and their homes are chowned.
- The auth process runs as the `dovecot` user and must read the passwd files:
  the instance dir is 0755 and the files 0644.
- The daemon keeps inherited pipes open, so its stdout/stderr go to a file.
- It gives no readiness signal, and `dovecot -c` returns as soon as it has
  forked (under load, before the daemon has written master.pid). We poll for
  the pid file, then for every port in LISTEN state in /proc/net/tcp (not by
  connecting: a probe connection would spawn login processes and write log
  lines tests look at).
- Stop it by the pid in <base_dir>/master.pid. The master sleeps about 1 s
  on SIGTERM to let its log process drain (about 6 s when signalled within a
  few ms of starting), hence one shared instance per session.
- A failed login delays the next ones from the same IP (anvil auth penalty)
  and the failure reply by auth_failure_delay: both are switched off here.
- OAUTHBEARER/XOAUTH2 in Dovecot 2.3 verify the bearer token as the user's
  password through the ordinary passdbs, so a passwd-file user whose password
  is a token string can log in with that token (used by the token tests).
"""

import os
import re
import signal
import subprocess
from dataclasses import dataclass

from .util import (DEFAULT_TIMEOUT, Backoff, HarnessError, chown_tree, file_size, free_port, make_tempdir,
                   pid_alive, read_text, remove_tree, track, untrack, wait_file_regex, wait_pid_exit,
                   wait_ports_listening)

MAIL_UID = 65534
MAIL_GID = 65534

DEFAULT_USERS = {
    "alice@example.com": "alicepass",
    "bob@example.com": "bobpass",
    "carol@example.com": "carolpass",
}
DEFAULT_MASTERS = {"master": "masterpass"}

# Listener kinds per service: "plain" (143-style, STARTTLS available),
# "tls" (993-style implicit TLS) and "haproxy" (plain + PROXY header required).
SERVICES = {
    # service name in the config: (login service, listener name prefix, protocol name)
    "imap": ("imap-login", "imap"),
    "pop3": ("pop3-login", "pop3"),
    "submission": ("submission-login", "submission"),
    "sieve": ("managesieve-login", "sieve"),
    "lmtp": ("lmtp", "lmtp"),
}
KINDS = ("plain", "tls", "haproxy")


# The inet listeners Dovecot defines by default, by (name prefix, kind).
_DEFAULT_LISTENERS = {("imap", "plain"), ("imap", "tls"), ("pop3", "plain"), ("pop3", "tls"),
                      ("submission", "plain"), ("sieve", "plain")}


@dataclass
class Listener:
    service: str
    kind: str
    port: int


class Dovecot:
    """One Dovecot instance. Ports are attributes: imap, imaps, imap_haproxy,
    pop3, pop3s, pop3_haproxy, submission, submissions, submission_haproxy,
    sieve, sieves, sieve_haproxy, lmtp, lmtps, lmtp_haproxy (None when that
    listener is not configured).

    `listeners` maps service -> iterable of kinds; by default every service
    gets every kind. `extra_conf` is appended verbatim to dovecot.conf.
    `relay` is the (host, port) submission relays to (an SmtpSink).
    """

    def __init__(self, certs, users=None, masters=None, listeners=None, relay=None, extra_conf="",
                 ssl_cert=None, address="127.0.0.1", ports_of=None):
        self.certs = certs
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.masters = dict(DEFAULT_MASTERS if masters is None else masters)
        self.relay = relay
        self.extra_conf = extra_conf
        self.ssl_cert = ssl_cert or certs.localhost
        self._want = listeners if listeners is not None else {s: KINDS for s in SERVICES}
        # `address`: the loopback address every listener binds; `ports_of`:
        # another Dovecot whose port numbers to reuse (on another address),
        # as the pods behind one Service all listen on the same ports.
        self.address = address
        self._assign_ports(ports_of)
        self.dir = make_tempdir("dovecot")
        track(self)
        self.base_dir = os.path.join(self.dir, "run")
        self.state_dir = os.path.join(self.dir, "state")
        self.home_root = os.path.join(self.dir, "home")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.stdio_path = os.path.join(self.dir, "dovecot.stdio")
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.pid = None

    def _assign_ports(self, ports_of=None):
        self.listeners = []
        for service in SERVICES:
            for kind in KINDS:
                port = None
                if kind in self._want.get(service, ()):
                    port = getattr(ports_of, self._attr(service, kind)) if ports_of else None
                    port = port or free_port(self.address)
                    self.listeners.append(Listener(service, kind, port))
                setattr(self, self._attr(service, kind), port)

    @staticmethod
    def _attr(service, kind):
        return {"plain": service, "tls": service + "s", "haproxy": service + "_haproxy"}[kind]

    # --- configuration ---------------------------------------------------------

    def home(self, user):
        return os.path.join(self.home_root, user)

    def maildir(self, user):
        return os.path.join(self.home(user), "Maildir")

    def _write_files(self):
        for d in (self.base_dir, self.state_dir, self.home_root):
            os.makedirs(d, mode=0o755, exist_ok=True)
        with open(os.path.join(self.dir, "users"), "w") as f:
            for user, pw in self.users.items():
                f.write(f"{user}:{{PLAIN}}{pw}:{MAIL_UID}:{MAIL_GID}::{self.home(user)}::\n")
        with open(os.path.join(self.dir, "masters"), "w") as f:
            for user, pw in self.masters.items():
                f.write(f"{user}:{{PLAIN}}{pw}\n")
        for name in ("users", "masters"):
            os.chmod(os.path.join(self.dir, name), 0o644)
        for user in self.users:
            os.makedirs(self.home(user), exist_ok=True)
            chown_tree(self.home(user), MAIL_UID, MAIL_GID)
        with open(self.conf_path, "w") as f:
            f.write(self.config_text())

    def _listener_block(self, service, name_prefix):
        out = []
        for l in self.listeners:
            if l.service != service:
                continue
            name = {"plain": name_prefix, "tls": name_prefix + "s", "haproxy": name_prefix + "_haproxy"}[l.kind]
            out.append(f"  inet_listener {name} {{\n    address = {self.address}\n    port = {l.port}\n")
            if l.kind == "tls":
                out.append("    ssl = yes\n")
            if l.kind == "haproxy":
                out.append("    haproxy = yes\n")
            out.append("  }\n")
        # Dovecot's built-in listeners (imaps on 993, pop3s on 995, ...) stay
        # bound unless redefined: port 0 turns off every one not asked for,
        # so two harness Dovecots never collide on a default port.
        emitted = {l.kind for l in self.listeners if l.service == service}
        for kind, name in (("plain", name_prefix), ("tls", name_prefix + "s")):
            if kind not in emitted and (name_prefix, kind) in _DEFAULT_LISTENERS:
                out.append(f"  inet_listener {name} {{\n    port = 0\n  }}\n")
        return "".join(out)

    def config_text(self):
        protocols = []
        for service in ("imap", "pop3", "submission", "sieve", "lmtp"):
            if any(l.service == service for l in self.listeners):
                protocols.append(service)
        relay_host, relay_port = self.relay or ("127.0.0.1", 9)
        c = f"""# Generated by tests/integration/harness/dovecot.py
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = {os.path.basename(self.dir)}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = {" ".join(protocols) or "none"}
listen = {self.address}
shutdown_clients = yes

ssl = yes
ssl_cert = <{self.ssl_cert.cert}
ssl_key = <{self.ssl_cert.key}
ssl_ca = <{self.certs.ca_cert}

first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_uid = {MAIL_UID}
mail_gid = {MAIL_GID}

auth_mechanisms = plain login oauthbearer xoauth2
auth_master_user_separator = %
auth_verbose = yes
auth_verbose_passwords = no
disable_plaintext_auth = no
login_trusted_networks = 127.0.0.0/8
haproxy_trusted_networks = 127.0.0.0/8
haproxy_timeout = 5s
# Tests log in with wrong passwords on purpose: no 2 s failure delay, and no
# per-IP auth penalty (which would slow later logins from 127.0.0.1).
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  master = yes
  args = scheme=PLAIN {self.dir}/masters
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.dir}/users
}}

hostname = dovecot.test
submission_relay_host = {relay_host}
submission_relay_port = {relay_port}
submission_relay_ssl = no
submission_relay_trusted = no

plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}

service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
{self._listener_block("imap", "imap")}}}
service pop3-login {{
{self._listener_block("pop3", "pop3")}}}
service submission-login {{
{self._listener_block("submission", "submission")}}}
service managesieve-login {{
{self._listener_block("sieve", "sieve")}}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
{self._listener_block("lmtp", "lmtp")}}}
"""
        return c + self.extra_conf

    # --- lifecycle ----------------------------------------------------------

    def start(self, timeout=DEFAULT_TIMEOUT, attempts=3):
        """Start the daemon and wait until its pid file exists and every
        listener is bound. free_port() can race with other processes on the
        machine: if a port was taken meanwhile, new ports are picked and the
        start is retried (ports are only read after start returns)."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except HarnessError as e:
                self.stop()
                if "Address already in use" not in str(e) or attempt == attempts - 1:
                    raise
                self._assign_ports()

    def _start_once(self, timeout):
        self._write_files()
        with open(self.stdio_path, "wb") as out:
            p = subprocess.run(["dovecot", "-c", self.conf_path], stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=timeout)
        if p.returncode != 0:
            raise HarnessError(
                f"dovecot failed to start (exit {p.returncode}):\n{read_text(self.stdio_path)}\n"
                f"log:\n{read_text(self.log_path)}"
            )
        # `dovecot` returns once it has forked; the daemon writes its pid file
        # a moment later (no event to wait on: poll, bounded).
        pidfile = os.path.join(self.base_dir, "master.pid")
        b = Backoff(timeout)
        while True:
            try:
                with open(pidfile) as f:
                    self.pid = int(f.read().strip())
                break
            except (FileNotFoundError, ValueError):
                if not b.pause():
                    raise HarnessError(f"dovecot wrote no pid file within {timeout}s; log:\n{self.log_text()}")
        try:
            wait_ports_listening([l.port for l in self.listeners], timeout, "dovecot", host=self.address)
        except HarnessError:
            raise HarnessError(f"dovecot listeners not up; log:\n{self.log_text()}")
        return self

    def _master_pids(self):
        """Pids of running processes started as `dovecot -c <our conf>`: the
        master of this instance even if we never read its pid file."""
        pids = []
        needle = self.conf_path.encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if needle in argv and pid_alive(int(entry)):
                pids.append(int(entry))
        return pids

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """SIGTERM the master and wait for it to exit. Works for a start that
        failed half-way too (the master is then found by its config path)."""
        pids = [self.pid] if self.pid is not None else self._master_pids()
        self.pid = None
        stuck = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if not wait_pid_exit(pid, timeout):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_pid_exit(pid, timeout)
                stuck.append(pid)
        if stuck:
            raise HarnessError(f"dovecot (pid {stuck}) did not exit on SIGTERM within {timeout}s")

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

    # --- observation ---------------------------------------------------------

    def log_text(self, since=0):
        return read_text(self.log_path, since)

    def log_mark(self):
        """An offset into the log: pass it as `since` to look only at what
        happened after this point."""
        return file_size(self.log_path)

    def wait_log(self, pattern, timeout=DEFAULT_TIMEOUT, since=0):
        """Wait until the log (from offset `since`) matches the regex; returns the match."""
        return wait_file_regex(self.log_path, pattern, timeout, since)

    def messages(self, user):
        """Raw bytes of every message in the user's INBOX (new/ and cur/)."""
        out = []
        md = self.maildir(user)
        for sub in ("new", "cur"):
            d = os.path.join(md, sub)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    with open(os.path.join(d, name), "rb") as f:
                        out.append(f.read())
        return out

    def find_message(self, user, subject):
        """The raw message with that exact Subject, or None."""
        rx = re.compile(rb"^Subject: " + re.escape(subject.encode()) + rb"\r?$", re.M | re.I)
        for m in self.messages(user):
            head = m.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
            if rx.search(head):
                return m
        return None

    def has_message(self, user, subject):
        return self.find_message(user, subject) is not None
