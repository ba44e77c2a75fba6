"""Switchyard's connection core, exercised through the pass-through protocols
(lmtp, smtp): listeners, inbound PROXY protocol, PROXY v2 towards the
backend, TLS on both legs (SNI, policy, pinning, mutual TLS), connection
limits, pre-auth timeout, the circuit breaker and SIGTERM drain.

Backends are the shared Dovecot (its plain, implicit-TLS and haproxy=yes
LMTP/submission listeners) and, where the test is about the connection and
not about mail, harness.BannerServer (a banner + echo server, optionally
TLS and requiring a client certificate).

Log lines these tests rely on (matched loosely, case-insensitive; the text
format is `<time> <LEVEL> <message> key=value ...`):
  - `INFO ready ...` once every listener is bound (harness readiness);
  - `session closed` when a bridged session ends (test_lmtp_forwarding,
    test_max_connections waits for it before reconnecting);
  - a line mentioning `max_connections` / `connection limit` /
    `too many connections` / `limit reached` when a connection is dropped by
    the listener cap;
  - a line mentioning `proxy` together with one of reject / invalid /
    untrusted / not trusted / missing / malformed / bad / refus / garbage
    when an inbound PROXY header is refused;
  - a line mentioning `timeout` or `timed out` when preauth_timeout fires;
  - a line mentioning backend / connect / dial together with fail / refused /
    error / unreachable when the backend cannot be reached;
  - a line containing the word `down` and the destination id (`dovecot`)
    when the circuit breaker marks a destination down;
  - a line mentioning verif / pin / fingerprint / certificate / hostname /
    tls / handshake together with fail / mismatch / error / reject /
    untrusted when backend TLS verification fails;
  - a line mentioning shutting down / shutdown / drain / stopping / terminat
    when SIGTERM starts the drain.

Dovecot's side (see test_harness.py): LMTP logs `Connect from <ip>`.
"""

import json
import re
import signal
import smtplib
import ssl
import time

import pytest

from harness import clients, proxyproto
from harness.certs import describe_der, fingerprint_der
from harness.util import closed_or_refused, connect, expect_closed, free_port, recv_line, recv_until

ALICE = "alice@example.com"

RE_PROXY_REJECT = r"(?=.*proxy)(?=.*(reject|invalid|untrusted|not trusted|missing|malformed|bad|refus|garbage))"
RE_LIMIT = r"max_connections|connection limit|too many connections|limit reached"
RE_TIMEOUT = r"timeout|timed out"
RE_BACKEND_FAIL = r"(?=.*(backend|connect|dial))(?=.*(fail|refused|error|unreachable))"
RE_DOWN = r"(?=.*\bdown\b)(?=.*\bdovecot\b)"
RE_TLS_VERIFY_FAIL = (r"(?=.*(verif|pin|fingerprint|certificate|hostname|tls|handshake))"
                      r"(?=.*(fail|mismatch|error|reject|untrusted))")
RE_SHUTDOWN = r"shut(ting)? ?down|drain|stopping|terminat"


def q(s):
    """A TOML basic string (JSON string syntax is valid TOML)."""
    return json.dumps(s)


def qlist(items):
    return "[" + ", ".join(q(i) for i in items) + "]"


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return q(v)


def toml_table(name, values):
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items() if v is not None)


def passthrough_config(listen_port, backend_port, *, protocol="lmtp", listener_tls="plain", listener=None,
                       destination=None, endpoint=None, backend_tls="plain", server=None, tail="",
                       smtp_port=None, lmtp_port=None):
    """A config with one pass-through listener `[listener.<protocol>]` on
    127.0.0.1:listen_port and one destination `dovecot` (the default and the
    smtp_passthrough_destination) whose smtp and lmtp endpoints are
    backend_port (overridable separately) with tls = backend_tls.
    `listener`, `destination`, `endpoint` (applied to both endpoint tables)
    and `server` are dicts of extra keys for those tables (a None value
    removes a default); `tail` is appended verbatim (more tables)."""
    smtp_port = backend_port if smtp_port is None else smtp_port
    lmtp_port = backend_port if lmtp_port is None else lmtp_port
    server = {"log_level": "debug", "shutdown_grace": "10s", **(server or {})}
    destination = {"host": "127.0.0.1", **(destination or {})}
    listener = {"protocol": protocol, "tls": listener_tls, "bind": [f"127.0.0.1:{listen_port}"],
                **(listener or {})}
    parts = [
        toml_table("server", server),
        toml_table("destination.dovecot", destination),
        toml_table("destination.dovecot.protocol.smtp", {"port": smtp_port, "tls": backend_tls, **(endpoint or {})}),
        toml_table("destination.dovecot.protocol.lmtp", {"port": lmtp_port, "tls": backend_tls, **(endpoint or {})}),
        toml_table("routing", {"default_destination": "dovecot", "smtp_passthrough_destination": "dovecot"}),
        toml_table(f"listener.{protocol}", listener),
        tail,
    ]
    return "\n".join(parts)


