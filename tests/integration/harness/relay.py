"""A TCP relay on loopback that can black-hole its flows: what a server
looks like to its client when a middlebox drops a connection's state, or
the server hangs, without anything being closed.

    relay = StallRelay(target_port).start()
    ... the client connects to relay.port ...
    relay.stall()      # every flow open now stops moving, in both directions,
                       # and stays open; later connections are relayed as usual
    relay.cleanup()

`accepted` counts the connections taken so far; wait_accepted(n) waits for
the n-th (a reconnect is an event the test can wait on).
"""

import selectors
import socket
import threading

from .util import HarnessError, free_port, track, untrack


class StallRelay:
    def __init__(self, target_port, target_host="127.0.0.1", host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = free_port(host)
        self.accepted = 0
        self._cond = threading.Condition()
        self._flows = []  # [client, upstream, stalled]
        self._stop = False
        self._lsock = None
        self._thread = None

    def start(self):
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((self.host, self.port))
        self._lsock.listen(64)
        self._lsock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._lsock, selectors.EVENT_READ, None)
        # A socketpair wakes the selector for stall() and cleanup().
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        track(self)
        return self

    def stall(self):
        """Every flow open now stops: nothing more is read from either side
        of it, nothing is closed."""
        with self._cond:
            for f in self._flows:
                f[2] = True
        self._wake_w.send(b"x")

    def wait_accepted(self, n, timeout=30.0):
        with self._cond:
            if not self._cond.wait_for(lambda: self.accepted >= n, timeout):
                raise HarnessError(f"relay: {self.accepted} connections, waited for {n}")

    def _run(self):
        while not self._stop:
            for key, _ in self._sel.select(timeout=1.0):
                if key.data == "wake":
                    key.fileobj.recv(64)
                    self._rearm()
                elif key.data is None:
                    self._accept()
                else:
                    self._pump(key.fileobj, key.data)

    def _accept(self):
        try:
            c, _ = self._lsock.accept()
        except BlockingIOError:
            return
        try:
            u = socket.create_connection(self.target, timeout=5)
        except OSError:
            c.close()
            return
        for s in (c, u):
            s.setblocking(False)
        flow = [c, u, False]
        with self._cond:
            self._flows.append(flow)
            self.accepted += 1
            self._cond.notify_all()
        self._sel.register(c, selectors.EVENT_READ, (flow, u))
        self._sel.register(u, selectors.EVENT_READ, (flow, c))

    def _rearm(self):
        """Stalled flows are no longer watched (their bytes stay queued in
        the kernel)."""
        with self._cond:
            flows = [f for f in self._flows if f[2]]
        for f in flows:
            for s in f[:2]:
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass

    def _pump(self, src, data):
        flow, dst = data
        try:
            buf = src.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            buf = b""
        if not buf:
            self._drop(flow)
            return
        try:
            dst.setblocking(True)
            dst.sendall(buf)
            dst.setblocking(False)
        except OSError:
            self._drop(flow)

    def _drop(self, flow):
        for s in flow[:2]:
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        with self._cond:
            if flow in self._flows:
                self._flows.remove(flow)

    def cleanup(self):
        self._stop = True
        if self._thread:
            self._wake_w.send(b"x")
            self._thread.join(5)
            self._thread = None
        with self._cond:
            flows, self._flows = self._flows, []
        for f in flows:
            for s in f[:2]:
                s.close()
        if self._lsock:
            self._sel.close()
            self._lsock.close()
            self._wake_r.close()
            self._wake_w.close()
            self._lsock = None
        untrack(self)
