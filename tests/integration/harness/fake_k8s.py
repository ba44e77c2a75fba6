"""A stand-in Kubernetes API server for the discovery tests (a real one
cannot be installed on these machines).

It serves just what Switchyard's discovery uses, in the documented wire
format of discovery.k8s.io/v1:

* `GET /apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices?labelSelector=
  kubernetes.io/service-name=<svc>` -> an `EndpointSliceList` (apiVersion, kind,
  metadata.resourceVersion, items);
* the same with `watch=1` -> `200` and a chunked stream of newline-delimited
  watch events (`{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR",
  "object": {...}}`) starting after `resourceVersion`, ending after
  `timeoutSeconds` (a BOOKMARK with the current version is sent first when
  `allowWatchBookmarks=true`);
* a watch from a version older than the compaction point gets the API
  server's answer: a `200` stream holding one `ERROR` event whose object is a
  `Status` with code 410 (`Expired`), or, with `gone_as_http`, an HTTP 410;
* `401` with a `Status` body when the bearer token is wrong.

HTTPS with the test PKI's CA (the `localhost` certificate, which carries
IP:127.0.0.1); optionally requiring a client certificate signed by it.

The test drives it: add, modify and delete slices and endpoints, expire the
running watches, inject a 410, stop it (every connection dropped) and start
it again on the same port, rotate the token. Every request is recorded, and
`wait_request` waits for one on a condition variable (no polling).

Python standard library only: http.server + ssl + threading.
"""

import json
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE_LABEL = "kubernetes.io/service-name"
PREFIX = "/apis/discovery.k8s.io/v1/namespaces/"


def endpoint(address, pod=None, ready=True, serving=None, terminating=None, node="node-1",
             conditions=True):
    """One discovery.k8s.io/v1 Endpoint. `None` leaves a condition out (as the
    API does for an unknown state); pod=None leaves out targetRef."""
    ep = {"addresses": [address] if isinstance(address, str) else list(address)}
    if conditions:
        cond = {}
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)):
            if v is not None:
                cond[k] = v
        ep["conditions"] = cond
    if pod:
        ep["targetRef"] = {"kind": "Pod", "namespace": "", "name": pod, "uid": str(uuid.uuid4())}
    if node:
        ep["nodeName"] = node
    return ep


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # failed handshakes, clients that left: not the test's business


