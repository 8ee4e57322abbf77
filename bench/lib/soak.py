#!/usr/bin/env python3
"""The fault-injection soak (run it through bench/soak.sh; see bench/README.md).

Mixed load against one server (luahttpd, nginx or lighttpd) for SOAK_S
seconds while faults are injected; every response is checked byte-exact and
every failure is counted by cause and attributed. At the end, descriptors and
RSS of every process are compared with the start.

Attribution of failures to a killed worker is exact: the worker is stopped
(SIGSTOP) before it is killed, the client ports of every connection it holds
are read from /proc (its descriptors and the tcp table), and only then is it
sent SIGKILL. A failed request whose connection (by local port) was one of
those and that was sent before the kill was in flight on the killed worker.

A well-behaved client retries an idempotent request once, on a new
connection, when a reused keep-alive connection fails before any byte of the
response arrived (RFC 9112 §9.3.1); the soak does that and counts it. What is
left after that is a failure such a client sees.
"""
import datetime
import hashlib
import os
import re
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import httpc  # noqa: E402
import proctree  # noqa: E402
import servers  # noqa: E402


def env_int(name, default, low=0):
    v = os.environ.get(name, str(default))
    try:
        n = int(v)
    except ValueError:
        raise SystemExit(f"soak: {name} must be a whole number (got '{v}')")
    if n < low:
        raise SystemExit(f"soak: {name} must be at least {low} (got {n})")
    return n


class Settings:
    def __init__(self):
        self.server = os.environ.get("SOAK_SERVER", "luahttpd")
        if self.server not in servers.SERVERS:
            raise SystemExit(f"soak: SOAK_SERVER must be luahttpd, nginx or lighttpd (got '{self.server}')")
        self.duration = env_int("SOAK_S", 120, 1)
        self.clients = env_int("SOAK_CLIENTS", 12, 1)
        self.slow_clients = env_int("SOAK_SLOW_CLIENTS", 3)
        self.fault_every = env_int("SOAK_FAULT_EVERY", 3, 1)
        self.seed = env_int("SOAK_SEED", int(time.time()) % 100000)
        self.warmup = env_int("SOAK_WARMUP", 5)
        self.adv_bound_ms = env_int("SOAK_ADV_BOUND_MS", 1000, 1)
        self.find_n = env_int("SOAK_FIND_N", 300, 1)
        self.adv = env_int("SOAK_ADV", 6) if self.server == "luahttpd" else 0
        kinds = os.environ.get("SOAK_ADV_KINDS", " ".join(ADV_KINDS)).split()
        for k in kinds:
            if k not in ADV_KINDS:
                raise SystemExit(f"soak: unknown SOAK_ADV_KINDS entry '{k}' (known: {' '.join(ADV_KINDS)})")
        self.adv_kinds = kinds or ADV_KINDS
        # Routes known to outlive the bound until a fix lands (the coroutine budget, in
        # src/script/limits.rs): reported as such, and they do not fail the soak.
        self.adv_known = os.environ.get("SOAK_ADV_KNOWN", "coroutine resume").split()
        # php-cgi exits after this many requests (its PHP_FCGI_MAX_REQUESTS);
        # large by default so that only the injected kills take php-cgi down
        # (lighttpd disables a backend for a second when it exits, nginx for
        # fail_timeout); a small value adds planned exits to the faults.
        self.php_max_requests = env_int("SOAK_PHP_MAX_REQUESTS", 100000, 1)
        self.workers = 2
        self.php_procs = 2
        self.keepalive_idle = 3
        self.stall_timeout = 3
        self.keep_tmp = os.environ.get("KEEP_TMP") == "1"
        self.luahttpd = os.environ.get("LUAHTTPD_BIN", "")
        self.fcgi_test = os.environ.get("FCGI_TEST_BIN", "")
        self.php_cgi = os.environ.get("PHP_CGI") or shutil.which("php-cgi") or ""
        if not self.fcgi_test or not os.access(self.fcgi_test, os.X_OK):
            raise SystemExit("soak: FCGI_TEST_BIN must name the luahttpd-fcgi-test binary (soak.sh sets it)")
        if self.server == "luahttpd" and not os.access(self.luahttpd, os.X_OK):
            raise SystemExit("soak: LUAHTTPD_BIN must name the luahttpd binary (soak.sh sets it)")
        if not self.php_cgi:
            raise SystemExit("soak: php-cgi not found (bench/install.sh installs it, or set PHP_CGI)")
        self.php_cgi = os.path.realpath(self.php_cgi)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------
# Bookkeeping