def cert_table(name, cert, subjects=None, default=False):
    lines = [f"[tls.certificate.{name}]", f"cert = {q(cert.cert)}", f"key = {q(cert.key)}"]
    if subjects is not None:
        lines.append(f"subjects = {qlist(subjects)}")
    if default:
        lines.append("default = true")
    return "\n".join(lines) + "\n"


def connect_lmtp_logged(dovecot, since, ip):
    return dovecot.wait_log(rf"lmtp\(\d+\): Info: Connect from {re.escape(ip)}\b", since=since)


def assert_closed_without_banner(sock, timeout=5.0):
    data, elapsed = expect_closed(sock, timeout)
    assert data == b"", f"expected the connection closed without a banner, got {data!r}"
    return elapsed


# --- (a) (b) forwarding to the backend ----------------------------------------


@pytest.mark.parametrize(
    "destination, endpoint, listener_kind, expect_client_ip",
    [
        pytest.param({"proxy_protocol": True}, {}, "haproxy", True, id="proxy_protocol-true"),
        pytest.param({}, {}, "haproxy", True, id="default-is-proxy"),
        pytest.param({"forwarding": "proxy"}, {}, "haproxy", True, id="forwarding-proxy"),
        pytest.param({"proxy_protocol": False}, {}, "plain", False, id="proxy_protocol-false"),
        pytest.param({"forwarding": "none"}, {}, "plain", False, id="forwarding-none"),
        pytest.param({"proxy_protocol": False}, {"forwarding": "proxy"}, "haproxy", True,
                     id="per-protocol-override"),
        pytest.param({"proxy_protocol": True}, {"forwarding": "none"}, "plain", False,
                     id="per-protocol-none"),
    ],
)
def test_lmtp_forwarding(dovecot, dovecot_log, switchyard, destination, endpoint, listener_kind,
                         expect_client_ip):
    """LMTP through the proxy to Dovecot. With PROXY forwarding the backend
    leg starts with a v2 header and Dovecot (haproxy=yes listener) logs the
    client's address; without it Dovecot sees the proxy's own address."""
    port = free_port()
    backend = dovecot.lmtp_haproxy if listener_kind == "haproxy" else dovecot.lmtp
    sy = switchyard(passthrough_config(port, backend, destination=destination, endpoint=endpoint))
    mark = sy.log_mark()
    subject, refused = clients.lmtp_deliver(port, source="127.0.0.5")
    assert refused == {}
    assert dovecot.has_message(ALICE, subject)
    if expect_client_ip:
        connect_lmtp_logged(dovecot, dovecot_log, "127.0.0.5")
    else:
        connect_lmtp_logged(dovecot, dovecot_log, "127.0.0.1")
        assert "Connect from 127.0.0.5" not in dovecot.log_text(dovecot_log)
    sy.wait_log(r"session closed", since=mark)


def test_smtp_listener_to_submission(dovecot, dovecot_log, switchyard, certs):
    """An smtp listener bridges to the destination's smtp endpoint (here
    Dovecot's submission service behind a PROXY header): the SMTP dialogue,
    including AUTH, is the backend's, and Dovecot sees the client address."""
    port = free_port()
    switchyard(passthrough_config(port, dovecot.lmtp_haproxy, protocol="smtp",
                                  smtp_port=dovecot.submission_haproxy))
    s = clients.smtp_on(connect(port, source="127.0.0.5"))
    s.ehlo()
    assert s.has_extn("auth")
    s.login("carol@example.com", "carolpass")
    s.quit()
    dovecot.wait_log(r"submission-login: Info: Login: user=<carol@example\.com>, method=PLAIN, rip=127\.0\.0\.5,",
                     since=dovecot_log)


