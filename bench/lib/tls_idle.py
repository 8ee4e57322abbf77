#!/usr/bin/env python3
"""Rough bytes per idle keep-alive connection, plain or TLS.

usage: tls_idle.py PORT N plain|tls PID

Opens N connections to 127.0.0.1:PORT (TLS without certificate checks for
"tls"), sends one GET /1k.bin on each, reads the response, keeps them all open
and idle, and prints the growth of the RSS of PID's process tree (proctree.py)
divided by N. The server needs /1k.bin (1024 bytes), room for N connections and
a keep-alive idle time of more than a few seconds; the caller starts and stops
it. A quick measure (one reading, the allocator keeps what it had), not the
compare.sh idle_conns scenario.
"""
import os
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss(pid):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "proctree.py"), "rss", str(pid)],
        capture_output=True, text=True, check=True,
    ).stdout
    return int(out.strip())


def main():
    port, n, kind, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before = rss(pid)
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if kind == "tls":
            s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed before the response ended")
            got += chunk
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep and len(body) >= 1024:
                break
        held.append(s)
    time.sleep(1.5)
    after = rss(pid)
    print(f"{kind}: {n} idle connections, RSS {before} -> {after}: {(after - before) / n:.0f} bytes each")


if __name__ == "__main__":
    main()