class Stats:
    """Everything counted, behind one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.kind = defaultdict(Counter)      # kind -> sent / ok / failed / retried
        self.classes = Counter()              # "2xx" ... "none"
        self.failures = []                    # final failures (dicts)
        self.retries = []                     # first attempts that were retried
        self.malformed = Counter()            # outcome
        self.adv = defaultdict(Counter)       # adv kind -> outcome
        self.adv_max_ms = defaultdict(float)
        self.kills = []                       # (t, pid, ports)
        self.php_kills = []                   # (t, pid)
        self.faults = defaultdict(Counter)    # fault -> ok / failed
        self.fault_notes = defaultdict(list)
        self.admin = Counter()
        self.admin_max_s = 0.0
        self.admin_errors = []
        self.busy = []                        # (request, elapsed_ms) seen past the bound
        self.stalled = []                     # (pid, state, heartbeat_ms)
        self.hung = []                        # (t, pid, ports) of workers seen busy on /adv/
        self.adv_suspects = []                # (t, pid, ports) of workers seen on /adv/ past its limit
        self.adv_stale = []                   # (pid, req, elapsed) rows naming /adv/ past the bound, no Lua running
        self.timeline = []                    # (t, fault) of every fault, for the examples

    def response(self, status):
        with self.lock:
            self.classes[f"{status // 100}xx" if status else "none"] += 1


class Outcome:
    __slots__ = ("ok", "status", "cause", "got_bytes", "port", "t0", "t1", "reused", "detail", "conn_t", "t_sent")

    def __init__(self):
        self.ok = False
        self.status = 0
        self.cause = ""
        self.got_bytes = False
        self.port = 0
        self.t0 = self.t1 = 0.0
        self.reused = False
        self.detail = ""
        self.conn_t = 0.0  # when the connection the request went on was made
        self.t_sent = 0.0  # when the request started to go out (connected)


# ---------------------------------------------------------------------------
# The request mix


MALFORMED = [
    ("bare LF", b"GET /1k.bin HTTP/1.1\nHost: soak.test\n\n"),
    ("two Content-Length", b"GET /1k.bin HTTP/1.1\r\nHost: soak.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    ("TE and CL", b"POST /upload.php HTTP/1.1\r\nHost: soak.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
    ("HTTP/9.9", b"GET /1k.bin HTTP/9.9\r\nHost: soak.test\r\n\r\n"),
    ("unknown method", b"BREW /1k.bin HTTP/1.1\r\nHost: soak.test\r\n\r\n"),
    ("%00 in path", b"GET /%00 HTTP/1.1\r\nHost: soak.test\r\n\r\n"),
    ("no Host", b"GET /1k.bin HTTP/1.1\r\n\r\n"),
    ("huge header", b"GET /1k.bin HTTP/1.1\r\nHost: soak.test\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"),
    ("obs-fold", b"GET /1k.bin HTTP/1.1\r\nHost: soak.test\r\nX-A: b\r\n  folded\r\n\r\n"),
    ("TLS hello", bytes.fromhex("16030100a5010000a10303") + os.urandom(40)),
    ("bad chunk size", b"POST /upload.php HTTP/1.1\r\nHost: soak.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"),
    ("space before colon", b"GET /1k.bin HTTP/1.1\r\nHost : soak.test\r\n\r\n"),
]

# An /adv/ request still running this long is past the route limits (50 ms, with room for a
# loaded machine): the ports of its worker are read then, for attributing the failures of the
# other requests on it if the route backstop kills it.
ADV_SUSPECT_MS = 150

# The role the snapshot gives luahttpd's admin evaluator (it names itself so).
EVALUATOR = "other (luahttpd-admin)"

ADV_KINDS = ["index", "tostring", "gc", "close", "xpcall", "pcall", "coroutine", "resume",
             "find", "rep", "gsub", "sort", "grow"]


class Mix:
    """The kinds of request and their weights: one mix for the fast clients,
    one for the slow ones (slow clients and the stalling backend), so that the
    slow kinds do not take the fast clients' time."""

    def __init__(self, s, slow):
        if slow:
            self.weights = {"slow head": 3, "slow reader": 2, "slow upload": 2, "stall ok": 2,
                            "stall timeout": 1}
        else:
            self.weights = {
                "static 1k keep-alive": 24, "static 64k keep-alive": 8, "static close": 10,
                "range": 8, "php": 12, "routed hello": 8, "routed static": 6,
                "upload": 5, "upload chunked": 3, "malformed": 5,
            }
            if s.adv:
                self.weights["adversarial Lua"] = s.adv
        self.names = list(self.weights)
        self.cum = []
        total = 0
        for n in self.names:
            total += self.weights[n]
            self.cum.append(total)
        self.total = total

    def pick(self, rng):
        x = rng.random() * self.total
        for n, c in zip(self.names, self.cum):
            if x < c:
                return n
        return self.names[-1]