# --- (c) inbound PROXY protocol -------------------------------------------------


def inbound_proxy_config(port, dovecot, mode, trusted, **listener):
    return passthrough_config(port, dovecot.lmtp_haproxy, destination={"proxy_protocol": True},
                              listener={"proxy_protocol": mode, "proxy_trusted": trusted, **listener})


@pytest.mark.parametrize("mode", ["optional", "required"])
@pytest.mark.parametrize("version", [1, 2])
def test_inbound_proxy_header_trusted(dovecot, dovecot_log, switchyard, mode, version):
    """A trusted peer's PROXY header is honoured: the backend is told the
    address claimed in the header, not the peer's."""
    port = free_port()
    switchyard(inbound_proxy_config(port, dovecot, mode, ["127.0.0.0/8"]))
    claimed = "192.0.2.7"
    sock = connect(port, source="127.0.0.5")
    build = proxyproto.v1 if version == 1 else proxyproto.v2
    sock.sendall(build(claimed, 34567, "127.0.0.1", port))
    subject, refused = clients.lmtp_deliver(sock=sock)
    assert refused == {}
    assert dovecot.has_message(ALICE, subject)
    connect_lmtp_logged(dovecot, dovecot_log, claimed)
    assert "Connect from 127.0.0.5" not in dovecot.log_text(dovecot_log)


def test_inbound_proxy_optional_untrusted_uses_real_address(dovecot, dovecot_log, switchyard):
    """optional + a peer outside proxy_trusted: served with its real address."""
    port = free_port()
    switchyard(inbound_proxy_config(port, dovecot, "optional", ["10.0.0.0/8"]))
    subject, refused = clients.lmtp_deliver(port, source="127.0.0.5")
    assert refused == {}
    assert dovecot.has_message(ALICE, subject)
    connect_lmtp_logged(dovecot, dovecot_log, "127.0.0.5")


def test_inbound_proxy_required_untrusted_rejected(dovecot, dovecot_log, switchyard):
    """required + a peer outside proxy_trusted: rejected outright, even with
    a well-formed header."""
    port = free_port()
    sy = switchyard(inbound_proxy_config(port, dovecot, "required", ["10.0.0.0/8"]))
    mark = sy.log_mark()
    sock = connect(port, source="127.0.0.5")
    try:
        sock.sendall(proxyproto.v2("192.0.2.7", 34567, "127.0.0.1", port))
    except (BrokenPipeError, ConnectionResetError):
        pass  # already closed: also a rejection
    assert_closed_without_banner(sock)
    sy.wait_log(RE_PROXY_REJECT, since=mark)
    assert "Connect from 192.0.2.7" not in dovecot.log_text(dovecot_log)


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(b"LHLO client.test\r\n", id="missing-header"),
        pytest.param(b"PROXY TCP4 999.0.0.1 127.0.0.1 1234 25\r\n", id="v1-bad-address"),
        pytest.param(b"PROXY TCP4 192.0.2.7 127.0.0.1 01234 25\r\n", id="v1-leading-zero-port"),
        pytest.param(b"PROXY SCTP 192.0.2.7 127.0.0.1 1234 25\r\n", id="v1-bad-family"),
        pytest.param(proxyproto.V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), id="v2-bad-version"),
        pytest.param(proxyproto.V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), id="v2-short-address"),
        pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40), id="tls-hello"),
    ],
)
def test_inbound_proxy_required_bad_header_rejected(dovecot, dovecot_log, switchyard, first_bytes):
    """required + trusted peer without a valid header: closed, no banner,
    nothing reaches the backend."""
    port = free_port()
    sy = switchyard(inbound_proxy_config(port, dovecot, "required", ["127.0.0.0/8"]))
    mark = sy.log_mark()
    sock = connect(port, source="127.0.0.5")
    sock.sendall(first_bytes)
    assert_closed_without_banner(sock)
    sy.wait_log(RE_PROXY_REJECT, since=mark)
    assert not re.search(r"Connect from 127\.0\.0\.5\b", dovecot.log_text(dovecot_log))


