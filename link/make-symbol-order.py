#!/usr/bin/env python3
"""Writes link/symbol-order.txt: the functions a worker runs, in the order it first runs them.

build.rs hands that file to LLD (`--symbol-ordering-file`) for the `small` profile, so the code
a worker runs from its fork to idle and through its first requests sits in a few contiguous
64 KiB blocks instead of being spread over the whole code segment; the kernel maps code 64 KiB
at a time around each fault (fault-around), so a spread-out start-up maps most of the binary
into every worker (README, "A smaller binary").

How: a uprobe on every function of the binary (tracefs; run as root), a server started with a
small static site, requests of the usual kinds, the first hit of each function per process
read from the trace. The worker's functions come first, then what only the watcher ran.
Several binaries may be given: their workers' lists come first, then their watchers'. The
symbol names of the server's own crate (and of crates built for it, like mlua) carry a hash
that changes with its cargo features, so the file holds the names of the three builds the
README measures: default features, `zstd-thin`, and none. Symbols that a build does not have
are skipped by the linker, so a stale file costs only locality; the hashes also change with
the toolchain and with any dependency's version or source, so rerun this after a toolchain or
Cargo.lock change and after large changes (about ten seconds a binary; the file is written
anew, so the next small build relinks):

    cargo build --profile small
    CARGO_TARGET_DIR=target/thin cargo build --profile small --features zstd-thin
    CARGO_TARGET_DIR=target/minimal cargo build --profile small --no-default-features
    sudo link/make-symbol-order.py target/small/luahttpd target/thin/small/luahttpd \\
        target/minimal/small/luahttpd
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

TRACE = "/sys/kernel/tracing"
GROUP = "luahttpd_order"
EVENT = "hit"  # one event holding every probe: disabling one probe event at a time is slow
PORT = 19391
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "symbol-order.txt")


def text_segment(binary):
    """(vaddr, file offset, size) of the executable LOAD segment."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            return int(f[2], 16), int(f[1], 16), int(f[4], 16)
    sys.exit("no executable segment in " + binary)


def functions(binary):
    """(address, name) of every sized function symbol, one per address."""
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True,
                         text=True, check=True)
    seen = {}
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwW" and int(f[1], 16) > 0:
            seen.setdefault(int(f[0], 16), f[3])
    return sorted(seen.items())


def write(path, text, append=False):
    """Writes to a tracefs file (no seek: tracefs refuses the one Python's "a" mode does)."""
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(os.path.join(TRACE, path), flags)
    try:
        data = text.encode()
        while data:  # whole lines, under the 4 KiB the kernel parses of one write
            cut = data.rfind(b"\n", 0, 4000) + 1 or len(data)
            os.write(fd, data[:cut])
            data = data[cut:]
    finally:
        os.close(fd)


def remove_probes():
    """Removes the probe event, if an earlier run left it."""
    if os.path.exists(os.path.join(TRACE, "events", GROUP, EVENT)):
        write(f"events/{GROUP}/enable", "0")
        write("uprobe_events", f"-:{GROUP}/{EVENT}\n", append=True)


def load_base(pid, binary):
    """Where `binary` is loaded in process `pid`: runtime address minus symbol address."""
    first_vaddr = None
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            first_vaddr = int(f[2], 16) & ~0xFFF
            break
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            m = line.split()
            if len(m) >= 6 and m[5] == binary and int(m[2], 16) == 0:
                return int(m[0].split("-")[0], 16) - first_vaddr
    sys.exit(f"{binary} is not mapped in process {pid}")


def get(path, headers=""):
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n".encode())
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass


def trace_order(binary):
    """The names `binary`'s worker runs and those its watcher runs, each in first-hit order."""
    vaddr, offset, size = text_segment(binary)
    funcs = [(a, n) for a, n in functions(binary) if vaddr <= a < vaddr + size]
    remove_probes()
    write("trace", "")
    write("buffer_size_kb", "65536")
    write("uprobe_events", "".join(f"p:{GROUP}/{EVENT} {binary}:0x{a - vaddr + offset:x}\n"
                                   for a, _ in funcs), append=True)
    write(f"events/{GROUP}/enable", "1")
    work = tempfile.mkdtemp(prefix="symbol-order-")
    www = os.path.join(work, "www")
    os.mkdir(www)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("<p>hello</p>\n" * 40)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    conf = os.path.join(work, "site.lua")
    with open(conf, "w") as f:
        f.write(f'server {{ listen = "127.0.0.1:{PORT}", workers = 1, root = "{www}", '
                f'error_log = "{work}/error.log", access_log = "{work}/access.log" }}\n')
    server = subprocess.Popen([binary, "-c", conf])
    try:
        time.sleep(3)  # to idle: what a worker runs before any request
        base = load_base(server.pid, binary)  # the worker is a fork: the same base
        for path, headers in [("/1k.bin", ""), ("/", ""), ("/nope", ""),
                              ("/1k.bin", "Range: bytes=0-99\r\n"),
                              ("/1k.bin", "If-None-Match: *\r\n"),
                              ("/index.html", "Accept-Encoding: gzip\r\n")]:
            get(path, headers)
        time.sleep(1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        write(f"events/{GROUP}/enable", "0")
    name_at = dict(funcs)
    first = {}  # pid -> names in first-hit order
    # "  luahttpd-1234  [001] ..... 37872.866819: hit: (0x559825a96550)"
    hit = re.compile(r"-(\d+)\s+\[\d+\].*?: " + EVENT + r": \((0x[0-9a-f]+)\)")
    with open(os.path.join(TRACE, "trace")) as f:
        for line in f:
            m = hit.search(line)
            if m and int(m.group(2), 16) - base in name_at:
                names = first.setdefault(int(m.group(1)), {})
                names.setdefault(name_at[int(m.group(2), 16) - base], None)
    remove_probes()
    write("trace", "")
    if server.pid not in first or len(first) < 2:
        sys.exit(f"{binary}: no trace of a worker: were the probes hit?")
    watcher = list(first.pop(server.pid))
    worker = max(first.values(), key=len)  # the worker (a config check child runs less)
    print(f"{binary}: {len(worker)} worker functions, {len(watcher)} of the watcher, "
          f"of {len(funcs)}")
    return list(worker), watcher


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make-symbol-order.py BINARY... (unstripped small builds)")
    if not os.path.exists(os.path.join(TRACE, "uprobe_events")):
        sys.exit(f"{TRACE}/uprobe_events missing: mount tracefs there, as root")
    traces = [trace_order(os.path.abspath(b)) for b in sys.argv[1:]]
    order = {}  # every worker's names first, then the watchers'
    for names in [w for w, _ in traces] + [w for _, w in traces]:
        for name in names:
            order.setdefault(name, None)
    with open(OUT, "w") as f:
        f.write("".join(n + "\n" for n in order))
    print(f"{OUT}: {len(order)} names")


if __name__ == "__main__":
    main()