class Client(threading.Thread):
    """One load thread: a kept-alive connection, plus fresh ones when a kind
    wants them."""

    def __init__(self, n, h, mix):
        super().__init__(daemon=True, name=f"client-{n}")
        self.h = h
        self.mix = mix
        self.rng = random.Random(h.s.seed * 1000 + n)
        self.ka = None
        self.ka_uses = 0

    def run(self):
        h = self.h
        while not h.stop_load.is_set():
            kind = self.mix.pick(self.rng)
            try:
                self.one(kind)
            except Exception as e:  # a bug in the harness: count it, keep going
                with h.stats.lock:
                    h.stats.kind[kind]["harness error"] += 1
                    h.stats.fault_notes["harness"].append(f"{kind}: {e!r}")
        if self.ka:
            self.ka.close()

    # -- connections -------------------------------------------------------

    def conn(self, fresh, timeout, rcvbuf=None):
        if fresh:
            return httpc.Conn("127.0.0.1", self.h.port, timeout, rcvbuf), False
        if self.ka is None or self.ka.closed or self.ka_uses >= 100:
            if self.ka:
                self.ka.close()
            self.ka = httpc.Conn("127.0.0.1", self.h.port, timeout)
            self.ka_uses = 0
        self.ka.settimeout(timeout)
        self.ka_uses += 1
        return self.ka, self.ka.requests > 0

    def exchange(self, raw, fresh, timeout=10, pieces=1, gap=0.0, slow_read=None, rcvbuf=None):
        """One attempt; returns (Outcome, Response or None)."""
        o = Outcome()
        o.t0 = time.monotonic()
        c = None
        try:
            c, o.reused = self.conn(fresh, timeout, rcvbuf)
            o.port = c.local_port
            o.conn_t = c.created
            o.t_sent = time.monotonic()
            c.send(raw, pieces, gap)
            r = c.read_response(slow_read=slow_read)
            o.t1 = time.monotonic()
            o.status = r.status
            if r.close or fresh:
                c.close()
            return o, r
        except httpc.Failure as f:
            o.t1 = time.monotonic()
            o.cause, o.got_bytes, o.detail = f.cause, f.got_bytes, f.detail
            if c is not None:
                c.close()
            return o, None

    def request(self, kind, raw, check, idempotent=True, fresh=False, **kw):
        """Send, check, retry (idempotent, reused connection, nothing received), record."""
        st = self.h.stats
        with st.lock:
            st.kind[kind]["sent"] += 1
        o, r = self.exchange(raw, fresh, **kw)
        if r is None and idempotent and o.reused and not o.got_bytes:
            with st.lock:
                st.kind[kind]["retried"] += 1
                st.retries.append((kind, o.cause, o.port, o.conn_t, o.t1))
            o, r = self.exchange(raw, True, **kw)
        st.response(o.status)
        if r is not None:
            wrong = check(r)
            if wrong is None:
                o.ok = True
            else:
                o.cause = wrong
        with st.lock:
            if o.ok:
                st.kind[kind]["ok"] += 1
            else:
                st.kind[kind]["failed"] += 1
                st.failures.append({"kind": kind, "idempotent": idempotent, "cause": o.cause,
                                    "port": o.port, "t0": o.t0, "t1": o.t1, "status": o.status,
                                    "detail": o.detail, "reused": o.reused, "conn_t": o.conn_t})
        return o, r

    # -- the kinds ---------------------------------------------------------

    def one(self, kind):
        f = self.h.files
        rng = self.rng
        if kind == "static 1k keep-alive":
            self.request(kind, httpc.build("GET", "/1k.bin"), expect(200, f["1k.bin"]))
        elif kind == "static 64k keep-alive":
            self.request(kind, httpc.build("GET", "/64k.bin"), expect(200, f["64k.bin"]))
        elif kind == "static close":
            self.request(kind, httpc.build("GET", "/1k.bin", close=True), expect(200, f["1k.bin"]), fresh=True)
        elif kind == "range":
            a = rng.randrange(0, 65536 - 1)
            b = rng.randrange(a, min(65536, a + 8192))
            self.request(kind, httpc.build("GET", "/64k.bin", headers={"Range": f"bytes={a}-{b}"}),
                         expect(206, f["64k.bin"][a:b + 1]))
        elif kind == "php":
            self.request(kind, httpc.build("GET", "/hello.php"), expect(200, b"Hello, world!\n"))
        elif kind == "routed hello":
            self.request(kind, httpc.build("GET", "/r/hello"), expect(200, b"hello\n"))
        elif kind == "routed static":
            self.request(kind, httpc.build("GET", "/r/1k.bin"), expect(200, f["1k.bin"]))
        elif kind in ("upload", "upload chunked", "slow upload"):
            body = rng.randbytes(rng.choice([1000, 16384, 65536]))
            want = f"sha256={hashlib.sha256(body).hexdigest()}\nlength={len(body)}\n".encode()
            if kind == "upload chunked":
                raw = httpc.build("POST", "/upload.php", headers={"Transfer-Encoding": "chunked"},
                                  body=httpc.chunked(body))
                self.request(kind, raw, expect(200, want), idempotent=False)
            elif kind == "upload":
                self.request(kind, httpc.build("POST", "/upload.php", body=body), expect(200, want),
                             idempotent=False)
            else:
                self.request(kind, httpc.build("POST", "/upload.php", body=body), expect(200, want),
                             idempotent=False, fresh=True, pieces=16, gap=0.1, timeout=20)
        elif kind == "slow head":
            self.request(kind, httpc.build("GET", "/1k.bin", close=True), expect(200, f["1k.bin"]),
                         fresh=True, pieces=10, gap=0.1)
        elif kind == "slow reader":
            self.request(kind, httpc.build("GET", "/1m.bin", close=True), expect(200, f["1m.bin"]),
                         fresh=True, slow_read=(16384, 0.01), rcvbuf=16384, timeout=30)
        elif kind == "malformed":
            self.malformed()
        elif kind in ("stall ok", "stall timeout"):
            if not self.h.stall_slots.acquire(blocking=False):
                return
            try:
                if kind == "stall ok":
                    self.request(kind, httpc.build("GET", "/stall/x?mode=slowhead&ms=1000"),
                                 expect(200, b"slow\n"), timeout=15)
                else:
                    ms = (self.h.s.stall_timeout + 2) * 1000
                    self.request(kind, httpc.build("GET", f"/stall/x?mode=slowhead&ms={ms}"),
                                 expect(504, None), timeout=15)
            finally:
                self.h.stall_slots.release()
        elif kind == "adversarial Lua":
            self.adversarial()

    def malformed(self):
        name, raw = self.rng.choice(MALFORMED)
        st = self.h.stats
        o, r = self.exchange(raw, True, timeout=5)
        st.response(o.status)
        if r is not None:
            outcome = "refused (4xx/5xx)" if o.status >= 400 else f"accepted ({o.status})"
        elif o.cause.startswith("timeout"):
            outcome = "no answer within 5 s"
        else:
            outcome = "closed without an answer"
        with st.lock:
            st.kind["malformed"]["sent"] += 1
            st.kind["malformed"]["ok"] += 1
            st.malformed[f"{outcome}: {name}" if not outcome.startswith("refused") else outcome] += 1

    def adversarial(self):
        name = self.rng.choice(self.h.s.adv_kinds)
        st = self.h.stats
        o, r = self.exchange(httpc.build("GET", f"/adv/{name}"), False, timeout=30)
        st.response(o.status)
        # From the request going out, not from t0: a new connection's connect (a SYN queued or
        # retried while a killed worker is respawned) is no time the route ran.
        ms = (o.t1 - (o.t_sent or o.t0)) * 1000
        with st.lock:
            st.kind["adversarial Lua"]["sent"] += 1
            st.adv_max_ms[name] = max(st.adv_max_ms[name], ms)
            if r is None:
                st.adv[name]["no response: " + o.cause] += 1
                st.kind["adversarial Lua"]["failed"] += 1
                st.failures.append({"kind": "adversarial Lua", "idempotent": True, "cause": o.cause,
                                    "port": o.port, "t0": o.t0, "t1": o.t1, "status": 0,
                                    "detail": name, "reused": o.reused, "conn_t": o.conn_t})
            elif o.status != 500:
                st.adv[name][f"status {o.status}"] += 1
                st.kind["adversarial Lua"]["failed"] += 1
            elif ms > self.h.s.adv_bound_ms:
                st.adv[name]["500 but slow"] += 1
                st.kind["adversarial Lua"]["failed"] += 1
            else:
                st.adv[name]["500 in time"] += 1
                st.kind["adversarial Lua"]["ok"] += 1


