"""The three servers the soak runs, each with its own way of doing every fault.

A Server starts one instance from a template under bench/conf/soak/, tells
its worker processes and FastCGI processes apart, and performs the faults:
kill a worker, kill a php-cgi process, reload (unchanged or changed config),
rotate the logs, ask the admin side for the workers. Where a server has no
equivalent of a fault, `equivalents` says so and the method says so too.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import httpc
import proctree

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conf", "soak")


class SetupError(Exception):
    """The server could not be set up; the message says why."""


def render(name, values):
    """bench/conf/soak/NAME with every @KEY@ replaced; a placeholder left over is a bug."""
    with open(os.path.join(CONF, name)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise SetupError(f"template {name}: {left[0]} was not given a value")
    return text


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("latin-1").strip()
    except OSError:
        return ""


def children(pid):
    return [p for p, pp in proctree.parents().items() if pp == pid]


def state_of(pid):
    f = proctree._stat_fields(pid)
    return f[0].decode() if f else None


def client_ports(pid, server_port):
    """Remote (client) ports of the TCP connections process `pid` holds on
    server_port, read from its descriptors and its net namespace's tcp table."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) < 10 or cols[9] not in inodes:
                        continue
                    local_port = int(cols[1].rsplit(":", 1)[1], 16)
                    if local_port == server_port:
                        ports.add(int(cols[2].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def stop_and_list(pid, server_port):
    """SIGSTOP pid, wait (bounded) until it is stopped, and list the client
    ports of its connections: a stopped worker accepts nothing more, so the
    list is exact when SIGKILL follows."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline and state_of(pid) not in ("T", "t", None):
        time.sleep(0.002)
    return client_ports(pid, server_port)


class Server:
    """Common parts; subclasses fill in the server-specific ones."""

    name = "?"
    equivalents = {}

    def __init__(self, s, tmp, port, www):
        self.s = s
        self.tmp = tmp
        self.dir = os.path.join(tmp, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port
        self.www = www
        self.variant = "a"
        self.procs = []  # every Popen this object started
        self.root_pid = None
        self.rotations = 0

    # -- processes ---------------------------------------------------------

    def spawn(self, argv, log, env=None):
        out = open(os.path.join(self.dir, log), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, env=env)
        out.close()
        self.procs.append(p)
        return p

    def all_pids(self):
        """Every process of this server's set-up: its tree, plus helpers."""
        roots = [self.root_pid] + [p.pid for p in self.procs if p.pid != self.root_pid and p.poll() is None]
        return proctree.tree([r for r in roots if r])

    def role(self, pid):
        c = comm(pid)
        if pid == self.root_pid:
            return "master"
        if c.startswith("php-cgi"):
            return "php-cgi"
        if c.startswith("luahttpd-fcgi"):
            return "stall backend"
        if pid in self.worker_pids():
            return "worker"
        return "other (" + c + ")"

    def alive(self):
        return self.root_pid is not None and state_of(self.root_pid) not in (None, "Z")

    def stop(self):
        """Stop everything started, by pid: TERM, up to 5 s, then KILL."""
        pids = self.all_pids() if self.root_pid else []
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in pids:
            if state_of(pid) not in (None, "Z"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise SetupError(f"{self.name} exited during start-up; see {self.dir}")
            try:
                c = httpc.Conn("127.0.0.1", self.port, 2)
                c.send(httpc.build("GET", "/1k.bin", close=True))
                r = c.read_response()
                c.close()
                if r.status == 200:
                    return
                last = f"status {r.status}"
            except httpc.Failure as f:
                last = f.cause
            time.sleep(0.2)
        raise SetupError(f"{self.name} did not answer on 127.0.0.1:{self.port} within {timeout}s ({last})")

    # -- faults shared by all ----------------------------------------------

    def kill_worker(self, rng):
        """SIGKILL a random worker. Returns (pid, client ports it held) or None."""
        pids = self.worker_pids()
        if not pids:
            return None
        victim = rng.choice(pids)
        try:
            ports = stop_and_list(victim, self.port)
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim, ports

    def php_pids(self):
        return [p for p in self.all_pids() if comm(p).startswith("php-cgi")]

    def kill_php(self, rng):
        pids = self.php_pids()
        if not pids:
            return None
        victim = rng.choice(pids)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim

    def rotate_logs(self):
        """Rename the access log away, signal the server, and wait (5 s) until
        it writes a new one. Returns (ok, detail)."""
        log = os.path.join(self.dir, "access.log")
        self.rotations += 1
        try:
            os.rename(log, f"{log}.{self.rotations}")
        except FileNotFoundError:
            pass
        self.signal_reopen()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if os.path.getsize(log) > 0:
                    return True, "a new access log was written"
            except OSError:
                pass
            time.sleep(0.1)
        return False, "no new access log within 5 s"

    def http_probe(self, path):
        """GET path on a new connection: (ok, seconds, None or the failure)."""
        t0 = time.monotonic()
        try:
            c = httpc.Conn("127.0.0.1", self.port, 5)
            c.send(httpc.build("GET", path, close=True))
            r = c.read_response()
            c.close()
        except httpc.Failure as f:
            return False, time.monotonic() - t0, f.cause
        return r.status == 200, time.monotonic() - t0, None if r.status == 200 else f"status {r.status}"

    def reload(self, changed):
        """Reload (with the config rewritten when `changed`); (ok, detail)."""
        if changed:
            self.variant = "b" if self.variant == "a" else "a"
            self.write_config()
        return self.do_reload()


class Luahttpd(Server):
    name = "luahttpd"
    equivalents = {
        "worker kill": "SIGKILL of a worker (the watcher respawns it)",
        "php-cgi kill": "SIGKILL of a php-cgi process (the watcher respawns it)",
        "reload": "SIGUSR1 to the watcher; checked through status().generation",
        "changed reload": "the php env and a header change, so the php-cgi processes are replaced",
        "log rotation": "rename access.log, SIGHUP to the watcher",
        "admin": "luahttpd repl SOCK -e 'workers()' --json in a loop",
        "stall": "fastcgi 'stall' spawns luahttpd-fcgi-test (slowhead mode)",
        "adversarial Lua": "route() code under the route limits",
    }

    def write_config(self):
        text = render("luahttpd.lua", {
            "VARIANT": self.variant, "PORT": self.port, "WORKERS": self.s.workers, "WWW": self.www,
            "DIR": self.dir, "KEEPALIVE_IDLE": self.s.keepalive_idle, "PHP_CGI": self.s.php_cgi,
            "PHP_PROCS": self.s.php_procs, "FCGI_TEST": self.s.fcgi_test,
            "STALL_TIMEOUT": self.s.stall_timeout, "FIND_N": self.s.find_n,
            "PHP_MAX_REQUESTS": self.s.php_max_requests,
        })
        with open(os.path.join(self.dir, "site.lua"), "w") as f:
            f.write(text)

    def start(self):
        self.write_config()
        check = subprocess.run([self.s.luahttpd, "-t", "-c", os.path.join(self.dir, "site.lua")],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise SetupError("luahttpd -t refused the soak config:\n" + check.stdout + check.stderr)
        p = self.spawn([self.s.luahttpd, "-c", os.path.join(self.dir, "site.lua")], "stdout.log")
        self.root_pid = p.pid
        self.wait_ready()

    def worker_pids(self):
        return [p for p in children(self.root_pid) if comm(p) == "luahttpd"]

    def admin(self, expr):
        """Run one admin request; (ok, seconds, value or error text)."""
        t0 = time.monotonic()
        try:
            r = subprocess.run([self.s.luahttpd, "repl", os.path.join(self.dir, "admin.sock"),
                                "-e", expr, "--json"], capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False, time.monotonic() - t0, "no answer within 10 s"
        dt = time.monotonic() - t0
        if r.returncode != 0:
            return False, dt, (r.stderr or r.stdout).strip()[:200]
        try:
            return True, dt, json.loads(r.stdout)
        except ValueError:
            return False, dt, "not JSON: " + r.stdout[:200]

    def generation(self):
        ok, _, v = self.admin("status()")
        return v.get("generation") if ok and isinstance(v, dict) else None

    def do_reload(self):
        before = self.generation()
        if before is None:
            return False, "status() did not answer before the reload"
        os.kill(self.root_pid, signal.SIGUSR1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.2)
            ok, _, v = self.admin("status()")
            if ok and isinstance(v, dict):
                if v.get("generation", before) > before:
                    return True, f"generation {before} -> {v['generation']}"
                lr = v.get("last_reload")
                if isinstance(lr, dict) and lr.get("error"):
                    return False, "reload refused: " + str(lr.get("error"))[:200]
        return False, f"generation still {before} after 15 s"

    def signal_reopen(self):
        os.kill(self.root_pid, signal.SIGHUP)

    def probe(self):
        """The admin view: (ok, seconds, rows or error)."""
        return self.admin("workers()")


class Nginx(Server):
    name = "nginx"
    equivalents = {
        "worker kill": "SIGKILL of a worker process (the master respawns it)",
        "php-cgi kill": "no equivalent in nginx (it does not supervise FastCGI processes): the soak starts "
                        "them and restarts any that exits 0.1 s later, as an outside supervisor would; "
                        "nginx's upstream defaults (max_fails=1, fail_timeout=10s) are kept",
        "reload": "SIGHUP to the master (nginx -s reload); checked by new worker pids",
        "changed reload": "a response header changes (the php-cgi processes are not nginx's to replace)",
        "log rotation": "rename access.log, SIGUSR1 to the master",
        "admin": "no workers() equivalent: GET /status (stub_status) in a loop",
        "stall": "luahttpd-fcgi-test started by the soak, fastcgi_read_timeout",
        "adversarial Lua": "not run (no Lua limits in nginx's lua module; it would hang a worker)",
    }

    def write_config(self):
        servers = "\n".join(f"    server unix:{self.dir}/php.sock-{i};" for i in range(self.s.php_procs))
        text = render("nginx.conf", {
            "USER": "user root root;" if os.geteuid() == 0 else "", "WORKERS": self.s.workers,
            "DIR": self.dir, "KEEPALIVE_IDLE": self.s.keepalive_idle, "PHP_SERVERS": servers,
            "PORT": self.port, "WWW": self.www, "VARIANT": self.variant,
            "STALL_TIMEOUT": self.s.stall_timeout,
        })
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(text)
        with open(os.path.join(CONF, "nginx-fastcgi_params")) as src, \
                open(os.path.join(self.dir, "fastcgi_params"), "w") as dst:
            dst.write(src.read())

    def php_env(self):
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PHP_FCGI_CHILDREN": "0",
                "PHP_FCGI_MAX_REQUESTS": str(self.s.php_max_requests)}

    def start_php(self, i):
        path = f"{self.dir}/php.sock-{i}"
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.php[i] = self.spawn([self.s.php_cgi, "-b", path], f"php-cgi-{i}.log", env=self.php_env())

    def supervise_php(self):
        """The outside supervisor nginx needs (spawn-fcgi, systemd, ...): a
        php-cgi process that exited (PHP_FCGI_MAX_REQUESTS, or killed) is
        started again on its socket 0.1 s later."""
        while not self.stopping.wait(0.05):
            for i, p in list(self.php.items()):
                if p.poll() is not None:
                    self.stopping.wait(0.1)
                    if not self.stopping.is_set():
                        self.start_php(i)
                        self.php_respawns += 1

    def start(self):
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        self.php, self.php_respawns, self.stopping = {}, 0, threading.Event()
        for i in range(self.s.php_procs):
            self.start_php(i)
        threading.Thread(target=self.supervise_php, daemon=True).start()
        self.spawn([self.s.fcgi_test, "--listen", f"unix:{self.dir}/stall.sock"], "stall.log")
        self.write_config()
        args = ["nginx", "-p", self.dir, "-e", f"{self.dir}/error.log", "-c", f"{self.dir}/nginx.conf"]
        check = subprocess.run(args + ["-t", "-q"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise SetupError("nginx -t refused the soak config:\n" + check.stderr)
        p = self.spawn(args, "stdout.log")
        self.root_pid = p.pid
        self.wait_ready()

    def worker_pids(self):
        return [p for p in children(self.root_pid) if "worker process" in cmdline(p)]

    def stop(self):
        self.stopping.set()
        super().stop()

    def do_reload(self):
        before = set(self.worker_pids())
        os.kill(self.root_pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = set(self.worker_pids())
            if now and not (now & before):
                return True, "new worker processes"
        return False, "the old workers were still there after 15 s"

    def signal_reopen(self):
        os.kill(self.root_pid, signal.SIGUSR1)

    def probe(self):
        return self.http_probe("/status")


class Lighttpd(Server):
    name = "lighttpd"
    equivalents = {
        "worker kill": "SIGKILL of a worker (server.max-worker; the master forks a new one)",
        "php-cgi kill": "SIGKILL of a php-cgi process lighttpd spawned (lighttpd respawns it)",
        "reload": "SIGUSR1 to the master (graceful restart); checked by new worker pids",
        "changed reload": "a response header changes",
        "log rotation": "rename access.log, SIGHUP to the master",
        "admin": "no workers() equivalent: GET /status (mod_status) in a loop",
        "stall": "luahttpd-fcgi-test started by the soak, fastcgi read-timeout",
        "adversarial Lua": "not run (mod_magnet has no instruction or time limit)",
    }

    def write_config(self):
        text = render("lighttpd.conf", {
            "WWW": self.www, "PORT": self.port, "DIR": self.dir, "WORKERS": self.s.workers,
            "KEEPALIVE_IDLE": self.s.keepalive_idle, "VARIANT": self.variant,
            "PHP_CGI": self.s.php_cgi, "PHP_PROCS": self.s.php_procs,
            "STALL_TIMEOUT": self.s.stall_timeout, "PHP_MAX_REQUESTS": self.s.php_max_requests,
        })
        with open(os.path.join(self.dir, "lighttpd.conf"), "w") as f:
            f.write(text)

    def start(self):
        self.spawn([self.s.fcgi_test, "--listen", f"unix:{self.dir}/stall.sock"], "stall.log")
        self.write_config()
        conf = f"{self.dir}/lighttpd.conf"
        check = subprocess.run(["lighttpd", "-tt", "-f", conf], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise SetupError("lighttpd -tt refused the soak config:\n" + check.stdout + check.stderr)
        p = self.spawn(["lighttpd", "-D", "-f", conf], "stdout.log")
        self.root_pid = p.pid
        self.wait_ready()

    def worker_pids(self):
        return [p for p in children(self.root_pid) if comm(p) == "lighttpd"]

    def do_reload(self):
        before = set(self.worker_pids())
        os.kill(self.root_pid, signal.SIGUSR1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not self.alive():
                return False, "lighttpd exited on SIGUSR1"
            now = set(self.worker_pids())
            if now and not (now & before):
                return True, "new worker processes"
        return False, "the old workers were still there after 15 s"

    def signal_reopen(self):
        os.kill(self.root_pid, signal.SIGHUP)

    def probe(self):
        return self.http_probe("/status?auto")


SERVERS = {"luahttpd": Luahttpd, "nginx": Nginx, "lighttpd": Lighttpd}
