"""Self-tests of the harness against the real servers, without Switchyard.

They pin down what the proxy tests rely on: that the private Dovecot serves
every protocol on every kind of listener, that its haproxy listeners and
trusted-network forwarding (IMAP ID, XCLIENT) log the claimed client address
in the wording the proxy tests match, that master users and bearer tokens
work, and that Redis and PostgreSQL come up and go away cleanly.

Dovecot log wording learned here (Dovecot 2.3.19):
  lmtp:            "lmtp(<pid>): Info: Connect from <ip>"
  imap/pop3/submission/managesieve logins:
                   "<svc>-login: Info: Login: user=<u>, method=PLAIN, rip=<ip>, lip=<ip>, ..."
  master user:     "auth: Info: Master user logging in as <user>"
"""

import base64
import imaplib
import os
import poplib
import re
import smtplib
import ssl
import subprocess

import pytest

from harness import clients, proxyproto
from harness.certs import describe_der
from harness.util import connect, expect_closed, pid_alive, recv_until

ALICE = ("alice@example.com", "alicepass")
BOB = ("bob@example.com", "bobpass")
CAROL = ("carol@example.com", "carolpass")


def rip_re(ip, service):
    return rf"{service}-login: Info: Login: user=<[^>]+>, method=\S+, rip={re.escape(ip)},"


# --- PKI ----------------------------------------------------------------------


def test_certs(certs):
    assert describe_der(certs.localhost.der) == ("CN=localhost", "CN=Switchyard Test CA")
    subj, issuer = describe_der(certs.selfsigned.der)
    assert subj == issuer == "CN=unrelated.example"
    fps = {c.sha256 for c in (certs.localhost, certs.mail, certs.other, certs.wildcard, certs.client,
                             certs.selfsigned)}
    assert len(fps) == 6
    assert re.fullmatch(r"([0-9a-f]{2}:){31}[0-9a-f]{2}", certs.mail.sha256)
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", certs.mail.leaf],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().split("=", 1)[1].lower() == certs.mail.sha256
    out = subprocess.run(["openssl", "verify", "-CAfile", certs.ca_cert, certs.wildcard.leaf],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --- IMAP ---------------------------------------------------------------------


def test_imap_implicit_tls(dovecot, certs, dovecot_log):
    with imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps, ssl_context=certs.client_context()) as m:
        assert m.login(*ALICE)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
    dovecot.wait_log(rip_re("127.0.0.1", "imap") + r".*\bTLS\b", since=dovecot_log)


def test_imap_starttls(dovecot, certs, dovecot_log):
    sock = connect(dovecot.imap, source="127.0.0.5")
    m = clients.imap_on(sock)
    assert "STARTTLS" in m.capabilities
    m.starttls(ssl_context=certs.client_context())
    assert m.login(*ALICE)[0] == "OK"
    m.logout()
    dovecot.wait_log(rip_re("127.0.0.5", "imap") + r".*\bTLS\b", since=dovecot_log)