def expect(status, body):
    """A check: None if the response is right, else what is wrong."""
    def check(r):
        if r.status != status:
            return f"status {r.status} (expected {status})"
        if body is not None and r.body != body:
            return f"body differs ({len(r.body)} bytes, expected {len(body)})"
        return None
    return check


# ---------------------------------------------------------------------------
# Faults and the admin loop


FAULTS = ["worker kill", "php-cgi kill", "reload unchanged", "worker kill", "log rotation",
          "reload changed"]


def fault_loop(h):
    st = h.stats
    i = 0
    rng = random.Random(h.s.seed)
    while not h.stop_faults.wait(h.s.fault_every):
        fault = FAULTS[i % len(FAULTS)]
        i += 1
        with st.lock:
            st.timeline.append((time.monotonic(), fault))
        if fault == "worker kill":
            got = h.srv.kill_worker(rng)
            with st.lock:
                if got is None:
                    st.faults[fault]["no worker to kill"] += 1
                else:
                    st.kills.append((time.monotonic(), got[0], got[1]))
                    st.faults[fault]["done"] += 1
        elif fault == "php-cgi kill":
            t = time.monotonic()
            got = h.srv.kill_php(rng)
            with st.lock:
                if got is None:
                    st.faults[fault]["no php-cgi to kill"] += 1
                else:
                    st.php_kills.append((t, got))
                    st.faults[fault]["done"] += 1
        elif fault.startswith("reload"):
            ok, detail = h.srv.reload(changed=fault.endswith("changed"))
            with st.lock:
                st.faults[fault]["ok" if ok else "failed"] += 1
                if not ok:
                    st.fault_notes[fault].append(detail)
        elif fault == "log rotation":
            ok, detail = h.srv.rotate_logs()
            with st.lock:
                st.faults[fault]["ok" if ok else "failed"] += 1
                if not ok:
                    st.fault_notes[fault].append(detail)
        if not h.srv.alive():
            h.died.set()
            return