# --- (d) implicit TLS on the client leg ---------------------------------------------


def test_lmtp_implicit_tls_listener(dovecot, dovecot_log, switchyard, certs):
    port = free_port()
    switchyard(passthrough_config(port, dovecot.lmtp_haproxy, listener_tls="implicit",
                                  tail=cert_table("local", certs.localhost)))
    raw = connect(port, source="127.0.0.5")
    tls = certs.client_context().wrap_socket(raw, server_hostname="localhost")
    assert tls.getpeercert(binary_form=True) == certs.localhost.der
    subject, refused = clients.lmtp_deliver(sock=tls)
    assert refused == {}
    msg = dovecot.find_message(ALICE, subject)
    assert msg is not None
    # The backend leg is plain LMTP: TLS ended at the proxy.
    assert b"with LMTPS" not in msg
    connect_lmtp_logged(dovecot, dovecot_log, "127.0.0.5")


def test_implicit_tls_listener_rejects_plaintext_client(dovecot, dovecot_log, switchyard, certs):
    port = free_port()
    switchyard(passthrough_config(port, dovecot.lmtp_haproxy, listener_tls="implicit",
                                  tail=cert_table("local", certs.localhost)))
    sock = connect(port, source="127.0.0.5")
    sock.sendall(b"LHLO client.test\r\n")
    data, _ = expect_closed(sock)
    assert not data.startswith(b"220")
    assert not re.search(r"Connect from 127\.0\.0\.5\b", dovecot.log_text(dovecot_log))


# --- (e) max_connections ----------------------------------------------------------


def test_max_connections(dovecot, switchyard):
    port = free_port()
    sy = switchyard(passthrough_config(port, dovecot.lmtp_haproxy, listener={"max_connections": 2}))
    first, second = connect(port, source="127.0.0.5"), connect(port, source="127.0.0.5")
    for s in (first, second):
        assert recv_line(s).startswith(b"220 ")
    mark = sy.log_mark()
    third = connect(port, source="127.0.0.5")
    elapsed = assert_closed_without_banner(third, timeout=5)
    assert elapsed < 2.0
    sy.wait_log(RE_LIMIT, since=mark)
    for s in (first, second):
        s.sendall(b"LHLO client.test\r\n")
        assert re.search(rb"(?m)^250 ", recv_until(s, rb"(?m)^250 .*\r\n"))
    # Once a session ends, its slot is free again.
    mark = sy.log_mark()
    first.sendall(b"QUIT\r\n")
    assert recv_line(first).startswith(b"221")
    first.close()
    sy.wait_log(r"session closed", since=mark)
    fourth = connect(port, source="127.0.0.5")
    assert recv_line(fourth).startswith(b"220 ")
    for s in (second, fourth):
        s.sendall(b"QUIT\r\n")
        s.close()


# --- (f) pre-auth timeout while waiting for the PROXY header -----------------------------


@pytest.mark.parametrize("sent", [pytest.param(b"", id="silent"), pytest.param(b"PROXY TCP4 ", id="partial")])
def test_preauth_timeout_waiting_for_proxy_header(dovecot, switchyard, sent):
    port = free_port()
    sy = switchyard(inbound_proxy_config(port, dovecot, "required", ["127.0.0.0/8"],
                                         preauth_timeout="1s"))
    mark = sy.log_mark()
    sock = connect(port, source="127.0.0.5")
    if sent:
        sock.sendall(sent)
    elapsed = assert_closed_without_banner(sock, timeout=6)
    assert 0.8 <= elapsed < 5, elapsed
    sy.wait_log(RE_TIMEOUT, since=mark)


# --- (g) backend down and the circuit breaker ---------------------------------------------


