//! One CGI run (RFC 3875), driven by its client connection like a FastCGI exchange.
//!
//! ```text
//! Buffering (a chunked body is read whole first: CGI needs CONTENT_LENGTH)
//!    → Running: the process forked (src/cgi/spawn.rs), its three pipes in the worker's poll
//!      under the connection's backend token; the body streams into stdin, stdout is the CGI
//!      head (fastcgi::cgi_head, as FastCGI) then the body, stderr goes to the error log
//!    → Exiting: stdout ended; the exit status is awaited (SIGCHLD, worker/cgi_procs.rs)
//!    → done: exit 0, or a body whose Content-Length was sent whole, ends the response;
//!      any other end after the head cuts it (the client connection closes)
//! ```
//!
//! One time limit runs from the start (`cgi.timeout`, never moved by progress): a script
//! that never ends is killed with its process group and answered 504, or cut. Failures are
//! FastCGI's `ExchangeError`s, so the connection answers them the same way (502 for a bad or
//! missing head).

use super::cgi_procs::{self, Exit};
use super::fcgi::{Env, Facts, RequestBody, Step};
use super::fcgi_compress::{CodedBody, Framing};
use super::fcgi_error::ExchangeError;
use super::inbuf::InBuf;
use super::out::Out;
use super::spool::Spool;
use super::timers::{Kind, Slot};
use crate::cgi::spawn;
use crate::fastcgi::cgi_head::{self, CgiHead};
use crate::fastcgi::params::{self, ParamsInput};
use crate::http::body::BodyReader;
use crate::http::request::{BodyFraming, Method, Request, Version};
use mio::unix::SourceFd;
use mio::Interest;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

/// Stop reading the client's body while this much waits for the script's stdin.
const TO_CHILD_MAX: usize = 64 * 1024;
/// Stop reading the script's stdout while this much waits for the client.
const TO_CLIENT_MAX: usize = 256 * 1024;
/// Longest stderr line kept whole; longer ones are logged in pieces.
const STDERR_LINE_MAX: usize = 4096;
/// Stderr lines one run may put in the error log; beyond, they are counted.
const STDERR_LINES_MAX: u32 = 100;

/// What starts the process.
pub struct Command {
    /// argv; argv[0] the program's absolute path.
    pub argv: Vec<PathBuf>,
    /// The folder it runs in (the script's).
    pub dir: PathBuf,
    /// The run's time limit.
    pub kind: Kind,
}

/// One pipe end in the worker's poll.
struct Pipe {
    fd: OwnedFd,
    ready: bool,
}

/// The process's pipes while it runs.
struct Pipes {
    pid: i32,
    stdin: Option<Pipe>,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
}

/// Where the process is.
enum Proc {
    /// Not started: the body is still being buffered.
    NotStarted(Command),
    /// Running; its stdout still open.
    Running(Pipes),
    /// Its stdout ended; the exit status is awaited.
    Exiting(i32),
    /// Let go of (done, failed or cancelled).
    Gone,
}

/// How the request body reaches stdin.
enum BodyIn {
    None,
    Streaming(BodyReader),
    Spooling { reader: BodyReader, spool: Spool },
    Spooled { spool: Spool, left: u64 },
}

/// Where the response is.
enum Response {
    Head(Vec<u8>),
    /// The head went out; the body is framed and coded as FastCGI's is.
    Body(CodedBody),
}

/// One CGI run.
pub struct CgiRun {
    facts: Facts,
    proc: Proc,
    body: BodyIn,
    /// The script closed its stdin: the rest of the body is not taken.
    stdin_closed: bool,
    to_child: Vec<u8>,
    to_pos: usize,
    response: Response,
    stderr_line: Vec<u8>,
    stderr_lines: u32,
    status: Option<u16>,
    close_client: bool,
    keepalive_client: bool,
    head_only: bool,
    version: Version,
    content_length: Option<u64>,
    timer: Slot,
    kind: Kind,
}

