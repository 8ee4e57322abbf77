//! The watcher's side of the admin evaluator: which chunks wait to run, which one runs now and
//! until when, and what to do when the evaluator must go. Non-blocking; no Lua here.
//!
//! ```text
//!            fork (the watcher, when work is queued)
//!  Absent ───────────────────────────────────────▶ Idle ──send Eval/Reply──▶ Busy{id, deadline}
//!    ▲                                              ▲                          │
//!    │  killed past the deadline, or it died        └──── Call or Done ◀───────┤
//!    └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A chunk's limit counts only the time the evaluator spends running it, not the time it
//! waits for the watcher (a `reload()` waits for the new generation).

use super::protocol::{self, FrameDecoder};
use super::wire::{Call, FromEvaluator, ToEvaluator, WIRE_MAX};
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The watcher's token for the evaluator link.
pub const EVALUATOR: Token = Token(2);

/// What the link reports to the admin server.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// Chunk `id` asks the watcher.
    Call(u64, Call),
    /// Chunk `id` ended with this client response.
    Done(u64, Value),
}

/// A running evaluator process.
struct Proc {
    pid: Pid,
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
}

enum State {
    /// No evaluator: one is forked when work is queued.
    Absent,
    /// Waiting for the next message.
    Idle(Proc),
    /// Running chunk `id` since `since`; killed at `deadline`.
    Busy {
        proc: Proc,
        id: u64,
        since: Instant,
        deadline: Instant,
    },
}

/// The evaluator link.
pub struct Link {
    state: State,
    /// New chunks and answers to calls, in the order they came: first come, first served, so
    /// nothing waits forever, and chunks sent together all start before a reload they asked
    /// for is reported to the first of them.
    queue: VecDeque<ToEvaluator>,
    /// Chunks started in the current evaluator and not ended, with the run time they used.
    started: HashMap<u64, Duration>,
    /// Evaluators killed or lost and not reaped yet.
    dead: Vec<Pid>,
    /// Run time a chunk may use.
    limit: Duration,
}

impl Link {
    /// A link with no evaluator yet; chunks may run for `limit` each.
    pub fn new(limit: Duration) -> Link {
        Link {
            state: State::Absent,
            queue: VecDeque::new(),
            started: HashMap::new(),
            dead: Vec::new(),
            limit,
        }
    }

    /// Queues a new chunk.
    pub fn submit(&mut self, id: u64, chunk: String) {
        self.queue.push_back(ToEvaluator::Eval { id, chunk });
    }

    /// Queues the watcher's answer to chunk `id`'s call (dropped if that chunk is gone).
    pub fn reply(&mut self, id: u64, result: Result<Value, String>) {
        if self.started.contains_key(&id) {
            self.queue.push_back(ToEvaluator::Reply { id, result });
        }
    }

    /// Whether the answer to chunk `id`'s call is queued and not sent yet.
    pub fn reply_queued(&self, id: u64) -> bool {
        self.queue
            .iter()
            .any(|m| matches!(m, ToEvaluator::Reply { id: r, .. } if *r == id))
    }

    /// Whether an evaluator should be forked now.
    pub fn needs_process(&self) -> bool {
        matches!(self.state, State::Absent) && !self.queue.is_empty()
    }

