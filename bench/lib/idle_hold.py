#!/usr/bin/env python3
"""Hold N idle keep-alive connections to a server, after one request each.

    idle_hold.py HOST PORT N PATH [TIMEOUT_S]

Opens N connections (at most 256 connecting or waiting for a response at a
time), sends `GET PATH` on each with keep-alive and reads the whole response
(its Content-Length). It then prints one line

    ready OPEN FAILED

(OPEN connections now idle after a complete response; FAILED ones that could
not connect or did not get a whole 200 response), flushes, and waits for a
line on stdin. For each line it prints

    alive K

where K is how many of the OPEN connections the server has not closed. At
end of stdin it closes everything and exits. Everything is bounded by
TIMEOUT_S (default 120) for the opening phase.
"""
import errno
import selectors
import socket
import sys
import time

MAX_PENDING = 256


class Conn:
    __slots__ = ("sock", "buf", "need", "sent")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.need = None  # total bytes of head + body once the head is parsed
        self.sent = False


def parse_done(c):
    """True once a complete 200 response is in c.buf; raises ValueError if bad."""
    if c.need is None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = c.buf[:end].decode("latin-1").split("\r\n")
        if len(head[0].split()) < 2 or head[0].split()[1] != "200":
            raise ValueError(head[0])
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise ValueError("no Content-Length")
        c.need = end + 4 + length
    return len(c.buf) >= c.need


def main(argv):
    if len(argv) not in (5, 6):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, port, n, path = argv[1], int(argv[2]), int(argv[3]), argv[4]
    deadline = time.monotonic() + (float(argv[5]) if len(argv) == 6 else 120.0)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    idle, failed, started, pending = [], 0, 0, 0
    while (started < n or pending) and time.monotonic() < deadline:
        while started < n and pending < MAX_PENDING:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            sel.register(s, selectors.EVENT_WRITE, Conn(s))
            pending += 1
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            try:
                if not c.sent:
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, "connect")
                    c.sock.sendall(request)
                    c.sent = True
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                data = c.sock.recv(65536)
                if not data:
                    raise OSError("closed before the whole response")
                c.buf += data
                if parse_done(c):
                    sel.unregister(c.sock)
                    pending -= 1
                    c.buf = b""
                    idle.append(c.sock)
            except (OSError, ValueError):
                sel.unregister(c.sock)
                c.sock.close()
                pending -= 1
                failed += 1
    failed = n - len(idle)  # those still unfinished at the deadline count as failed too
    print(f"ready {len(idle)} {failed}", flush=True)
    for s in idle:
        sel.register(s, selectors.EVENT_READ)
    for _ in sys.stdin:
        # a readable idle connection is one the server closed (or wrote to)
        closed = {key.fileobj for key, _ in sel.select(timeout=0)}
        print(f"alive {len(idle) - len(closed)}", flush=True)
    for s in idle:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
