//! In-process tests of one connection: the server end of a Unix socketpair is driven by hand,
//! with a clock the test moves, so every state, transition and timeout is reached without
//! starting the binary or waiting in real time.

use super::bufs::Bufs;
use super::conn::{Conn, Ctx, Ready, Verdict};
use super::dispatch::OtherSites;
use super::fcgi::{ExchangePhase, StderrLimit};
use super::peer::Peer;
use super::timers::Timers;
use super::LINGER;
use crate::config::{self, Config};
use crate::fastcgi::pool::Pool;
use crate::fastcgi::record;
use crate::http::date::DateCache;
use crate::static_files::Site;
use crate::transport::Stream;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Timeouts of the test config, all different so a test can tell which one fired.
const READ_IDLE: Duration = Duration::from_secs(3);
const WRITE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(7);
const BACKEND_READ: Duration = Duration::from_secs(11);

/// A directory removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "luahttpd-conn-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(p.join("www")).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a worker gives a connection, owned by the test, with a hand-moved clock.
struct Harness {
    /// Holds the document root for as long as the worker lives.
    _dir: Dir,
    config: Config,
    site: Site,
    timers: Timers,
    date: DateCache,
    pool: Pool,
    upstreams: crate::proxy::pool::Upstreams,
    poll: mio::Poll,
    stderr: StderrLimit,
    other_sites: OtherSites,
    bufs: Bufs,
    lua_wakes: super::lua_wait::Wakes,
    again: Vec<usize>,
    now: Instant,
    /// Whether the worker is in a graceful stop.
    draining: bool,
    /// The slab key of the connection the next call runs (two connections need two keys:
    /// the pool queues and wakes connections by key).
    token: usize,
}

impl Harness {
    /// A worker for `server { root = <tmp>/www, <server_extra> } <more>`, with `files` in www/.
    fn new(server_extra: &str, more: &str, files: &[(&str, &[u8])]) -> Harness {
        let dir = Dir::new();
        for (name, data) in files {
            std::fs::write(dir.0.join("www").join(name), data).unwrap();
        }
        let src = format!(
            "server {{ listen = \"127.0.0.1:0\", root = \"{}\", error_log = \"stderr\",\n\
             timeouts = {{ read_idle = {}, write_idle = {}, keepalive_idle = {} }}, {server_extra} }}\n\
             {more}",
            dir.0.join("www").display(),
            READ_IDLE.as_secs(),
            WRITE_IDLE.as_secs(),
            KEEPALIVE_IDLE.as_secs(),
        );
        let config = config::load_source_for_tests(&src);
        let mut backends: Vec<_> = config
            .fastcgi
            .iter()
            .map(|d| (d.connect_timeout, d.read_timeout))
            .collect();
        // Upstreams' timer kinds follow, as the worker sets them up (src/worker/mod.rs).
        for u in &config.upstreams {
            backends.extend(super::proxy::Kinds::durations(u));
        }
        let t = &config.timeouts;
        let timers = Timers::new(
            t.read_idle,
            t.write_idle,
            t.keepalive_idle,
            LINGER,
            &backends,
        );
        let site = Site::new(&config).unwrap();
        let pool = Pool::new(&config, 0, 1, None);
        Harness {
            _dir: dir,
            site,
            timers,
            date: DateCache::new(),
            pool,
            upstreams: crate::proxy::pool::Upstreams::new(&config),
            poll: mio::Poll::new().unwrap(),
            stderr: StderrLimit::default(),
            other_sites: OtherSites::default(),
            bufs: Bufs::default(),
            lua_wakes: Default::default(),
            again: Vec::new(),
            now: Instant::now(),
            draining: false,
            token: 0,
            config,
        }
    }

    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            site: &mut self.site,
            limits: &self.config.limits,
            server_name: &self.config.server_name,
            date: &self.date,
            timers: &mut self.timers,
            access: None,
            draining: self.draining,
            now: self.now,
            token: self.token,
            config: &self.config,
            pool: &mut self.pool,
            upstreams: &mut self.upstreams,
            registry: self.poll.registry(),
            stderr: &mut self.stderr,
            router: None,
            listener_names: &[],
            other_sites: &mut self.other_sites,
            board: None,
            slot: None,
            now_ms: 0,
            bufs: &mut self.bufs,
            lua_wakes: &mut self.lua_wakes,
            again: &mut self.again,
        }
    }

    /// A fresh connection and the client's end of it.
    fn open(&mut self) -> (Conn, Client) {
        let (server, client) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        client.set_nonblocking(true).unwrap();
        let stream = Stream::Unix(mio::net::UnixStream::from_std(server));
        let peer = Peer {
            ip: "unix".into(),
            port: 0,
        };
        (Conn::new(stream, peer, 0, self.now), Client(client))
    }

    /// Input arrived and the socket is writable: runs the connection as the worker would.
    fn ready(&mut self, c: &mut Conn) -> Verdict {
        let mut ctx = self.ctx();
        let ready = Ready {
            readable: true,
            writable: true,
            read_closed: false,
        };
        c.ready(&mut ctx, ready)
    }

    /// The pass the worker runs right after accept: no readiness known yet.
    fn accepted(&mut self, c: &mut Conn) -> Verdict {
        let mut ctx = self.ctx();
        c.ready(&mut ctx, Ready::default())
    }

    /// As `ready`, with the peer's FIN reported in the same event.
    fn ready_closed(&mut self, c: &mut Conn) -> Verdict {
        let mut ctx = self.ctx();
        let ready = Ready {
            readable: true,
            writable: true,
            read_closed: true,
        };
        c.ready(&mut ctx, ready)
    }

    /// The backend socket of the connection is ready.
    fn backend_ready(&mut self, c: &mut Conn) -> Verdict {
        let mut ctx = self.ctx();
        c.backend_ready(&mut ctx, true, true, false)
    }

    /// Moves the clock by `d` and fires what expired, as the worker's loop does.
    fn advance(&mut self, c: &mut Conn, d: Duration) -> Verdict {
        self.now += d;
        while let Some((_, gen)) = self.timers.pop_expired(self.now) {
            if c.owns_timer(gen) {
                let mut ctx = self.ctx();
                if c.on_timer(&mut ctx, gen) == Verdict::Close {
                    return Verdict::Close;
                }
            }
        }
        Verdict::Open
    }

    /// A graceful stop starts, as `Worker::drain` does it for each connection.
    fn drain(&mut self, c: &mut Conn) -> Verdict {
        self.draining = true;
        let mut ctx = self.ctx();
        c.drain(&mut ctx)
    }

    /// Closes as the worker does after a `Close` verdict.
    fn close(&mut self, mut c: Conn) {
        let mut ctx = self.ctx();
        c.abort(&mut ctx);
    }
}

