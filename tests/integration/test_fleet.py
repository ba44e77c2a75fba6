"""Many replicas, one proxy (issue 13): management actions on one replica
reach every replica through fleet events on the shared mapping store (Redis
PUBLISH/SUBSCRIBE, PostgreSQL NOTIFY/LISTEN); direct store changes reach
them through Redis keyspace notifications or the documented PostgreSQL
trigger; a file source is watched on every replica.

Three real Switchyard processes share one real redis-server or PostgreSQL
and route to two real Dovecots ("legacy" and "new"; a message in each
mailbox names its backend). The cache TTLs are an hour, so only an event
can make a replica forget what it cached. Every wait is on an event: a
metric of the receiving replica, its log, or the closing of a session.
"""

import http.client
import os
import re
import shutil
import socket
import tempfile
import threading
import time

import pytest

from harness import Postgres, Redis
from harness.relay import StallRelay
from harness.util import free_port
from test_soak import USERS, TOKEN, WAIT, LoginLoop, base_config, open_idle, pair, served_by  # noqa: F401

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "OPERATIONS.md")


def call(port, method, path):
    """One admin request: (status, body, X-Switchyard-Fleet header)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        return r.status, r.read().decode(), r.getheader("X-Switchyard-Fleet")
    finally:
        conn.close()


def metric(port, series):
    _, text, _ = call(port, "GET", "/metrics")
    m = re.search(r"^" + re.escape(series) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def wait_for(pred, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def received(port, kind):
    return metric(port, f'switchyard_fleet_events_received_total{{type="{kind}"}}') or 0


def wait_received(ports, kind, above):
    """Every replica of `ports` applied more `kind` events than `above[i]`."""
    for p, before in zip(ports, above):
        wait_for(lambda: received(p, kind) > before, f"a {kind} event on the replica at {p}")


def cache_entries(port):
    _, body, _ = call(port, "GET", "/stats")
    return __import__("json").loads(body)["cache_entries"]


# --- the fleet ---------------------------------------------------------------------------------

SQL_SCHEMA = "CREATE TABLE routes (identifier text PRIMARY KEY, destination text NOT NULL)"


def store_mapping(kind, store, extra=""):
    common = f"""
