"""The command line: --version, --help, --check-config, PROXY_CONFIG, usage
errors and the exit statuses operators script against."""

import os
import subprocess
import tempfile

from harness.switchyard import binary_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "switchyard.toml")


def run(*args, env=None):
    e = dict(os.environ)
    e.pop("PROXY_CONFIG", None)
    e.update(env or {})
    return subprocess.run([binary_path(), *args], capture_output=True, text=True, env=e,
                          timeout=30)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("switchyard ")
    r = run("--help")
    assert r.returncode == 0 and "--check-config" in r.stdout


def test_no_configuration_is_a_usage_error():
    r = run()
    assert r.returncode == 2
    assert "PROXY_CONFIG" in r.stderr and "usage:" in r.stderr


def test_unknown_option():
    r = run("--frobnicate")
    assert r.returncode == 2 and "unknown option" in r.stderr


def test_check_config_example_ok():
    r = run("--check-config", EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration ok"


def test_check_config_from_environment():
    r = run("--check-config", env={"PROXY_CONFIG": EXAMPLE})
    assert r.returncode == 0, r.stderr


def test_check_config_reports_every_error_with_its_key():
    bad = """
[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:1143"]
tls = "starttls"
proxy_protocol = "required"
[listener.smtp]
protocol = "smtp"
bind = []
tls = "starttls"
[destination.legacy]
host = "10.0.0.1"
tls_pinned_cert_sha256 = "zz"
[destination.legacy.protocol.imap]
port = 993
tls = "implicit"
[routing]
default_destination = "legcy"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(bad)
    try:
        r = run("--check-config", f.name)
    finally:
        os.unlink(f.name)
    assert r.returncode == 1
    for key in ("routing.default_destination", "listener.imap.proxy_trusted",
                "listener.smtp.bind", "listener.smtp.tls",
                "destination.legacy.tls_pinned_cert_sha256",
                "destination.legacy.tls_server_name"):
        assert key in r.stderr, (key, r.stderr)


def test_toml_syntax_error_has_line_and_column():
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("[server]\nthreads = = 2\n")
    try:
        r = run("--check-config", f.name)
    finally:
        os.unlink(f.name)
    assert r.returncode == 1
    assert "line 2" in r.stderr and "column" in r.stderr


def test_unknown_key_is_named():
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write('[server]\nthreds = 2\n')
    try:
        r = run("--check-config", f.name)
    finally:
        os.unlink(f.name)
    assert r.returncode == 1 and "server.threds" in r.stderr


def test_passthrough_xclient_leg_is_accepted_with_a_warning():
    """A reference configuration may set forwarding = "xclient" on an lmtp
    leg (the reference ignores it): --check-config accepts it, exit 0, and
    warns naming the key."""
    cfg = """
[routing]
default_destination = "relay"
smtp_passthrough_destination = "relay"
[destination.relay]
host = "127.0.0.1"
[destination.relay.protocol.smtp]
port = 25
tls = "plain"
[destination.relay.protocol.lmtp]
port = 24
tls = "plain"
forwarding = "xclient"
[listener.lmtp]
protocol = "lmtp"
bind = ["127.0.0.1:1024"]
tls = "plain"
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(cfg)
    try:
        r = run("--check-config", f.name)
    finally:
        os.unlink(f.name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configuration ok"
    assert "warning: destination.relay.protocol.lmtp.forwarding:" in r.stderr, r.stderr


def test_check_config_refuses_what_startup_would():
    """--check-config runs the same URL parsers and file checks as the
    stores: a rediss:// URL whose CA file cannot be read, or a URL libpq
    cannot parse, is refused here, naming the key, not only when the process
    starts. A plain rediss:// URL is accepted."""
    base = """
[routing]
default_destination = "main"
[destination.main]
host = "127.0.0.1"
[destination.main.protocol.imap]
port = 993
tls = "implicit"
[mapping]
"""
    for store, want in (('source = "redis"\n[mapping.redis]\nurl = "rediss://:pw@127.0.0.1:6380"\n'
                         'tls_ca_file = "/nonexistent/redis-ca.pem"\n',
                         "mapping.redis.tls_ca_file: cannot read /nonexistent/redis-ca.pem"),
                        ('source = "sql"\n[mapping.sql]\nurl = "postgres://u@h/db?nosuch=1"\n',
                         "mapping.sql.url: libpq cannot parse it")):
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(base + store)
        try:
            r = run("--check-config", f.name)
        finally:
            os.unlink(f.name)
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert "pw@" not in r.stderr  # the URL's password is never echoed
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        valid = base.replace('host = "127.0.0.1"\n', 'host = "127.0.0.1"\ntls_server_name = "mail.example.com"\n')
        f.write(valid + 'source = "redis"\n[mapping.redis]\nurl = "rediss://:pw@127.0.0.1:6380"\n')
    try:
        r = run("--check-config", f.name)
    finally:
        os.unlink(f.name)
    assert r.returncode == 0 and r.stdout.strip() == "configuration ok", r.stdout + r.stderr


def test_running_proxy_is_not_dumpable():
    """The running proxy holds credentials between a login and its replay,
    so it sets PR_SET_DUMPABLE to 0: no core file can hold them, and its
    /proc files belong to root. Shown without root's privileges: the proxy
    runs as nobody, and another process of nobody cannot read its
    /proc/PID/environ (it could if the proxy were dumpable)."""
    import shutil
    import time
    from harness.util import free_port, make_tempdir, remove_tree, wait_ports_listening
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        import pytest
        pytest.skip("needs root and setpriv to run the proxy as another user")
    port = free_port()
    d = make_tempdir("dumpable")  # 0755 below /tmp: nobody can read the config
    cfg = os.path.join(d, "switchyard.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[routing]
default_destination = "main"
[destination.main]
host = "127.0.0.1"
allow_plaintext_auth = true
[destination.main.protocol.imap]
port = 1
tls = "plain"
[capabilities.imap]
allow_plain_auth_without_tls = true
[listener.imap]
protocol = "imap"
bind = ["127.0.0.1:{port}"]
tls = "plain"
""")
    os.chmod(cfg, 0o644)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = dict(os.environ)
    env.pop("PROXY_CONFIG", None)
    p = subprocess.Popen(nobody + [binary_path(), cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    try:
        wait_ports_listening([port], 10, "switchyard as nobody")
        r = subprocess.run(nobody + ["cat", f"/proc/{p.pid}/environ"], capture_output=True)
        assert r.returncode != 0 and b"Permission denied" in r.stderr, r
        st = os.stat(f"/proc/{p.pid}/environ")
        assert st.st_uid == 0, "the proxy's /proc files should belong to root once not dumpable"
    finally:
        p.terminate()
        p.wait(timeout=15)
        remove_tree(d)
