"""The Redis and PostgreSQL mapping stores (src/route/store_redis.c,
store_sql.c), driven through build/store-driver (tests/store/store_driver.c)
against real redis-server and PostgreSQL instances.

The driver reads operations on stdin as they arrive and prints one result
line per operation, so each test feeds it through a pipe and reads the
answers as events. Every test ends by closing stdin: the driver then closes
the store and must exit 0, which it only does when every libuv handle the
store opened was closed (store.h's close contract).
"""

import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from harness import Redis
from harness.relay import StallRelay
from harness.stores import PG_BIN
from harness.switchyard import binary_path
from harness.util import run

PROMPT = 1.0  # seconds: "fails promptly" (no waiting for a reconnect)
RECONNECT = 15.0  # backoff is capped at 5 s; allow a few cycles

UPSERT = ("INSERT INTO routes (identifier, destination) VALUES ($1, $2) "
          "ON CONFLICT (identifier) DO UPDATE SET destination = EXCLUDED.destination")
DELETE = "DELETE FROM routes WHERE identifier = $1"


def driver_path():
    path = os.environ.get("STORE_DRIVER") or os.path.join(os.path.dirname(binary_path()), "store-driver")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it with `cmake --build build --target store-driver`")
    return path


class Driver:
    """One store-driver process; `op(line)` sends a line and returns the
    next result line."""

    def __init__(self, kind, **args):
        argv = [driver_path(), kind] + [f"{k}={v}" for k, v in args.items()]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        self._err = threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append),
                                     daemon=True)
        self._err.start()

    @staticmethod
    def _pump(stream, sink):
        for line in iter(stream.readline, ""):
            sink(line.rstrip("\n"))
        sink(None)

    def send(self, *lines):
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout=10.0):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no result within {timeout}s; stderr:\n" + "\n".join(
                x for x in self.stderr if x)) from None
        assert line is not None, "store-driver exited early; stderr:\n" + "\n".join(x for x in self.stderr if x)
        return line

    def op(self, line, timeout=10.0):
        self.send(line)
        return self.result(timeout)

    def timed(self, line, timeout=10.0):
        t = time.monotonic()
        r = self.op(line, timeout)
        return r, time.monotonic() - t

    def until(self, line, pred, timeout=RECONNECT, interval=0.1):
        """Repeats `line` until its result satisfies pred (a reconnect has
        no event the test can see); returns the last result."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.op(line)
            if pred(r) or time.monotonic() > deadline:
                return r
            time.sleep(interval)

    def finish(self, timeout=15.0):
        """Closes stdin and returns the remaining output lines; asserts the
        clean exit that proves every handle was closed."""
        self.proc.stdin.close()
        rc = self.proc.wait(timeout)
        rest = []
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                break
            rest.append(line)
        self._err.join(5)
        assert rc == 0, f"store-driver exited {rc}; stderr:\n" + "\n".join(x for x in self.stderr if x)
        return rest

    def stderr_text(self):
        return "\n".join(x for x in self.stderr if x)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def driver(request):
    started = []

    def factory(kind, **args):
        d = Driver(kind, **args)
        started.append(d)
        return d

    yield factory
    for d in started:
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            print(f"--- store-driver stderr ---\n{d.stderr_text()}")
        d.kill()


def create_error(kind, **args):
    argv = [driver_path(), kind] + [f"{k}={v}" for k, v in args.items()]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.startswith("CREATE_ERROR "), p.stdout
    return p.stdout[len("CREATE_ERROR "):].strip()


def redis_cli(r, *args, db=None, password=None):
    cmd = ["redis-cli", "-h", r.host, "-p", str(r.port), "--no-auth-warning"]
    if password:
        cmd += ["-a", password]
    if db is not None:
        cmd += ["-n", str(db)]
    return run(cmd + list(args), timeout=10).stdout.strip()


def restarted_redis(old, password=None):
    """A fresh redis-server on the port `old` used (after old.stop())."""
    r = Redis(password=password)
    r.port = old.port
    return r.start()


# ---- Redis ----

def test_redis_get_put_del_with_prefix(redis_server, driver):
    r = redis_server
    r.command("SET", "route:bob@example.com", "store-b")
    r.command("SET", "bob@example.com", "unprefixed")
    d = driver("redis", url=r.url, prefix="route:", conns=2)
    assert d.op("get bob@example.com") == "FOUND store-b"
    assert d.op("get nobody@example.com") == "NOT_FOUND"
    assert d.op("put alice@example.com store-a") == "DONE"
    # The key in Redis is <prefix><key>, written with SET.
    assert redis_cli(r, "GET", "route:alice@example.com") == "store-a"
    assert r.command("EXISTS", "alice@example.com") == 0
    assert d.op("get alice@example.com") == "FOUND store-a"
    assert d.op("put alice@example.com store-c") == "DONE"
    assert d.op("get alice@example.com") == "FOUND store-c"
    assert d.op("del alice@example.com") == "DONE"
    assert r.command("EXISTS", "route:alice@example.com") == 0
    assert d.op("del alice@example.com") == "NOT_FOUND"
    assert d.op("get alice@example.com") == "NOT_FOUND"
    # A value with spaces and non-ASCII text round-trips unchanged.
    assert d.op("put carol@example.com dest with spaces \u00e9") == "DONE"
    assert r.command("GET", "route:carol@example.com") == "dest with spaces \u00e9"
    assert d.op("get carol@example.com") == "FOUND dest with spaces \u00e9"
    # A key holding a non-string is an error, not a mapping.
    r.command("LPUSH", "route:list", "x")
    assert d.op("get list").startswith("ERROR redis: ")
    assert d.finish() == ["CLOSED"]


def test_redis_requests_before_the_first_connect_wait_for_it(redis_server, driver):
    # A store is created just before the worker accepts: requests issued
    # while the first connections are still being made are answered, not
    # failed.
    r = redis_server
    r.command("SET", "k", "v")
    d = driver("redis", url=r.url, conns=4)
    d.send("&get k", "&get k", "&get k", "wait")
    assert [d.result() for _ in range(3)] == ["FOUND v"] * 3
    assert d.finish() == ["CLOSED"]


@pytest.mark.parametrize("form", ["plain", "encoded", "user"])
def test_redis_password_and_db_in_url(driver, form):
    password = "pa:ss@word"
    with Redis(password=password) as r:
        auth = {"plain": ":pa:ss@word", "encoded": ":pa%3Ass%40word", "user": "default:pa:ss@word"}[form]
        d = driver("redis", url=f"redis://{auth}@127.0.0.1:{r.port}/2", prefix="p/")
        assert d.op("put k in-db-2") == "DONE"
        assert redis_cli(r, "GET", "p/k", db=2, password=password) == "in-db-2"
        assert redis_cli(r, "EXISTS", "p/k", db=0, password=password) == "0"
        redis_cli(r, "SET", "p/other", "from-cli", db=2, password=password)
        assert d.op("get other") == "FOUND from-cli"
        assert d.finish() == ["CLOSED"]
        assert password not in d.stderr_text()


def test_redis_wrong_password_fails_without_logging_it(driver):
    with Redis(password="right-one") as r:
        d = driver("redis", url=f"redis://:wrong-secret@127.0.0.1:{r.port}")
        res, took = d.timed("get k")
        assert res == "ERROR redis: not connected"
        assert took < PROMPT + 1
        assert d.finish() == ["CLOSED"]
        err = d.stderr_text()
        assert "WRONGPASS" in err or "invalid password" in err, err
        assert "wrong-secret" not in err


def test_redis_bad_urls_are_creation_errors():
    # rediss:// is supported (tests/integration/test_store_rediss.py); its
    # TLS settings are checked at creation.
    msg = create_error("redis", url="rediss://:topsecret@127.0.0.1:6380", tls_ca_file="/nonexistent/ca.pem")
    assert msg.startswith("mapping.redis.tls_ca_file: cannot read /nonexistent/ca.pem"), msg
    assert "topsecret" not in msg
    for url in ["http://127.0.0.1", "redis://:topsecret@127.0.0.1:99999", "redis://:topsecret@127.0.0.1/x",
                "redis://user@127.0.0.1", "redis://:top%zzsecret@127.0.0.1", "redis://:topsecret@"]:
        msg = create_error("redis", url=url)
        assert msg.startswith("mapping.redis.url: "), msg
        assert "topsecret" not in msg


def test_redis_down_fails_promptly_and_recovers(redis_server, driver):
    r = redis_server
    r.command("SET", "route:k", "v1")
    d = driver("redis", url=r.url, prefix="route:", conns=2)
    assert d.op("get k") == "FOUND v1"

    r.stop()
    res, took = d.timed("get k")
    assert res.startswith("ERROR redis: "), res
    assert took < PROMPT
    # Still down (reconnects are failing): every request fails at once.
    res, took = d.timed("get k")
    assert res == "ERROR redis: not connected"
    assert took < PROMPT

    r2 = restarted_redis(r)
    try:
        r2.command("SET", "route:k", "v2")
        # The same store reconnects by itself (backoff at most 5 s).
        assert d.until("get k", lambda x: x == "FOUND v2") == "FOUND v2"
        assert d.op("put k v3") == "DONE"
        assert r2.command("GET", "route:k") == "v3"
        assert d.finish() == ["CLOSED"]
    finally:
        r2.cleanup()


def test_redis_pending_request_fails_when_the_connection_drops(redis_server, driver):
    r = redis_server
    d = driver("redis", url=r.url)
    assert d.op("get k") == "NOT_FOUND"
    # A stopped server takes the request but never answers; killing it
    # then closes the connection under the pending reply.
    r.proc.send_signal(signal.SIGSTOP)
    try:
        d.send("&get k")
        time.sleep(0.2)  # let the request reach the (stopped) server's socket
    finally:
        r.proc.kill()
        r.proc.wait()
    assert d.result(timeout=5) == "ERROR redis: connection lost"
    assert d.finish() == ["CLOSED"]


def test_redis_close_fails_pending_requests(redis_server, driver):
    r = redis_server
    d = driver("redis", url=r.url)
    assert d.op("get k") == "NOT_FOUND"
    r.proc.send_signal(signal.SIGSTOP)
    try:
        d.send("&get k", "close")
        assert d.result(timeout=5) == "ERROR redis: store closed"
        assert d.result(timeout=5) == "CLOSED"
        assert d.op("get k") == "REJECTED"
        assert d.finish() == []
    finally:
        r.proc.send_signal(signal.SIGCONT)


def test_redis_silent_connection_is_dropped_and_reconnected(redis_server, driver):
    """A flow that goes silent without closing (a middlebox dropped its
    state, a hung server): the request on it fails once it has waited 2 x
    lookup_timeout for a reply, and the store connects again, rather than
    failing every lookup until TCP keepalive gives up hours later."""
    r = redis_server
    r.command("SET", "route:k", "v1")
    relay = StallRelay(r.port).start()
    try:
        d = driver("redis", url=f"redis://127.0.0.1:{relay.port}", prefix="route:", conns=1, timeout=300)
        assert d.op("get k") == "FOUND v1"
        relay.stall()
        res, took = d.timed("get k", timeout=5)
        assert res == "ERROR redis: connection lost", res
        assert took >= 0.55, took  # the deadline is 600 ms, not sooner
        relay.wait_accepted(2)
        assert d.until("get k", lambda x: x == "FOUND v1") == "FOUND v1"
        assert d.finish() == ["CLOSED"]
        assert "no reply within 600 ms" in d.stderr_text()
    finally:
        relay.cleanup()


def test_redis_pipelined_replies_each_restart_the_deadline(redis_server, driver):
    """The deadline is on the wait for the next reply, not on a request's
    age: requests queued behind one slow reply are answered."""
    r = redis_server
    r.command("SET", "route:k", "v1")
    d = driver("redis", url=r.url, prefix="route:", conns=1, timeout=300)
    assert d.op("get k") == "FOUND v1"
    d.send(*["&get k"] * 200, "wait")
    assert [d.result() for _ in range(200)] == ["FOUND v1"] * 200
    assert d.finish() == ["CLOSED"]
    assert "no reply within" not in d.stderr_text()


# ---- PostgreSQL ----

def pg_restart(pg):
    """Starts a stopped harness.Postgres again on its data directory (its
    own start() would run initdb a second time)."""
    opts = (f"-c listen_addresses={pg.host} -p {pg.port} -k {pg.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", pg.data, "-l", pg.log_path, "-o", opts,
         "-w", "-t", "30", "start"], timeout=40, cwd=pg.dir)
    pg.started = True


@pytest.fixture
def routes_db(postgres_server):
    pg = postgres_server
    pg.psql("CREATE TABLE routes (identifier text PRIMARY KEY, destination text)")
    pg.psql("INSERT INTO routes VALUES ('alice@example.com', 'store-a'), ('null@example.com', NULL)")
    return pg


def test_sql_get_put_del_default_schema(routes_db, driver):
    pg = routes_db
    d = driver("sql", url=pg.url, upsert=UPSERT, delete=DELETE, conns=2)
    assert d.op("get alice@example.com") == "FOUND store-a"
    assert d.op("get nobody@example.com") == "NOT_FOUND"
    assert d.op("get null@example.com") == "NOT_FOUND"  # NULL destination
    assert d.op("put bob@example.com store-b") == "DONE"
    assert pg.psql("SELECT destination FROM routes WHERE identifier = 'bob@example.com'") == "store-b"
    assert d.op("get bob@example.com") == "FOUND store-b"
    assert d.op("put bob@example.com store-c") == "DONE"  # the upsert updates
    assert d.op("get bob@example.com") == "FOUND store-c"
    assert d.op("del bob@example.com") == "DONE"
    assert pg.psql("SELECT count(*) FROM routes WHERE identifier = 'bob@example.com'") == "0"
    assert d.op("del bob@example.com") == "NOT_FOUND"
    # Parameters are bound, never spliced into the SQL.
    assert d.op("put o'brien@example.com x');DROP TABLE routes;--") == "DONE"
    assert d.op("get o'brien@example.com") == "FOUND x');DROP TABLE routes;--"
    assert d.finish() == ["CLOSED"]


def test_sql_read_only_store_rejects_writes(routes_db, driver):
    pg = routes_db
    # Writable only when both upsert and delete queries are set.
    for extra in [{}, {"upsert": UPSERT}, {"delete": DELETE}]:
        d = driver("sql", url=pg.url, **extra)
        assert d.op("get alice@example.com") == "FOUND store-a"
        assert d.op("put bob@example.com store-b") == "REJECTED"
        assert d.op("del alice@example.com") == "REJECTED"
        assert d.finish() == ["CLOSED"]
    assert pg.psql("SELECT count(*) FROM routes") == "2"


def test_sql_query_errors_are_reported(routes_db, driver):
    pg = routes_db
    d = driver("sql", url=pg.url, query="SELECT nosuchcolumn FROM routes WHERE identifier = $1")
    assert d.op("get alice@example.com") == 'ERROR sql: column "nosuchcolumn" does not exist'
    assert d.finish() == ["CLOSED"]
    # A custom query: first column of the first row.
    d = driver("sql", url=pg.url,
               query="SELECT upper(destination), 'second' FROM routes WHERE identifier = lower($1)")
    assert d.op("get ALICE@example.com") == "FOUND STORE-A"
    assert d.finish() == ["CLOSED"]


def test_sql_bad_url_is_a_creation_error():
    msg = create_error("sql", url="postgresql://user:topsecret@127.0.0.1:5432/db?nosuchoption=1")
    assert msg.startswith("mapping.sql.url: "), msg
    assert "topsecret" not in msg


def test_sql_slow_query_does_not_block_the_other_connection(routes_db, driver):
    pg = routes_db
    query = ("SELECT CASE WHEN $1 = 'slow' THEN (SELECT 'slow-dest' FROM pg_sleep(2)) "
             "ELSE (SELECT destination FROM routes WHERE identifier = $1) END")
    d = driver("sql", url=pg.url, query=query, conns=2)
    t = time.monotonic()
    d.send("&get slow", "&get alice@example.com")
    assert d.result() == "FOUND store-a"
    assert time.monotonic() - t < 1.5  # answered while the slow query runs
    assert d.result() == "FOUND slow-dest"
    # Both connections are up now: the same again, in steady state.
    t = time.monotonic()
    d.send("&get slow", "&get alice@example.com")
    assert d.result() == "FOUND store-a"
    assert time.monotonic() - t < 1.5
    assert d.result() == "FOUND slow-dest"
    assert d.finish() == ["CLOSED"]


def test_sql_one_connection_answers_in_order(routes_db, driver):
    pg = routes_db
    query = ("SELECT CASE WHEN $1 = 'slow' THEN (SELECT 'slow-dest' FROM pg_sleep(0.5)) "
             "ELSE (SELECT destination FROM routes WHERE identifier = $1) END")
    d = driver("sql", url=pg.url, query=query, conns=1)
    d.send("&get slow", "&get alice@example.com", "&get nobody", "wait")
    assert [d.result() for _ in range(3)] == ["FOUND slow-dest", "FOUND store-a", "NOT_FOUND"]
    assert d.finish() == ["CLOSED"]


def test_sql_down_fails_promptly_and_recovers(routes_db, driver):
    pg = routes_db
    d = driver("sql", url=pg.url, conns=2)
    assert d.op("get alice@example.com") == "FOUND store-a"

    pg.stop()
    res, took = d.timed("get alice@example.com")
    assert res.startswith("ERROR sql: "), res
    assert took < PROMPT
    res, took = d.timed("get alice@example.com")
    assert res == "ERROR sql: not connected"
    assert took < PROMPT

    pg_restart(pg)
    assert d.until("get alice@example.com", lambda x: x == "FOUND store-a") == "FOUND store-a"
    assert d.finish() == ["CLOSED"]


def test_sql_query_in_flight_fails_when_the_server_stops(routes_db, driver):
    pg = routes_db
    d = driver("sql", url=pg.url, query="SELECT 'late' FROM pg_sleep(30) WHERE $1 <> ''")
    d.send("&get k")
    # Wait until the query is running on the server.
    deadline = time.monotonic() + 10
    while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                  "AND state = 'active' AND pid <> pg_backend_pid()") != "1":
        assert time.monotonic() < deadline, "the query never started"
        time.sleep(0.05)
    pg.stop()
    res = d.result(timeout=5)
    assert res.startswith("ERROR sql: "), res
    assert d.finish() == ["CLOSED"]


def test_sql_silent_connection_is_dropped_and_reconnected(routes_db, driver):
    """As for Redis: a query that has had no answer for 2 x lookup_timeout
    fails, the connection is dropped and made again."""
    pg = routes_db
    relay = StallRelay(pg.port, target_host=pg.host).start()
    try:
        url = f"postgresql://{pg.user}@127.0.0.1:{relay.port}/{pg.database}"
        d = driver("sql", url=url, conns=1, timeout=300)
        assert d.op("get alice@example.com") == "FOUND store-a"
        relay.stall()
        res, took = d.timed("get alice@example.com", timeout=5)
        assert res == "ERROR sql: connection lost: no answer within 600 ms", res
        assert took >= 0.55, took
        relay.wait_accepted(2)
        assert d.until("get alice@example.com", lambda x: x == "FOUND store-a") == "FOUND store-a"
        assert d.finish() == ["CLOSED"]
    finally:
        relay.cleanup()


def test_sql_slow_query_within_the_deadline_is_answered(routes_db, driver):
    """A query slower than lookup_timeout but within twice it is not a
    dead server: it is answered and the connection stays."""
    pg = routes_db
    d = driver("sql", url=pg.url, conns=1, timeout=300,
               query="SELECT 'slow' FROM pg_sleep(0.4) WHERE $1 <> ''")
    assert d.op("get k") == "FOUND slow"
    assert d.op("get k") == "FOUND slow"
    assert d.finish() == ["CLOSED"]
    assert "connection lost" not in d.stderr_text()


def test_sql_close_fails_queued_requests(routes_db, driver):
    pg = routes_db
    d = driver("sql", url=pg.url, query="SELECT 'late' FROM pg_sleep(30) WHERE $1 <> ''", conns=1)
    d.send("&get a", "&get b", "close")
    assert [d.result(timeout=5) for _ in range(3)] == ["ERROR sql: store closed"] * 2 + ["CLOSED"]
    assert d.finish() == []


def test_sql_unreachable_server_fails_promptly(driver, port):
    d = driver("sql", url=f"postgresql://postgres@127.0.0.1:{port}/postgres")
    res, took = d.timed("get k")
    assert res == "ERROR sql: not connected"
    assert took < PROMPT
    assert d.finish() == ["CLOSED"]
    assert "Connection refused" in d.stderr_text()
