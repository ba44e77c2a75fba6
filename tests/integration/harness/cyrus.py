"""Cyrus IMAP 3.6 (Debian's cyrus-common + cyrus-caldav) as a JMAP server for
the HTTP routing tests: a private `master` with its own imapd.conf and
cyrus.conf in a temp dir, an `httpd` service with `httpmodules: jmap` on a
free port of 127.0.0.1 and `lmtpd` on a unix socket in the temp dir. No IMAP
service: Debian's cyrus-imapd (imapd) conflicts with dovecot-imapd, which the
other tests need, so only cyrus-common (master, lmtpd) and cyrus-caldav
(httpd) are used, and no Cyrus service binds a mail port.

Users are in a private sasldb (saslpasswd2 -f). Names are user@domain
(`virtdomains: userid`) with `/` as the hierarchy separator. Each user's
mailboxes are created by delivering a welcome message over LMTP
(`autocreate_post`): INBOX plus a folder named after the instance
(`from-<name>`, autocreate_inbox_folders), so every JMAP answer shows which
Cyrus gave it; the message's subject is "welcome to <name>".

Cyrus logs to syslog, which this machine does not have; its telemetry logs
stand in: for each user a directory <configdirectory>/log/<user> exists, and
httpd writes a file per session there with the protocol traffic, so
a test can see which instance served a user (`telemetry(user)`).

master is started as root with -D (foreground) and drops to the `cyrus`
user itself (Debian builds it with that user); the temp dir is owned by it.
CYRUS_WRAPPER="strace -f -o /tmp/cy.txt -e trace=openat,sendto" runs master
under a wrapper: with no syslog, strace shows what Cyrus tried to log.

Cyrus 3.6 facts the tests rely on: /.well-known/jmap answers 301 to
http://<Host>/jmap; the session object's apiUrl is the relative "/jmap/";
every response carries `Connection: Upgrade` + `Upgrade: h2c` (an offer of
HTTP/2, not a switch); Debian builds it without wslay, so no JMAP over
WebSocket (RFC 8887)."""

import glob
import os
import pwd
import shutil
import smtplib
import subprocess

from .util import (DEFAULT_TIMEOUT, Backoff, HarnessError, chown_tree, free_port, make_tempdir,
                   read_text, remove_tree, run, track, untrack, wait_ports_listening)

CYRUS_BIN = "/usr/lib/cyrus/bin"


def available():
    """None when Cyrus's master, httpd and saslpasswd2 are installed, else what is missing."""
    for p in (f"{CYRUS_BIN}/master", f"{CYRUS_BIN}/lmtpd", f"{CYRUS_BIN}/httpd"):
        if not os.access(p, os.X_OK):
            return f"{p} not installed (cyrus-common, cyrus-caldav)"
    if not shutil.which("saslpasswd2"):
        return "saslpasswd2 not installed (sasl2-bin)"
    try:
        pwd.getpwnam("cyrus")
    except KeyError:
        return "no cyrus user (cyrus-common)"
    return None


