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