impl CgiRun {
    /// A run of `cmd` for the request in `facts` with `body`.
    pub fn new(
        facts: Facts,
        cmd: Command,
        body: RequestBody,
        keepalive_client: bool,
        now: Instant,
    ) -> io::Result<CgiRun> {
        let reader = |framing, limit| {
            BodyReader::new(framing, limit).map_err(|e| io::Error::other(e.reason()))
        };
        let (body, content_length) = match body {
            RequestBody::None => (BodyIn::None, None),
            RequestBody::Length(n) => (
                BodyIn::Streaming(reader(BodyFraming::Length(n), n)?),
                Some(n),
            ),
            RequestBody::Chunked { limit } => (
                BodyIn::Spooling {
                    reader: reader(BodyFraming::Chunked, limit)?,
                    spool: Spool::default(),
                },
                None,
            ),
        };
        let head_only = facts.req.method == Method::Head;
        let version = facts.req.version;
        let kind = cmd.kind;
        Ok(CgiRun {
            facts,
            proc: Proc::NotStarted(cmd),
            body,
            stdin_closed: false,
            to_child: Vec::new(),
            to_pos: 0,
            response: Response::Head(Vec::new()),
            stderr_line: Vec::new(),
            stderr_lines: 0,
            status: None,
            close_client: false,
            keepalive_client,
            head_only,
            version,
            content_length,
            timer: Slot::new(now),
            kind,
        })
    }

    /// The request.
    pub fn request(&self) -> &Request {
        &self.facts.req
    }

    /// The extra params (an `auth` rule's REMOTE_USER among them).
    pub fn extra_params(&self) -> &[(String, String)] {
        &self.facts.extra
    }

    /// The response status, once the head is known.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Whether the script's head went to the client.
    pub fn head_sent(&self) -> bool {
        matches!(self.response, Response::Body(_))
    }

    /// Whether the client connection closes after this response.
    pub fn closes_client(&self) -> bool {
        self.close_client
    }

    /// Whether `gen` is the run's time limit.
    pub fn owns_timer(&self, gen: u64) -> bool {
        self.timer.is(gen)
    }

    /// Whether the client's body is still being read.
    pub fn wants_client_input(&self) -> bool {
        match &self.body {
            BodyIn::Streaming(r) => {
                !self.stdin_closed
                    && !r.is_done()
                    && self.to_child.len() - self.to_pos < TO_CHILD_MAX
            }
            BodyIn::Spooling { .. } => true,
            _ => false,
        }
    }

    /// An event on one of the pipes: which one is not told, so each is tried (a read or
    /// write that finds nothing returns EAGAIN and clears its flag).
    pub fn backend_ready(&mut self, readable: bool, writable: bool) {
        if let Proc::Running(p) = &mut self.proc {
            for pipe in [&mut p.stdout, &mut p.stderr].into_iter().flatten() {
                pipe.ready |= readable;
            }
            if let Some(pipe) = &mut p.stdin {
                pipe.ready |= writable;
            }
        }
    }

    /// The Content-Length body bytes not yet taken from the client.
    pub fn body_left(&self) -> Option<u64> {
        match &self.body {
            BodyIn::Streaming(r) => r.remaining(),
            _ => None,
        }
    }

    /// Whether body bytes may still arrive from the client.
    pub fn body_pending(&self) -> bool {
        matches!(self.body, BodyIn::Streaming(_) | BodyIn::Spooling { .. })
    }

    /// The time limit passed: the process (and its group) is killed.
    pub fn timed_out(&mut self, env: &mut Env<'_>) -> Step {
        self.failed(env, ExchangeError::Timeout("cgi run"))
    }

    fn script(&self) -> &str {
        &self.facts.script_name
    }

    fn failed(&mut self, env: &mut Env<'_>, e: ExchangeError) -> Step {
        if e.is_client_fault() {
            tracing::info!("cgi {}: {e}", self.script());
        } else {
            tracing::warn!("cgi {}: {e}", self.script());
        }
        self.cancel(env);
        if matches!(self.response, Response::Body(_)) {
            Step::Abort(e)
        } else {
            Step::Fail(e)
        }
    }

