"""Send one GET N times on one kept connection and read every response whole.

Used by bench/instructions.sh: the difference between two runs of the server
with N1 and N2 requests is what N2 - N1 requests cost. Exits non-zero unless
every response is `200` with a body of EXPECT bytes (Content-Length or
chunked), so a count is never taken of an error page.

usage: keepalive_client.py PORT PATH N EXPECT
"""
import socket
import sys


def main():
    port, path, n, expect = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    req = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n".encode()
    buf = b""
    for i in range(n):
        s.sendall(req)
        while True:
            h = buf.find(b"\r\n\r\n")
            if h >= 0:
                head = buf[:h].decode("latin1").split("\r\n")
                length, chunked = None, False
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    k, v = k.strip().lower(), v.strip().lower()
                    if k == "content-length":
                        length = int(v)
                    elif k == "transfer-encoding" and v == "chunked":
                        chunked = True
                got = body_end(buf, h + 4, length, chunked)
                if got == "none":
                    sys.exit(f"response {i + 1}: no Content-Length ({head[0]})")
                if got is not None:
                    end, size = got
                    status = head[0].split(" ")[1] if " " in head[0] else head[0]
                    if status != "200" or size != expect:
                        sys.exit(f"response {i + 1}: {head[0]}, {size} bytes (want 200, {expect})")
                    buf = buf[end:]
                    break
            d = s.recv(65536)
            if not d:
                sys.exit(f"response {i + 1}: connection closed")
            buf += d
    s.close()


def body_end(buf, at, length, chunked):
    """Where the body starting at `at` ends and its size; None while incomplete,
    "none" when the head gives no length."""
    if length is not None:
        return (at + length, length) if len(buf) >= at + length else None
    if not chunked:
        return "none"
    size = 0
    while True:
        eol = buf.find(b"\r\n", at)
        if eol < 0:
            return None
        n = int(buf[at:eol].split(b";")[0], 16)
        if n == 0:
            # no trailers are sent by the servers counted here
            return (eol + 4, size) if len(buf) >= eol + 4 else None
        if len(buf) < eol + 2 + n + 2:
            return None
        size += n
        at = eol + 2 + n + 2


if __name__ == "__main__":
    main()
