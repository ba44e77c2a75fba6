"""Cyrus IMAP 3.6 (Debian's cyrus-imapd + cyrus-caldav) as a JMAP server for
the HTTP routing tests: a private `master` with its own imapd.conf and
cyrus.conf in a temp dir, an `httpd` service with `httpmodules: jmap` and an
`imapd` service (used only to create the users' mailboxes), each on a free
port of 127.0.0.1 (never the well-known mail ports: Dovecot's tests use them).

Users are in a private sasldb (saslpasswd2 -f); `cyrus` is the admin. Names
are user@domain (`virtdomains: userid`) with `/` as the hierarchy separator.
Each user's INBOX is created through IMAP by the admin, plus a folder named
after the instance (`from-<name>`), so a JMAP Mailbox/get shows which Cyrus
answered.

Cyrus logs to syslog, which this machine does not have; its telemetry logs
stand in: for each user a directory <configdirectory>/log/<user> exists, and
httpd and imapd write a file per session there with the protocol traffic, so
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
import imaplib
import os
import pwd
import shutil
import subprocess

from .util import (DEFAULT_TIMEOUT, HarnessError, chown_tree, free_port, make_tempdir, read_text,
                   remove_tree, run, track, untrack, wait_ports_listening)

CYRUS_BIN = "/usr/lib/cyrus/bin"
ADMIN = "cyrus"
ADMIN_PASSWORD = "cyrusadminpw"


def available():
    """None when Cyrus's master, httpd and saslpasswd2 are installed, else what is missing."""
    for p in (f"{CYRUS_BIN}/master", f"{CYRUS_BIN}/httpd", f"{CYRUS_BIN}/imapd"):
        if not os.access(p, os.X_OK):
            return f"{p} not installed (cyrus-imapd, cyrus-caldav)"
    if not shutil.which("saslpasswd2"):
        return "saslpasswd2 not installed (sasl2-bin)"
    try:
        pwd.getpwnam("cyrus")
    except KeyError:
        return "no cyrus user (cyrus-common)"
    return None


class Cyrus:
    """One Cyrus instance: `http_port` (JMAP at /jmap/, session at
    /.well-known/jmap), `imap_port`. users: {"alice@example.com": "pw"}."""

    def __init__(self, name, users):
        self.name = name
        self.users = dict(users)
        self.http_port = free_port()
        self.imap_port = free_port()
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
        with open(self.imapd_conf, "w") as f:
            f.write(f"""configdirectory: {self.confdir}
partition-default: {self.spool}
sievedir: {self.dir}/sieve
servername: {name}.cyrus.test
syslog_prefix: cyrus-{name}
admins: {ADMIN}
virtdomains: userid
unixhierarchysep: yes
altnamespace: yes
allowplaintext: yes
sasl_mech_list: PLAIN
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self.sasldb}
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
  imap cmd="imapd -C {self.imapd_conf}" listen="127.0.0.1:{self.imap_port}" prefork=0 maxchild=10
  http cmd="httpd -C {self.imapd_conf}" listen="127.0.0.1:{self.http_port}" prefork=0 maxchild=10
}}
EVENTS {{
}}
DAEMON {{
}}
""")
        # sasldb keys are user@realm; Cyrus asks for the admin in the realm
        # of its servername, for user@domain in the realm `domain`.
        entries = [(ADMIN, f"{name}.cyrus.test", ADMIN_PASSWORD)]
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
            os.environ.get("CYRUS_WRAPPER", "").split() + [f"{CYRUS_BIN}/master", "-C", self.imapd_conf, "-M", self.cyrus_conf, "-D",
             "-p", os.path.join(self.dir, "master.pid"), "-L", self.master_log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            wait_ports_listening([self.http_port, self.imap_port], timeout * 3, what=f"cyrus {self.name}",
                                 host="127.0.0.1")
            self._provision()
        except BaseException:
            log = self.log()
            self.cleanup()
            raise HarnessError(f"cyrus {self.name} did not start:\n{log}")
        return self

    def _provision(self):
        """INBOX and a from-<name> folder for each user, created by the admin."""
        imap = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=DEFAULT_TIMEOUT)
        try:
            imap.login(ADMIN, ADMIN_PASSWORD)
            for u in self.users:
                local, domain = u.split("@", 1)
                for mbox in (f"user/{local}@{domain}", f"user/{local}/from-{self.name}@{domain}"):
                    typ, data = imap.create(mbox)
                    if typ != "OK":
                        raise HarnessError(f"cyrus {self.name}: CREATE {mbox}: {typ} {data}")
        finally:
            imap.logout()

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