    /// Kills the process if it still runs and lets go of its pipes.
    pub fn cancel(&mut self, env: &mut Env<'_>) {
        match std::mem::replace(&mut self.proc, Proc::Gone) {
            Proc::Running(p) => {
                cgi_procs::kill(p.pid);
                Self::close_pipes(p, env);
            }
            Proc::Exiting(pid) => cgi_procs::kill(pid),
            Proc::NotStarted(_) | Proc::Gone => {}
        }
        env.timers.disarm(&mut self.timer);
    }

    fn close_pipes(p: Pipes, env: &mut Env<'_>) {
        for pipe in [p.stdin, p.stdout, p.stderr].into_iter().flatten() {
            let _ = env.registry.deregister(&mut SourceFd(&pipe.fd.as_raw_fd()));
        }
    }

    /// Moves bytes as far as possible between client, run and process.
    pub fn drive(&mut self, input: &mut InBuf, out: &mut Out, env: &mut Env<'_>) -> Step {
        let mut progress = false;
        match self.take_body(input) {
            Ok(true) => progress = true,
            Ok(false) => {}
            Err(e) => return self.failed(env, e),
        }
        if matches!(self.body, BodyIn::Spooling { .. }) {
            return if progress { Step::Progress } else { Step::Idle };
        }
        if matches!(self.proc, Proc::NotStarted(_)) {
            if let Err(e) = self.start(env) {
                return self.failed(env, e);
            }
            progress = true;
            // Body bytes may already be buffered for stdin.
            if let Err(e) = self.take_body(input) {
                return self.failed(env, e);
            }
        }
        match self.write_child() {
            Ok(true) => progress = true,
            Ok(false) => {}
            Err(e) => return self.failed(env, ExchangeError::Io(e)),
        }
        self.read_stderr(env);
        match self.read_stdout(out, env) {
            Ok(true) => progress = true,
            Ok(false) => {}
            Err(e) => return self.failed(env, e),
        }
        if let Proc::Exiting(pid) = self.proc {
            if let Some(exit) = cgi_procs::take_exit(pid) {
                return self.exited(exit, out, env);
            }
        }
        if progress {
            Step::Progress
        } else {
            Step::Idle
        }
    }

    /// Takes body bytes from the client: towards stdin, or into the spool.
    fn take_body(&mut self, input: &mut InBuf) -> Result<bool, ExchangeError> {
        let running = matches!(&self.proc, Proc::Running(p) if p.stdin.is_some());
        match &mut self.body {
            BodyIn::Streaming(reader) => {
                if !running || self.stdin_closed {
                    return Ok(false);
                }
                let room = TO_CHILD_MAX.saturating_sub(self.to_child.len() - self.to_pos);
                let n = input.len().min(room);
                if n == 0 {
                    return Ok(false);
                }
                compact(&mut self.to_child, &mut self.to_pos);
                let to_child = &mut self.to_child;
                let fed = reader
                    .feed(&input.data()[..n], &mut |data| {
                        to_child.extend_from_slice(data)
                    })
                    .map_err(ExchangeError::Body)?;
                input.consume(fed.consumed);
                if fed.done {
                    self.body = BodyIn::None;
                }
                Ok(fed.consumed > 0)
            }
            BodyIn::Spooling { reader, spool } => {
                let (progress, whole) = super::spool::fill(spool, reader, input)?;
                if let Some(len) = whole {
                    if let BodyIn::Spooling { spool, .. } =
                        std::mem::replace(&mut self.body, BodyIn::None)
                    {
                        self.content_length = Some(len);
                        self.body = BodyIn::Spooled { spool, left: len };
                    }
                }
                Ok(progress)
            }
            BodyIn::Spooled { spool, left } => {
                let room = TO_CHILD_MAX.saturating_sub(self.to_child.len() - self.to_pos);
                if room == 0 || !running || self.stdin_closed {
                    return Ok(false);
                }
                let n = (*left).min(room as u64).min(32 * 1024) as usize;
                let mut chunk = vec![0u8; n];
                spool.read_exact(&mut chunk).map_err(ExchangeError::Spool)?;
                compact(&mut self.to_child, &mut self.to_pos);
                self.to_child.extend_from_slice(&chunk);
                *left -= n as u64;
                if *left == 0 {
                    self.body = BodyIn::None;
                }
                Ok(n > 0)
            }
            BodyIn::None => Ok(false),
        }
    }