[mapping]
source = "{kind}"
normalize = "lowercase"
positive_ttl = "1h"
negative_ttl = "1h"
lookup_timeout = "2s"
on_store_error = "tempfail"
"""
    if kind == "redis":
        return common + f'[mapping.redis]\nurl = "{store.url}"\nkey_prefix = "route:"\npool_size = 2\n{extra}'
    return common + (f'[mapping.sql]\nurl = "{store.url}"\npool_size = 2\n'
                     'upsert_query = "INSERT INTO routes VALUES ($1, $2) ON CONFLICT (identifier) '
                     'DO UPDATE SET destination = EXCLUDED.destination"\n'
                     'delete_query = "DELETE FROM routes WHERE identifier = $1"\n' + extra)


class Fleet:
    """A store and `n` replicas; replica i is (imap port, admin port, process)."""

    def __init__(self, switchyard, pair, kind, n=3, extra="", keyspace=None):
        self.kind = kind
        if kind == "redis":
            self.store = Redis(persist=True).start()
            if keyspace is not None:
                self.store.command("CONFIG", "SET", "notify-keyspace-events", keyspace)
        else:
            self.store = Postgres().start()
            self.store.psql(SQL_SCHEMA)
        self.replicas = []
        try:
            for _ in range(n):
                imap, adm = free_port(), free_port()
                sy = switchyard(base_config(pair, imap, adm, store_mapping(kind, self.store, extra)))
                self.replicas.append((imap, adm, sy))
            for _, adm, _ in self.replicas:
                wait_for(lambda: metric(adm, "switchyard_fleet_subscription_up") == 1,
                         "the fleet subscription")
        except BaseException:
            self.store.cleanup()
            raise

    def set(self, user, dest):
        if self.kind == "redis":
            self.store.command("SET", f"route:{user}", dest)
        else:
            self.store.psql(f"INSERT INTO routes VALUES ('{user}', '{dest}') "
                            "ON CONFLICT (identifier) DO UPDATE SET destination = EXCLUDED.destination")

    def imap(self, i):
        return self.replicas[i][0]

    def admin(self, i):
        return self.replicas[i][1]

    def cleanup(self):
        self.store.cleanup()


@pytest.fixture(params=["redis", "sql"])
def fleet(request, switchyard, pair):
    f = Fleet(switchyard, pair, request.param)
    yield f
    f.cleanup()


def test_put_on_one_replica_reroutes_every_replica(fleet):
    """The account was cached on B and C (TTL 1 h); PUT /mappings on A makes
    their next login land on the new backend. With ?scope=local the others
    keep their cached answer: the event is what moves them."""
    user, other = "soak00@example.com", "soak01@example.com"
    fleet.set(user, "legacy")
    fleet.set(other, "legacy")
    for i in (1, 2):
        assert served_by(fleet.imap(i), user) == "legacy"
        assert served_by(fleet.imap(i), other) == "legacy"
    before = [received(fleet.admin(i), "invalidate") for i in (1, 2)]

    status, body, hdr = call(fleet.admin(0), "PUT", f"/mappings?identifier={user}&destination=new")
    assert (status, body) == (200, "ok\n")
    assert re.fullmatch(r"published; seq=\d+", hdr), hdr
    wait_received([fleet.admin(1), fleet.admin(2)], "invalidate", before)
    for i in (0, 1, 2):
        assert served_by(fleet.imap(i), user) == "new", i

    status, body, hdr = call(fleet.admin(0), "PUT",
                             f"/mappings?identifier={other}&destination=new&scope=local")
    assert (status, body, hdr) == (200, "ok\n", "local; reason=requested")
    assert served_by(fleet.imap(0), other) == "new"
    assert served_by(fleet.imap(1), other) == "legacy"  # still cached there

    # DELETE reaches them too: unmapped goes to the default (legacy).
    before = [received(fleet.admin(i), "invalidate") for i in (1, 2)]
    status, body, hdr = call(fleet.admin(0), "DELETE", f"/mappings?identifier={user}")
    assert (status, body) == (200, "removed\n") and hdr.startswith("published;"), (status, body, hdr)
    wait_received([fleet.admin(1), fleet.admin(2)], "invalidate", before)
    assert served_by(fleet.imap(2), user) == "legacy"

    status, body, _ = call(fleet.admin(0), "PUT", f"/mappings?identifier={user}&destination=new&scope=all")
    assert (status, body) == (400, "scope must be fleet or local\n")


def closed_by_proxy(m):
    """Reads until the proxy closes the IDLE session; True when it did."""
    m.sock.settimeout(WAIT)
    try:
        while True:
            line = m.readline()
            if not line:
                return True
    except (OSError, socket.timeout):
        return False


def test_kick_delay_and_invalidate_all_reach_every_replica(fleet):
    user = "soak02@example.com"
    fleet.set(user, "new")
    sessions = [open_idle(fleet.imap(i), user) for i in (1, 2)]
    status, body, hdr = call(fleet.admin(0), "POST", f"/connections/kick?identifier={user}")
    # A itself had none; B and C close theirs.
    assert (status, body) == (200, "kicked 0\n") and hdr.startswith("published;"), (status, body, hdr)
    for m, _ in sessions:
        assert closed_by_proxy(m)

    # Delay on A holds the account's logins on B.
    held = "soak03@example.com"
    before = [received(fleet.admin(1), "delay")]
    status, body, hdr = call(fleet.admin(0), "POST", f"/connections/delay?identifier={held}&seconds=4")
    assert (status, body) == (200, "ok\n") and hdr.startswith("published;"), (status, body, hdr)
    wait_received([fleet.admin(1)], "delay", before)
    t = time.monotonic()
    assert served_by(fleet.imap(1), held) == "legacy"
    assert time.monotonic() - t >= 3.0  # held (a lower bound: never flaky on a slow machine)

    # Invalidate-all on A empties every cache.
    for i in (1, 2):
        served_by(fleet.imap(i), "soak04@example.com")
        assert cache_entries(fleet.admin(i)) > 0
    status, body, hdr = call(fleet.admin(0), "POST", "/cache/invalidate")
    assert (status, body) == (200, "ok\n") and hdr.startswith("published;"), (status, body, hdr)
    for i in (0, 1, 2):
        wait_for(lambda: cache_entries(fleet.admin(i)) == 0, f"an empty cache on replica {i}")

    _, body, _ = call(fleet.admin(1), "GET", "/stats")
    stats = __import__("json").loads(body)["fleet"]
    assert stats["subscription"] == "up"
    assert stats["received"]["kick"] >= 1 and stats["received"]["delay"] >= 1
    assert metric(fleet.admin(0), 'switchyard_fleet_events_published_total{type="kick"}') == 1


def pg_trigger_sql():
    """The trigger exactly as docs/OPERATIONS.md gives it."""
    with open(DOCS) as f:
        text = f.read()
    m = re.search(r"<!-- pg-trigger[^>]*-->\n```sql\n(.*?)```", text, re.S)
    assert m, "docs/OPERATIONS.md lost its trigger block"
    return m.group(1)


@pytest.mark.parametrize("kind", ["redis", "sql"])
def test_direct_store_changes_reach_every_replica(switchyard, pair, kind):
    """A SET/DEL in Redis (keyspace notifications on, watch_keyspace) or an
    UPDATE/DELETE in PostgreSQL (the documented trigger) reaches every
    replica, with no API call."""
    extra = "watch_keyspace = true\n" if kind == "redis" else ""
    f = Fleet(switchyard, pair, kind, n=2, extra=extra, keyspace="Kg$x")
    try:
        if kind == "sql":
            f.store.psql(pg_trigger_sql())
        user = "soak05@example.com"
        f.set(user, "legacy")
        for i in (0, 1):
            assert served_by(f.imap(i), user) == "legacy"
        before = [received(f.admin(i), "invalidate") for i in (0, 1)]
        if kind == "redis":
            f.store.command("SET", f"route:{user}", "new")
        else:
            f.store.psql(f"UPDATE routes SET destination = 'new' WHERE identifier = '{user}'")
        wait_received([f.admin(0), f.admin(1)], "invalidate", before)
        for i in (0, 1):
            assert served_by(f.imap(i), user) == "new"
        before = [received(f.admin(i), "invalidate") for i in (0, 1)]
        if kind == "redis":
            f.store.command("DEL", f"route:{user}")
        else:
            f.store.psql(f"DELETE FROM routes WHERE identifier = '{user}'")
        wait_received([f.admin(0), f.admin(1)], "invalidate", before)
        for i in (0, 1):
            assert served_by(f.imap(i), user) == "legacy"  # unmapped: the default
    finally:
        f.cleanup()


def test_keyspace_watch_refused_when_the_server_has_it_off(switchyard, pair):
    f = Fleet(switchyard, pair, "redis", n=1, extra="watch_keyspace = true\n", keyspace="")
    try:
        sy = f.replicas[0][2]
        sy.wait_log(r"watch_keyspace is refused: the server's notify-keyspace-events")
        # Routing and the events channel still work.
        f.set("soak06@example.com", "new")
        assert served_by(f.imap(0), "soak06@example.com") == "new"
    finally:
        f.cleanup()


@pytest.mark.parametrize("kind", ["redis", "sql"])
def test_store_restart_under_logins_resubscribes_and_never_misroutes(switchyard, pair, kind):
    """The store restarted under a login loop on two replicas: no login
    lands on a wrong backend, each replica resubscribes on its own and clears
    its cache once; a mapping changed while a replica could not hear of it
    reaches it through the cleared cache."""
    f = Fleet(switchyard, pair, kind, n=2)
    try:
        expect = {u: ("new" if int(u[4:6]) % 2 == 0 else "legacy") for u in list(USERS)[:8]}
        for u, d in expect.items():
            f.set(u, d)
        if kind == "sql":
            f.store.psql("CHECKPOINT")
        loops = [LoginLoop(f.imap(i), expect, threads=2) for i in (0, 1)]
        for lp in loops:
            lp.__enter__()
        try:
            for lp in loops:
                lp.wait_ok(8)
            if kind == "redis":
                f.store.proc.kill()
                f.store.proc.wait()
            else:
                f.store.kill()
            for i in (0, 1):
                wait_for(lambda: metric(f.admin(i), "switchyard_fleet_subscription_up") == 0,
                         "the subscription seen down")
            f.store.restart()
            for i in (0, 1):
                wait_for(lambda: metric(f.admin(i), "switchyard_fleet_resubscribes_total") == 1,
                         "a resubscription", timeout=30)
            for lp in loops:
                lp.wait_ok(lp.counts["ok"] + 8)
        finally:
            for lp in loops:
                lp.__exit__(None, None, None)
        for lp in loops:
            assert lp.counts["wrong"] == 0, (lp.counts, lp.errors[:5])
            assert lp.counts["failed"] == 0, (lp.counts, lp.errors[:5])
        for _, _, sy in f.replicas:
            assert sy.log_count(r"fleet events: resubscribed; cache cleared once") == 1
    finally:
        f.cleanup()


@pytest.mark.parametrize("kind", ["redis", "sql"])
def test_silent_subscription_is_noticed_and_made_again(switchyard, pair, kind):
    """The subscriber's flow goes silent without closing (a middlebox dropped
    it, the server hung): the subscriber sends nothing of its own, so only
    its ping (every 3 x lookup_timeout, answered within 2 x) can notice.
    It reconnects and resubscribes, and events reach the replica again."""
    store = Redis(persist=True).start() if kind == "redis" else Postgres().start()
    relay = StallRelay(store.port).start()
    try:
        if kind == "sql":
            store.psql(SQL_SCHEMA)
        url = (f"redis://127.0.0.1:{relay.port}" if kind == "redis" else
               f"postgresql://{store.user}@127.0.0.1:{relay.port}/{store.database}")
        mapping = store_mapping(kind, type("S", (), {"url": url})).replace(
            'lookup_timeout = "2s"', 'lookup_timeout = "300ms"')
        imap, adm = free_port(), free_port()
        sy = switchyard(base_config(pair, imap, adm, mapping))
        wait_for(lambda: metric(adm, "switchyard_fleet_subscription_up") == 1, "the subscription")
        relay.stall()
        wait_for(lambda: metric(adm, "switchyard_fleet_resubscribes_total") == 1,
                 "a resubscription after the silence", timeout=30)
        assert metric(adm, "switchyard_fleet_subscription_up") == 1
        assert sy.log_count(r"no (reply|answer) within 600 ms") >= 1
        # The new subscription carries events: a PUT on a second replica,
        # which reaches the store directly, arrives here.
        imap2, adm2 = free_port(), free_port()
        switchyard(base_config(pair, imap2, adm2, store_mapping(kind, store)))
        wait_for(lambda: metric(adm2, "switchyard_fleet_subscription_up") == 1, "B's subscription")
        before = received(adm, "invalidate")
        status, _, hdr = call(adm2, "PUT", "/mappings?identifier=soak00@example.com&destination=new")
        assert status == 200 and hdr.startswith("published;"), (status, hdr)
        wait_received([adm], "invalidate", [before])
    finally:
        relay.cleanup()
        store.cleanup()


# --- the file source ----------------------------------------------------------------------------


class ConfigMapDir:
    """A directory laid out like a Kubernetes ConfigMap volume: <dir>/<name>
    -> ..data/<name>, ..data -> ..<version>; update() swaps ..data the way
    the kubelet does (a new version directory, a temporary symlink renamed
    over ..data)."""

    def __init__(self, name, content):
        self.dir = tempfile.mkdtemp(prefix="sy-configmap-")
        self.name = name
        self.version = 0
        self._write_version(content)
        os.symlink(f"..{self.version}", os.path.join(self.dir, "..data"))
        os.symlink(f"..data/{name}", os.path.join(self.dir, name))

    @property
    def path(self):
        return os.path.join(self.dir, self.name)

    def _write_version(self, content):
        self.version += 1
        d = os.path.join(self.dir, f"..{self.version}")
        os.mkdir(d)
        with open(os.path.join(d, self.name), "w") as f:
            f.write(content)

    def update(self, content):
        old = self.version
        self._write_version(content)
        tmp = os.path.join(self.dir, "..data_tmp")
        os.symlink(f"..{self.version}", tmp)
        os.rename(tmp, os.path.join(self.dir, "..data"))
        shutil.rmtree(os.path.join(self.dir, f"..{old}"))

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def file_mapping(path):
    return f"""