class FakeK8s:
    __test__ = False

    def __init__(self, pki, token="token-one", require_client_cert=False, host="127.0.0.1", port=None):
        self.pki = pki
        self.host = host
        self.port = port
        self.token = token
        self.require_client_cert = require_client_cert
        self.gone_as_http = False
        self.split_events = True  # write each event line in two chunks
        self.cv = threading.Condition()
        self.rv = 1000
        self.slices = {}  # (namespace, name) -> object
        self.history = []  # (rv, namespace, type, object)
        self.compacted = 0  # watches from an older version get 410
        self.requests = []
        self.epoch = 0  # bumped to end every running watch
        self.gone_epoch = 0  # bumped to send ERROR 410 to every running watch
        self.kill_epoch = 0  # bumped by stop()
        self.end_bookmark = True
        self.raw = []  # bytes sent as-is to the watches running when added
        self.conns = set()
        self.httpd = None
        self.thread = None

    # --- lifecycle --------------------------------------------------------

    @property
    def url(self):
        return f"https://{self.host}:{self.port}"

    def start(self):
        handler = _make_handler(self)
        self.httpd = _Server((self.host, self.port or 0), handler)
        self.port = self.httpd.server_address[1]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.localhost.cert, self.pki.localhost.key)
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.pki.ca_cert)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Goes away: closes the listening socket and drops every connection
        (running watches included) without a clean end of stream."""
        if not self.httpd:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.cv:
            conns = list(self.conns)
            self.kill_epoch += 1  # running watches leave without writing
            self.cv.notify_all()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)
        self.httpd = None

    def cleanup(self):
        self.stop()

    # --- state the test drives ---------------------------------------------

    def _bump(self):
        self.rv += 1
        return self.rv

    def _record(self, ns, etype, obj):
        self.history.append((self.rv, ns, etype, obj))
        self.cv.notify_all()

    def _object(self, ns, name, service, endpoints, address_type):
        return {
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {
                "name": name,
                "generateName": service + "-",
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(self.rv),
                "generation": 1,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {SERVICE_LABEL: service,
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                     "uid": str(uuid.uuid4()), "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "addressType": address_type,
            "endpoints": [dict(e) for e in endpoints] or None,
            "ports": [{"name": "imap", "protocol": "TCP", "port": 143}],
        }

    def put_slice(self, name, endpoints, service="mail", ns="mail", address_type="IPv4", silent=False):
        """Creates or replaces a slice (an ADDED or MODIFIED event). With
        `silent` no event is kept in the history (used with compact() so only
        a relist can see the change)."""
        with self.cv:
            self._bump()
            existed = (ns, name) in self.slices
            obj = self._object(ns, name, service, endpoints, address_type)
            for e in obj["endpoints"] or []:
                if "targetRef" in e:
                    e["targetRef"]["namespace"] = ns
            self.slices[(ns, name)] = obj
            if not silent:
                self._record(ns, "MODIFIED" if existed else "ADDED", obj)
            return self.rv

    def delete_slice(self, name, ns="mail", silent=False):
        with self.cv:
            obj = self.slices.pop((ns, name))
            self._bump()
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self.rv)
            if not silent:
                self._record(ns, "DELETED", obj)
            return self.rv

    def bump(self):
        """Another object of the cluster changed: the version moves on with
        no event for our selector (bookmarks carry it)."""
        with self.cv:
            return self._bump()

    def compact(self):
        """Forgets the history up to now: watches from an older version get
        410 Gone."""
        with self.cv:
            self.compacted = self.rv
            self.history = []

    def inject_gone(self):
        """Sends ERROR 410 to every running watch (the API server's
        "too old resource version") and ends it."""
        with self.cv:
            self.compacted = self.rv
            self.history = []
            self.gone_epoch += 1
            self.cv.notify_all()

    def expire_watches(self, bookmark=True):
        """Ends every running watch cleanly (as timeoutSeconds does), after a
        BOOKMARK with the current version unless `bookmark` is False."""
        with self.cv:
            self.epoch += 1
            self.end_bookmark = bookmark
            self.cv.notify_all()

    def inject_raw(self, data):
        """Writes `data` (bytes, e.g. a malformed or oversized line) into
        every running watch stream, in chunks of at most 64 KiB."""
        with self.cv:
            self.raw.append(data)
            self.cv.notify_all()

    def rotate_token(self, token):
        with self.cv:
            self.token = token

    # --- what the client did -----------------------------------------------

    def wait_request(self, pred, timeout=10.0, start=0):
        """Waits for a recorded request (a dict: kind, rv, timeout, token_ok,
        token, path, status) matching pred, from index `start`; returns it."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for r in self.requests[start:]:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching request within {timeout}s; saw {self.requests}")
                self.cv.wait(left)

    def set_status(self, rec, status):
        with self.cv:
            rec["status"] = status
            self.cv.notify_all()

    def mark(self):
        with self.cv:
            return len(self.requests)


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _make_handler(fake):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def setup(self):
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.request.close()
                raise
            super().setup()
            with fake.cv:
                fake.conns.add(self.request)

        def finish(self):
            with fake.cv:
                fake.conns.discard(self.request)
            try:
                super().finish()
            except OSError:
                pass

        def _send_json(self, code, obj):
            body = (json.dumps(obj) + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _chunk(self, data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _event(self, etype, obj):
            line = (json.dumps({"type": etype, "object": obj}) + "\n").encode()
            if fake.split_events and len(line) > 8:
                # Split inside the line, in separate TLS records, so the
                # client must join reads.
                half = len(line) // 2
                self._chunk(line[:half])
                time.sleep(0.005)
                self._chunk(line[half:])
            else:
                self._chunk(line)

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            watch = q.get("watch") in ("1", "true")
            with fake.cv:
                expected = fake.token
                token_ok = expected is None or token == expected
                rec = {"kind": "watch" if watch else "list", "path": u.path, "query": q,
                       "rv": q.get("resourceVersion"), "timeout": q.get("timeoutSeconds"),
                       "token": token, "token_ok": token_ok, "status": None,
                       "selector": q.get("labelSelector")}
                fake.requests.append(rec)
                fake.cv.notify_all()
            if not u.path.startswith(PREFIX) or not u.path.endswith("/endpointslices"):
                fake.set_status(rec, 404)
                return self._send_json(404, _status(404, "NotFound", "the server could not find the requested resource"))
            ns = u.path[len(PREFIX):-len("/endpointslices")]
            if not token_ok:
                fake.set_status(rec, 401)
                return self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
            sel = q.get("labelSelector", "")
            want = None
            if sel:
                k, _, v = sel.partition("=")
                if k != SERVICE_LABEL or not v:
                    fake.set_status(rec, 400)
                    return self._send_json(400, _status(400, "BadRequest", f"unsupported selector {sel}"))
                want = v

            def matches(obj_ns, obj):
                labels = obj.get("metadata", {}).get("labels") or {}
                return obj_ns == ns and (want is None or labels.get(SERVICE_LABEL) == want)

            if not watch:
                with fake.cv:
                    items = []
                    for (sns, _), obj in sorted(fake.slices.items()):
                        if matches(sns, obj):
                            item = json.loads(json.dumps(obj))
                            del item["kind"], item["apiVersion"]  # list items carry neither
                            items.append(item)
                    body = {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                            "metadata": {"resourceVersion": str(fake.rv)}, "items": items}
                fake.set_status(rec, 200)
                return self._send_json(200, body)
            return self._watch(q, ns, matches, rec)

        def _watch(self, q, ns, matches, rec):
            try:
                since = int(q.get("resourceVersion") or "0")
            except ValueError:
                fake.set_status(rec, 400)
                return self._send_json(400, _status(400, "BadRequest", "bad resourceVersion"))
            timeout = float(q.get("timeoutSeconds") or "1800")
            bookmarks = q.get("allowWatchBookmarks") == "true"
            with fake.cv:
                too_old = since < fake.compacted
                current = fake.rv
                epoch, gone_epoch, kill_epoch = fake.epoch, fake.gone_epoch, fake.kill_epoch
                raw_sent = len(fake.raw)
            if too_old and fake.gone_as_http:
                fake.set_status(rec, 410)
                return self._send_json(410, _status(410, "Expired", f"too old resource version: {since} ({current})"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            fake.set_status(rec, 200)
            try:
                if too_old:
                    self._event("ERROR", _status(410, "Expired", f"too old resource version: {since} ({current})"))
                    self._chunk(b"")
                    return
                deadline = time.monotonic() + timeout
                sent = since
                while True:
                    with fake.cv:
                        if fake.kill_epoch != kill_epoch:
                            return
                        pending = [(rv, t, o) for rv, ens, t, o in fake.history if rv > sent and matches(ens, o)]
                        ended = fake.epoch != epoch
                        gone = fake.gone_epoch != gone_epoch
                        raw = fake.raw[raw_sent:]
                        raw_sent = len(fake.raw)
                        left = deadline - time.monotonic()
                        if not pending and not raw and not ended and not gone and left > 0:
                            fake.cv.wait(min(left, 0.2))
                            continue
                        now_rv = fake.rv
                    for data in raw:
                        for i in range(0, len(data), 65536):
                            self._chunk(data[i:i + 65536])
                    for rv, t, o in pending:
                        self._event(t, o)
                        sent = rv
                    if gone:
                        self._event("ERROR", _status(410, "Expired",
                                                     f"too old resource version: {sent} ({now_rv})"))
                        self._chunk(b"")
                        return
                    if ended or time.monotonic() >= deadline:
                        if bookmarks and now_rv > sent and (fake.end_bookmark or not ended):
                            self._event("BOOKMARK", {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                                                     "metadata": {"resourceVersion": str(now_rv),
                                                                  "creationTimestamp": None},
                                                     "addressType": "", "endpoints": None})
                        self._chunk(b"")
                        return
            except (OSError, ssl.SSLError):
                return  # the server is going away, or the client left

    return Handler