def test_imap_master_user(dovecot, dovecot_log):
    with imaplib.IMAP4("127.0.0.1", dovecot.imap) as m:
        assert m.login("bob@example.com%master", "masterpass")[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
    dovecot.wait_log(r"Master user logging in as bob@example\.com", since=dovecot_log)
    dovecot.wait_log(r"imap-login: Info: Login: user=<bob@example\.com>", since=dovecot_log)
    with imaplib.IMAP4("127.0.0.1", dovecot.imap) as m:
        with pytest.raises(imaplib.IMAP4.error):
            m.login("bob@example.com%master", "wrong")


def test_imap_haproxy_listener(dovecot, dovecot_log):
    sock = connect(dovecot.imap_haproxy, source="127.0.0.6")
    sock.sendall(proxyproto.v1("192.0.2.8", 40001, "127.0.0.1", dovecot.imap_haproxy))
    m = clients.imap_on(sock)
    assert m.login(*ALICE)[0] == "OK"
    m.logout()
    dovecot.wait_log(rip_re("192.0.2.8", "imap"), since=dovecot_log)


def test_imap_id_forwarding(dovecot, dovecot_log):
    """login_trusted_networks: Dovecot adopts x-originating-ip from IMAP ID."""
    sock = connect(dovecot.imap, source="127.0.0.6")
    m = clients.imap_on(sock)
    typ, _ = m.xatom("ID", '("x-originating-ip" "198.51.100.9" "x-originating-port" "5555" '
                           '"x-connected-ip" "127.0.0.1" "x-connected-port" "143" '
                           '"x-session-id" "sytest1")')
    assert typ == "OK"
    assert m.login(*ALICE)[0] == "OK"
    m.logout()
    dovecot.wait_log(rip_re("198.51.100.9", "imap") + r".*session=<sytest1>", since=dovecot_log)


def test_imap_oauthbearer_token_as_password(make_dovecot):
    """Dovecot 2.3 checks OAUTHBEARER/XOAUTH2 tokens as passwords against
    the passdb, so a user whose password is a token can log in with it."""
    token = clients.sw1_token("tok@example.com")
    d = make_dovecot(users={"tok@example.com": token}, listeners={"imap": ("plain",)})
    for mech, ir in (("OAUTHBEARER", f"n,a=tok@example.com,\x01auth=Bearer {token}\x01\x01"),
                     ("XOAUTH2", f"user=tok@example.com\x01auth=Bearer {token}\x01\x01")):
        with imaplib.IMAP4("127.0.0.1", d.imap) as m:
            assert m.authenticate(mech, lambda _: ir.encode())[0] == "OK"
        d.wait_log(rf"Login: user=<tok@example\.com>, method={mech}")


# --- POP3 ---------------------------------------------------------------------


def test_pop3_login(dovecot, certs, dovecot_log):
    p = poplib.POP3_SSL("127.0.0.1", dovecot.pop3s, context=certs.client_context())
    p.user(BOB[0])
    assert p.pass_(BOB[1]).startswith(b"+OK")
    p.quit()
    p = clients.pop3_on(connect(dovecot.pop3, source="127.0.0.7"))
    p.stls(context=certs.client_context())
    p.user(BOB[0])
    assert p.pass_(BOB[1]).startswith(b"+OK")
    p.quit()
    dovecot.wait_log(rip_re("127.0.0.7", "pop3") + r".*\bTLS\b", since=dovecot_log)


def test_pop3_xclient(dovecot, dovecot_log):
    p = clients.pop3_on(connect(dovecot.pop3, source="127.0.0.6"))
    assert b"XCLIENT" in p.getwelcome()
    assert p._shortcmd("XCLIENT ADDR=198.51.100.10 PORT=5556 SESSION=sytest2 TTL=5").startswith(b"+OK")
    p.user(BOB[0])
    assert p.pass_(BOB[1]).startswith(b"+OK")
    p.quit()
    dovecot.wait_log(rip_re("198.51.100.10", "pop3") + r".*session=<sytest2>", since=dovecot_log)


def test_pop3_haproxy_listener(dovecot, dovecot_log):
    sock = connect(dovecot.pop3_haproxy, source="127.0.0.6")
    sock.sendall(proxyproto.v2("192.0.2.9", 40002, "127.0.0.1", dovecot.pop3_haproxy))
    p = clients.pop3_on(sock)
    p.user(BOB[0])
    assert p.pass_(BOB[1]).startswith(b"+OK")
    p.quit()
    dovecot.wait_log(rip_re("192.0.2.9", "pop3"), since=dovecot_log)


# --- LMTP ---------------------------------------------------------------------


def test_lmtp_delivery(dovecot, dovecot_log):
    subject, refused = clients.lmtp_deliver(dovecot.lmtp, source="127.0.0.5")
    assert refused == {}
    assert dovecot.has_message("alice@example.com", subject)
    dovecot.wait_log(r"lmtp\(\d+\): Info: Connect from 127\.0\.0\.5\b", since=dovecot_log)


def test_lmtp_implicit_tls(dovecot, certs, dovecot_log):
    sock = certs.client_context().wrap_socket(connect(dovecot.lmtps, source="127.0.0.9"),
                                              server_hostname="localhost")
    subject, refused = clients.lmtp_deliver(sock=sock, rcpts=("bob@example.com",))
    assert refused == {}
    msg = dovecot.find_message("bob@example.com", subject)
    assert msg is not None and b"with LMTPS" in msg


@pytest.mark.parametrize("version", [1, 2])
def test_lmtp_haproxy_listener(dovecot, dovecot_log, version):
    """A PROXY header sent to the haproxy=yes LMTP listener: Dovecot logs the
    claimed source address as `Connect from <ip>`."""
    claimed = f"192.0.2.{7 + version}"
    sock = connect(dovecot.lmtp_haproxy, source="127.0.0.6")
    build = proxyproto.v1 if version == 1 else proxyproto.v2
    sock.sendall(build(claimed, 4242, "127.0.0.1", dovecot.lmtp_haproxy))
    subject, refused = clients.lmtp_deliver(sock=sock)
    assert refused == {}
    assert dovecot.has_message("alice@example.com", subject)
    dovecot.wait_log(rf"lmtp\(\d+\): Info: Connect from {re.escape(claimed)}\b", since=dovecot_log)
    assert "Connect from 127.0.0.6" not in dovecot.log_text(dovecot_log)


def test_lmtp_haproxy_listener_requires_header(dovecot, dovecot_log):
    sock = connect(dovecot.lmtp_haproxy, source="127.0.0.6")
    sock.sendall(b"LHLO client.test\r\n")
    data, _ = expect_closed(sock, timeout=10)
    assert not data.startswith(b"220")


# --- submission ---------------------------------------------------------------


def test_submission_relays_to_sink(dovecot, certs, smtp_sink, dovecot_log):
    subject = clients.unique_subject()
    with smtplib.SMTP("127.0.0.1", dovecot.submission) as s:
        s.starttls(context=certs.client_context())
        s.login(*CAROL)
        s.sendmail(CAROL[0], ["someone@example.org"], clients.make_message(subject, CAROL[0]))
    m = smtp_sink.wait_message(lambda m: subject.encode() in m.data)
    assert m.mail_from == CAROL[0] and m.rcpts == ["someone@example.org"]
    with smtplib.SMTP_SSL("127.0.0.1", dovecot.submissions, context=certs.client_context()) as s:
        s.login(*CAROL)
    dovecot.wait_log(rip_re("127.0.0.1", "submission"), since=dovecot_log)


def test_submission_xclient(dovecot, dovecot_log):
    s = clients.smtp_on(connect(dovecot.submission, source="127.0.0.6"))
    s.ehlo()
    assert "XCLIENT" in s.esmtp_features.get("xclient", "").upper() or s.has_extn("xclient")
    code, _ = s.docmd("XCLIENT", "ADDR=198.51.100.11 PORT=5557 SESSION=sytest3")
    assert code == 220
    s.ehlo()
    s.login(*CAROL)
    s.quit()
    dovecot.wait_log(rip_re("198.51.100.11", "submission") + r".*session=<sytest3>", since=dovecot_log)


# --- ManageSieve --------------------------------------------------------------


def sieve_auth(sock, user, password):
    caps = recv_until(sock, rb'(?m)^OK.*\r\n')
    ir = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    sock.sendall(f'AUTHENTICATE "PLAIN" "{ir}"\r\n'.encode())
    return caps, recv_until(sock, rb"(?m)^(OK|NO|BYE).*\r\n")


def test_managesieve_login(dovecot, dovecot_log):
    sock = connect(dovecot.sieve, source="127.0.0.6")
    caps, reply = sieve_auth(sock, *BOB)
    assert b'"SASL" "PLAIN' in caps and b'"XCLIENT"' in caps
    assert reply.startswith(b"OK")
    sock.sendall(b"LISTSCRIPTS\r\n")
    assert recv_until(sock, rb"(?m)^OK.*\r\n").endswith(b"\r\n")
    sock.sendall(b"LOGOUT\r\n")
    sock.close()
    dovecot.wait_log(rip_re("127.0.0.6", "managesieve"), since=dovecot_log)


def test_managesieve_xclient(dovecot, dovecot_log):
    sock = connect(dovecot.sieve, source="127.0.0.6")
    recv_until(sock, rb"(?m)^OK.*\r\n")
    sock.sendall(b"XCLIENT ADDR=198.51.100.12 PORT=5558 SESSION=sytest4\r\n")
    assert recv_until(sock, rb"(?m)^(OK|NO|BYE).*\r\n").startswith(b"OK")
    ir = base64.b64encode(b"\0bob@example.com\0bobpass").decode()
    sock.sendall(f'AUTHENTICATE "PLAIN" "{ir}"\r\n'.encode())
    assert recv_until(sock, rb"(?m)^(OK|NO|BYE).*\r\n").startswith(b"OK")
    sock.close()
    dovecot.wait_log(rip_re("198.51.100.12", "managesieve") + r".*session=<sytest4>", since=dovecot_log)


def test_sieve_connect_client(dovecot, certs, dovecot_log, tmp_path):
    """The real sieve-connect client: STARTTLS verified against the test CA."""
    pwfile = tmp_path / "pw"
    pwfile.write_text(BOB[1] + "\n")
    with open(pwfile) as pw:
        p = subprocess.run(
            ["sieve-connect", "--server", "localhost", "--port", str(dovecot.sieve), "--user", BOB[0],
             "--passwordfd", str(pw.fileno()), "--tlscafile", certs.ca_cert, "--authmech", "PLAIN",
             "--list"],
            pass_fds=(pw.fileno(),), capture_output=True, text=True, timeout=30,
        )
    assert p.returncode == 0, p.stdout + p.stderr
    dovecot.wait_log(rip_re("127.0.0.1", "managesieve") + r".*\bTLS\b", since=dovecot_log)


# --- stand-in servers ---------------------------------------------------------


def test_banner_server_mtls(banner_server, certs):
    srv = banner_server(tls_cert=certs.localhost, require_client_ca=certs.ca_cert)
    ctx = certs.client_context()
    ctx.load_cert_chain(certs.client.cert, certs.client.key)
    with ctx.wrap_socket(connect(srv.port), server_hostname="localhost") as s:
        assert recv_until(s, rb"\r\n").startswith(b"220 ")
        s.sendall(b"PING\r\n")
        assert recv_until(s, rb"echo: PING\r\n")
    rec = srv.wait_connection()
    assert ("commonName", "switchyard-client") in [x for rdn in rec.client_cert["subject"] for x in rdn]
    assert rec.server_name == "localhost"
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        with certs.client_context().wrap_socket(connect(srv.port), server_hostname="localhost") as s:
            s.recv(100) or s.recv(100)  # TLS 1.3: the rejection arrives after the handshake


# --- stores -------------------------------------------------------------------


def test_redis(redis_server):
    assert redis_server.command("PING") == "PONG"
    assert redis_server.command("SET", "route:alice@example.com", "new") == "OK"
    assert redis_server.command("GET", "route:alice@example.com") == "new"
    pid = redis_server.proc.pid
    redis_server.stop()
    assert not pid_alive(pid)


def test_postgres(postgres_server):
    assert postgres_server.psql("SELECT 1") == "1"
    postgres_server.psql("CREATE TABLE routes (identifier text PRIMARY KEY, destination text NOT NULL)")
    postgres_server.psql("INSERT INTO routes VALUES ('alice@example.com', 'new')")
    assert postgres_server.psql("SELECT destination FROM routes WHERE identifier = 'alice@example.com'") == "new"
    assert postgres_server.url.startswith("postgresql://postgres@127.0.0.1:")
    postgres_server.stop()
    p = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(postgres_server.port), "-U", "postgres", "-c",
                        "SELECT 1"], capture_output=True, text=True)
    assert p.returncode != 0


def test_dovecot_stop_and_cleanup(make_dovecot):
    d = make_dovecot(listeners={"lmtp": ("plain",)})
    pid, path = d.pid, d.dir
    assert pid_alive(pid)
    subject, _ = clients.lmtp_deliver(d.lmtp)
    assert d.has_message("alice@example.com", subject)
    d.cleanup()
    assert not pid_alive(pid)
    assert not os.path.exists(path)