    /// Whether any chunk is queued, running or waiting.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || !self.started.is_empty()
    }

    /// Takes a freshly forked evaluator.
    pub fn attach(&mut self, pid: Pid, mut stream: UnixStream, registry: &Registry) {
        if let Err(e) = registry.register(
            &mut stream,
            EVALUATOR,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::error!("admin evaluator: poll: {e}");
            let _ = kill(pid, Signal::SIGKILL);
            self.dead.push(pid);
            return;
        }
        self.state = State::Idle(Proc {
            pid,
            stream,
            decoder: FrameDecoder::with_limit(WIRE_MAX),
            out: Vec::new(),
        });
    }

    /// No evaluator could be started: every queued chunk ends with `why`.
    pub fn start_failed(&mut self, why: &str) -> Vec<LinkEvent> {
        self.queue
            .drain(..)
            .map(|m| {
                let id = match m {
                    ToEvaluator::Eval { id, .. } | ToEvaluator::Reply { id, .. } => id,
                };
                LinkEvent::Done(id, protocol::error_response(why))
            })
            .collect()
    }

    /// The link's descriptor, which forked children must close.
    pub fn raw_fd(&self) -> Option<i32> {
        match &self.state {
            State::Absent => None,
            State::Idle(p) | State::Busy { proc: p, .. } => Some(p.stream.as_raw_fd()),
        }
    }

    /// When the running chunk's time is up.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Busy { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Handles readiness of the link: writes what is pending, reads what arrived.
    pub fn ready(&mut self, registry: &Registry, now: Instant) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        let (proc, busy) = match &mut self.state {
            State::Absent => return events,
            State::Idle(p) => (p, None),
            State::Busy {
                proc, id, since, ..
            } => (proc, Some((*id, *since))),
        };
        let mut lost = flush(proc).err();
        let mut buf = [0u8; 16 * 1024];
        while lost.is_none() {
            match proc.stream.read(&mut buf) {
                Ok(0) => lost = Some("it closed the link".to_string()),
                Ok(n) => proc.decoder.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => lost = Some(protocol::io_cause(&e)),
            }
        }
        // The evaluator answers one message at a time, so at most one frame is complete.
        match proc.decoder.next_frame() {
            Ok(None) => {}
            Ok(Some(v)) => match FromEvaluator::from_json(&v) {
                Ok(m) => {
                    let (id, event) = match m {
                        FromEvaluator::Call { id, call } => (id, LinkEvent::Call(id, call)),
                        FromEvaluator::Done { id, response } => (id, LinkEvent::Done(id, response)),
                    };
                    match busy {
                        Some((running, since)) if running == id => {
                            if let Some(used) = self.started.get_mut(&id) {
                                *used += now.saturating_duration_since(since);
                            }
                            if matches!(event, LinkEvent::Done(..)) {
                                self.started.remove(&id);
                            }
                            events.push(event);
                            self.become_idle();
                        }
                        _ => lost = Some(format!("it sent a message for chunk {id} out of turn")),
                    }
                }
                Err(e) => lost = Some(e.to_string()),
            },
            Err(e) => lost = Some(e.to_string()),
        }
        if let Some(why) = lost {
            tracing::error!("admin evaluator lost: {why}; the admin Lua state was reset");
            events.extend(self.drop_process(
                registry,
                "the admin evaluator exited unexpectedly; the admin Lua state was reset",
            ));
        }
        events
    }

    /// Kills an evaluator past its chunk's deadline, and gives an idle one its next message.
    pub fn pump(&mut self, registry: &Registry, now: Instant) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        if self.deadline().is_some_and(|d| now >= d) {
            let id = match &self.state {
                State::Busy { id, proc, .. } => {
                    tracing::warn!(
                        "admin: chunk {id} exceeded its {} s limit; killed the evaluator (pid {}), \
                         the admin Lua state was reset",
                        self.limit.as_secs(),
                        proc.pid
                    );
                    *id
                }
                _ => 0,
            };
            self.started.remove(&id);
            events.push(LinkEvent::Done(
                id,
                protocol::error_response(&format!(
                    "chunk exceeded its {} s limit; the admin Lua state was reset",
                    self.limit.as_secs()
                )),
            ));
            events.extend(self.drop_process(
                registry,
                "the admin Lua state was reset (another chunk exceeded its time limit) while \
                 this chunk waited",
            ));
        }
        if let State::Idle(_) = self.state {
            let next = self.queue.pop_front().map(|m| match m {
                ToEvaluator::Eval { id, .. } => {
                    self.started.insert(id, Duration::ZERO);
                    (id, m)
                }
                ToEvaluator::Reply { id, .. } => (id, m),
            });
            if let Some((id, message)) = next {
                events.extend(self.send(registry, now, id, message));
            }
        }
        events
    }

    fn send(
        &mut self,
        registry: &Registry,
        now: Instant,
        id: u64,
        message: ToEvaluator,
    ) -> Vec<LinkEvent> {
        let used = self.started.get(&id).copied().unwrap_or_default();
        let state = std::mem::replace(&mut self.state, State::Absent);
        let State::Idle(mut proc) = state else {
            self.state = state;
            return Vec::new();
        };
        match protocol::encode_frame_within(&message.to_json(), WIRE_MAX) {
            Ok(bytes) => proc.out.extend_from_slice(&bytes),
            Err(e) => {
                // Only a chunk can be this large; it ends here, the evaluator goes on.
                self.state = State::Idle(proc);
                self.started.remove(&id);
                return vec![LinkEvent::Done(
                    id,
                    protocol::error_response(&format!("bad request: {e}")),
                )];
            }
        }
        let failed = flush(&mut proc).err();
        self.state = State::Busy {
            proc,
            id,
            since: now,
            deadline: now + self.limit.saturating_sub(used),
        };
        match failed {
            Some(why) => {
                tracing::error!("admin evaluator lost: {why}; the admin Lua state was reset");
                self.drop_process(
                    registry,
                    "the admin evaluator exited unexpectedly; the admin Lua state was reset",
                )
            }
            None => Vec::new(),
        }
    }

    fn become_idle(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Absent);
        self.state = match state {
            State::Busy { proc, .. } | State::Idle(proc) => State::Idle(proc),
            State::Absent => State::Absent,
        };
    }

    /// Kills the evaluator (if any); every chunk it held ends with `why`.
    fn drop_process(&mut self, registry: &Registry, why: &str) -> Vec<LinkEvent> {
        let state = std::mem::replace(&mut self.state, State::Absent);
        if let State::Idle(mut p) | State::Busy { proc: mut p, .. } = state {
            let _ = registry.deregister(&mut p.stream);
            let _ = kill(p.pid, Signal::SIGKILL);
            self.dead.push(p.pid);
        }
        // Answers for its chunks go nowhere; new chunks run in the next evaluator.
        self.queue.retain(|m| matches!(m, ToEvaluator::Eval { .. }));
        let mut ids: Vec<u64> = self.started.drain().map(|(id, _)| id).collect();
        crate::sort_compact::sort(&mut ids);
        ids.into_iter()
            .map(|id| LinkEvent::Done(id, protocol::error_response(why)))
            .collect()
    }

    /// A child exited: true if it was an evaluator (the caller must not treat it as a worker
    /// or backend). One that dies on its own ends the chunks it held.
    pub fn reaped(&mut self, registry: &Registry, pid: Pid, how: &str) -> (bool, Vec<LinkEvent>) {
        if let Some(i) = self.dead.iter().position(|p| *p == pid) {
            self.dead.swap_remove(i);
            return (true, Vec::new());
        }
        let current = match &self.state {
            State::Idle(p) | State::Busy { proc: p, .. } => p.pid == pid,
            State::Absent => false,
        };
        if !current {
            return (false, Vec::new());
        }
        tracing::error!("admin evaluator (pid {pid}) {how}; the admin Lua state was reset");
        let events = self.drop_process(
            registry,
            "the admin evaluator exited unexpectedly; the admin Lua state was reset",
        );
        self.dead.retain(|p| *p != pid);
        (true, events)
    }

    /// At exit: stops the evaluator.
    pub fn stop(&mut self, registry: &Registry) {
        self.drop_process(registry, "the server is stopping");
    }
}

