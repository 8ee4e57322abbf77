//! luahttpd-fcgi-test: a deliberately misbehaving FastCGI responder for luahttpd's tests.
//!
//! A plain blocking program with a thread per connection (it is a test tool, not the server).
//! It listens on fd 0 when spawned the lighttpd way (FCGI_LISTENSOCK_FILENO), or on
//! `--listen 127.0.0.1:PORT` / `--listen unix:/path`. The `mode` query parameter picks what it
//! does; see `usage()`.

use std::fs::OpenOptions;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use luahttpd::fastcgi::record::{self, Header, HEADER_LEN};
use sha2::{Digest, Sha256};

/// Completed requests, for `--exit-after`.
static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// The `--exit-after` limit, if given.
static EXIT_AFTER: OnceLock<u64> = OnceLock::new();

fn usage() -> &'static str {
    "usage: luahttpd-fcgi-test [--listen HOST:PORT | --listen unix:PATH] [--exit-after N]

Without --listen, fd 0 must be a listening socket (FCGI_LISTENSOCK_FILENO).
PHP_FCGI_MAX_REQUESTS=N in the environment acts as --exit-after N (as php-cgi), unless given.
The query parameter `mode` selects the behaviour:
  params (default)  200 application/json: every FastCGI param
  sha256            read the body, answer sha256=<hex>\\nlength=<n>\\n
  slowhead&ms=N     sleep N ms, then 200 \"slow\\n\"
  diehead           close the connection before any STDOUT
  diemid            head with Content-Length: 1000000, 1000 body bytes, then close
  huge&bytes=N      N bytes of 0123456789... in STDOUT records of varying sizes
  stderr            some STDERR records, then 200 \"ok\\n\"
  split             200 \"split\\n\", every byte in its own write()
  badstatus         Status: abc
  location          Location: http://example.test/x without Status
  status&code=N     Status: N, body \"status N\\n\"
  pid               the process id
LUAHTTPD_FCGI_TEST_LOG=FILE appends `mode=<mode> pid=<pid>` per request."
}

