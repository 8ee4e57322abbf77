"""Send one GET N times on one kept connection and read every response whole.

Used by bench/instructions.sh: the difference between two runs of the server
with N1 and N2 requests is what N2 - N1 requests cost. Exits non-zero unless
every response is `200` with a body of EXPECT bytes, so a count is never taken
of an error page.

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
                length = None
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v)
                if length is None:
                    sys.exit(f"response {i + 1}: no Content-Length ({head[0]})")
                if len(buf) >= h + 4 + length:
                    status = head[0].split(" ")[1] if " " in head[0] else head[0]
                    if status != "200" or length != expect:
                        sys.exit(f"response {i + 1}: {head[0]}, {length} bytes (want 200, {expect})")
                    buf = buf[h + 4 + length:]
                    break
            d = s.recv(65536)
            if not d:
                sys.exit(f"response {i + 1}: connection closed")
            buf += d
    s.close()


if __name__ == "__main__":
    main()