def read_to_clean_eof(sock, timeout=5.0):
    """Everything the server sends until it closes; the close must be an
    orderly FIN (a reset raises here: it could have discarded the reply
    from the client's receive queue)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def greeting_421(name="[127.0.0.1]"):
    return f"421 4.3.0 {name} Service not available\r\n".encode()


def assert_421_then_closed(sock, name="[127.0.0.1]", timeout=5.0):
    """Pass-through with no usable backend: the proxy's own temporary-failure
    greeting (RFC 5321 3.8), then a clean close."""
    assert read_to_clean_eof(sock, timeout) == greeting_421(name)


def dead_backend_config(port, protocol="smtp", server=None, **kw):
    return passthrough_config(port, free_port(), protocol=protocol, destination={"proxy_protocol": False},
                              server={"backend_connect_retries": 0, "backend_timeout": "2s", **(server or {})},
                              **kw)


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
@pytest.mark.parametrize("hostname", [None, "mx.example.test"])
def test_backend_down_greets_421(switchyard, protocol, hostname):
    """Nothing listens on the backend port: smtplib gets the proxy's 421
    greeting (server.hostname, else the address literal of the listener)
    instead of an empty connection, and the failure is logged."""
    port = free_port()
    sy = switchyard(dead_backend_config(port, protocol, server={"hostname": hostname}))
    name = hostname or "[127.0.0.1]"
    mark = sy.log_mark()
    cls = smtplib.LMTP if protocol == "lmtp" else smtplib.SMTP
    with pytest.raises(smtplib.SMTPConnectError) as e:
        cls("127.0.0.1", port, local_hostname="client.test", source_address=("127.0.0.5", 0), timeout=10)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error == f"4.3.0 {name} Service not available".encode()
    sy.wait_log(RE_BACKEND_FAIL, since=mark)
    # Raw: exactly the one line, then an orderly close (no reset), even for
    # a client that spoke before the greeting.
    sock = connect(port, source="127.0.0.5")
    sock.sendall(b"EHLO early.client.test\r\n")
    assert_421_then_closed(sock, name)


def test_backend_down_421_on_implicit_tls(switchyard, certs):
    """An implicit-TLS smtp listener says 421 inside the TLS session."""
    port = free_port()
    switchyard(dead_backend_config(port, listener_tls="implicit", tail=cert_table("local", certs.localhost)))
    tls = certs.client_context().wrap_socket(connect(port, source="127.0.0.5"), server_hostname="localhost")
    assert recv_line(tls) == greeting_421()
    # close_notify then FIN: an orderly end of the TLS session.
    assert tls.recv(4096) == b""
    tls.close()


def test_loop_guard_greets_421(switchyard):
    """A pass-through destination that is one of our own listeners is
    refused by the loop guard: the client hears 421, not silence."""
    port = free_port()
    sy = switchyard(passthrough_config(port, port, protocol="smtp", destination={"proxy_protocol": False}))
    mark = sy.log_mark()
    assert_421_then_closed(connect(port, source="127.0.0.5"))
    sy.wait_log(r"routing loop", since=mark)


def test_circuit_breaker(switchyard, banner_server):
    port, dead = free_port(), free_port()
    cooldown = 2.0
    sy = switchyard(passthrough_config(
        port, dead, destination={"proxy_protocol": False},
        server={"backend_connect_retries": 0, "backend_timeout": "2s", "host_down_threshold": 2,
                "host_down_cooldown": f"{int(cooldown)}s"}))
    mark = sy.log_mark()
    for _ in range(2):
        assert_421_then_closed(connect(port, source="127.0.0.5"))
    sy.wait_log(RE_DOWN, since=mark)
    marked_down_at = time.monotonic()

    # The backend comes back, but the destination stays down for the
    # cooldown: new connections get the 421 at once without being dialled.
    backend = banner_server(port=dead)
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.LMTP("127.0.0.1", port, source_address=("127.0.0.5", 0), timeout=10)
    assert e.value.smtp_code == 421
    assert_421_then_closed(connect(port, source="127.0.0.5"))
    assert backend.connection_count() == 0

    # After the cooldown the next connection is let through as a probe; it
    # succeeds, which closes the breaker.
    time.sleep(max(0.0, marked_down_at + cooldown + 0.3 - time.monotonic()))  # a timer, not an event
    for _ in range(2):
        s = connect(port, source="127.0.0.5")
        assert recv_line(s).startswith(b"220 banner.test")
        s.sendall(b"QUIT\r\n")
        assert recv_line(s).startswith(b"221")
        s.close()
    assert backend.connection_count() == 2


# --- (h) SIGTERM drain ------------------------------------------------------------------


def test_sigterm_drains_open_session(dovecot, dovecot_log, switchyard):
    port = free_port()
    sy = switchyard(passthrough_config(port, dovecot.lmtp_haproxy, server={"shutdown_grace": "20s"}))
    c = clients.lmtp_on(connect(port, source="127.0.0.5"))
    c.ehlo()
    assert c.mail("sender@example.org")[0] == 250
    assert c.rcpt(ALICE)[0] == 250

    mark = sy.log_mark()
    sy.send_signal(signal.SIGTERM)
    sy.wait_log(RE_SHUTDOWN, since=mark)
    assert sy.running()
    # The listener is gone: a new connection is refused (or, if it raced
    # into the backlog, closed without a banner).
    assert closed_or_refused(port, source="127.0.0.5")

    # The open session finishes its delivery.
    subject = clients.unique_subject()
    code, _ = c.data(clients.make_message(subject))
    assert code == 250
    c.quit()
    assert dovecot.has_message(ALICE, subject)

    # With nothing left to drain the process exits 0 well before the grace.
    t0 = time.monotonic()
    assert sy.wait_exit(timeout=10) == 0
    assert time.monotonic() - t0 < 5


def test_sigterm_grace_expires(dovecot, switchyard):
    port = free_port()
    sy = switchyard(passthrough_config(port, dovecot.lmtp_haproxy, server={"shutdown_grace": "2s"}))
    sock = connect(port, source="127.0.0.5")
    assert recv_line(sock).startswith(b"220 ")
    t0 = time.monotonic()
    sy.send_signal(signal.SIGTERM)
    # The idle session is cut when the grace runs out, and the process exits 0.
    _, elapsed = expect_closed(sock, timeout=10)
    assert elapsed >= 1.5, elapsed
    assert sy.wait_exit(timeout=10) == 0
    assert time.monotonic() - t0 < 8


# --- (i) TLS on the backend leg ------------------------------------------------------------


def tls_backend_config(port, backend_port, destination=None, server_name="localhost"):
    """Destination leg: implicit TLS to 127.0.0.1 with tls_server_name
    (required for an IP host with a TLS leg); no PROXY header."""
    dest = {"proxy_protocol": False, "tls_server_name": server_name, **(destination or {})}
    return passthrough_config(port, backend_port, destination=dest, backend_tls="implicit")


@pytest.mark.parametrize("pin_form", ["colons-lower", "hex-upper"])
def test_backend_tls_pinned(dovecot, dovecot_log, switchyard, certs, pin_form):
    pin = certs.localhost.sha256 if pin_form == "colons-lower" else certs.localhost.sha256_hex.upper()
    port = free_port()
    switchyard(tls_backend_config(port, dovecot.lmtps, {"tls_pinned_cert_sha256": pin}))
    subject, refused = clients.lmtp_deliver(port, source="127.0.0.5")
    assert refused == {}
    msg = dovecot.find_message(ALICE, subject)
    assert msg is not None and b"with LMTPS" in msg


@pytest.mark.parametrize(
    "case",
    ["pin-mismatch", "untrusted-no-pin", "name-mismatch"],
)
def test_backend_tls_verification_failure(dovecot, dovecot_log, switchyard, certs, case):
    """The backend's certificate does not verify: no bridge, the client
    gets the 421 greeting and a close, and the proxy logs why."""
    port = free_port()
    if case == "pin-mismatch":  # a pin of another certificate
        cfg, env = tls_backend_config(port, dovecot.lmtps, {"tls_pinned_cert_sha256": certs.mail.sha256}), None
    elif case == "untrusted-no-pin":  # issued by a CA the platform store lacks
        cfg, env = tls_backend_config(port, dovecot.lmtps), None
    else:  # trusted CA, but the certificate does not cover tls_server_name
        cfg = tls_backend_config(port, dovecot.lmtps, server_name="wrong.example.com")
        env = {"SSL_CERT_FILE": certs.ca_cert}
    sy = switchyard(cfg, env=env)
    mark = sy.log_mark()
    assert_421_then_closed(connect(port, source="127.0.0.5"), timeout=10)
    sy.wait_log(RE_TLS_VERIFY_FAIL, since=mark)


@pytest.mark.parametrize(
    "case", ["allow-invalid", "trusted-by-platform-store"],
)
def test_backend_tls_verified(dovecot, switchyard, certs, case):
    """Without a pin: the platform trust store (OpenSSL's default paths,
    which honour SSL_CERT_FILE) verifies the backend, or verification is
    switched off."""
    destination, env = {}, None
    if case == "allow-invalid":
        destination = {"tls_allow_invalid_certs": True}
    else:
        env = {"SSL_CERT_FILE": certs.ca_cert}
    port = free_port()
    switchyard(tls_backend_config(port, dovecot.lmtps, destination), env=env)
    subject, refused = clients.lmtp_deliver(port, source="127.0.0.5")
    assert refused == {}
    assert dovecot.has_message(ALICE, subject)


@pytest.mark.parametrize("with_client_cert", [True, False])
def test_backend_mutual_tls(switchyard, banner_server, certs, with_client_cert):
    """A backend that requires a client certificate issued by the test CA
    (Dovecot cannot make a missing client certificate fail the handshake, so
    this backend is a small Python TLS server)."""
    backend = banner_server(tls_cert=certs.localhost, require_client_ca=certs.ca_cert)
    port = free_port()
    dest = {"tls_pinned_cert_sha256": certs.localhost.sha256}
    if with_client_cert:
        dest.update(tls_client_cert=certs.client.cert, tls_client_key=certs.client.key)
    switchyard(tls_backend_config(port, backend.port, dest))
    sock = connect(port, source="127.0.0.5")
    if with_client_cert:
        assert recv_line(sock).startswith(b"220 banner.test")
        sock.sendall(b"NOOP\r\n")
        assert recv_line(sock) == b"echo: NOOP\r\n"
        rec = backend.wait_connection()
        subject = dict(x for rdn in rec.client_cert["subject"] for x in rdn)
        assert subject["commonName"] == "switchyard-client"
        assert rec.server_name == "localhost"
        sock.sendall(b"QUIT\r\n")
        sock.close()
    else:
        # With TLS 1.3 the proxy's side of the handshake usually completes
        # before the backend refuses (then the bridged session just ends);
        # if the refusal comes first, the dial fails and the client gets 421.
        data, _ = expect_closed(sock, timeout=10)
        assert data in (b"", greeting_421()), data
        backend.handshake_failures.wait(lambda f: True, 10, "backend handshake failure")
        assert backend.connection_count() == 0
        # No log expectation: with TLS 1.3 the client side of the handshake
        # completes before the server refuses, so the proxy may only see the
        # backend's alert as a failed read on an established leg.


# --- (j) SNI certificate selection and TLS policy ---------------------------------------------


def sni_config(port, backend_port, certs_toml, protocols=""):
    cfg = f"""
