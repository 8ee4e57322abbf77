//! A small HTTP/1.1 upstream for the proxy tests, run on threads inside the test process, with
//! misbehaving paths in the spirit of `luahttpd-fcgi-test`.
//!
//! Paths: `/echo` (the request body back, Content-Length), `/head` (the request head back as
//! the body), `/bye` (a response, then close), `/bye-linger?after=MS` (a response, then the
//! write side shut, at once or MS later, and 10 s of reading), `/big?n=N` (N pattern bytes, Content-Length), `/chunked?n=N` (N pattern bytes,
//! chunked, in 1000-byte chunks), `/close?n=N` (close-delimited), `/name` (the upstream's
//! name), `/ws` (101, then echoes bytes), `/ws-sink` (101, then one `.` back per KiB
//! received, so the two directions of a tunnel differ in size), `/sleep` (never answers), `/die-mid` (head of 1000
//! bytes, 10 sent, then close), `/smuggle` (a second response glued after a complete one),
//! `/bad?kind=…` (cl-cl, cl-te, te-gzip, bare-lf, http2, bad-chunk), `/status?code=N`,
//! `/healthz` (200 unless the upstream is set unhealthy).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The byte at offset i of a pattern body.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A running test upstream.
pub struct Upstream {
    pub addr: String,
    pub name: String,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
    /// When set, /healthz answers 503.
    pub unhealthy: Arc<AtomicBool>,
    /// Connections of /hold requests that saw the proxy close them.
    pub hold_closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = l.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let unhealthy = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let hold_closed = Arc::new(AtomicUsize::new(0));
        let (c, r, u, s, n, h) = (
            conns.clone(),
            requests.clone(),
            unhealthy.clone(),
            stop.clone(),
            name.to_string(),
            hold_closed.clone(),
        );
        std::thread::spawn(move || {
            for stream in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, u, n, h) = (r.clone(), u.clone(), n.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &n, &r, &u, &h));
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            conns,
            requests,
            unhealthy,
            hold_closed,
            stop,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

struct Req {
    method: String,
    target: String,
    head: Vec<u8>,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 65536];
    match s.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

fn read_req(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Req> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(s, buf) {
            return None;
        }
    };
    let head: Vec<u8> = buf.drain(..end).collect();
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut parts = text.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let lower = text.to_ascii_lowercase();
    let header = |name: &str| {
        lower.split("\r\n").find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if header("expect").as_deref() == Some("100-continue") {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    if let Some(cl) = header("content-length") {
        let n: usize = cl.parse().ok()?;
        while buf.len() < n {
            if !fill(s, buf) {
                return None;
            }
        }
        let rest = buf.split_off(n);
        body = std::mem::replace(buf, rest);
    } else if header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !fill(s, buf) {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                while find(buf, b"\r\n").is_none() {
                    if !fill(s, buf) {
                        return None;
                    }
                }
                let i = find(buf, b"\r\n")?;
                buf.drain(..i + 2);
                break;
            }
            while buf.len() < size + 2 {
                if !fill(s, buf) {
                    return None;
                }
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
        }
    }
    Some(Req {
        method,
        target,
        head,
        body,
    })
}

fn query(target: &str, key: &str) -> Option<usize> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

fn query_str(target: &str, key: &str) -> String {
    target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_string()
}

fn respond(s: &mut TcpStream, status: u16, extra: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nServer: test-upstream\r\n{extra}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).is_ok() && s.write_all(body).is_ok()
}