class Cyrus:
    """One Cyrus instance: `http_port` (JMAP at /jmap/, session at
    /.well-known/jmap), `lmtp_socket`. users: {"alice@example.com": "pw"}."""

    def __init__(self, name, users):
        self.name = name
        self.users = dict(users)
        self.http_port = free_port()
        self.dir = make_tempdir(f"cyrus-{name}")
        track(self)
        self.confdir = os.path.join(self.dir, "conf")
        self.spool = os.path.join(self.dir, "spool")
        for d in (self.confdir, self.spool, os.path.join(self.dir, "sieve"),
                  os.path.join(self.confdir, "socket"), os.path.join(self.confdir, "log")):
            os.makedirs(d, exist_ok=True)
        for u in self.users:
            os.makedirs(os.path.join(self.confdir, "log", u), exist_ok=True)
        self.sasldb = os.path.join(self.confdir, "sasldb2")
        self.imapd_conf = os.path.join(self.dir, "imapd.conf")
        self.cyrus_conf = os.path.join(self.dir, "cyrus.conf")
        self.master_log = os.path.join(self.dir, "master.log")
        self.lmtp_socket = os.path.join(self.confdir, "socket", "lmtp")
        with open(self.imapd_conf, "w") as f:
            f.write(f"""configdirectory: {self.confdir}
partition-default: {self.spool}
sievedir: {self.dir}/sieve
servername: {name}.cyrus.test
syslog_prefix: cyrus-{name}
virtdomains: userid
unixhierarchysep: yes
altnamespace: yes
allowplaintext: yes
sasl_mech_list: PLAIN
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self.sasldb}
lmtpsocket: {self.lmtp_socket}
autocreate_post: yes
autocreate_quota: 0
autocreate_inbox_folders: from-{name}
conversations: yes
conversations_db: twoskip
httpmodules: jmap
httpallowcompress: no
""")
        # master does not hand its -C to what it starts: every command names it
        with open(self.cyrus_conf, "w") as f:
            f.write(f"""START {{
  recover cmd="ctl_cyrusdb -C {self.imapd_conf} -r"
}}
SERVICES {{
  lmtpunix cmd="lmtpd -C {self.imapd_conf}" listen="{self.lmtp_socket}" prefork=0 maxchild=10
  http cmd="httpd -C {self.imapd_conf}" listen="127.0.0.1:{self.http_port}" prefork=0 maxchild=10
}}
EVENTS {{
}}
DAEMON {{
}}
""")
        # sasldb keys are user@realm; Cyrus asks for user@domain in the
        # realm `domain` (the servername's realm is filled too, to be sure)
        entries = []
        for user, pw in self.users.items():
            local, domain = user.split("@", 1)
            entries += [(local, domain, pw), (user, f"{name}.cyrus.test", pw)]
        for user, realm, pw in entries:
            run(["saslpasswd2", "-f", self.sasldb, "-c", "-p", "-u", realm, user], input=pw + "\n")
        cy = pwd.getpwnam("cyrus")
        chown_tree(self.dir, cy.pw_uid, cy.pw_gid)
        os.chmod(self.sasldb, 0o600)
        self.proc = None

    def start(self, timeout=DEFAULT_TIMEOUT):
        self.proc = subprocess.Popen(
            os.environ.get("CYRUS_WRAPPER", "").split()
            + [f"{CYRUS_BIN}/master", "-C", self.imapd_conf, "-M", self.cyrus_conf, "-D",
               "-p", os.path.join(self.dir, "master.pid"), "-L", self.master_log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            wait_ports_listening([self.http_port], timeout * 3, what=f"cyrus {self.name}", host="127.0.0.1")
            b = Backoff(timeout)
            while not os.path.exists(self.lmtp_socket):
                if not b.pause():
                    raise HarnessError(f"cyrus {self.name}: no {self.lmtp_socket} after {timeout}s")
            self._provision()
        except BaseException:
            log = self.log()
            self.cleanup()
            raise HarnessError(f"cyrus {self.name} did not start:\n{log}")
        return self

    def _provision(self):
        """Delivers a welcome message to every user: lmtpd creates the INBOX
        and from-<name> on the way (autocreate_post)."""
        lmtp = smtplib.LMTP(self.lmtp_socket, timeout=DEFAULT_TIMEOUT)
        try:
            for u in self.users:
                msg = (f"From: postmaster@example.com\r\nTo: {u}\r\nSubject: welcome to {self.name}\r\n"
                       f"Message-ID: <welcome-{self.name}-{u}>\r\n\r\nHello from Cyrus {self.name}.\r\n")
                refused = lmtp.sendmail("postmaster@example.com", [u], msg)
                if refused:
                    raise HarnessError(f"cyrus {self.name}: LMTP refused {u}: {refused}")
        finally:
            lmtp.quit()

    def log(self):
        return read_text(self.master_log) if os.path.exists(self.master_log) else ""

    def telemetry(self, user):
        """The protocol traffic Cyrus logged for `user`'s sessions so far."""
        out = []
        for p in sorted(glob.glob(os.path.join(self.confdir, "log", user, "*"))):
            out.append(read_text(p))
        return "".join(out)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            # master stops its children on SIGTERM; the whole session goes after it
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            if self.proc.poll() is None:
                self.proc.wait()
        elif self.proc:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        remove_tree(self.dir)
        untrack(self)
