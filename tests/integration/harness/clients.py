"""Standard-library clients (imaplib, poplib, smtplib) driven over a socket the
test connected itself: from a chosen source address, after sending a PROXY
header, or over TLS the test set up."""

import base64
import json
import imaplib
import poplib
import smtplib
import uuid

from .util import DEFAULT_TIMEOUT, HarnessError, connect


def sw1_token(account, body="opaque"):
    """A Stalwart access token, `sw1.<body>.<footer>`: the footer is the
    account in base64url without padding, the body is opaque (its signature
    and claims), so tests put their own marker or padding there."""
    footer = base64.urlsafe_b64encode(account.encode()).decode().rstrip("=")
    return f"sw1.{body}.{footer}"


def basic_auth(user, password):
    """An HTTP `Authorization: Basic` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def b64u(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def make_jwt(payload):
    """An unsigned-looking JWT (header.payload.signature); nobody checks the
    signature here, the proxy only reads the claims."""
    return ".".join((b64u(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()),
                     b64u(json.dumps(payload).encode()), b64u(b"s" * 64)))


def unique_subject(prefix="sy-test"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_message(subject, sender="sender@example.org", rcpt="alice@example.com", body="Hello from the test.\r\n"):
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@test>\r\n\r\n{body}").encode()


def lmtp_on(sock, local_hostname="client.test"):
    """An smtplib.LMTP session over an already-connected socket; the 220
    greeting has been read."""
    c = smtplib.LMTP(local_hostname=local_hostname)
    c.sock = sock
    c._host = "localhost"
    code, msg = c.getreply()
    if code != 220:
        c.close()
        raise HarnessError(f"LMTP greeting {code} {msg!r}")
    return c


def smtp_on(sock, local_hostname="client.test"):
    """Like lmtp_on for SMTP."""
    c = smtplib.SMTP(local_hostname=local_hostname)
    c.sock = sock
    c._host = "localhost"
    code, msg = c.getreply()
    if code != 220:
        c.close()
        raise HarnessError(f"SMTP greeting {code} {msg!r}")
    return c


class _IMAP4OnSocket(imaplib.IMAP4):
    def __init__(self, sock):
        self._sy_sock = sock
        super().__init__("localhost", 0)

    def _create_socket(self, timeout):
        return self._sy_sock


class _POP3OnSocket(poplib.POP3):
    def __init__(self, sock):
        self._sy_sock = sock
        super().__init__("localhost", 0)

    def _create_socket(self, timeout):
        return self._sy_sock


def imap_on(sock):
    """An imaplib.IMAP4 session over an already-connected socket (greeting read)."""
    return _IMAP4OnSocket(sock)


def pop3_on(sock):
    """A poplib.POP3 session over an already-connected socket (greeting read)."""
    return _POP3OnSocket(sock)


def lmtp_deliver(port=None, rcpts=("alice@example.com",), subject=None, source=None, sock=None,
                 sender="sender@example.org", timeout=DEFAULT_TIMEOUT):
    """Deliver one message over LMTP (to `port`, or over `sock`); returns
    (subject, per-recipient result dict of smtplib.sendmail: empty when every
    recipient was accepted)."""
    subject = subject or unique_subject()
    if sock is None:
        sock = connect(port, source=source, timeout=timeout)
    c = lmtp_on(sock)
    try:
        refused = c.sendmail(sender, list(rcpts), make_message(subject, sender, rcpts[0]))
        c.quit()
    finally:
        c.close()
    return subject, refused


def rendezvous_score(node, ident):
    """The rendezvous weight, computed here independently of the proxy:
    FNV-1a 64 over node, NUL, identifier, then splitmix64's finalizer."""
    mask = (1 << 64) - 1
    h = 0xcbf29ce484222325
    for byte in node.encode() + b"\0" + ident.encode():
        h = ((h ^ byte) * 0x100000001b3) & mask
    h = (h + 0x9e3779b97f4a7c15) & mask
    h = ((h ^ (h >> 30)) * 0xbf58476d1ce4e5b9) & mask
    h = ((h ^ (h >> 27)) * 0x94d049bb133111eb) & mask
    return h ^ (h >> 31)
