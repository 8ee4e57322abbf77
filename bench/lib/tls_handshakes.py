#!/usr/bin/env python3
"""Full TLS handshakes one after the other, for counting their CPU cost.

usage: tls_handshakes.py PORT N

Makes N connections to 127.0.0.1:PORT one at a time; each is a full handshake
(a fresh context per connection, tickets refused, so nothing is resumed), one
GET /1k.bin read to its end, and a close. Prints how many completed and exits 1
if any did not. Run the server's worker under `valgrind --tool=callgrind` with
N connections and with none: the difference divided by N is the cost of one
handshake and its request (README, "HTTPS"). Certificates are not checked; the
client offers what Python's ssl module offers by default (TLS 1.3 with X25519
first).
"""
import socket
import ssl
import sys


def one(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 200 ") and len(body) == 1024


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: tls_handshakes.py PORT N")
    port, n = int(sys.argv[1]), int(sys.argv[2])
    ok = 0
    for _ in range(n):
        try:
            ok += bool(one(port))
        except (OSError, ssl.SSLError) as e:
            print(f"connection failed: {e}", file=sys.stderr)
    print(f"{ok} of {n} connections completed")
    sys.exit(0 if ok == n else 1)


if __name__ == "__main__":
    main()