[server]
log_level = "debug"

{certs_toml}
{protocols}

[destination.banner]
host = "127.0.0.1"
proxy_protocol = false

[destination.banner.protocol.smtp]
port = {backend_port}
tls = "plain"

[routing]
default_destination = "banner"
smtp_passthrough_destination = "banner"

[listener.smtps]
protocol = "smtp"
tls = "implicit"
bind = ["127.0.0.1:{port}"]
"""
    return cfg


def presented_cert(port, server_name, read_banner=False, **ctx_kw):
    """DER of the certificate the proxy presents for this SNI (None: no SNI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in ctx_kw.items():
        setattr(ctx, k, v)
    with ctx.wrap_socket(connect(port), server_hostname=server_name) as s:
        der = s.getpeercert(binary_form=True)
        if read_banner:
            assert recv_line(s).startswith(b"220 banner.test")
        return der


def test_sni_selection_with_default(switchyard, banner_server, certs):
    backend = banner_server()
    port = free_port()
    certs_toml = (cert_table("mail", certs.mail)  # subjects from the SAN: mail.example.com
                  + cert_table("other", certs.other, subjects=["example.org"])
                  + cert_table("wild", certs.wildcard)  # SAN *.example.net
                  + cert_table("fallback", certs.localhost, default=True))
    switchyard(sni_config(port, backend.port, certs_toml))
    cases = {
        "mail.example.com": certs.mail,  # exact, from the certificate's SAN
        "example.org": certs.other,  # exact, from explicit subjects
        "imap.example.org": certs.other,  # parent domain of an explicit subject
        "sub.mail.example.com": certs.mail,  # parent domain of a SAN-derived name
        "nothing.invalid": certs.localhost,  # no match: the default
        None: certs.localhost,  # no SNI: the default
    }
    for name, want in cases.items():
        got = presented_cert(port, name)
        assert fingerprint_der(got) == want.sha256, f"SNI {name!r}: got {describe_der(got)}"
    # The session is bridged after the handshake.
    presented_cert(port, "mail.example.com", read_banner=True)


def test_sni_wildcard_certificate(switchyard, banner_server, certs):
    backend = banner_server()
    port = free_port()
    certs_toml = (cert_table("mail", certs.mail) + cert_table("wild", certs.wildcard)
                  + cert_table("fallback", certs.localhost, default=True))
    switchyard(sni_config(port, backend.port, certs_toml))
    assert fingerprint_der(presented_cert(port, "imap.example.net")) == certs.wildcard.sha256
    assert fingerprint_der(presented_cert(port, "mail.example.com")) == certs.mail.sha256


def test_sni_star_entry_is_fallback(switchyard, banner_server, certs):
    backend = banner_server()
    port = free_port()
    certs_toml = (cert_table("mail", certs.mail) + cert_table("other", certs.other)
                  + cert_table("catchall", certs.selfsigned, subjects=["*"]))
    switchyard(sni_config(port, backend.port, certs_toml))
    assert fingerprint_der(presented_cert(port, "other.example.org")) == certs.other.sha256
    assert fingerprint_der(presented_cert(port, "unknown.example.com")) == certs.selfsigned.sha256


def test_sni_single_certificate_serves_every_name(switchyard, banner_server, certs):
    backend = banner_server()
    port = free_port()
    switchyard(sni_config(port, backend.port, cert_table("only", certs.mail)))
    for name in ("mail.example.com", "other.example.org", "nothing.invalid", None):
        assert fingerprint_der(presented_cert(port, name)) == certs.mail.sha256, name


def test_sni_no_match_no_default_is_self_signed(switchyard, banner_server, certs):
    backend = banner_server()
    port = free_port()
    switchyard(sni_config(port, backend.port, cert_table("mail", certs.mail) + cert_table("other", certs.other)))
    assert fingerprint_der(presented_cert(port, "mail.example.com")) == certs.mail.sha256
    got = presented_cert(port, "nothing.invalid", read_banner=True)
    configured = {c.sha256 for c in (certs.mail, certs.other, certs.localhost, certs.wildcard, certs.selfsigned)}
    assert fingerprint_der(got) not in configured
    subject, issuer = describe_der(got)
    assert subject == issuer, (subject, issuer)


@pytest.mark.parametrize("min_version, tls12_ok", [(None, True), ("1.2", True), ("1.3", False)])
def test_tls_min_version(switchyard, banner_server, certs, min_version, tls12_ok):
    backend = banner_server()
    port = free_port()
    protocols = f'[tls.protocols]\nmin_version = "{min_version}"\n' if min_version else ""
    switchyard(sni_config(port, backend.port, cert_table("local", certs.localhost), protocols))
    tls12 = dict(minimum_version=ssl.TLSVersion.TLSv1_2, maximum_version=ssl.TLSVersion.TLSv1_2)
    if tls12_ok:
        presented_cert(port, "localhost", read_banner=True, **tls12)
    else:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            presented_cert(port, "localhost", **tls12)
    tls13 = dict(minimum_version=ssl.TLSVersion.TLSv1_3)
    assert fingerprint_der(presented_cert(port, "localhost", read_banner=True, **tls13)) == certs.localhost.sha256