def admin_loop(h):
    st = h.stats
    bound = h.s.adv_bound_ms
    while not h.stop_faults.wait(0.25):
        ok, dt, v = h.srv.probe()
        with st.lock:
            st.admin["calls"] += 1
            st.admin_max_s = max(st.admin_max_s, dt)
            if not ok:
                st.admin["failed"] += 1
                if len(st.admin_errors) < 5:
                    st.admin_errors.append(str(v))
                continue
            if not isinstance(v, list):
                continue
            for row in v:
                req = row.get("request") or ""
                el = row.get("elapsed_ms")
                # The row's request is the one its worker started last; it stays there, its
                # elapsed time growing, while any other request of that worker is in flight (a
                # stalled backend, a slow reader, a connection lingering in a drain), long after
                # its route answered. Only lua_ms (the Lua call running now) says the route is
                # still running. The REPL's JSON leaves out a field whose value is nil, so a
                # row without lua_ms is a worker running no Lua (these rows are luahttpd's
                # workers(): the other servers' probes give no list).
                lua = row.get("lua_ms")
                if "/adv/" in req and isinstance(el, (int, float)) and el > bound and \
                        not isinstance(lua, (int, float)):
                    st.adv_stale.append((row.get("pid"), req, el))
                el = lua if isinstance(lua, (int, float)) else None
                if ("/adv/" in req and isinstance(el, (int, float)) and el > ADV_SUSPECT_MS
                        and row.get("pid")):
                    # past the route's own limits: the backstop may kill this worker, and
                    # every connection it holds with it
                    st.adv_suspects.append((time.monotonic(), row["pid"],
                                            servers.client_ports(row["pid"], h.port)))
                if "/adv/" in req and isinstance(el, (int, float)) and el > bound:
                    pid = row.get("pid")
                    st.busy.append((pid, req, el))
                    if pid:
                        # its connections, to attribute their failures to it
                        st.hung.append((time.monotonic(), pid, servers.client_ports(pid, h.port)))
                if row.get("state") in ("reading", "writing") and (row.get("heartbeat_ms") or 0) > 2 * bound:
                    st.stalled.append((row.get("pid"), row.get("state"), row.get("heartbeat_ms"), req))


# ---------------------------------------------------------------------------
# Snapshots of fds and RSS


def fd_count_beside(pid, www):
    """Open descriptors of one process, leaving out files under the document root (a
    worker's cache of open files: warm caches, not a leak); None if gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    n = 0
    for fd in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(www + os.sep):
                continue
        except OSError:
            continue
        n += 1
    return n


def snapshot(srv):
    rows = defaultdict(list)
    for pid in srv.all_pids():
        fds = fd_count_beside(pid, srv.www)
        if fds is None:
            continue
        rows[srv.role(pid)].append((pid, fds, proctree.rss_bytes(pid)))
    return rows


def quiesce(h, seconds):
    h.stop_load.set()
    for c in h.clients:
        c.join(timeout=40)
    time.sleep(seconds)


# ---------------------------------------------------------------------------
# Main


class Harness:
    def __init__(self, s):
        self.s = s
        self.stats = Stats()
        self.stop_load = threading.Event()
        self.stop_faults = threading.Event()
        self.died = threading.Event()
        self.stall_slots = threading.Semaphore(2)
        self.clients = []
        self.tmp = tempfile.mkdtemp(prefix="luahttpd-soak.")
        self.www = os.path.join(self.tmp, "www")
        self.files = {}
        self.srv = None
        self.port = 0
        # to read the error log's wall-clock times on the monotonic clock
        self.wall_offset = time.time() - time.monotonic()

    def make_site(self):
        rng = random.Random(self.s.seed)
        os.makedirs(os.path.join(self.www, "r"))
        for name, size in (("1k.bin", 1024), ("64k.bin", 65536), ("1m.bin", 1 << 20)):
            self.files[name] = rng.randbytes(size)
            with open(os.path.join(self.www, name), "wb") as f:
                f.write(self.files[name])
        with open(os.path.join(self.www, "r", "1k.bin"), "wb") as f:
            f.write(self.files["1k.bin"])
        with open(os.path.join(self.www, "hello.txt"), "w") as f:
            f.write("hello\n")
        with open(os.path.join(self.www, "hello.php"), "w") as f:
            f.write('<?php echo "Hello, world!\\n";\n')
        with open(os.path.join(self.www, "upload.php"), "w") as f:
            f.write("<?php $b = file_get_contents('php://input');\n"
                    "echo 'sha256=', hash('sha256', $b), \"\\nlength=\", strlen($b), \"\\n\";\n")

    def precheck(self, adversarial):
        """Each kind once, one after the other, with no other load: what the
        server answers when nothing else happens (printed, never hidden).
        The adversarial routes only after the soak (`adversarial`): one that
        hangs a worker would otherwise spoil the whole run from its start."""
        saved, self.stats = self.stats, Stats()  # the checks are not part of the soak's counts
        c = Client(999, self, None)
        notes = []
        for kind in self.kinds:
            if kind in ("malformed", "adversarial Lua"):
                continue
            before = len(self.stats.failures)
            c.one(kind)
            if len(self.stats.failures) > before:
                f = self.stats.failures[-1]
                notes.append(f"{kind}: {f['cause']}")
        if adversarial and self.s.adv:
            for name in self.s.adv_kinds:
                t0 = time.monotonic()
                o, r = c.exchange(httpc.build("GET", f"/adv/{name}"), True, timeout=5)
                ms = (time.monotonic() - t0) * 1000
                got = f"status {o.status}" if r is not None else o.cause
                if r is None or o.status != 500 or ms > self.s.adv_bound_ms:
                    notes.append(f"adversarial {name}: {got} after {ms:.0f} ms")
                if r is None:
                    # a worker hung on it: kill it (the watcher respawns it), so
                    # that the next kind is tried on a server that can answer
                    notes[-1] += self.kill_hung()
        if c.ka:
            c.ka.close()
        self.stats = saved
        return notes

    def kill_hung(self):
        ok, _, rows = self.srv.probe()
        if not ok or not isinstance(rows, list):
            return ""
        killed = []
        for row in rows:
            if "/adv/" in (row.get("request") or "") and row.get("pid"):
                try:
                    os.kill(row["pid"], signal.SIGKILL)
                    killed.append(f"{row['pid']} ({row.get('state')}, {row.get('elapsed_ms')} ms on {row['request']})")
                except OSError:
                    pass
        time.sleep(1)
        return ("; killed the hung worker " + ", ".join(killed)) if killed else ""

    def run_load(self, seconds, faults):
        self.stop_load.clear()
        self.stop_faults.clear()
        self.clients = [Client(i, self, self.fast) for i in range(self.s.clients)]
        self.clients += [Client(1000 + i, self, self.slow) for i in range(self.s.slow_clients)]
        for c in self.clients:
            c.start()
        extra = []
        if faults:
            extra = [threading.Thread(target=fault_loop, args=(self,), daemon=True),
                     threading.Thread(target=admin_loop, args=(self,), daemon=True)]
            for t in extra:
                t.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.died.is_set():
            time.sleep(0.2)
            if not self.srv.alive():
                self.died.set()
        self.load_end = time.monotonic()
        self.stop_faults.set()
        for t in extra:
            t.join(timeout=30)
        quiesce(self, self.s.keepalive_idle + 2)

    def main(self):
        s = self.s
        self.make_site()
        self.port = free_port()
        self.srv = servers.SERVERS[s.server](s, self.tmp, self.port, self.www)
        self.fast, self.slow = Mix(s, False), Mix(s, True)
        self.kinds = self.fast.names + self.slow.names
        print(f"== soak: {s.server} on 127.0.0.1:{self.port}, {s.duration} s, {s.clients} clients "
              f"and {s.slow_clients} slow ones, "
              f"a fault every {s.fault_every} s, seed {s.seed}", flush=True)
        print(f"   files in {self.tmp}", flush=True)
        self.srv.start()
        notes = self.precheck(False)
        print("pre-check (each kind once, no load): " + ("all as expected" if not notes else ""))
        for n in notes:
            print("   " + n)
        if s.warmup:
            self.run_load(s.warmup, faults=False)
            self.stats = Stats()
        start = snapshot(self.srv)
        t0 = time.monotonic()
        self.run_load(s.duration, faults=True)
        elapsed = self.load_end - t0
        end = snapshot(self.srv) if self.srv.alive() else {}
        final = self.precheck(True) if self.srv.alive() else ["the server is gone"]
        return report(self, start, end, elapsed, final)


# ---------------------------------------------------------------------------
# Report


def backstop_kills(h):
    """Workers the route backstop killed, from the server's error log: {pid: monotonic time}."""
    out = {}
    path = os.path.join(h.srv.dir, "error.log")
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return out
    for line in lines:
        m = BACKSTOP_RE.search(line)
        if not m:
            continue
        t = log_time(line)
        out[int(m.group(1) or m.group(2))] = (t - h.wall_offset) if t is not None else None
    return out


