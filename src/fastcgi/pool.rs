//! A worker's view of its FastCGI backends: addresses, balancing by least active requests,
//! addresses left out for a while after they refused, and idle kept-alive connections.

use crate::config::{Config, FastcgiDef, ListenAddr};
use crate::worker::net::Stream;
use std::io;
use std::time::{Duration, Instant};

/// Idle connections kept per address.
const MAX_IDLE: usize = 32;

/// One address of a backend (a spawned proc or a configured address).
#[derive(Debug)]
pub struct Upstream {
    /// Where to connect.
    pub addr: ListenAddr,
    /// Requests in flight from this worker.
    pub active: u32,
    /// Requests sent from this worker.
    pub total: u64,
    /// Failures seen by this worker.
    pub errors: u64,
    /// Left out until then after a refused connection.
    pub disabled_until: Option<Instant>,
    idle: Vec<Stream>,
}

/// One `fastcgi "name" {}` as a worker uses it.
#[derive(Debug)]
pub struct Backend {
    /// The backend's name.
    pub name: String,
    /// Its addresses.
    pub upstreams: Vec<Upstream>,
    /// Whether connections are kept for reuse (FCGI_KEEP_CONN).
    pub keepalive: bool,
    disable_time: Duration,
}

/// Every backend of the config, in config order.
#[derive(Debug, Default)]
pub struct Pool {
    /// The backends.
    pub backends: Vec<Backend>,
}

/// A connection to an upstream: fresh (connecting) or reused (idle until now).
pub struct Conn {
    /// The socket.
    pub stream: Stream,
    /// Whether it was kept from an earlier request (it may have gone stale).
    pub reused: bool,
}

/// The addresses workers connect to for a definition: its spawned procs' sockets, or its
/// configured addresses.
pub fn upstream_addrs(def: &FastcgiDef) -> Vec<ListenAddr> {
    if def.spawn.is_some() {
        crate::fastcgi::spawn::proc_addrs(def).unwrap_or_default()
    } else {
        def.address.clone()
    }
}

impl Pool {
    /// The backends of `config`, with the addresses `addrs` gives for each definition (the
    /// proc sockets of a spawned backend, or its configured addresses).
    pub fn new(config: &Config, addrs: impl Fn(&FastcgiDef) -> Vec<ListenAddr>) -> Pool {
        Pool {
            backends: config
                .fastcgi
                .iter()
                .map(|d| Backend {
                    name: d.name.clone(),
                    upstreams: addrs(d)
                        .into_iter()
                        .map(|addr| Upstream {
                            addr,
                            active: 0,
                            total: 0,
                            errors: 0,
                            disabled_until: None,
                            idle: Vec::new(),
                        })
                        .collect(),
                    keepalive: d.keepalive,
                    disable_time: d.disable_time,
                })
                .collect(),
        }
    }

    /// The index of the backend named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// The enabled upstream of backend `b` with the fewest requests in flight, skipping those
    /// in `exclude` (already tried for this request).
    pub fn pick(&mut self, b: usize, now: Instant, exclude: &[usize]) -> Option<usize> {
        let backend = self.backends.get_mut(b)?;
        let mut best: Option<(usize, u32)> = None;
        for (i, u) in backend.upstreams.iter_mut().enumerate() {
            if exclude.contains(&i) {
                continue;
            }
            if let Some(t) = u.disabled_until {
                if now < t {
                    continue;
                }
                u.disabled_until = None;
            }
            if best.is_none_or(|(_, a)| u.active < a) {
                best = Some((i, u.active));
            }
        }
        best.map(|(i, _)| i)
    }

    /// A connection to upstream `u` of backend `b`: an idle one that is still open, else a
    /// new non-blocking connect.
    pub fn connect(&mut self, b: usize, u: usize) -> io::Result<Conn> {
        let up = self
            .backends
            .get_mut(b)
            .and_then(|x| x.upstreams.get_mut(u))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        while let Some(stream) = up.idle.pop() {
            if still_open(&stream) {
                return Ok(Conn {
                    stream,
                    reused: true,
                });
            }
        }
        let stream = match &up.addr {
            ListenAddr::Tcp(a) => {
                let s = mio::net::TcpStream::connect(*a)?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            ListenAddr::Unix(p) => Stream::Unix(mio::net::UnixStream::connect(p)?),
        };
        Ok(Conn {
            stream,
            reused: false,
        })
    }

    /// Counts a request starting on upstream `u`.
    pub fn begin(&mut self, b: usize, u: usize) {
        if let Some(up) = self.upstream(b, u) {
            up.active += 1;
            up.total += 1;
        }
    }

    /// Counts a request ending on upstream `u`; `failed` counts an error.
    pub fn end(&mut self, b: usize, u: usize, failed: bool) {
        if let Some(up) = self.upstream(b, u) {
            up.active = up.active.saturating_sub(1);
            if failed {
                up.errors += 1;
            }
        }
    }

    /// Leaves upstream `u` out for the backend's `disable_time`.
    pub fn disable(&mut self, b: usize, u: usize, now: Instant) {
        let Some(backend) = self.backends.get_mut(b) else {
            return;
        };
        let until = now + backend.disable_time;
        if let Some(up) = backend.upstreams.get_mut(u) {
            up.disabled_until = Some(until);
            up.idle.clear();
        }
    }

    /// Keeps a connection whose request completed cleanly, for the next request.
    pub fn release(&mut self, b: usize, u: usize, stream: Stream) {
        let keep = self.backends.get(b).is_some_and(|x| x.keepalive);
        if let Some(up) = self.upstream(b, u) {
            if keep && up.idle.len() < MAX_IDLE {
                up.idle.push(stream);
            }
        }
    }

    fn upstream(&mut self, b: usize, u: usize) -> Option<&mut Upstream> {
        self.backends.get_mut(b)?.upstreams.get_mut(u)
    }
}

/// Whether an idle backend connection is still open: a non-blocking peek sees EOF or an
/// error on one the backend closed (php-cgi closes after PHP_FCGI_MAX_REQUESTS).
fn still_open(stream: &Stream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    match recv(
        stream.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Err(nix::errno::Errno::EAGAIN) => true,
        // EOF, an error, or stray bytes from a finished exchange: not reusable.
        _ => false,
    }
}