    /// Forks the process with the CGI params as its whole environment.
    fn start(&mut self, env: &mut Env<'_>) -> Result<(), ExchangeError> {
        let Proc::NotStarted(cmd) = std::mem::replace(&mut self.proc, Proc::Gone) else {
            return Ok(());
        };
        let f = &self.facts;
        let host = f
            .req
            .host
            .as_deref()
            .map_or_else(|| f.server_addr.0.clone(), str::to_owned);
        let input = ParamsInput {
            req: &f.req,
            script_name: &f.script_name,
            path_info: f.path_info.as_deref(),
            script_filename: &f.script_filename,
            document_root: &f.document_root,
            server_name: &host,
            server_addr: &f.server_addr.0,
            server_port: f.server_addr.1,
            remote_addr: &f.remote.0,
            remote_port: f.remote.1,
            https: f.https,
            content_length: self.content_length,
            server_software: &f.server_software,
            extra: &f.extra,
        };
        let vars = params::pairs(&input).map_err(|e| ExchangeError::Params(format!("{e:?}")))?;
        let child = spawn::spawn(&cmd.argv, &vars, &cmd.dir).map_err(ExchangeError::Io)?;
        cgi_procs::started(child.pid, env.key);
        let mut pipes = Pipes {
            pid: child.pid,
            stdin: Some(Pipe {
                fd: child.stdin,
                ready: true,
            }),
            stdout: Some(Pipe {
                fd: child.stdout,
                ready: true,
            }),
            stderr: Some(Pipe {
                fd: child.stderr,
                ready: true,
            }),
        };
        let regs = [
            (&pipes.stdin, Interest::WRITABLE),
            (&pipes.stdout, Interest::READABLE),
            (&pipes.stderr, Interest::READABLE),
        ];
        let mut failed = None;
        for (pipe, interest) in regs {
            if let Some(p) = pipe {
                let fd = p.fd.as_raw_fd();
                if let Err(e) = env
                    .registry
                    .register(&mut SourceFd(&fd), env.token, interest)
                {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            cgi_procs::kill(child.pid);
            Self::close_pipes(pipes, env);
            return Err(ExchangeError::Register(e));
        }
        // No body: stdin ends at once.
        if matches!(self.body, BodyIn::None) {
            if let Some(p) = pipes.stdin.take() {
                let _ = env.registry.deregister(&mut SourceFd(&p.fd.as_raw_fd()));
            }
        }
        self.proc = Proc::Running(pipes);
        env.timers.arm(&mut self.timer, self.kind, env.key, env.now);
        Ok(())
    }

    /// Writes to stdin; closes it once the whole body went in. A script that closed its
    /// stdin (EPIPE) simply does not get the rest.
    fn write_child(&mut self) -> io::Result<bool> {
        let Proc::Running(p) = &mut self.proc else {
            return Ok(false);
        };
        let Some(pipe) = &mut p.stdin else {
            return Ok(false);
        };
        let mut progress = false;
        while pipe.ready && self.to_pos < self.to_child.len() {
            match nix::unistd::write(&pipe.fd, &self.to_child[self.to_pos..]) {
                Ok(n) => {
                    self.to_pos += n;
                    progress = true;
                }
                Err(nix::errno::Errno::EAGAIN) => pipe.ready = false,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EPIPE) => {
                    self.stdin_closed = true;
                    self.to_child.clear();
                    self.to_pos = 0;
                    p.stdin = None;
                    return Ok(true);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let body_done = matches!(self.body, BodyIn::None);
        if body_done && self.to_pos == self.to_child.len() {
            // Dropping the end closes it: the script reads EOF.
            p.stdin = None;
            progress = true;
        }
        Ok(progress)
    }

    /// Logs what the script writes to stderr, line by line.
    fn read_stderr(&mut self, env: &mut Env<'_>) {
        let Proc::Running(p) = &mut self.proc else {
            return;
        };
        let Some(pipe) = &mut p.stderr else { return };
        let mut buf = [0u8; 4096];
        let mut eof = false;
        while pipe.ready {
            match nix::unistd::read(pipe.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    self.stderr_line.extend_from_slice(&buf[..n]);
                    while let Some(i) = memchr::memchr(b'\n', &self.stderr_line) {
                        let line: Vec<u8> = self.stderr_line.drain(..=i).collect();
                        log_stderr(&self.facts.script_name, &line, &mut self.stderr_lines);
                    }
                    if self.stderr_line.len() > STDERR_LINE_MAX {
                        let line = std::mem::take(&mut self.stderr_line);
                        log_stderr(&self.facts.script_name, &line, &mut self.stderr_lines);
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => pipe.ready = false,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if eof {
            let line = std::mem::take(&mut self.stderr_line);
            log_stderr(&self.facts.script_name, &line, &mut self.stderr_lines);
            if let Some(pipe) = p.stderr.take() {
                let _ = env.registry.deregister(&mut SourceFd(&pipe.fd.as_raw_fd()));
            }
        }
        let _ = env;
    }

    /// Reads stdout into the client's output (bounded by TO_CLIENT_MAX). Ok(true): progress.
    fn read_stdout(&mut self, out: &mut Out, env: &mut Env<'_>) -> Result<bool, ExchangeError> {
        let mut progress = false;
        loop {
            if !self.head_only && out.buffered() >= TO_CLIENT_MAX {
                break;
            }
            let Proc::Running(p) = &mut self.proc else {
                break;
            };
            let Some(pipe) = &mut p.stdout else { break };
            if !pipe.ready {
                break;
            }
            let mut data = env.bufs.take_backend();
            let n = match nix::unistd::read(pipe.fd.as_raw_fd(), &mut data) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => {
                    pipe.ready = false;
                    env.bufs.give_backend(data);
                    // The script paused: what the encoder holds goes out now.
                    if matches!(&self.response, Response::Body(b) if b.is_coded()) {
                        self.coded_bytes(&[], true, out);
                    }
                    break;
                }
                Err(nix::errno::Errno::EINTR) => {
                    env.bufs.give_backend(data);
                    continue;
                }
                Err(_) => 0,
            };
            if n == 0 {
                env.bufs.give_backend(data);
                self.stdout_ended(env);
                return Ok(true);
            }
            progress = true;
            let r = self.stdout(&data[..n], out, env);
            env.bufs.give_backend(data);
            r?;
        }
        Ok(progress)
    }

    /// Stdout ended: the pipes close and the exit status is awaited.
    fn stdout_ended(&mut self, env: &mut Env<'_>) {
        if let Proc::Running(mut p) = std::mem::replace(&mut self.proc, Proc::Gone) {
            // What is left on stderr is read before it closes.
            if let Some(pipe) = &mut p.stderr {
                pipe.ready = true;
            }
            self.proc = Proc::Running(p);
            self.read_stderr(env);
            if let Proc::Running(p) = std::mem::replace(&mut self.proc, Proc::Gone) {
                let pid = p.pid;
                Self::close_pipes(p, env);
                self.proc = Proc::Exiting(pid);
            }
        }
    }

    /// The process ended: the response ends, or is cut when it cannot be known whole.
    fn exited(&mut self, exit: Exit, out: &mut Out, env: &mut Env<'_>) -> Step {
        if let Proc::Exiting(pid) = self.proc {
            cgi_procs::forget(pid);
        }
        self.proc = Proc::Gone;
        let framing = match &self.response {
            Response::Head(_) => return self.failed(env, ExchangeError::NoHead),
            Response::Body(b) => b.framing,
        };
        let whole = match framing {
            Framing::Length(left) => left == 0,
            Framing::None => true,
            Framing::Chunked | Framing::Close => exit.success(),
        };
        if !whole {
            if !exit.success() {
                tracing::warn!("cgi {}: the script ended with {exit:?}", self.script());
            }
            return self.failed(env, ExchangeError::Closed { mid_response: true });
        }
        if !exit.success() {
            tracing::info!("cgi {}: the script ended with {exit:?}", self.script());
        }
        // The length was checked above: only an encoder failure is left to cut the body.
        let ended = match &mut self.response {
            Response::Body(b) => b.end(out),
            Response::Head(_) => Ok(false),
        };
        if let Err(e) = ended {
            tracing::error!("cgi {}: compressing the output: {e}", self.script());
            return self.failed(env, ExchangeError::Closed { mid_response: true });
        }
        env.timers.disarm(&mut self.timer);
        Step::Done
    }

    fn stdout(
        &mut self,
        bytes: &[u8],
        out: &mut Out,
        env: &mut Env<'_>,
    ) -> Result<(), ExchangeError> {
        let Response::Head(buf) = &mut self.response else {
            self.body_bytes(bytes, out);
            return Ok(());
        };
        buf.extend_from_slice(bytes);
        match cgi_head::parse(buf) {
            Ok(None) => Ok(()),
            Ok(Some(mut head)) => {
                let rest = buf.split_off(head.head_len.min(buf.len()));
                let encoder = super::fcgi_compress::plan(self.facts.compress.as_ref(), &mut head);
                self.send_head(&head, encoder, out, env);
                self.body_bytes(&rest, out);
                Ok(())
            }
            Err(e) => Err(ExchangeError::BadHead(format!("{e:?}"))),
        }
    }

    fn send_head(
        &mut self,
        head: &CgiHead,
        encoder: Option<crate::compress::encoder::Encoder>,
        out: &mut Out,
        env: &mut Env<'_>,
    ) {
        let body_framing = Framing::choose(head, self.head_only, self.version);
        if body_framing == Framing::Close || !self.keepalive_client {
            self.close_client = true;
        }
        self.status = Some(head.status);
        let framing = body_framing.head(head, self.head_only);
        self.response = Response::Body(CodedBody::new(body_framing, encoder));
        // The respond hook sees a script's head as a FastCGI one (README: every response).
        super::fcgi::push_backend_head(
            &self.facts,
            head,
            framing,
            self.close_client,
            self.version,
            out,
            env,
        );
    }

    fn body_bytes(&mut self, bytes: &[u8], out: &mut Out) {
        self.coded_bytes(bytes, false, out);
    }

    /// Body bytes through the encoder (`fcgi_compress::CodedBody`, shared with FastCGI) when
    /// the output is coded. An encoder failure cuts the response: no more bytes and the
    /// connection closes.
    fn coded_bytes(&mut self, bytes: &[u8], flush: bool, out: &mut Out) {
        let Response::Body(body) = &mut self.response else {
            return;
        };
        match body.push(bytes, flush, out) {
            Ok(over) => self.close_client |= over,
            Err(e) => {
                tracing::error!("cgi {}: compressing the output: {e}", self.script());
                self.close_client = true;
            }
        }
    }
}

/// One stderr line to the error log, up to the run's allowance.
fn log_stderr(script: &str, line: &[u8], count: &mut u32) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    *count += 1;
    if *count <= STDERR_LINES_MAX {
        tracing::warn!("cgi {script} stderr: {}", text.escape_debug());
    } else if *count == STDERR_LINES_MAX + 1 {
        tracing::warn!("cgi {script}: more stderr lines not logged");
    }
}

fn compact(buf: &mut Vec<u8>, pos: &mut usize) {
    if *pos == buf.len() {
        buf.clear();
        *pos = 0;
    } else if *pos > 0 && *pos * 2 >= buf.len() {
        buf.drain(..*pos);
        *pos = 0;
    }
}
