"""Tiny in-process servers for the few roles no installed program fills:

- SmtpSink: the relay MTA behind Dovecot's submission service (no Postfix on
  these machines). Accepts everything and records messages.
- BannerServer: a TCP (optionally TLS, optionally client-cert-requiring)
  backend that sends a banner line, records who connected, and echoes lines
  back. Used for pass-through tests that are about the connection (SNI,
  mutual TLS, circuit breaker) rather than about a mail server.

Both run on their own threads and signal what they see through condition
variables, so tests wait for events rather than sleep.
"""

import socketserver
import ssl
import threading
from dataclasses import dataclass, field

from .util import DEFAULT_TIMEOUT, HarnessError


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class _Recorder:
    def __init__(self):
        self.cond = threading.Condition()
        self.items = []

    def add(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait(self, pred, timeout, what):
        with self.cond:
            if not self.cond.wait_for(lambda: any(pred(i) for i in self.items), timeout):
                raise HarnessError(f"{what} not seen within {timeout}s; have {self.items!r}")
            return next(i for i in self.items if pred(i))


@dataclass
class SmtpMessage:
    mail_from: str
    rcpts: list
    data: bytes
    helo: str = ""
    peer: tuple = ()
    commands: list = field(default_factory=list)


class SmtpSink:
    """A minimal ESMTP server (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT,
    XCLIENT recorded but not advertised unless asked)."""

    def __init__(self, host="127.0.0.1", port=0, banner="sink.test ESMTP sink", xclient=False):
        self.messages = _Recorder()
        self.connections = _Recorder()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                sink.connections.add(self.client_address)
                cmds = []
                st = {"from": None, "rcpts": [], "helo": ""}

                def reply(line):
                    self.wfile.write(line.encode() + b"\r\n")
                    self.wfile.flush()

                reply(f"220 {banner}")
                while True:
                    raw = self.rfile.readline(65536)
                    if not raw:
                        return
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    cmds.append(line)
                    verb = line.split(" ", 1)[0].upper()
                    arg = line[len(verb):].strip()
                    if verb in ("EHLO", "LHLO"):
                        st["helo"] = arg
                        caps = ["sink.test", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
                        if xclient:
                            caps.append("XCLIENT ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT")
                        for c in caps[:-1]:
                            reply(f"250-{c}")
                        reply(f"250 {caps[-1]}")
                    elif verb == "HELO":
                        st["helo"] = arg
                        reply("250 sink.test")
                    elif verb == "XCLIENT":
                        reply(f"220 {banner}")
                    elif verb == "MAIL":
                        st["from"] = arg.split(":", 1)[1].strip().split(" ")[0].strip("<>")
                        st["rcpts"] = []
                        reply("250 2.1.0 Ok")
                    elif verb == "RCPT":
                        st["rcpts"].append(arg.split(":", 1)[1].strip().split(" ")[0].strip("<>"))
                        reply("250 2.1.5 Ok")
                    elif verb == "DATA":
                        reply("354 End data with <CR><LF>.<CR><LF>")
                        data = bytearray()
                        while True:
                            l = self.rfile.readline(1 << 20)
                            if not l or l in (b".\r\n", b".\n"):
                                break
                            if l.startswith(b".."):
                                l = l[1:]
                            data += l
                        sink.messages.add(
                            SmtpMessage(st["from"], list(st["rcpts"]), bytes(data), st["helo"],
                                        self.client_address, list(cmds))
                        )
                        reply("250 2.0.0 Ok: queued")
                    elif verb == "RSET":
                        st["from"], st["rcpts"] = None, []
                        reply("250 2.0.0 Ok")
                    elif verb == "NOOP":
                        reply("250 2.0.0 Ok")
                    elif verb == "QUIT":
                        reply("221 2.0.0 Bye")
                        return
                    else:
                        reply("502 5.5.2 Command not recognized")

        self.server = _Server((host, port), Handler)
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def wait_message(self, pred=lambda m: True, timeout=DEFAULT_TIMEOUT):
        return self.messages.wait(pred, timeout, "SMTP message")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@dataclass
class BannerConnection:
    peer: tuple
    client_cert: dict = None
    server_name: str = None
    received: bytes = b""


class BannerServer:
    """A backend that greets with `banner` and echoes every line it reads
    (prefixed by "echo: "). With `tls_cert`, the socket is implicit TLS; with
    `require_client_ca`, a client certificate issued by that CA is required
    (the handshake fails without one). Records each connection (peer address,
    client certificate, SNI) in `connections`. `port` may be given to take
    over a port a test reserved earlier (circuit-breaker recovery)."""

    def __init__(self, host="127.0.0.1", port=0, banner="220 banner.test ESMTP ready",
                 tls_cert=None, require_client_ca=None):
        self.connections = _Recorder()
        self.handshake_failures = _Recorder()
        self.ctx = None
        if tls_cert is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(tls_cert.cert, tls_cert.key)
            if require_client_ca:
                self.ctx.load_verify_locations(require_client_ca)
                self.ctx.verify_mode = ssl.CERT_REQUIRED
            # Server side: the callback gets the SSLSocket being accepted.
            self.ctx.sni_callback = lambda sslsock, name, c: setattr(sslsock, "sy_sni", name)
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.settimeout(30)
                rec = BannerConnection(self.client_address)
                if owner.ctx is not None:
                    try:
                        sock = owner.ctx.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError) as e:
                        owner.handshake_failures.add((self.client_address, repr(e)))
                        return
                    rec.client_cert = sock.getpeercert()
                    rec.server_name = getattr(sock, "sy_sni", None)
                owner.connections.add(rec)
                try:
                    sock.sendall(banner.encode() + b"\r\n")
                    f = sock.makefile("rb")
                    while True:
                        line = f.readline(65536)
                        if not line:
                            return
                        rec.received += line
                        if line.strip().upper() == b"QUIT":
                            sock.sendall(b"221 bye\r\n")
                            return
                        sock.sendall(b"echo: " + line)
                except OSError:
                    return

        self.server = _Server((host, port), Handler)
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def wait_connection(self, timeout=DEFAULT_TIMEOUT):
        return self.connections.wait(lambda c: True, timeout, "backend connection")

    def connection_count(self):
        with self.connections.cond:
            return len(self.connections.items)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