/// Writes what the evaluator has not been sent yet; Err when the link broke.
fn flush(p: &mut Proc) -> Result<(), String> {
    let mut sent = 0;
    let result = loop {
        if sent == p.out.len() {
            break Ok(());
        }
        match p.stream.write(&p.out[sent..]) {
            Ok(0) => break Err("it closed the link".to_string()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(protocol::io_cause(&e)),
        }
    };
    p.out.drain(..sent);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::protocol::{encode_frame_within, read_frame_within};
    use serde_json::json;
    use std::os::unix::net::UnixStream as StdStream;
    use std::process::{Child, Command};

    /// A link whose "evaluator" is the test: a `sleep` child stands in for its pid (so the
    /// kill has a target), and the other end of the socketpair is returned.
    fn setup(limit: Duration) -> (mio::Poll, Link, StdStream, Child) {
        let poll = mio::Poll::new().expect("poll");
        let (ours, theirs) = StdStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let mut link = Link::new(limit);
        link.submit(1, "first()".into());
        assert!(link.needs_process());
        let pid = Pid::from_raw(child.id() as i32);
        link.attach(pid, UnixStream::from_std(ours), poll.registry());
        (poll, link, theirs, child)
    }

    fn recv(s: &mut StdStream) -> ToEvaluator {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ToEvaluator::from_json(&read_frame_within(s, WIRE_MAX).expect("frame")).expect("msg")
    }

    fn answer(s: &mut StdStream, m: FromEvaluator) {
        let bytes = encode_frame_within(&m.to_json(), WIRE_MAX).expect("encode");
        s.write_all(&bytes).expect("write");
    }

    /// Polls the link until it reports something.
    fn events(poll: &mut mio::Poll, link: &mut Link, now: Instant) -> Vec<LinkEvent> {
        let mut evs = mio::Events::with_capacity(4);
        for _ in 0..50 {
            let _ = poll.poll(&mut evs, Some(Duration::from_millis(100)));
            let got = link.ready(poll.registry(), now);
            if !got.is_empty() {
                return got;
            }
        }
        panic!("no event from the link");
    }

    #[test]
    fn a_chunk_over_its_limit_kills_the_evaluator_and_fails_alone() {
        let (poll, mut link, mut ev, mut child) = setup(Duration::from_secs(5));
        let t0 = Instant::now();
        link.pump(poll.registry(), t0);
        assert!(matches!(recv(&mut ev), ToEvaluator::Eval { id: 1, .. }));
        link.submit(2, "second()".into());
        assert_eq!(link.deadline(), Some(t0 + Duration::from_secs(5)));
        // Not yet.
        assert!(link
            .pump(poll.registry(), t0 + Duration::from_millis(4999))
            .is_empty());
        let evs = link.pump(poll.registry(), t0 + Duration::from_secs(5));
        assert_eq!(
            evs,
            vec![LinkEvent::Done(
                1,
                protocol::error_response(
                    "chunk exceeded its 5 s limit; the admin Lua state was reset"
                )
            )]
        );
        let status = child.wait().expect("wait");
        assert!(!status.success(), "killed: {status:?}");
        // The next chunk waits for a fresh evaluator; the dead one is recognised when reaped.
        assert!(link.needs_process());
        let pid = Pid::from_raw(child.id() as i32);
        let (ours, events) = link.reaped(poll.registry(), pid, "was killed by SIGKILL");
        assert!(ours && events.is_empty());
        let other = Pid::from_raw(1);
        assert!(!link.reaped(poll.registry(), other, "exited").0);
    }

    #[test]
    fn waiting_for_the_watcher_does_not_count_and_messages_go_in_order() {
        let (mut poll, mut link, mut ev, mut child) = setup(Duration::from_secs(5));
        let t0 = Instant::now();
        link.pump(poll.registry(), t0);
        assert!(matches!(recv(&mut ev), ToEvaluator::Eval { id: 1, .. }));
        link.submit(2, "second()".into());
        answer(
            &mut ev,
            FromEvaluator::Call {
                id: 1,
                call: Call::Reload,
            },
        );
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            events(&mut poll, &mut link, t1),
            vec![LinkEvent::Call(1, Call::Reload)]
        );
        // Chunk 2 came first, so it is sent before the answer to chunk 1's call.
        link.reply(1, Ok(json!({"ok": true})));
        assert!(link.reply_queued(1));
        link.pump(poll.registry(), t1);
        assert!(matches!(recv(&mut ev), ToEvaluator::Eval { id: 2, .. }));
        assert_eq!(link.deadline(), Some(t1 + Duration::from_secs(5)));
        answer(
            &mut ev,
            FromEvaluator::Done {
                id: 2,
                response: protocol::ok_response(json!(2)),
            },
        );
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            events(&mut poll, &mut link, t2),
            vec![LinkEvent::Done(2, protocol::ok_response(json!(2)))]
        );
        // Chunk 1 resumes after waiting 10 s; it used 2 s, so 3 s are left.
        let t3 = t2 + Duration::from_secs(10);
        link.pump(poll.registry(), t3);
        assert!(!link.reply_queued(1));
        assert!(matches!(recv(&mut ev), ToEvaluator::Reply { id: 1, .. }));
        assert_eq!(link.deadline(), Some(t3 + Duration::from_secs(3)));
        answer(
            &mut ev,
            FromEvaluator::Done {
                id: 1,
                response: protocol::ok_response(json!(1)),
            },
        );
        assert_eq!(
            events(&mut poll, &mut link, t3),
            vec![LinkEvent::Done(1, protocol::ok_response(json!(1)))]
        );
        assert!(!link.busy());
        // A reply for a chunk that is gone is dropped.
        link.reply(1, Ok(json!(0)));
        assert!(!link.reply_queued(1));
        link.stop(poll.registry());
        let _ = child.wait();
    }

    #[test]
    fn an_evaluator_that_dies_fails_every_chunk_it_held() {
        let (mut poll, mut link, mut ev, mut child) = setup(Duration::from_secs(5));
        let t0 = Instant::now();
        link.pump(poll.registry(), t0);
        assert!(matches!(recv(&mut ev), ToEvaluator::Eval { id: 1, .. }));
        link.submit(2, "second()".into());
        answer(
            &mut ev,
            FromEvaluator::Call {
                id: 1,
                call: Call::Reload,
            },
        );
        events(&mut poll, &mut link, t0);
        link.pump(poll.registry(), t0);
        assert!(matches!(recv(&mut ev), ToEvaluator::Eval { id: 2, .. }));
        drop(ev);
        let evs = events(&mut poll, &mut link, t0);
        let ids: Vec<u64> = evs
            .iter()
            .map(|e| match e {
                LinkEvent::Done(id, r) => {
                    assert_eq!(r["ok"], false, "{r}");
                    *id
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 2]);
        assert!(!link.busy());
        let _ = child.wait();
    }
}
