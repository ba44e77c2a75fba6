"""Fixtures for the integration tests (see harness/ for the classes).

Scopes: the PKI and one shared Dovecot (with an SMTP sink behind its
submission service) live for the whole session; tests tell their traffic
apart with unique subjects, distinct source addresses and log offsets
(`dovecot.log_mark()` / `switchyard.log_mark()`). Tests that need a
differently configured Dovecot, a proxy, Redis or PostgreSQL get their own
through the factory fixtures, which clean up whatever they started even when
the test fails. On a failure the logs of every process a test used are
printed in the report.
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import (BannerServer, Dovecot, Postgres, Redis, SmtpSink, Switchyard, TestPKI,  # noqa: E402
                     free_port)
from harness.util import read_text  # noqa: E402


def _interrupt_on_sigterm(signum, frame):
    # A run stopped with SIGTERM (e.g. by `timeout`) unwinds like Ctrl-C, so
    # fixture finalizers stop the daemons; harness.util's atexit hook is the
    # backstop for anything still registered.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="session")
def certs():
    pki = TestPKI()
    yield pki
    pki.cleanup()


@pytest.fixture(scope="session")
def smtp_sink():
    sink = SmtpSink()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def dovecot(certs, smtp_sink):
    """The shared Dovecot: every service with plain, implicit-TLS and
    haproxy listeners; users alice/bob/carol@example.com (passwords
    alicepass/bobpass/carolpass); master user `master`/`masterpass`."""
    d = Dovecot(certs, relay=(smtp_sink.host, smtp_sink.port))
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def dovecot_log(dovecot, request):
    """The shared Dovecot's log offset at the start of the test; the log from
    there on is printed if the test fails."""
    mark = dovecot.log_mark()
    yield mark
    if _failed(request):
        print(f"--- dovecot log during the test ---\n{dovecot.log_text(mark)[-20000:]}")


@pytest.fixture
def make_dovecot(certs, smtp_sink, request):
    """Factory: make_dovecot(**kwargs) -> a started private Dovecot
    (kwargs as for harness.Dovecot)."""
    started = []

    def factory(**kw):
        kw.setdefault("relay", (smtp_sink.host, smtp_sink.port))
        d = Dovecot(certs, **kw)
        started.append(d)
        return d.start()

    yield factory
    for d in started:
        if _failed(request):
            print(f"--- private dovecot log ---\n{d.log_text()[-20000:]}")
        d.cleanup()


@pytest.fixture
def switchyard(request):
    """Factory: switchyard(config_text, env=None, files=None, start=True) ->
    a Switchyard that is running and ready. At teardown a proxy that is still
    running is stopped with SIGTERM and must exit 0 (sanitizer reports fail
    the test here)."""
    started = []

    def factory(config, env=None, files=None, start=True, timeout=10.0):
        sy = Switchyard(config, env=env, files=files)
        started.append(sy)
        if start:
            sy.start(timeout=timeout)
        return sy

    yield factory
    errors = []
    for sy in started:
        try:
            if sy.running():
                sy.stop(check=True)
        except AssertionError as e:
            errors.append(str(e))
        finally:
            if _failed(request):
                print(f"--- switchyard log ({sy.config_path}) ---\n{read_text(sy.stderr_path)[-20000:]}")
                print(f"--- switchyard config ---\n{sy.config_text}")
            sy.cleanup()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def banner_server():
    """Factory: banner_server(**kwargs) -> a started harness.BannerServer."""
    servers = []

    def factory(**kw):
        s = BannerServer(**kw)
        servers.append(s)
        return s

    yield factory
    for s in servers:
        s.stop()


@pytest.fixture
def redis_server(request):
    r = Redis()
    try:
        r.start()
        yield r
    finally:
        if _failed(request):
            print(f"--- redis log ---\n{read_text(r.log_path)[-5000:]}")
        r.cleanup()


@pytest.fixture
def postgres_server(request):
    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        if _failed(request):
            print(f"--- postgres log ---\n{read_text(pg.log_path)[-5000:]}")
        pg.cleanup()


@pytest.fixture
def port():
    """A free loopback port."""
    return free_port()
