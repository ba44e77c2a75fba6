"""HTTP backends for the HTTP routing tests: nginx (static files, a
JMAP-like session document, WebDAV PUT), Radicale (CalDAV/CardDAV), and a
WebSocket echo server from python3-websockets. All on 127.0.0.1.

nginx writes an access log with the connection serial number and the
request count on it ($connection, $connection_requests), so a test can see
whether the proxy reused a backend connection, and with the request
headers a test cares about (Expect, Connection)."""

import asyncio
import os
import re
import subprocess
import threading

from .util import (DEFAULT_TIMEOUT, HarnessError, free_port, make_tempdir, remove_tree, track,
                   untrack, wait_file_regex, wait_ports_listening, read_text)

SESSION_DOC = '{"capabilities":{"urn:ietf:params:jmap:core":{}},"apiUrl":"/jmap/api/","username":"%s"}\n'


class Nginx:
    """nginx -g 'daemon off;' with a config in a temp dir. Every response
    carries `X-Backend: <name>`."""

    def __init__(self, name, files=None, keepalive_timeout="75s", extra=""):
        self.name = name
        self.port = free_port()
        self.dir = make_tempdir(f"nginx-{name}")
        track(self)
        self.root = os.path.join(self.dir, "www")
        os.makedirs(os.path.join(self.root, ".well-known"))
        os.makedirs(os.path.join(self.root, "dav"))
        with open(os.path.join(self.root, ".well-known", "jmap"), "w") as f:
            f.write(SESSION_DOC % name)
        for path, content in (files or {}).items():
            full = os.path.join(self.root, path.lstrip("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w" if isinstance(content, str) else "wb") as f:
                f.write(content)
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = f"""{user}worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    log_format conn '$connection $connection_requests "$request" $status expect=[$http_expect] connection=[$http_connection]';
    types {{ text/plain txt; application/json json; text/html html; }}
    default_type application/json;
    server {{
        listen 127.0.0.1:{self.port};
        access_log {self.access_log} conn;
        keepalive_timeout {keepalive_timeout};
        keepalive_requests 1000;
        root {self.root};
        add_header X-Backend {name} always;
        gzip on;
        gzip_min_length 1;
        gzip_types *;
        location = /echo-forwarded {{
            default_type text/plain;
            return 200 "forwarded=[$http_forwarded] xff=[$http_x_forwarded_for]\n";
        }}
        location /dav/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
        }}
        {extra}
    }}
}}
"""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = None

    def start(self, timeout=DEFAULT_TIMEOUT):
        self.proc = subprocess.Popen(["nginx", "-c", self.conf, "-p", self.dir, "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            wait_ports_listening([self.port], timeout, what=f"nginx {self.name}")
        except HarnessError:
            self.cleanup()
            raise
        return self

    def log(self):
        """The access log lines so far."""
        return read_text(self.access_log).splitlines() if os.path.exists(self.access_log) else []

    def wait_log(self, pattern, timeout=DEFAULT_TIMEOUT):
        """nginx writes its access log after the response: wait for a line."""
        return wait_file_regex(self.access_log, pattern, timeout)

    def log_mark(self):
        """Where the access log ends now; pass it to wait_line as `since`."""
        return os.path.getsize(self.access_log) if os.path.exists(self.access_log) else 0

    def wait_line(self, text, since=0, timeout=DEFAULT_TIMEOUT):
        """The first access log line containing `text` written after `since`
        (a log_mark), waited for: nginx logs a request after its response."""
        rx = re.compile(r"[^\n]*" + re.escape(text) + r"[^\n]*")
        return wait_file_regex(self.access_log, rx, timeout, start=since).group(0)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        remove_tree(self.dir)
        untrack(self)


class Radicale:
    """radicale with htpasswd (plain) users and a filesystem storage."""

    def __init__(self, users):
        self.port = free_port()
        self.dir = make_tempdir("radicale")
        track(self)
        self.storage = os.path.join(self.dir, "collections")
        self.htpasswd = os.path.join(self.dir, "users")
        with open(self.htpasswd, "w") as f:
            for u, p in users.items():
                f.write(f"{u}:{p}\n")
        self.proc = None

    def start(self, timeout=DEFAULT_TIMEOUT):
        self.proc = subprocess.Popen(
            ["radicale", "--server-hosts", f"127.0.0.1:{self.port}",
             "--storage-filesystem-folder", self.storage,
             "--auth-type", "htpasswd", "--auth-htpasswd-filename", self.htpasswd,
             "--auth-htpasswd-encryption", "plain", "--auth-delay", "0",
             "--rights-type", "owner_only", "--logging-level", "info"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ports_listening([self.port], timeout * 3, what="radicale")
        except HarnessError:
            self.cleanup()
            raise
        return self

    def principals(self):
        root = os.path.join(self.storage, "collection-root")
        return sorted(os.listdir(root)) if os.path.isdir(root) else []

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        remove_tree(self.dir)
        untrack(self)


class WebSocketEcho:
    """A python3-websockets echo server (its own asyncio loop in a thread);
    each reply is "<name>:<message>"."""

    def __init__(self, name):
        import websockets
        self.name = name
        self.port = free_port()
        self.headers = []  # the request headers of each handshake
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = None

        async def echo(ws, path=None):
            self.headers.append(dict(ws.request_headers))
            async for msg in ws:
                await ws.send(f"{self.name}:{msg}")

        async def main():
            self._stop = asyncio.Event()
            async with websockets.serve(echo, "127.0.0.1", self.port):
                self._ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=lambda: self._loop.run_until_complete(main()), daemon=True)
        track(self)

    def start(self, timeout=DEFAULT_TIMEOUT):
        self._thread.start()
        if not self._ready.wait(timeout):
            raise HarnessError("websocket echo server did not start")
        return self

    def cleanup(self):
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        untrack(self)