# The watcher names the backstop for a worker of the current generation; one of an older
# generation (draining after a reload) is logged as killed by SIGALRM, which only the backstop
# sends.
BACKSTOP_RE = re.compile(r"worker \d+ \(pid (\d+)\) was killed by the route backstop"
                         r"|worker of generation \d+ \(pid (\d+)\) was killed by SIGALRM")


def log_time(line):
    """The wall-clock time (seconds) at the start of an error-log line, if it has one."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line.strip())
    if not m:
        return None
    try:
        dt = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return dt.timestamp()


def attribute(f, st, s, backstop=None):
    """Why a failure happened, if the soak knows: a killed worker (exact, by
    connection), a worker the route backstop killed while it ran adversarial
    Lua (by connection), a killed php-cgi (by time), else None."""
    for t, pid, ports in st.kills:
        # the same connection: made before the kill, failed after it
        if f["port"] in ports and f["conn_t"] <= t <= f["t1"] + 0.05:
            if t >= f["t0"]:
                return "in flight on a killed worker (exact, by connection)"
            # the connection was the killed worker's and the request went out after
            return "sent on a connection of a killed worker (exact, by connection)"
    for t, pid, ports in st.hung:
        if f["port"] in ports and f["t0"] <= t <= f["t1"]:
            return "on a worker hung by adversarial Lua"
    backstop = backstop or {}
    if f["status"] == 0:
        for t, pid, ports in st.adv_suspects:
            died = backstop.get(pid, "alive")
            if died == "alive":
                continue
            # the connection was this worker's when the probe saw it past the limits, and the
            # request failed after that, before the kill (or by its time when the log has one)
            if f["port"] in ports and f["conn_t"] <= t and f["t1"] >= t - 0.05 and \
                    (died is None or f["t1"] <= died + 0.5):
                return "on a worker the route backstop killed while it ran adversarial Lua (by connection)"
        # a connection accepted after the probe read the ports: by the time of the kill
        for pid, died in backstop.items():
            if died is not None and f["t0"] <= died + 0.05 and died - 0.05 <= f["t1"] <= died + 0.3:
                return "when the route backstop killed a worker running adversarial Lua (by time)"
            # a kept connection that was the dead worker's, used after its death
            if died is not None and f.get("reused") and f["conn_t"] < died <= f["t0"] \
                    and f["t1"] - f["t0"] < 0.05 and f["t0"] - died < 5:
                return "sent on a kept connection of a worker the route backstop killed (by time)"
    if f.get("reused") and f["status"] == 0 and f["t1"] - f["t0"] < 0.05:
        for t, name in st.timeline:
            if name.startswith("reload") and 0 <= f["t0"] - t <= 3:
                # The response before said keep-alive; the old worker closed once it was out.
                return ("on a kept connection an old worker closed after the response in flight "
                        "when a reload drained it (the keep-alive race; by time)")
    if f["kind"] in ("php", "upload", "upload chunked", "slow upload"):
        for t, pid in st.php_kills:
            if f["t0"] - 0.05 <= t <= f["t1"] and f["status"] in (0, 500, 502, 503, 504):
                return "in flight on a killed php-cgi (by time)"
    return None


def describe(f, st):
    """One failure, with the faults around it, for the examples."""
    near = [f"{name} {t - f['t0']:+.1f} s" for t, name in st.timeline if f["t0"] - 3 <= t <= f["t1"] + 1]
    return (f"{f['kind']}: {f['cause']}{' ' + f['detail'] if f['detail'] else ''}, "
            f"{'reused' if f.get('reused') else 'new'} connection port {f['port']}, "
            f"{(f['t1'] - f['t0']) * 1000:.0f} ms; faults around it (from its start): {', '.join(near) or 'none'}")


def report(h, start, end, elapsed, final):
    st, s = h.stats, h.s
    print()
    total = sum(c["sent"] for c in st.kind.values())
    print(f"== requests: {total} in {elapsed:.0f} s ({total / max(elapsed, 1):.0f}/s)")
    print(f"{'kind':24} {'sent':>8} {'ok':>8} {'failed':>7} {'retried':>8}")
    for kind in h.kinds:
        c = st.kind.get(kind, Counter())
        print(f"{kind:24} {c['sent']:8} {c['ok']:8} {c['failed']:7} {c['retried']:8}"
              + (f"   harness errors: {c['harness error']}" if c["harness error"] else ""))
    print("responses by class: " + ", ".join(f"{k} {v}" for k, v in sorted(st.classes.items())))

    print()
    print("== faults")
    for fault in ("worker kill", "php-cgi kill", "reload unchanged", "reload changed", "log rotation"):
        c = st.faults.get(fault, Counter())
        print(f"{fault:18} " + (", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none")
              + "".join(f"\n    {n}" for n in st.fault_notes.get(fault, [])[:3]))
    held = sum(len(p) for _, _, p in st.kills)
    print(f"connections held by the killed workers at their kill: {held}")
    print(f"admin probe ({servers.SERVERS[s.server].equivalents['admin']}): {st.admin['calls']} calls, "
          f"{st.admin['failed']} failed, slowest {st.admin_max_s * 1000:.0f} ms"
          + "".join(f"\n    {e}" for e in st.admin_errors))
    print("how each fault is done here:")
    for k, v in servers.SERVERS[s.server].equivalents.items():
        print(f"    {k}: {v}")

    print()
    print("== failures a client sees (after one retry of an idempotent request whose reused connection failed before any byte)")
    explained = Counter()
    unexplained = Counter()
    post = Counter()
    examples, post_examples = [], []
    backstop = backstop_kills(h)
    for f in st.failures:
        why = attribute(f, st, s, backstop)
        key = f"{f['kind']}: {f['cause']}"
        if why:
            explained[f"{why}: {key}"] += 1
        elif not f["idempotent"]:
            post[key] += 1
            if len(post_examples) < 8:
                post_examples.append(describe(f, st))
        elif f["kind"] == "adversarial Lua":
            post["adversarial Lua (counted below): " + f["cause"]] += 1
        else:
            unexplained[key] += 1
            if len(examples) < 8:
                examples.append(describe(f, st))
    n_unexplained = sum(unexplained.values())
    print(f"explained: {sum(explained.values())}")
    for k, v in explained.most_common():
        print(f"    {v:6}  {k}")
    print(f"UNEXPLAINED failed idempotent requests: {n_unexplained}   (goal: 0)")
    for k, v in unexplained.most_common():
        print(f"    {v:6}  {k}")
    for e in examples:
        print(f"      e.g. {e}")
    print(f"failed non-idempotent (POST) requests, not retried: {sum(post.values())}")
    for k, v in post.most_common():
        print(f"    {v:6}  {k}")
    for e in post_examples:
        print(f"      e.g. {e}")
    retried = Counter()
    for kind, cause, port, t0, t1 in st.retries:
        why = "killed worker's connection" if any(
            port in ports and t0 <= t <= t1 for t, _, ports in st.kills) else "closed by the server"
        retried[f"{why}: {cause}"] += 1
    print(f"retried once on a new connection (reused connection failed before any response byte): {len(st.retries)}")
    for k, v in retried.most_common():
        print(f"    {v:6}  {k}")
    print("malformed requests: " + (", ".join(f"{k} {v}" for k, v in sorted(st.malformed.items())) or "none"))

    busy_fail = False
    if s.adv:
        print()
        print(f"== adversarial Lua (expected: 500 within {s.adv_bound_ms} ms)")
        for name in s.adv_kinds:
            c = st.adv.get(name, Counter())
            print(f"    {name:10} " + (", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "not drawn")
                  + f"   slowest {st.adv_max_ms.get(name, 0):.0f} ms")
        incidents = {}
        for pid, req, el in st.busy:
            incidents[(pid, req)] = max(el, incidents.get((pid, req), 0))
        print(f"workers seen busy on /adv/ past {s.adv_bound_ms} ms by the admin probe: {len(incidents)} "
              f"(worker, request) incidents in {len(st.busy)} observations")
        for (pid, req), el in sorted(incidents.items(), key=lambda x: -x[1])[:8]:
            print(f"    worker {pid}: {req}, seen busy for {el:.0f} ms")
        stale = {}
        for pid, req, el in st.adv_stale:
            stale[(pid, req)] = max(el, stale.get((pid, req), 0))
        if stale:
            print(f"rows naming /adv/ past {s.adv_bound_ms} ms with no Lua running (lua_ms null: the route had "
                  f"answered, another request of the worker was in flight; not counted above): "
                  + ", ".join(f"worker {p} {el:.0f} ms" for (p, _), el in sorted(stale.items(), key=lambda x: -x[1])[:8]))
        stalls = {}
        for pid, state, hb, req in st.stalled:
            stalls[pid] = max(hb, stalls.get(pid, 0))
        if stalls:
            print(f"event loops seen stalled (heartbeat older than {2 * s.adv_bound_ms} ms while reading/writing): "
                  + ", ".join(f"worker {p} {hb} ms" for p, hb in stalls.items()))
        known = [k for k in s.adv_known if k in s.adv_kinds]
        unknown_busy = [b for b in st.busy if not any(f"/adv/{k}" in b[1] for k in known)]
        if known:
            print(f"known to outlive the bound until the coroutine budget fix: {', '.join(known)} "
                  f"(SOAK_ADV_KNOWN); {len(st.busy) - len(unknown_busy)} of the observations above are theirs")
        unknown_stalled = [x for x in st.stalled
                           if not any(f"/adv/{k}" in (x[3] or "") for k in known)]
        busy_fail = bool(unknown_busy or unknown_stalled)

    print()
    print("== descriptors and RSS, every process: after the warm-up vs. at the end (both after the load stopped and idle connections closed)")
    grew = []
    notes = []
    luahttpd = s.server == "luahttpd"
    print(f"{'role':16} {'procs':>11} {'fds (max per process)':>22} {'RSS total MiB':>16}")
    for role in sorted(set(start) | set(end)):
        a, b = start.get(role, []), end.get(role, [])
        fa, fb = max((x[1] for x in a), default=0), max((x[1] for x in b), default=0)
        ra, rb = sum(x[2] for x in a) / 2**20, sum(x[2] for x in b) / 2**20
        print(f"{role:16} {len(a):5} -> {len(b):<4} {fa:9} -> {fb:<9} {ra:7.1f} -> {rb:<7.1f}")
        # The master holds one end of a socketpair to the admin evaluator while that runs
        # (it is forked on demand, so the admin probe of the faults phase starts one).
        expected = 0
        if role == "master" and luahttpd:
            expected = max(0, len(end.get(EVALUATOR, [])) - len(start.get(EVALUATOR, [])))
        if fb > fa + expected and role in ("master", "worker", "php-cgi"):
            grew.append(f"{role} fds {fa} -> {fb}")
        elif expected and fb > fa:
            notes.append(f"master fds {fa} -> {fb}: the admin evaluator's socketpair (expected)")
        if role == "master" and rb > ra * 1.25 + 1:
            grew.append(f"master RSS {ra:.1f} -> {rb:.1f} MiB")
    print("(workers and php-cgi processes are respawned by the faults: theirs is growth since their own start)")
    for n in notes:
        print(n)

    print()
    print("after the soak, each kind once: " + ("all as expected" if not final else ""))
    for n in final:
        print("   " + n)

    problems = []
    if h.died.is_set() or not h.srv.alive():
        problems.append("the server died")
    if n_unexplained:
        problems.append(f"{n_unexplained} unexplained failed idempotent requests")
    if busy_fail:
        problems.append("a worker was busy on adversarial Lua past the bound")
    if grew:
        problems.append("growth: " + "; ".join(grew))
    failed_faults = sum(c["failed"] for c in st.faults.values())
    if failed_faults:
        problems.append(f"{failed_faults} faults did not take effect")
    print()
    if problems:
        print("SOAK: FAIL: " + "; ".join(problems))
        return 1
    print("SOAK: PASS")
    return 0


def main():
    s = Settings()
    h = Harness(s)
    rc = 2

    def on_signal(signum, _):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        rc = h.main()
    except servers.SetupError as e:
        print(f"soak: {e}", file=sys.stderr)
    except KeyboardInterrupt as e:
        print(f"soak: interrupted {e}", file=sys.stderr)
        rc = 130
    finally:
        h.stop_load.set()
        h.stop_faults.set()
        if h.srv:
            h.srv.stop()
        if s.keep_tmp or rc == 2:
            print(f"soak: files kept in {h.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(h.tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
