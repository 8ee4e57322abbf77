"""A small, strict HTTP/1.1 client over raw sockets for the soak.

It exists (rather than http.client) because the soak must know exactly what
happened on the wire: which local port a request used (to attribute it to the
worker that held the connection), whether any byte of the response arrived
before a failure, and it must send slow and malformed requests on purpose.
"""
import socket
import time


class Failure(Exception):
    """A request that did not get a whole response. `cause` is a short fixed
    phrase (the failure table groups by it); `got_bytes` says whether any
    response byte had arrived."""

    def __init__(self, cause, got_bytes=False, detail=""):
        super().__init__(cause)
        self.cause = cause
        self.got_bytes = got_bytes
        self.detail = detail


class Response:
    __slots__ = ("status", "headers", "body", "close")

    def __init__(self, status, headers, body, close):
        self.status = status
        self.headers = headers
        self.body = body
        self.close = close


def _phase(got):
    return "mid-response" if got else "before response"


class Conn:
    """One client connection. `requests` counts requests sent on it, so a
    caller can tell a fresh connection from a reused keep-alive one."""

    def __init__(self, host, port, timeout, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((host, port))
        except ConnectionRefusedError:
            self.sock.close()
            raise Failure("connect refused")
        except socket.timeout:
            self.sock.close()
            raise Failure("connect timeout")
        except OSError as e:
            self.sock.close()
            raise Failure(f"connect error {e.errno}")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.created = time.monotonic()
        self.requests = 0
        self.buf = b""
        self.closed = False

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def settimeout(self, t):
        self.sock.settimeout(t)

    # -- sending -----------------------------------------------------------

    def send(self, data, pieces=1, gap=0.0):
        """Send data, optionally in `pieces` parts with `gap` seconds between."""
        self.requests += 1
        try:
            if pieces <= 1:
                self.sock.sendall(data)
                return
            step = max(1, len(data) // pieces)
            for i in range(0, len(data), step):
                self.sock.sendall(data[i:i + step])
                if i + step < len(data):
                    time.sleep(gap)
        except socket.timeout:
            raise Failure("timeout sending")
        except (BrokenPipeError, ConnectionResetError):
            raise Failure("reset while sending")
        except OSError as e:
            raise Failure(f"send error {e.errno}")

    # -- receiving ---------------------------------------------------------

    def _fill(self, got, slow_read=None):
        try:
            if slow_read:
                chunk, pause = slow_read
                time.sleep(pause)
                data = self.sock.recv(chunk)
            else:
                data = self.sock.recv(65536)
        except socket.timeout:
            raise Failure("timeout " + _phase(got), got)
        except ConnectionResetError:
            raise Failure("reset " + _phase(got), got)
        except OSError as e:
            raise Failure(f"recv error {e.errno} " + _phase(got), got)
        if not data:
            raise Failure("eof " + _phase(got), got)
        self.buf += data

    def read_response(self, head_only=False, slow_read=None):
        """Read one response (skipping 1xx). Raises Failure."""
        got = bool(self.buf)
        while True:
            while b"\r\n\r\n" not in self.buf:
                if len(self.buf) > 65536:
                    raise Failure("bad response head", True)
                self._fill(got)
                got = True
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise Failure("bad response head", True, lines[0][:80])
            status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise Failure("bad response head", True, line[:80])
                key = name.strip().lower()
                value = value.strip()
                headers[key] = headers[key] + ", " + value if key in headers else value
            self.buf = rest
            if 100 <= status < 200:
                continue
            break
        conn_tokens = headers.get("connection", "").lower()
        close = "close" in conn_tokens or parts[0] == "HTTP/1.0" and "keep-alive" not in conn_tokens
        if head_only or status in (204, 304):
            return Response(status, headers, b"", close)
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            body = self._read_chunked(slow_read)
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                raise Failure("bad response head", True, "content-length")
            while len(self.buf) < n:
                self._fill(True, slow_read)
            body, self.buf = self.buf[:n], self.buf[n:]
        else:
            close = True
            while True:
                try:
                    self._fill(True, slow_read)
                except Failure as f:
                    if f.cause == "eof mid-response":
                        break
                    raise
            body, self.buf = self.buf, b""
        return Response(status, headers, body, close)

    def _read_chunked(self, slow_read):
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill(True, slow_read)
            line, _, self.buf = self.buf.partition(b"\r\n")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise Failure("bad chunked body", True)
            if size == 0:
                # trailers until an empty line
                while True:
                    while b"\r\n" not in self.buf:
                        self._fill(True, slow_read)
                    line, _, self.buf = self.buf.partition(b"\r\n")
                    if not line:
                        return body
            while len(self.buf) < size + 2:
                self._fill(True, slow_read)
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]


def build(method, path, host="soak.test", headers=None, body=None, close=False):
    """Bytes of a request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chunked(body, size=4096):
    """body in chunked transfer coding."""
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"