fn serve(
    mut s: TcpStream,
    name: &str,
    requests: &AtomicUsize,
    unhealthy: &AtomicBool,
    hold_closed: &AtomicUsize,
) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(req) = read_req(&mut s, &mut buf) {
        requests.fetch_add(1, Ordering::SeqCst);
        let path = req.target.split('?').next().unwrap_or("").to_string();
        let head_only = req.method == "HEAD";
        let ok = match path.as_str() {
            "/echo" => respond(&mut s, 200, "X-Method: echo\r\n", &req.body),
            "/head" => respond(&mut s, 200, "", &req.head),
            "/name" => respond(&mut s, 200, "", name.as_bytes()),
            "/healthz" if unhealthy.load(Ordering::SeqCst) => respond(&mut s, 503, "", b"sick"),
            "/healthz" => respond(&mut s, 200, "", b"ok"),
            "/status" => {
                let code = query(&req.target, "code").unwrap_or(200) as u16;
                let body: &[u8] = if code == 304 || code == 204 {
                    b""
                } else {
                    b"st"
                };
                if code == 304 {
                    // A 304 that claims a body and sends one: the proxy must send none.
                    let _ = s.write_all(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n");
                    break;
                }
                respond(&mut s, code, "", body)
            }
            "/big" => {
                let n = query(&req.target, "n").unwrap_or(0);
                let body = pattern(n);
                if head_only {
                    let h = format!("HTTP/1.1 200 X\r\nContent-Length: {n}\r\n\r\n");
                    s.write_all(h.as_bytes()).is_ok()
                } else {
                    respond(&mut s, 200, "", &body)
                }
            }
            "/chunked" => {
                let n = query(&req.target, "n").unwrap_or(0);
                let body = pattern(n);
                let mut out = b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for c in body.chunks(1000) {
                    out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
                s.write_all(&out).is_ok()
            }
            "/close" => {
                let n = query(&req.target, "n").unwrap_or(0);
                let _ = s.write_all(b"HTTP/1.1 200 X\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(&pattern(n));
                break;
            }
            "/ws-sink" => {
                let _ = s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                let mut got = buf.len();
                let mut acked = 0;
                let mut tmp = [0u8; 4096];
                loop {
                    let dots = vec![b'.'; got / 1024 - acked];
                    acked = got / 1024;
                    if !dots.is_empty() && s.write_all(&dots).is_err() {
                        break;
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                break;
            }
            "/ws" => {
                let _ = s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                // Echo raw bytes until the client closes.
                let mut tmp = [0u8; 4096];
                if !buf.is_empty() {
                    let _ = s.write_all(&buf);
                }
                loop {
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&tmp[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                break;
            }
            "/bye" => {
                // A complete response, then the connection closes without saying so.
                respond(&mut s, 200, "", b"bye");
                break;
            }
            "/bye-linger" => {
                // A complete response, then a lingering close: the write side shut at once,
                // the socket read (and discarded) for 10 s more, as Apache's and nginx's
                // lingering closes do. A request sent on it meanwhile gets no answer.
                respond(&mut s, 200, "", b"bye");
                if let Some(ms) = query(&req.target, "after") {
                    std::thread::sleep(Duration::from_millis(ms as u64));
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut tmp = [0u8; 256];
                while matches!(s.read(&mut tmp), Ok(n) if n > 0) {}
                break;
            }
            "/hold" => {
                // No answer; count the proxy closing the connection.
                let mut tmp = [0u8; 256];
                while matches!(s.read(&mut tmp), Ok(n) if n > 0) {}
                hold_closed.fetch_add(1, Ordering::SeqCst);
                break;
            }
            "/sleep" => {
                std::thread::sleep(Duration::from_secs(30));
                break;
            }
            "/die-mid" => {
                let _ = s.write_all(b"HTTP/1.1 200 X\r\nContent-Length: 1000\r\n\r\n0123456789");
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
            "/smuggle" => {
                let _ = s.write_all(
                    b"HTTP/1.1 200 X\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 X\r\nContent-Length: 8\r\n\r\nsmuggled",
                );
                true
            }
            "/bad" => {
                let raw: &[u8] = match query_str(&req.target, "kind").as_str() {
                    "cl-cl" => b"HTTP/1.1 200 X\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
                    "cl-te" => b"HTTP/1.1 200 X\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
                    "te-gzip" => b"HTTP/1.1 200 X\r\nTransfer-Encoding: gzip\r\n\r\nab",
                    "bare-lf" => b"HTTP/1.1 200 X\nContent-Length: 2\n\nab",
                    "http2" => b"HTTP/2 200\r\ncontent-length: 2\r\n\r\nab",
                    "bad-chunk" => b"HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
                    _ => b"garbage\r\n\r\n",
                };
                let _ = s.write_all(raw);
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
            _ => respond(&mut s, 404, "", b"no such path"),
        };
        if !ok {
            break;
        }
    }
}

/// A response: status, lowercased header names with values, body.
pub type Resp = (u16, Vec<(String, String)>, Vec<u8>);

/// Reads one response from `c` decoding chunked bodies (the shared client reads to EOF).
/// A client connection to the server under test, with what it read beyond the last response.
pub struct Client {
    /// The socket.
    pub s: TcpStream,
    /// Bytes read and not yet taken by a response.
    pub buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` with a 15 s read timeout.
    pub fn new(addr: &str) -> Client {
        Client::with_timeout(addr, Duration::from_secs(15))
    }
    /// Connects to `addr` with the given read timeout.
    pub fn with_timeout(addr: &str, timeout: Duration) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        Client { s, buf: Vec::new() }
    }
    /// Writes raw bytes.
    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }
    /// The next complete response (of a GET).
    pub fn resp(&mut self) -> Resp {
        self.try_resp(false).expect("a complete response")
    }
    /// The next response, if one completes; `head` for the answer to a HEAD.
    pub fn try_resp(&mut self, head: bool) -> Option<Resp> {
        read_response(&mut self.s, &mut self.buf, head)
    }
    /// `GET path` with `Host: test`, and its response.
    pub fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.resp()
    }
    /// Whether the server closes the connection (EOF or reset) within 5 s.
    pub fn closed(&mut self) -> bool {
        self.closed_within(Duration::from_secs(5))
    }
    /// Whether the server closes the connection (EOF or reset) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let _ = self.s.set_read_timeout(Some(within));
        let mut tmp = [0u8; 4096];
        loop {
            match self.s.read(&mut tmp) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// The value of a response's header field (names are lower-case in `Resp`).
pub fn header<'a>(r: &'a Resp, name: &str) -> Option<&'a str> {
    r.1.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Option<Resp> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(s, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    let no_body = head_request || status == 304 || status == 204 || status < 200;
    if no_body {
    } else if let Some(cl) = get("content-length") {
        let n: usize = cl.parse().ok()?;
        while buf.len() < n {
            if !fill(s, buf) {
                return None;
            }
        }
        let rest = buf.split_off(n);
        body = std::mem::replace(buf, rest);
    } else if get("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !fill(s, buf) {
                    return None;
                }
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[..line_end])
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                while find(buf, b"\r\n").is_none() {
                    if !fill(s, buf) {
                        return None;
                    }
                }
                let i = find(buf, b"\r\n")?;
                buf.drain(..i + 2);
                break;
            }
            while buf.len() < size + 2 {
                if !fill(s, buf) {
                    return None;
                }
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
        }
    } else {
        while fill(s, buf) {}
        body = std::mem::take(buf);
    }
    Some((status, headers, body))
}
