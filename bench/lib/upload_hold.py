#!/usr/bin/env python3
"""Worker memory per connection while many clients each upload a body slowly.

usage: upload_hold.py PORT N PATH PID [SENT_KIB]

Opens N connections to 127.0.0.1:PORT; on each sends a POST of PATH with a
Content-Length of 1 MiB and only the first SENT_KIB KiB (default 32) of the
body, then holds it open without sending more: N uploads in progress at once,
as slow clients make them. Prints the growth of the RSS of PID's process tree
(proctree.py) divided by N, read two seconds after the last one started, and
how many connections the server still had open then. The server needs room
for N connections and a read timeout of more than a minute; the caller starts
and stops it. Issue 10 aims at under 64 KiB per connection.
"""
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proctree  # noqa: E402  (beside this file)


def rss(pid):
    """The RSS of pid's process tree, in bytes."""
    return sum(proctree.rss_bytes(p) for p in proctree.tree([pid]))


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__.strip())
    port, n, path, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    sent = (int(sys.argv[5]) if len(sys.argv) == 6 else 32) * 1024
    head = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {1 << 20}\r\n\r\n").encode()
    piece = b"u" * sent
    before = rss(pid)
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(head + piece)
        held.append(s)
    time.sleep(2)
    after = rss(pid)
    # A connection the server closed (or answered) is readable; one still waiting is not.
    readable, _, _ = select.select(held, [], [], 0) if n <= 1000 else ([], [], [])
    open_now = n - len(readable)
    print(f"{n} slow uploads ({sent // 1024} KiB of 1 MiB sent each), {open_now} still open: "
          f"RSS {before} -> {after}: {(after - before) / n:.0f} bytes each")
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
