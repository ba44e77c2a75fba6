"""Integration-test harness for Switchyard: real servers (Dovecot, Redis,
PostgreSQL), a test PKI, PROXY-protocol helpers, small stand-in servers for
roles nothing installed fills, and the proxy process itself.

Fixtures live in tests/integration/conftest.py; everything here is plain
classes usable from any test or script."""

from .certs import Cert, TestPKI, describe_der, fingerprint_der, fingerprint_pem_file
from .dovecot import Dovecot
from .servers import BannerServer, SmtpSink
from .stores import Postgres, Redis
from .switchyard import Switchyard, binary_path, check_config
from .util import (HarnessError, closed_or_refused, connect, expect_closed, free_port, recv_line,
                   recv_until)
from . import clients, proxyproto

__all__ = [
    "BannerServer", "Cert", "Dovecot", "HarnessError", "Postgres", "Redis", "SmtpSink", "Switchyard", "TestPKI",
    "binary_path", "check_config", "clients", "closed_or_refused", "connect", "describe_der", "expect_closed",
    "fingerprint_der", "fingerprint_pem_file", "free_port", "proxyproto", "recv_line", "recv_until",
]