/// The client's end of a connection (non-blocking).
struct Client(UnixStream);

impl Client {
    fn send(&mut self, data: &[u8]) {
        self.0.write_all(data).unwrap();
    }

    /// Every byte the server has sent so far; `eof` tells whether the server shut its side.
    fn read_all(&mut self) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return (out, false),
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    /// The complete responses sent so far.
    fn responses(&mut self) -> Vec<Response> {
        parse_responses(&self.read_all().0)
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits bytes into responses framed by Content-Length (or with no body).
fn parse_responses(mut data: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let status = head[9..12].parse().unwrap();
        let mut r = Response {
            status,
            head,
            body: Vec::new(),
        };
        let len: usize = r.header("content-length").map_or(0, |v| v.parse().unwrap());
        let body_end = (end + 4 + len).min(data.len());
        r.body = data[end + 4..body_end].to_vec();
        data = &data[body_end..];
        out.push(r);
    }
    out
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

fn files() -> Vec<(&'static str, &'static [u8])> {
    vec![("a.txt", b"AAAA"), ("b.txt", b"BB")]
}

#[test]
fn a_connection_is_small_and_holds_no_buffer_once_idle() {
    assert!(
        std::mem::size_of::<Conn>() <= 384,
        "a connection costs {} bytes before any buffer",
        std::mem::size_of::<Conn>()
    );
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(&get("/a.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    let r = client.responses();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].status, &r[0].body[..]), (200, &b"AAAA"[..]));
    assert!(c.is_idle());
    assert!(
        !c.holds_buffers(),
        "an idle keep-alive connection holds a buffer"
    );
    // The buffers went back to the worker and serve the next request without allocating.
    client.send(&get("/b.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(client.responses()[0].body, b"BB");
    assert!(!c.holds_buffers());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    let mut both = get("/a.txt");
    both.extend_from_slice(&get("/b.txt"));
    both.extend_from_slice(&get("/a.txt"));
    client.send(&both);
    assert_eq!(h.ready(&mut c), Verdict::Open);
    let bodies: Vec<Vec<u8>> = client.responses().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [b"AAAA".to_vec(), b"BB".to_vec(), b"AAAA".to_vec()]);
}

#[test]
fn a_long_pipelined_burst_yields_to_other_connections_and_then_goes_on_in_order() {
    // Rule 17: one run of a connection's loop is bounded; what is left runs again from the
    // worker's `again` list, in order, nothing lost.
    let mut h = Harness::new("limits = { keepalive_requests = 1000 }", "", &files());
    let (mut c, mut client) = h.open();
    let mut burst = Vec::new();
    for i in 0..200 {
        burst.extend_from_slice(&get(if i % 2 == 0 { "/a.txt" } else { "/b.txt" }));
    }
    client.send(&burst);
    assert_eq!(h.ready(&mut c), Verdict::Open);
    let first = client.responses().len();
    assert!(first > 0 && first < 200, "one run answered {first} of 200");
    assert_eq!(h.again, vec![h.token], "the connection is to run again");
    let mut runs = 1;
    while !h.again.is_empty() {
        h.again.clear();
        runs += 1;
        let mut ctx = h.ctx();
        assert_eq!(c.resume(&mut ctx), Verdict::Open);
        assert!(runs < 100, "the burst never ended");
    }
    let rest: Vec<Vec<u8>> = client.responses().into_iter().map(|r| r.body).collect();
    assert_eq!(first + rest.len(), 200, "every request answered once");
    for (i, b) in rest.iter().enumerate() {
        let want: &[u8] = if (first + i) % 2 == 0 { b"AAAA" } else { b"BB" };
        assert_eq!(b, want, "response {} in order", first + i);
    }
    assert!(runs > 2, "200 requests took {runs} runs");
}

#[test]
fn a_request_split_at_every_byte_is_answered_once_whole() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    let req = get("/a.txt");
    for (i, b) in req.iter().enumerate() {
        client.send(&[*b]);
        assert_eq!(h.ready(&mut c), Verdict::Open);
        let r = client.responses();
        assert_eq!(r.len(), usize::from(i == req.len() - 1), "after byte {i}");
    }
}

#[test]
fn the_last_request_allowed_on_a_connection_says_close_and_closes() {
    let mut h = Harness::new("limits = { keepalive_requests = 2 }", "", &files());
    let (mut c, mut client) = h.open();
    client.send(&get("/a.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(client.responses()[0].header("connection"), None);
    client.send(&get("/b.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Close);
    let r = client.responses();
    assert_eq!(r[0].header("connection"), Some("close"));
    assert_eq!(r[0].body, b"BB");
}

#[test]
fn a_refused_head_always_closes_after_lingering() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    // Two Content-Length values that disagree: the body cannot be framed.
    client.send(
        b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
    );
    assert_eq!(
        h.ready(&mut c),
        Verdict::Open,
        "lingers instead of resetting"
    );
    let (bytes, eof) = client.read_all();
    let r = parse_responses(&bytes);
    assert_eq!(r[0].status, 400);
    assert_eq!(r[0].header("connection"), Some("close"));
    assert!(eof, "the write side is shut once the answer is out");
    // What the client still sends is read and dropped, never parsed.
    client.send(&get("/a.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(client.responses().is_empty());
    assert_eq!(h.advance(&mut c, LINGER), Verdict::Close);
}

#[test]
fn lingering_ends_when_the_client_closes() {
    let mut h = Harness::new("", "", &files());
    let (mut c, client) = h.open();
    let mut client = client;
    client.send(b"\x01\x02 garbage\r\n\r\n");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(client.responses()[0].status, 400);
    client.0.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(h.ready_closed(&mut c), Verdict::Close);
}

#[test]
fn an_unwanted_body_is_dropped_and_the_next_request_served() {
    let mut h = Harness::new("", "", &files());
    for chunked in [false, true] {
        let (mut c, mut client) = h.open();
        let head = if chunked {
            "POST /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        } else {
            "POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
        };
        let body: &[u8] = if chunked {
            b"5\r\nhello\r\n0\r\n\r\n"
        } else {
            b"hello"
        };
        client.send(head.as_bytes());
        client.send(&body[..3]);
        assert_eq!(h.ready(&mut c), Verdict::Open);
        let first = client.responses();
        assert_eq!(first.len(), 1);
        assert_ne!(first[0].header("connection"), Some("close"));
        // The rest of the body and a pipelined request arrive together.
        client.send(&body[3..]);
        client.send(&get("/b.txt"));
        assert_eq!(h.ready(&mut c), Verdict::Open);
        let second = client.responses();
        assert_eq!(second.len(), 1, "chunked: {chunked}");
        assert_eq!(second[0].body, b"BB");
        assert!(c.is_idle());
    }
}

#[test]
fn a_body_too_large_to_drop_closes_after_the_answer() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nabc");
    assert_eq!(
        h.ready(&mut c),
        Verdict::Open,
        "lingers: the body keeps coming"
    );
    let (bytes, eof) = client.read_all();
    assert_eq!(
        parse_responses(&bytes)[0].header("connection"),
        Some("close")
    );
    assert!(eof);
    assert_eq!(h.advance(&mut c, LINGER), Verdict::Close);
}

#[test]
fn an_incomplete_head_times_out_at_read_idle_from_its_first_byte() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(b"GET /a.txt HT");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(h.advance(&mut c, READ_IDLE / 2), Verdict::Open);
    // More bytes do not move the deadline: the whole head must arrive in time (slowloris).
    client.send(b"TP/1.1\r\n");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(
        h.advance(&mut c, READ_IDLE / 2 + Duration::from_millis(1)),
        Verdict::Close
    );
}

#[test]
fn an_idle_keepalive_connection_times_out_at_keepalive_idle() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(&get("/a.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(h.advance(&mut c, READ_IDLE), Verdict::Open);
    assert_eq!(
        h.advance(&mut c, KEEPALIVE_IDLE - READ_IDLE),
        Verdict::Close
    );
}

#[test]
fn a_client_that_does_not_read_times_out_at_write_idle() {
    let big = vec![b'x'; 8 << 20];
    let mut h = Harness::new("", "", &[("big.bin", &big)]);
    let (mut c, mut client) = h.open();
    client.send(&get("/big.bin"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(!c.is_idle());
    assert_eq!(h.advance(&mut c, WRITE_IDLE / 2), Verdict::Open);
    // Reading some moves the deadline.
    let (got, _) = client.read_all();
    assert!(!got.is_empty() && got.len() < big.len());
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(h.advance(&mut c, WRITE_IDLE / 2), Verdict::Open);
    assert_eq!(h.advance(&mut c, WRITE_IDLE), Verdict::Close);
}

#[test]
fn a_client_leaving_mid_head_or_mid_body_closes_the_connection() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(b"GET /a.txt HTTP/1.1\r\nHo");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    client.0.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(h.ready_closed(&mut c), Verdict::Close);
    h.close(c);

    let (mut c, mut client) = h.open();
    client.send(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    client.0.shutdown(std::net::Shutdown::Write).unwrap();
    // Data and FIN in one event: the short read must not hide the EOF behind it.
    assert_eq!(h.ready_closed(&mut c), Verdict::Close);
    assert_eq!(
        client.responses().len(),
        1,
        "the answer went out before the close"
    );
}

/// A FastCGI backend the test drives by hand: a Unix listener whose accepted connection the
/// test reads requests from and writes records to.
struct Backend {
    listener: UnixListener,
    conn: Option<UnixStream>,
}

impl Backend {
    /// A backend `b` mounted at /app/; `extra` is appended to its definition.
    fn new(dir: &Path, extra: &str) -> (Backend, String) {
        let path = dir.join("b.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let conf = format!(
            "fastcgi \"b\" {{ address = {{ \"unix:{}\" }}, prefix = \"/app/\", check_local = false, read_timeout = {}{extra} }}",
            path.display(),
            BACKEND_READ.as_secs()
        );
        (
            Backend {
                listener,
                conn: None,
            },
            conf,
        )
    }

    /// Accepts the worker's connection (after the exchange connected).
    fn accept(&mut self) -> bool {
        match self.listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(true).unwrap();
                self.conn = Some(s);
                true
            }
            Err(_) => false,
        }
    }

    /// Every byte the worker sent so far.
    fn received(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        let Some(s) = &mut self.conn else {
            return out;
        };
        loop {
            match s.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return out,
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Some(s) = &mut self.conn {
            s.write_all(bytes).unwrap();
        }
    }

    fn close(&mut self) {
        self.conn = None;
    }
}

/// Whether a byte stream of FastCGI records holds the end of STDIN (an empty STDIN record).
fn has_stdin_end(mut data: &[u8]) -> bool {
    while data.len() >= 8 {
        let len = usize::from(u16::from_be_bytes([data[4], data[5]]));
        let pad = usize::from(data[6]);
        if data[1] == 5 && len == 0 {
            return true;
        }
        data = &data[(8 + len + pad).min(data.len())..];
    }
    false
}

fn stdout_and_end(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    record::stdout(&mut out, 1, body);
    record::stdout(&mut out, 1, b"");
    record::end_request(&mut out, 1, 0, 0);
    out
}

#[test]
fn a_fastcgi_exchange_runs_through_its_phases_against_a_scripted_backend() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new(", request_buffering = false");
    client.send(b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab");
    // Connecting, sending params and what of the body is there.
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(c.exchange_phase(), Some(ExchangePhase::Connecting));
    assert!(backend.accept(), "the worker connected");
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert_eq!(c.exchange_phase(), Some(ExchangePhase::Sending));
    let sent = backend.received();
    assert!(!sent.is_empty() && !has_stdin_end(&sent));
    // The rest of the body is forwarded, then STDIN ends.
    client.send(b"cd");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(c.exchange_phase(), Some(ExchangePhase::ReceivingHead));
    let sent = backend.received();
    assert!(has_stdin_end(&sent), "{sent:?}");
    // Receiving the head, then the body, then the end.
    backend.send(&{
        let mut v = Vec::new();
        record::stdout(
            &mut v,
            1,
            b"Status: 201\r\nContent-Type: text/plain\r\n\r\nhel",
        );
        v
    });
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert_eq!(c.exchange_phase(), Some(ExchangePhase::StreamingBody));
    let (partial, _) = client.read_all();
    assert!(
        partial.starts_with(b"HTTP/1.1 201 Created\r\n"),
        "{partial:?}"
    );
    backend.send(&stdout_and_end(b"lo"));
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert_eq!(c.exchange_phase(), None, "done: the exchange is let go of");
    let (rest, _) = client.read_all();
    let mut all = partial;
    all.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(text.ends_with("3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"), "{text}");
    assert!(c.is_idle(), "back to waiting for the next request");
    h.close(c);
}

#[test]
fn a_silent_backend_gets_504_at_its_read_timeout() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new("");
    client.send(&get("/app/x"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(backend.accept());
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert!(has_stdin_end(&backend.received()));
    assert_eq!(h.advance(&mut c, BACKEND_READ / 2), Verdict::Open);
    assert_eq!(h.advance(&mut c, BACKEND_READ), Verdict::Open);
    let r = client.responses();
    assert_eq!(r[0].status, 504);
    // The client's connection survives a backend failure before the head.
    assert!(c.is_idle());
}

#[test]
fn a_backend_closing_before_or_after_the_head_gives_502_or_a_cut_response() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new("");
    client.send(&get("/app/x"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(backend.accept());
    backend.close();
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert_eq!(client.responses()[0].status, 502);

    client.send(&get("/app/y"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(backend.accept());
    let mut v = Vec::new();
    record::stdout(&mut v, 1, b"Content-Length: 10\r\n\r\nabc");
    backend.send(&v);
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    backend.close();
    // The head went out: only closing shows the client the truncation.
    assert_eq!(h.backend_ready(&mut c), Verdict::Close);
    let (bytes, _) = client.read_all();
    assert!(bytes.ends_with(b"\r\n\r\nabc"), "{bytes:?}");
}

#[test]
fn a_client_leaving_mid_exchange_lets_go_of_the_backend() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new(", request_buffering = false");
    client.send(b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(backend.accept());
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    client.0.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(h.ready_closed(&mut c), Verdict::Close);
    h.close(c);
    // The worker closed its backend connection: the backend reads EOF.
    let mut buf = [0u8; 4096];
    let s = backend.conn.as_mut().unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("backend read: {e}"),
        }
    }
    assert_eq!(h.pool.backends[0].upstreams[0].active, 0);
}

#[test]
fn a_buffered_body_is_read_whole_before_a_backend_is_connected() {
    for chunked in [false, true] {
        let dir = Dir::new();
        let (mut backend, conf) = Backend::new(&dir.0, "");
        let mut h = Harness::new("", &conf, &files());
        let (mut c, mut client) = h.open();
        if chunked {
            client.send(
                b"POST /app/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
            );
        } else {
            client.send(b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab");
        }
        assert_eq!(h.ready(&mut c), Verdict::Open);
        assert_eq!(c.exchange_phase(), Some(ExchangePhase::Buffering));
        assert!(
            !backend.accept(),
            "no backend is taken while the body arrives"
        );
        if chunked {
            client.send(b"2\r\ncd\r\n0\r\n\r\n");
        } else {
            client.send(b"cd");
        }
        assert_eq!(h.ready(&mut c), Verdict::Open);
        assert!(
            backend.accept(),
            "connected once the body is whole (chunked: {chunked})"
        );
        assert_eq!(h.backend_ready(&mut c), Verdict::Open);
        let sent = backend.received();
        assert!(has_stdin_end(&sent), "{sent:?}");
        assert!(
            sent.windows(4).any(|w| w == b"abcd"),
            "the whole body is sent in one go"
        );
        backend.send(&stdout_and_end(b"Content-Type: text/plain\r\n\r\nok"));
        assert_eq!(h.backend_ready(&mut c), Verdict::Open);
        assert!(client.read_all().0.ends_with(b"2\r\nok\r\n0\r\n\r\n"));
        h.close(c);
    }
}

#[test]
fn a_client_leaving_while_its_body_is_buffered_never_reaches_the_backend() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new("");
    client.send(b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    client.0.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(h.ready_closed(&mut c), Verdict::Close);
    h.close(c);
    assert!(!backend.accept());
    assert_eq!(h.pool.backends[0].upstreams[0].active, 0);
}

#[test]
fn a_connection_that_never_sends_closes_at_read_idle_from_accept() {
    let mut h = Harness::new("", "", &files());
    let (mut c, _client) = h.open();
    assert_eq!(h.accepted(&mut c), Verdict::Open);
    assert_eq!(h.advance(&mut c, READ_IDLE / 2), Verdict::Open);
    assert_eq!(
        h.advance(&mut c, READ_IDLE / 2 + Duration::from_millis(1)),
        Verdict::Close
    );
}

#[test]
fn a_request_that_came_with_the_connection_is_read_on_the_first_event() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(&get("/a.txt"));
    // Right after accept nothing is read (no syscall that would mostly say EAGAIN) ...
    assert_eq!(h.accepted(&mut c), Verdict::Open);
    assert!(client.responses().is_empty());
    // ... the readable event that registering reports brings the request in.
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(client.responses()[0].body, b"AAAA");
}

#[test]
fn a_graceful_stop_lets_the_response_in_flight_finish_then_closes() {
    let big = vec![b'y'; 4 << 20];
    let mut h = Harness::new("", "", &[("big.bin", &big)]);
    let (mut c, mut client) = h.open();
    client.send(&get("/big.bin"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(h.drain(&mut c), Verdict::Open);
    let mut got = Vec::new();
    // Its head said keep-alive, so once it is out the connection waits the linger time for
    // a next request (the test after this one), then closes.
    let mut verdict = Verdict::Open;
    for _ in 0..100_000 {
        got.extend_from_slice(&client.read_all().0);
        verdict = h.ready(&mut c);
        if verdict == Verdict::Close
            || parse_responses(&got)
                .first()
                .is_some_and(|r| r.body.len() >= big.len())
        {
            break;
        }
    }
    got.extend_from_slice(&client.read_all().0);
    if verdict == Verdict::Open {
        verdict = h.advance(&mut c, LINGER);
    }
    assert_eq!(verdict, Verdict::Close);
    let r = parse_responses(&got);
    assert_eq!(r[0].body.len(), big.len(), "the whole body went out");
}

#[test]
fn a_request_sent_right_after_a_keepalive_response_finished_in_a_drain_is_answered() {
    let big = vec![b'y'; 4 << 20];
    let mut h = Harness::new("", "", &[("big.bin", &big), ("b.txt", b"BB")]);
    let (mut c, mut client) = h.open();
    client.send(&get("/big.bin"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    // The drain begins while the response, whose head said keep-alive, is going out.
    assert_eq!(h.drain(&mut c), Verdict::Open);
    let mut got = Vec::new();
    for _ in 0..100_000 {
        if parse_responses(&got)
            .first()
            .is_some_and(|r| r.body.len() >= big.len())
        {
            break;
        }
        got.extend_from_slice(&client.read_all().0);
        assert_eq!(
            h.ready(&mut c),
            Verdict::Open,
            "closed after a keep-alive response"
        );
    }
    let r = parse_responses(&got);
    assert_eq!(r[0].header("connection"), None, "{}", r[0].head);
    // The client, told keep-alive, sends its next request (a POST it could not retry): it is
    // answered, and told the connection closes.
    client.send(&get("/b.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Close);
    let r = client.responses();
    assert_eq!(r[0].body, b"BB");
    assert_eq!(r[0].header("connection"), Some("close"));
    // A client that sends nothing is closed after the linger time.
    let mut h = Harness::new("", "", &[("big.bin", &big)]);
    let (mut c, mut client) = h.open();
    client.send(&get("/big.bin"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(h.drain(&mut c), Verdict::Open);
    let mut got = Vec::new();
    for _ in 0..100_000 {
        if parse_responses(&got)
            .first()
            .is_some_and(|r| r.body.len() >= big.len())
        {
            break;
        }
        got.extend_from_slice(&client.read_all().0);
        assert_eq!(h.ready(&mut c), Verdict::Open);
    }
    assert_eq!(h.advance(&mut c, LINGER), Verdict::Close);
}

#[test]
fn a_graceful_stop_gives_an_idle_connection_the_linger_time_to_send_its_next_request() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(&get("/a.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    client.responses();
    assert_eq!(h.drain(&mut c), Verdict::Open);
    // A request sent at that moment is still answered, and told the connection closes.
    client.send(&get("/b.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Close);
    let r = client.responses();
    assert_eq!(r[0].body, b"BB");
    assert_eq!(r[0].header("connection"), Some("close"));

    let (mut c, _client) = h.open();
    assert_eq!(h.accepted(&mut c), Verdict::Open);
    assert_eq!(h.drain(&mut c), Verdict::Open);
    assert_eq!(h.advance(&mut c, LINGER), Verdict::Close);
}

#[test]
fn a_final_answer_to_expect_100_continue_closes_after_draining() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(
        b"POST /a.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(h.ready(&mut c), Verdict::Open);
    let (bytes, eof) = client.read_all();
    let r = parse_responses(&bytes);
    assert!(
        !bytes.starts_with(b"HTTP/1.1 100"),
        "no 100 for a static target"
    );
    assert_eq!(r[0].header("connection"), Some("close"));
    assert!(eof);
    // The body the client may still send is drained, never parsed as a request.
    client.send(b"hello");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(h.advance(&mut c, LINGER), Verdict::Close);
}

#[test]
fn a_fastcgi_refusal_before_the_body_is_read_closes_after_draining() {
    let dir = Dir::new();
    let (mut backend, conf) = Backend::new(&dir.0, "");
    let mut h = Harness::new("limits = { body_bytes = 10 }", &conf, &files());
    let (mut c, mut client) = h.open();
    client.send(b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    let (bytes, eof) = client.read_all();
    let r = parse_responses(&bytes);
    assert_eq!(r[0].status, 413);
    assert_eq!(r[0].header("connection"), Some("close"));
    assert!(eof);
    assert!(
        !backend.accept(),
        "a refused request never reaches the backend"
    );
    assert_eq!(h.advance(&mut c, LINGER), Verdict::Close);
}

#[test]
fn an_http10_keepalive_client_is_told_the_connection_stays_open() {
    let mut h = Harness::new("", "", &files());
    let (mut c, mut client) = h.open();
    client.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(
        client.responses()[0].header("connection"),
        Some("keep-alive")
    );
    client.send(b"GET /b.txt HTTP/1.0\r\n\r\n");
    assert_eq!(
        h.ready(&mut c),
        Verdict::Close,
        "HTTP/1.0 without keep-alive closes"
    );
    assert_eq!(client.responses()[0].header("connection"), Some("close"));
}

/// Serves one GET on the backend so that its connection is kept in the pool for the next
/// request; returns with the connection idle and kept.
fn serve_one_kept(h: &mut Harness, c: &mut Conn, client: &mut Client, backend: &mut Backend) {
    client.send(&get("/app/first"));
    assert_eq!(h.ready(c), Verdict::Open);
    assert!(backend.accept());
    assert_eq!(h.backend_ready(c), Verdict::Open);
    assert!(has_stdin_end(&backend.received()));
    backend.send(&stdout_and_end(b"Content-Length: 1\r\n\r\n1"));
    assert_eq!(h.backend_ready(c), Verdict::Open);
    assert_eq!(client.responses()[0].status, 200);
    assert!(c.is_idle());
}

#[test]
fn a_spooled_body_is_sent_again_when_a_stale_kept_connection_is_retried() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new("");
    serve_one_kept(&mut h, &mut c, &mut client, &mut backend);
    // PUT is idempotent: its spooled body went out whole on the kept connection, which the
    // backend then closed without answering.
    client.send(b"PUT /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(!backend.accept(), "the kept connection is reused");
    let first = backend.received();
    assert!(first.windows(4).any(|w| w == b"abcd"), "{first:?}");
    assert!(has_stdin_end(&first));
    backend.close();
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    // Retried once on a fresh connection, the body again from its start.
    assert!(backend.accept(), "a fresh connection for the retry");
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    let again = backend.received();
    assert!(again.windows(4).any(|w| w == b"abcd"), "{again:?}");
    assert!(has_stdin_end(&again), "{again:?}");
    backend.send(&stdout_and_end(b"Content-Length: 2\r\n\r\nok"));
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    let r = client.responses();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].status, 200);
    assert!(r[0].body.ends_with(b"ok"));
    h.close(c);
}

#[test]
fn a_spooled_post_is_never_sent_twice_once_any_byte_went_out() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new("");
    serve_one_kept(&mut h, &mut c, &mut client, &mut backend);
    client.send(b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(!backend.received().is_empty());
    backend.close();
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert!(
        !backend.accept(),
        "no second run of a POST the backend may have started"
    );
    assert_eq!(client.responses()[0].status, 502);
    h.close(c);
}

#[test]
fn a_spooled_post_is_retried_when_the_kept_connection_took_no_byte() {
    let FcgiCase {
        _dir,
        mut backend,
        mut h,
        mut c,
        mut client,
    } = FcgiCase::new("");
    serve_one_kept(&mut h, &mut c, &mut client, &mut backend);
    // The backend stops reading the kept connection without closing it: the pool's probe sees
    // it open, the first write fails (EPIPE) before any byte is taken.
    let stale = backend.conn.take().unwrap();
    stale.shutdown(std::net::Shutdown::Read).unwrap();
    client.send(b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(backend.accept(), "a fresh connection for the retry");
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    let sent = backend.received();
    assert!(sent.windows(4).any(|w| w == b"abcd"), "{sent:?}");
    assert!(has_stdin_end(&sent));
    backend.send(&stdout_and_end(b"Content-Length: 2\r\n\r\nok"));
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert_eq!(client.responses()[0].status, 200);
    drop(stale);
    h.close(c);
}

/// A FastCGI case: a scripted backend, a worker whose config mounts it at /app/, and one
/// client connection (the setup most FastCGI tests here repeat).
struct FcgiCase {
    /// Holds the backend's socket directory.
    _dir: Dir,
    backend: Backend,
    h: Harness,
    c: Conn,
    client: Client,
}

impl FcgiCase {
    /// `extra` is appended to the backend's definition.
    fn new(extra: &str) -> FcgiCase {
        let dir = Dir::new();
        let (backend, conf) = Backend::new(&dir.0, extra);
        let mut h = Harness::new("", &conf, &files());
        let (c, client) = h.open();
        FcgiCase {
            _dir: dir,
            backend,
            h,
            c,
            client,
        }
    }

    /// As `new`, with the backend spawned (`procs = 1`): one process, one connection at a
    /// time, so a second request queues. The test's listener stands in for the process.
    fn spawned() -> FcgiCase {
        let dir = Dir::new();
        let sock = dir.0.join("q.sock");
        let listener = UnixListener::bind(format!("{}-0", sock.display())).unwrap();
        listener.set_nonblocking(true).unwrap();
        let conf = format!(
            "fastcgi \"b\" {{ spawn = {{ \"/bin/true\" }}, procs = 1, socket = \"unix:{}\", \
             prefix = \"/app/\", check_local = false, read_timeout = {} }}",
            sock.display(),
            BACKEND_READ.as_secs()
        );
        let mut h = Harness::new("", &conf, &files());
        let (c, client) = h.open();
        FcgiCase {
            _dir: dir,
            backend: Backend {
                listener,
                conn: None,
            },
            h,
            c,
            client,
        }
    }
}

#[test]
fn a_request_finding_the_process_busy_is_queued_then_served_on_the_kept_connection() {
    let mut f = FcgiCase::spawned();
    let (mut a, mut ca) = (f.c, f.client);
    let (mut b, mut cb) = f.h.open();
    // A takes the only process.
    ca.send(&get("/app/a"));
    assert_eq!(f.h.ready(&mut a), Verdict::Open);
    assert!(f.backend.accept());
    assert_eq!(f.h.backend_ready(&mut a), Verdict::Open);
    assert!(has_stdin_end(&f.backend.received()));
    // B finds it busy: queued, no second connection.
    f.h.token = 1;
    cb.send(&get("/app/b"));
    assert_eq!(f.h.ready(&mut b), Verdict::Open);
    assert_eq!(b.exchange_phase(), Some(ExchangePhase::Queued));
    assert!(!f.backend.accept(), "a queued request opens no connection");
    // A's answer frees the process; the worker wakes B, which reuses the kept connection.
    f.h.token = 0;
    f.backend
        .send(&stdout_and_end(b"Content-Length: 1\r\n\r\na"));
    assert_eq!(f.h.backend_ready(&mut a), Verdict::Open);
    assert_eq!(ca.responses()[0].status, 200);
    assert_eq!(f.h.pool.take_wakeups(), vec![1]);
    f.h.token = 1;
    let mut ctx = f.h.ctx();
    assert_eq!(b.resume(&mut ctx), Verdict::Open);
    assert_eq!(b.exchange_phase(), Some(ExchangePhase::ReceivingHead));
    assert!(!f.backend.accept(), "the kept connection is used");
    let sent = f.backend.received();
    assert!(sent.windows(6).any(|w| w == b"/app/b"), "{sent:?}");
    f.backend
        .send(&stdout_and_end(b"Content-Length: 1\r\n\r\nb"));
    assert_eq!(f.h.backend_ready(&mut b), Verdict::Open);
    let r = cb.responses();
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].body, b"b");
    f.h.close(b);
    f.h.token = 0;
    f.h.close(a);
}

/// `f`'s pool as worker slot 0 of a scoreboard with one proc slot (its process's), so the
/// restart gate applies to it; the scoreboard, to close and open the process as the watcher.
fn gated_pool(f: &mut FcgiCase) -> std::rc::Rc<crate::admin::scoreboard::Scoreboard> {
    let board = std::rc::Rc::new(crate::admin::scoreboard::Scoreboard::new(1, 1).unwrap());
    f.h.pool = Pool::new(&f.h.config, 0, 1, Some((board.clone(), 0)));
    board
}

#[test]
fn a_process_closed_for_a_restart_gets_no_request_until_it_opens() {
    // A reload restarts the process: the watcher closes it at the scoreboard's gate and stops
    // it once no worker holds it. A request arriving meanwhile waits, opening no connection
    // the old process could accept and die with, and goes on once the gate opens.
    let mut f = FcgiCase::spawned();
    let board = gated_pool(&mut f);
    assert!(
        board.close_proc(0),
        "nothing in flight: the watcher may stop it"
    );
    let (mut a, mut ca) = (f.c, f.client);
    ca.send(&get("/app/a"));
    assert_eq!(f.h.ready(&mut a), Verdict::Open);
    assert_eq!(a.exchange_phase(), Some(ExchangePhase::Queued));
    assert!(!f.backend.accept(), "no connection to a closed process");
    let at = f.h.pool.next_recheck().expect("a recheck is due");
    // Still closed at the recheck: queued again, another recheck.
    f.h.pool.recheck_due(at);
    assert_eq!(f.h.pool.take_wakeups(), vec![0]);
    let mut ctx = f.h.ctx();
    assert_eq!(a.resume(&mut ctx), Verdict::Open);
    assert_eq!(a.exchange_phase(), Some(ExchangePhase::Queued));
    assert!(!f.backend.accept());
    // The successor runs: the gate opens and the request goes out.
    board.open_proc(0);
    let at = f.h.pool.next_recheck().expect("rechecked again");
    f.h.pool.recheck_due(at);
    assert_eq!(f.h.pool.take_wakeups(), vec![0]);
    let mut ctx = f.h.ctx();
    assert_eq!(a.resume(&mut ctx), Verdict::Open);
    assert!(f.backend.accept(), "connects once open");
    assert_eq!(f.h.backend_ready(&mut a), Verdict::Open);
    assert!(has_stdin_end(&f.backend.received()));
    // In flight: the watcher must wait.
    assert!(!board.close_proc(0), "held while the request runs");
    board.open_proc(0);
    f.backend
        .send(&stdout_and_end(b"Content-Length: 1\r\n\r\na"));
    assert_eq!(f.h.backend_ready(&mut a), Verdict::Open);
    assert_eq!(ca.responses()[0].status, 200);
    assert!(board.close_proc(0), "the answer gave the hold back");
    assert_eq!(f.h.pool.next_recheck(), None);
    f.h.close(a);
}

#[test]
fn a_failed_connect_gives_its_hold_on_the_process_back() {
    // The hold taken before connecting (`Pool::admit`) goes back when no request begins:
    // kept, it would make the watcher wait a whole read_timeout before a restart.
    let mut f = FcgiCase::spawned();
    let board = gated_pool(&mut f);
    std::fs::remove_file(f._dir.0.join("q.sock-0")).unwrap();
    let (mut a, mut ca) = (f.c, f.client);
    ca.send(&get("/app/a"));
    assert_eq!(f.h.ready(&mut a), Verdict::Open);
    assert_eq!(ca.responses()[0].status, 503);
    assert!(
        board.close_proc(0),
        "no hold left behind by the failed connect"
    );
    f.h.close(a);
}

/// Runs `c`'s expired timers at the harness's clock (and no other connection's).
fn run_timers_of(h: &mut Harness, c: &mut Conn) {
    while let Some((_, gen)) = h.timers.pop_expired(h.now) {
        if c.owns_timer(gen) {
            let mut ctx = h.ctx();
            assert_eq!(c.on_timer(&mut ctx, gen), Verdict::Open);
        }
    }
}

/// The spawned backend's connect timeout (the default: `FcgiCase::spawned` sets none).
const BACKEND_CONNECT: Duration = Duration::from_secs(2);

#[test]
fn a_queued_request_gets_504_after_the_read_and_connect_timeouts_and_leaves_the_queue() {
    let mut f = FcgiCase::spawned();
    let (mut a, mut ca) = (f.c, f.client);
    let (mut b, mut cb) = f.h.open();
    ca.send(&get("/app/a"));
    assert_eq!(f.h.ready(&mut a), Verdict::Open);
    assert!(f.backend.accept());
    f.h.token = 1;
    cb.send(&get("/app/b"));
    assert_eq!(f.h.ready(&mut b), Verdict::Open);
    assert_eq!(b.exchange_phase(), Some(ExchangePhase::Queued));
    // Only B's timer is run: A is left waiting for its backend. Past the read timeout B still
    // waits (the holder may have been connecting when B queued: its own read timeout is later).
    f.h.now += BACKEND_READ + Duration::from_millis(100);
    run_timers_of(&mut f.h, &mut b);
    assert!(cb.responses().is_empty(), "no answer within the grace");
    assert_eq!(b.exchange_phase(), Some(ExchangePhase::Queued));
    // The connect timeout once more, then the 504.
    f.h.now += BACKEND_CONNECT;
    run_timers_of(&mut f.h, &mut b);
    let r = cb.responses();
    assert_eq!(r[0].status, 504);
    assert_eq!(b.exchange_phase(), None);
    // A's end no longer wakes B.
    f.h.token = 0;
    f.backend
        .send(&stdout_and_end(b"Content-Length: 1\r\n\r\na"));
    assert_eq!(f.h.backend_ready(&mut a), Verdict::Open);
    assert!(f.h.pool.take_wakeups().is_empty());
    f.h.token = 1;
    f.h.close(b);
    f.h.token = 0;
    f.h.close(a);
}

#[test]
fn a_request_queued_while_the_holder_connects_outlasts_the_holder_s_read_timeout() {
    // The soak's race: A takes the only process and is still connecting (its read timeout
    // starts once connected) when B queues. A's backend never answers; B must not give up
    // before A's read timeout frees the process, and is then served.
    let mut f = FcgiCase::spawned();
    let (mut a, mut ca) = (f.c, f.client);
    let (mut b, mut cb) = f.h.open();
    ca.send(&get("/app/a"));
    assert_eq!(f.h.ready(&mut a), Verdict::Open);
    assert_eq!(a.exchange_phase(), Some(ExchangePhase::Connecting));
    f.h.token = 1;
    cb.send(&get("/app/b"));
    assert_eq!(f.h.ready(&mut b), Verdict::Open);
    assert_eq!(b.exchange_phase(), Some(ExchangePhase::Queued));
    // A connects a little later and sends its request.
    f.h.now += Duration::from_millis(50);
    f.h.token = 0;
    assert!(f.backend.accept());
    assert_eq!(f.h.backend_ready(&mut a), Verdict::Open);
    assert!(has_stdin_end(&f.backend.received()));
    // B's read timeout passes first (it was armed first): B keeps waiting.
    f.h.now += BACKEND_READ - Duration::from_millis(20);
    f.h.token = 1;
    run_timers_of(&mut f.h, &mut b);
    assert!(cb.responses().is_empty(), "B gave up before A's timeout");
    // A's read timeout: 504 for A, and the process is free for B.
    f.h.now += Duration::from_millis(40);
    f.h.token = 0;
    run_timers_of(&mut f.h, &mut a);
    assert_eq!(ca.responses()[0].status, 504);
    assert_eq!(f.h.pool.take_wakeups(), vec![1]);
    f.h.token = 1;
    let mut ctx = f.h.ctx();
    assert_eq!(b.resume(&mut ctx), Verdict::Open);
    assert!(f.backend.accept(), "B connects to the freed process");
    assert_eq!(f.h.backend_ready(&mut b), Verdict::Open);
    let sent = f.backend.received();
    assert!(sent.windows(6).any(|w| w == b"/app/b"), "{sent:?}");
    f.backend
        .send(&stdout_and_end(b"Content-Length: 1\r\n\r\nb"));
    assert_eq!(f.h.backend_ready(&mut b), Verdict::Open);
    let r = cb.responses();
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].body, b"b");
    f.h.close(b);
    f.h.token = 0;
    f.h.close(a);
}

/// One POST answered by `backend` on a connection the worker has just made: 200.
fn post_answered(h: &mut Harness, c: &mut Conn, client: &mut Client, backend: &mut Backend) {
    assert_eq!(h.backend_ready(c), Verdict::Open);
    assert!(has_stdin_end(&backend.received()), "the request went out");
    backend.send(&stdout_and_end(b"Content-Length: 2\r\n\r\nok"));
    assert_eq!(h.backend_ready(c), Verdict::Open);
    assert_eq!(c.exchange_phase(), None);
    assert_eq!(client.responses()[0].status, 200);
}

#[test]
fn a_process_past_its_last_request_gets_no_connection_until_it_closed_its_own() {
    // A spawned process sends END_REQUEST for its PHP_FCGI_MAX_REQUESTS-th request, then
    // exits; until it is gone it may still accept (a threaded backend does). A POST written
    // on a connection it accepted is lost unanswered, and cannot be retried once written: so
    // the worker connects again only after the old connection closed (the process exited).
    let dir = Dir::new();
    // Process 0 of a spawned backend listens on <socket>-0; nothing is spawned here.
    let listener = UnixListener::bind(dir.0.join("p.sock-0")).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut backend = Backend {
        listener,
        conn: None,
    };
    let conf = format!(
        "fastcgi \"b\" {{ spawn = {{ \"/bin/true\" }}, socket = \"unix:{}\", prefix = \"/app/\", \
         check_local = false, env = {{ PHP_FCGI_MAX_REQUESTS = \"1\" }}, connect_timeout = 1, \
         read_timeout = {} }}",
        dir.0.join("p.sock").display(),
        BACKEND_READ.as_secs()
    );
    let mut h = Harness::new("", &conf, &files());
    let (mut c, mut client) = h.open();
    let post = b"POST /app/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    client.send(post);
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(backend.accept());
    post_answered(&mut h, &mut c, &mut client, &mut backend);
    // The process answered its last request and has not exited yet.
    let exiting = backend.conn.take();
    client.send(post);
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert_eq!(c.exchange_phase(), Some(ExchangePhase::Queued));
    assert!(
        !backend.accept(),
        "no connection while the old process may still take it"
    );
    assert_eq!(
        h.pool.backends[0].upstreams[0].active, 1,
        "the process is busy"
    );
    // It exits: its connection closes, and only then does the worker connect.
    drop(exiting);
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    assert!(backend.accept(), "connected once the old process was gone");
    post_answered(&mut h, &mut c, &mut client, &mut backend);
    // A process that keeps its last connection open (its limit is not the one counted) is
    // waited for only until connect_timeout; then the worker connects as usual.
    let _still_running = backend.conn.take();
    client.send(post);
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(!backend.accept());
    assert_eq!(h.advance(&mut c, Duration::from_secs(1)), Verdict::Open);
    assert!(backend.accept(), "connected after connect_timeout");
    post_answered(&mut h, &mut c, &mut client, &mut backend);
    assert_eq!(h.pool.backends[0].upstreams[0].active, 0);
    h.close(c);
}

/// An HTTP upstream the test drives by hand: a TCP listener on loopback and the connection
/// the worker opens to it.
struct HttpUpstream {
    listener: std::net::TcpListener,
    conn: Option<std::net::TcpStream>,
}

impl HttpUpstream {
    /// An upstream `app` proxied at /api/, and its definition.
    fn new() -> (HttpUpstream, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let conf = format!(
            "upstream \"app\" {{ address = \"{}\", prefix = \"/api/\" }}",
            listener.local_addr().unwrap()
        );
        (
            HttpUpstream {
                listener,
                conn: None,
            },
            conf,
        )
    }

    fn accept(&mut self) -> bool {
        // The worker's non-blocking connect to loopback completes at once, or nearly.
        for _ in 0..1000 {
            if let Ok((s, _)) = self.listener.accept() {
                s.set_nonblocking(true).unwrap();
                self.conn = Some(s);
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    fn received(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        if let Some(s) = &mut self.conn {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        out
    }

    fn send(&mut self, bytes: &[u8]) {
        if let Some(s) = &mut self.conn {
            s.write_all(bytes).unwrap();
        }
    }
}

/// Review item 3 (LIFECYCLE rule 15 for every exchange): a drain that begins while a proxied
/// response is streaming, its head having said keep-alive, lets the response end and answers
/// the request the client sends right after, instead of closing on it.
#[test]
fn a_drain_during_a_proxied_keepalive_response_answers_the_next_request() {
    let (mut up, conf) = HttpUpstream::new();
    let mut h = Harness::new("", &conf, &files());
    let (mut c, mut client) = h.open();
    client.send(&get("/api/x"));
    assert_eq!(h.ready(&mut c), Verdict::Open);
    assert!(up.accept(), "the worker connected to the upstream");
    let mut asked = Vec::new();
    for _ in 0..100 {
        assert_eq!(h.backend_ready(&mut c), Verdict::Open);
        asked.extend_from_slice(&up.received());
        if asked.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    assert!(asked.starts_with(b"GET /api/x HTTP/1.1\r\n"), "{asked:?}");
    up.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    assert_eq!(h.backend_ready(&mut c), Verdict::Open);
    let (partial, _) = client.read_all();
    assert!(partial.starts_with(b"HTTP/1.1 200 OK\r\n"), "{partial:?}");
    // The drain begins while the body is on its way.
    assert_eq!(h.drain(&mut c), Verdict::Open);
    up.send(b"world");
    assert_eq!(
        h.backend_ready(&mut c),
        Verdict::Open,
        "closed after a keep-alive head"
    );
    let (rest, _) = client.read_all();
    let mut all = partial;
    all.extend_from_slice(&rest);
    let r = parse_responses(&all);
    assert_eq!(r[0].body, b"helloworld");
    assert_eq!(r[0].header("connection"), None, "{}", r[0].head);
    // The next request, sent as the head allowed, is answered and told the connection closes.
    client.send(&get("/b.txt"));
    assert_eq!(h.ready(&mut c), Verdict::Close);
    let r = client.responses();
    assert_eq!(r[0].body, b"BB");
    assert_eq!(r[0].header("connection"), Some("close"));
}