[mapping]
source = "file"
normalize = "lowercase"
positive_ttl = "1h"
[mapping.file]
path = "{path}"
"""


def test_mapping_file_is_followed_on_every_replica(switchyard, pair):
    """Two replicas read one mapping file from a ConfigMap-style directory:
    a ..data swap and then an in-place edit reach both within the debounce;
    an invalid edit is refused and the old table kept. Kick with a file
    source stays local, and the answer says so."""
    user = "soak07@example.com"
    cm = ConfigMapDir("mapping.txt", f"{user} legacy\n")
    try:
        reps = []
        for _ in range(2):
            imap, adm = free_port(), free_port()
            reps.append((imap, adm, switchyard(base_config(pair, imap, adm, file_mapping(cm.path)))))
        for imap, _, _ in reps:
            assert served_by(imap, user) == "legacy"

        marks = [sy.log_mark() for _, _, sy in reps]
        cm.update(f"{user} new\n")
        for (imap, _, sy), mark in zip(reps, marks):
            sy.wait_log(r"mapping file reloaded", since=mark)
            assert served_by(imap, user) == "new"

        # In place (a plain file, rewritten where it is).
        plain = os.path.join(cm.dir, "plain.txt")
        with open(plain, "w") as fh:
            fh.write(f"{user} new\n")
        imap, adm = free_port(), free_port()
        sy = switchyard(base_config(pair, imap, adm, file_mapping(plain)))
        assert served_by(imap, user) == "new"
        mark = sy.log_mark()
        with open(plain, "r+") as fh:
            fh.write(f"{user} legacy\n")
            fh.truncate()
        sy.wait_log(r"mapping file reloaded", since=mark)
        assert served_by(imap, user) == "legacy"

        mark = sy.log_mark()
        with open(plain, "w") as fh:
            fh.write(f"{user} nowhere\n")
        sy.wait_log(r"mapping file reload failed: keeping the old table", since=mark)
        assert "nowhere" in sy.log_text()[-2000:]
        assert served_by(imap, user) == "legacy"

        # The client has logged out of its three sessions, but the proxy may
        # not have seen the last close yet: wait for it, or kick finds one.
        assert sy.wait_log_count(r"session closed", 3) >= 3
        status, body, hdr = call(adm, "POST", f"/connections/kick?identifier={user}")
        assert (status, body, hdr) == (200, "kicked 0\n", "local; reason=store")
    finally:
        cm.cleanup()


def test_refused_subscription_caps_the_cache(switchyard, pair):
    """The Redis ACL lets the proxy read, write and publish but not
    subscribe: the replica can never hear of changes, so it keeps its cache
    lifetimes at 5 s (positive_ttl is an hour) and a direct change reaches it
    anyway; routing goes on, the log says why."""
    store = Redis(persist=True).start()
    try:
        store.command("ACL", "SETUSER", "proxy", "on", ">proxypw", "~*", "&*", "+@all", "-subscribe",
                      "-psubscribe")
        url = f"redis://proxy:proxypw@127.0.0.1:{store.port}"
        user = "soak08@example.com"
        store.command("SET", f"route:{user}", "legacy")
        imap, adm = free_port(), free_port()
        mapping = store_mapping("redis", store).replace(f'url = "{store.url}"', f'url = "{url}"')
        sy = switchyard(base_config(pair, imap, adm, mapping))
        sy.wait_log(r"SUBSCRIBE refused: NOPERM")
        assert served_by(imap, user) == "legacy"
        store.command("SET", f"route:{user}", "new")
        wait_for(lambda: served_by(imap, user) == "new", "the capped entry to expire", timeout=WAIT)
        assert metric(adm, "switchyard_fleet_subscription_up") == 0
        status, _, hdr = call(adm, "POST", "/cache/invalidate")
        assert status == 200 and hdr.startswith("published;")  # PUBLISH is allowed
    finally:
        store.cleanup()