/// A listening socket of either family.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A connected socket of either family.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                // The `split` mode relies on each 1-byte write leaving as its own segment.
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l) => Ok(Stream::Unix(l.accept()?.0)),
        }
    }
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        // Best effort: the peer sees EOF even if another handle to the socket is alive.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Binds `--listen` or takes fd 0.
fn open_listener(listen: Option<&str>) -> Result<Listener, String> {
    match listen {
        Some(addr) => {
            if let Some(path) = addr.strip_prefix("unix:") {
                // A stale socket file from an earlier run would make bind fail.
                let _ = std::fs::remove_file(path);
                UnixListener::bind(path)
                    .map(Listener::Unix)
                    .map_err(|e| format!("bind {path}: {e}"))
            } else {
                TcpListener::bind(addr)
                    .map(Listener::Tcp)
                    .map_err(|e| format!("bind {addr}: {e}"))
            }
        }
        None => {
            use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
            let addr = getsockname::<SockaddrStorage>(0)
                .map_err(|e| format!("no --listen and fd 0 is not a socket: {e}"))?;
            // SAFETY: fd 0 is a socket (getsockname succeeded) that nothing else in this
            // process owns; the listener takes it over for the life of the process.
            match addr.family() {
                Some(AddressFamily::Unix) => {
                    Ok(Listener::Unix(unsafe { UnixListener::from_raw_fd(0) }))
                }
                Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                    Ok(Listener::Tcp(unsafe { TcpListener::from_raw_fd(0) }))
                }
                other => Err(format!("fd 0 is a socket of unsupported family {other:?}")),
            }
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next(),
            "--exit-after" => match args.next().and_then(|n| n.parse::<u64>().ok()) {
                Some(n) if n > 0 => {
                    let _ = EXIT_AFTER.set(n);
                }
                _ => {
                    eprintln!("--exit-after needs a positive number\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("unknown argument {a:?}\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }
    // As php-cgi: PHP_FCGI_MAX_REQUESTS ends the process after that many requests.
    if let Some(n) = std::env::var("PHP_FCGI_MAX_REQUESTS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
    {
        let _ = EXIT_AFTER.set(n);
    }
    let listener = match open_listener(listen.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("luahttpd-fcgi-test: {e}");
            return ExitCode::FAILURE;
        }
    };
    serve(listener);
    ExitCode::FAILURE
}

/// Accepts forever, a thread per connection.
fn serve(listener: Listener) {
    loop {
        match listener.accept() {
            Ok(s) => {
                std::thread::spawn(move || {
                    if let Err(e) = connection(s) {
                        if e.kind() != io::ErrorKind::UnexpectedEof {
                            eprintln!("luahttpd-fcgi-test: connection: {e}");
                        }
                    }
                });
            }
            Err(e) => {
                eprintln!("luahttpd-fcgi-test: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One record as read from the server.
struct Rec {
    h: Header,
    content: Vec<u8>,
}

/// The server side of one connection.
struct Conn {
    rd: BufReader<Stream>,
    wr: Stream,
}

/// Why a request ended early.
enum Stop {
    /// The server aborted the request.
    Aborted,
    /// The server closed the connection.
    Eof,
}

impl Conn {
    /// The next record, or None at a clean end of stream between records.
    fn read_record(&mut self) -> io::Result<Option<Rec>> {
        let mut hb = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            let n = self.rd.read(&mut hb[got..])?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            got += n;
        }
        let h = Header::parse(&hb);
        if h.version != record::VERSION_1 {
            return Err(io::Error::other(format!("record version {}", h.version)));
        }
        let mut content = vec![0; h.content_len as usize + h.padding_len as usize];
        self.rd.read_exact(&mut content)?;
        content.truncate(h.content_len as usize);
        Ok(Some(Rec { h, content }))
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wr.write_all(bytes)?;
        self.wr.flush()
    }

    /// The next record for request `id`, answering management records and refusing other
    /// requests (we do not multiplex) on the way.
    fn next_for(&mut self, id: u16) -> io::Result<Result<Rec, Stop>> {
        loop {
            let Some(r) = self.read_record()? else {
                return Ok(Err(Stop::Eof));
            };
            if r.h.id == 0 {
                self.management(&r)?;
            } else if r.h.id != id {
                if r.h.rtype == record::BEGIN_REQUEST {
                    let mut out = Vec::new();
                    record::end_request(&mut out, r.h.id, 0, record::CANT_MPX_CONN);
                    self.send(&out)?;
                }
            } else if r.h.rtype == record::ABORT_REQUEST {
                return Ok(Err(Stop::Aborted));
            } else {
                return Ok(Ok(r));
            }
        }
    }

    /// Answers GET_VALUES; any other management record gets UNKNOWN_TYPE.
    fn management(&mut self, r: &Rec) -> io::Result<()> {
        let mut out = Vec::new();
        if r.h.rtype == record::GET_VALUES {
            let asked = record::decode_params(&r.content).unwrap_or_default();
            let mut body = Vec::new();
            for (name, _) in asked {
                let value: &[u8] = match &name[..] {
                    b"FCGI_MAX_CONNS" => b"100",
                    b"FCGI_MAX_REQS" => b"100",
                    b"FCGI_MPXS_CONNS" => b"0",
                    _ => continue,
                };
                // Names came from a record, so they are far below the length limit.
                let _ = record::encode_pair(&mut body, &name, value);
            }
            record::stream(&mut out, record::GET_VALUES_RESULT, 0, &body);
            if body.is_empty() {
                record::header(&mut out, record::GET_VALUES_RESULT, 0, 0);
            }
        } else {
            record::unknown_type(&mut out, r.h.rtype);
        }
        self.send(&out)
    }

    /// Waits for a BEGIN_REQUEST; returns (id, keep_conn), or None when the server closed.
    fn begin(&mut self) -> io::Result<Option<(u16, bool)>> {
        loop {
            let Some(r) = self.read_record()? else {
                return Ok(None);
            };
            if r.h.id == 0 {
                self.management(&r)?;
                continue;
            }
            if r.h.rtype != record::BEGIN_REQUEST || r.content.len() < 8 {
                continue;
            }
            let role = u16::from_be_bytes([r.content[0], r.content[1]]);
            let keep = r.content[2] & record::KEEP_CONN != 0;
            if role != record::RESPONDER {
                let mut out = Vec::new();
                record::end_request(&mut out, r.h.id, 0, record::UNKNOWN_ROLE);
                self.send(&out)?;
                if !keep {
                    return Ok(None);
                }
                continue;
            }
            return Ok(Some((r.h.id, keep)));
        }
    }

    /// Reads the PARAMS stream of `id`; STDIN arriving early is kept in `early_stdin`.
    fn params(
        &mut self,
        id: u16,
        early_stdin: &mut Vec<Vec<u8>>,
    ) -> io::Result<Result<record::Pairs, Stop>> {
        let mut buf = Vec::new();
        loop {
            let r = match self.next_for(id)? {
                Ok(r) => r,
                Err(stop) => return Ok(Err(stop)),
            };
            match r.h.rtype {
                record::PARAMS if r.content.is_empty() => break,
                record::PARAMS => buf.extend_from_slice(&r.content),
                record::STDIN => early_stdin.push(r.content),
                _ => {}
            }
        }
        record::decode_params(&buf)
            .map(Ok)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Reads the rest of STDIN of `id`, handing each piece to `f`.
    fn drain_stdin(
        &mut self,
        id: u16,
        early: Vec<Vec<u8>>,
        mut f: impl FnMut(&[u8]),
    ) -> io::Result<Result<(), Stop>> {
        for piece in early {
            if piece.is_empty() {
                return Ok(Ok(()));
            }
            f(&piece);
        }
        loop {
            let r = match self.next_for(id)? {
                Ok(r) => r,
                Err(stop) => return Ok(Err(stop)),
            };
            if r.h.rtype == record::STDIN {
                if r.content.is_empty() {
                    return Ok(Ok(()));
                }
                f(&r.content);
            }
        }
    }
}

/// Serves requests on one connection until the server closes it or a request without
/// KEEP_CONN ends.
fn connection(s: Stream) -> io::Result<()> {
    let mut c = Conn {
        rd: BufReader::new(s.try_clone()?),
        wr: s,
    };
    while let Some((id, keep)) = c.begin()? {
        let mut early = Vec::new();
        let params = match c.params(id, &mut early)? {
            Ok(p) => p,
            Err(Stop::Eof) => return Ok(()),
            Err(Stop::Aborted) => {
                end(&mut c, id)?;
                if keep {
                    continue;
                }
                return Ok(());
            }
        };
        let query = params
            .iter()
            .find(|(n, _)| n == b"QUERY_STRING")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let q = |key: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == key).then(|| v.to_string())
            })
        };
        let mode = q("mode").unwrap_or_else(|| "params".into());
        log_request(&mode);

        let outcome = respond(&mut c, id, &mode, &q, &params, early)?;
        if let Err(Stop::Eof) = outcome {
            return Ok(());
        }
        let done = COMPLETED.fetch_add(1, Ordering::SeqCst) + 1;
        if EXIT_AFTER.get().is_some_and(|&limit| done >= limit) {
            std::process::exit(0);
        }
        match outcome {
            Ok(Flow::Closed) => return Ok(()),
            _ if !keep => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// What happened to the connection after a mode ran.
enum Flow {
    /// The request was answered; the connection may carry on.
    Answered,
    /// The mode closed the connection on purpose.
    Closed,
}

/// Runs `mode` for request `id`.
fn respond(
    c: &mut Conn,
    id: u16,
    mode: &str,
    q: &dyn Fn(&str) -> Option<String>,
    params: &record::Pairs,
    early: Vec<Vec<u8>>,
) -> io::Result<Result<Flow, Stop>> {
    if mode == "diehead" {
        c.wr.shutdown();
        return Ok(Ok(Flow::Closed));
    }
    if mode == "early" {
        // Answers without reading the body (as many apps do for a 401), then closes: the
        // server must not take the unread body for the next request.
        let mut out = Vec::new();
        let head = b"Status: 401\r\nContent-Type: text/plain\r\n\r\nearly\n";
        record::stdout(&mut out, id, head);
        record::header(&mut out, record::STDOUT, id, 0);
        record::end_request(&mut out, id, 0, record::REQUEST_COMPLETE);
        c.send(&out)?;
        c.wr.shutdown();
        return Ok(Ok(Flow::Closed));
    }
    if mode == "slowhead" {
        let ms = q("ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
        std::thread::sleep(Duration::from_millis(ms));
    }
    // Read the whole body before answering, so a kept connection is at a request boundary.
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    let drained = c.drain_stdin(id, early, |d| {
        hasher.update(d);
        length += d.len() as u64;
    })?;
    match drained {
        Ok(()) => {}
        Err(Stop::Aborted) => {
            end(c, id)?;
            return Ok(Ok(Flow::Answered));
        }
        Err(Stop::Eof) => return Ok(Err(Stop::Eof)),
    }

    let text = |status: &str, body: &str| -> Vec<u8> {
        format!("{status}Content-Type: text/plain\r\n\r\n{body}").into_bytes()
    };
    let mut out = Vec::new();
    match mode {
        "sha256" => {
            let hex: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let body = text("", &format!("sha256={hex}\nlength={length}\n"));
            record::stdout(&mut out, id, &body);
        }
        "slowhead" => record::stdout(&mut out, id, &text("", "slow\n")),
        "diemid" => {
            let mut body = b"Content-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n".to_vec();
            body.extend(pattern(0, 1000));
            record::stdout(&mut out, id, &body);
            c.send(&out)?;
            c.wr.shutdown();
            return Ok(Ok(Flow::Closed));
        }
        "huge" => {
            let total: u64 = q("bytes").and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
            record::stdout(&mut out, id, &text("", ""));
            c.send(&out)?;
            // Varying record sizes exercise every split point in the server's decoder.
            const SIZES: [u64; 10] = [1, 7, 100, 1000, 4096, 8191, 16384, 65535, 3, 32768];
            let mut sent = 0u64;
            let mut i = 0;
            while sent < total {
                let n = SIZES[i % SIZES.len()].min(total - sent);
                out.clear();
                record::stdout(&mut out, id, &pattern(sent, n as usize));
                c.send(&out)?;
                sent += n;
                i += 1;
            }
            out.clear();
        }
        "stderr" => {
            for _ in 0..3 {
                record::stderr(&mut out, id, b"test stderr line\n");
            }
            record::stdout(&mut out, id, &text("", "ok\n"));
        }
        "split" => {
            record::stdout(&mut out, id, &text("", "split\n"));
            record::header(&mut out, record::STDOUT, id, 0);
            record::end_request(&mut out, id, 0, record::REQUEST_COMPLETE);
            for b in &out {
                c.send(std::slice::from_ref(b))?;
            }
            return Ok(Ok(Flow::Answered));
        }
        "badstatus" => record::stdout(&mut out, id, &text("Status: abc\r\n", "bad\n")),
        "location" => record::stdout(
            &mut out,
            id,
            &text("Location: http://example.test/x\r\n", "moved\n"),
        ),
        "status" => {
            let code = q("code").unwrap_or_else(|| "200".into());
            // The code is sent as given, so tests can try invalid ones too; strip line
            // breaks so it cannot add header lines.
            let code: String = code.chars().filter(|c| !c.is_control()).collect();
            let body = text(&format!("Status: {code}\r\n"), &format!("status {code}\n"));
            record::stdout(&mut out, id, &body);
        }
        "pid" => record::stdout(
            &mut out,
            id,
            &text("", &format!("{}\n", std::process::id())),
        ),
        _ => {
            let mut body = b"Content-Type: application/json\r\n\r\n".to_vec();
            body.extend(json(params).into_bytes());
            record::stdout(&mut out, id, &body);
        }
    }
    record::header(&mut out, record::STDOUT, id, 0);
    record::end_request(&mut out, id, 0, record::REQUEST_COMPLETE);
    c.send(&out)?;
    Ok(Ok(Flow::Answered))
}

/// Ends request `id` with no output (after an abort).
fn end(c: &mut Conn, id: u16) -> io::Result<()> {
    let mut out = Vec::new();
    record::end_request(&mut out, id, 0, record::REQUEST_COMPLETE);
    c.send(&out)
}

/// `n` bytes of "0123456789" repeated, starting at offset `from` of the endless pattern.
fn pattern(from: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| b'0' + ((from + i) % 10) as u8)
        .collect()
}

/// The params as a JSON object (invalid UTF-8 replaced, so the output is valid JSON).
fn json(params: &record::Pairs) -> String {
    fn string(out: &mut String, bytes: &[u8]) {
        out.push('"');
        for ch in String::from_utf8_lossy(bytes).chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    let mut out = String::from("{");
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&mut out, name);
        out.push(':');
        string(&mut out, value);
    }
    out.push_str("}\n");
    out
}

/// Appends `mode=<mode> pid=<pid>` to $LUAHTTPD_FCGI_TEST_LOG, if set.
fn log_request(mode: &str) {
    let Some(path) = std::env::var_os("LUAHTTPD_FCGI_TEST_LOG") else {
        return;
    };
    let line = format!("mode={mode} pid={}\n", std::process::id());
    // One write of one short line to an O_APPEND file: lines from threads do not interleave.
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use luahttpd::fastcgi::cgi_head::{self, HeadError};
    use luahttpd::fastcgi::record::{Decoder, Event};
    use std::net::SocketAddr;

    /// Starts the backend on an ephemeral port in this process.
    fn start() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || serve(Listener::Tcp(l)));
        addr
    }

    #[derive(Debug, Default)]
    struct Answer {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        ended: bool,
    }

    /// Sends one request on `s` and reads its answer (until END_REQUEST or EOF).
    fn request(s: &mut TcpStream, id: u16, keep: bool, query: &str, body: &[u8]) -> Answer {
        let mut out = Vec::new();
        record::begin_request(&mut out, id, keep);
        let pairs: [(&[u8], &[u8]); 2] = [
            (b"QUERY_STRING", query.as_bytes()),
            (b"X_QUOTE", b"a\"b\\c\n"),
        ];
        record::params(&mut out, id, pairs.into_iter()).unwrap();
        record::stdin(&mut out, id, body);
        record::stdin_end(&mut out, id);
        s.write_all(&out).unwrap();
        let mut dec = Decoder::new(id);
        let mut a = Answer::default();
        let mut buf = vec![0; 7000];
        while !a.ended {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let mut input = &buf[..n];
            while !input.is_empty() {
                let (used, ev) = dec.decode(input).unwrap();
                input = &input[used..];
                match ev {
                    Some(Event::Stdout(d)) => a.stdout.extend_from_slice(d),
                    Some(Event::Stderr(d)) => a.stderr.extend_from_slice(d),
                    Some(Event::End { app_status, .. }) => {
                        assert_eq!(app_status, 0);
                        a.ended = true;
                    }
                    None => {}
                }
            }
        }
        a
    }

    fn one(addr: SocketAddr, query: &str, body: &[u8]) -> Answer {
        let mut s = TcpStream::connect(addr).unwrap();
        request(&mut s, 1, false, query, body)
    }

    fn body(a: &Answer) -> (cgi_head::CgiHead, &[u8]) {
        let h = cgi_head::parse(&a.stdout).unwrap().unwrap();
        let len = h.head_len;
        (h, &a.stdout[len..])
    }

    #[test]
    fn modes() {
        let addr = start();

        let a = one(addr, "", b"");
        let (h, b) = body(&a);
        assert_eq!(h.status, 200);
        assert!(String::from_utf8_lossy(&h.headers).contains("application/json"));
        assert_eq!(
            b,
            b"{\"QUERY_STRING\":\"\",\"X_QUOTE\":\"a\\\"b\\\\c\\n\"}\n"
        );

        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let a = one(addr, "mode=sha256", &data);
        let hex: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            body(&a).1,
            format!("sha256={hex}\nlength=200000\n").as_bytes()
        );

        let a = one(addr, "mode=huge&bytes=300000", b"");
        let (h, b) = body(&a);
        assert_eq!(h.content_length, None);
        assert_eq!(b, pattern(0, 300_000));

        let a = one(addr, "mode=stderr", b"");
        assert_eq!(a.stderr, b"test stderr line\n".repeat(3));
        assert_eq!(body(&a).1, b"ok\n");

        let a = one(addr, "mode=split", b"");
        assert!(a.ended);
        assert_eq!(body(&a).1, b"split\n");

        let a = one(addr, "mode=slowhead&ms=50", b"");
        assert_eq!(body(&a).1, b"slow\n");

        let a = one(addr, "mode=badstatus", b"");
        assert!(matches!(
            cgi_head::parse(&a.stdout),
            Err(HeadError::Malformed(_))
        ));

        let a = one(addr, "mode=location", b"");
        let (h, _) = body(&a);
        assert_eq!(h.status, 302);

        let a = one(addr, "mode=status&code=418", b"");
        let (h, b) = body(&a);
        assert_eq!((h.status, b), (418, &b"status 418\n"[..]));

        let a = one(addr, "mode=pid", b"");
        assert_eq!(body(&a).1, format!("{}\n", std::process::id()).as_bytes());

        let a = one(addr, "mode=diehead", b"");
        assert!(!a.ended && a.stdout.is_empty());

        let a = one(addr, "mode=diemid", b"");
        assert!(!a.ended);
        let (h, b) = body(&a);
        assert_eq!((h.content_length, b.len()), (Some(1_000_000), 1000));
    }

    #[test]
    fn keep_conn() {
        let addr = start();
        let mut s = TcpStream::connect(addr).unwrap();
        for id in 1..=3 {
            let a = request(&mut s, id, true, "mode=status&code=201", b"x");
            assert!(a.ended);
            assert_eq!(body(&a).0.status, 201);
        }
        // Without KEEP_CONN the backend closes after the request.
        let a = request(&mut s, 4, false, "mode=pid", b"");
        assert!(a.ended);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
