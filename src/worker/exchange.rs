//! What a connection needs of the handler producing a response from another process: a
//! FastCGI exchange (`fcgi.rs`), an HTTP proxy exchange (`proxy.rs`) or a CGI run (`cgi.rs`).
//! The connection drives each through this trait and never reaches into their fields, so its
//! lifecycle (LIFECYCLE.md) holds for all three.

use super::cgi::CgiRun;
use super::fcgi::{Env, Exchange, Step};
use super::inbuf::InBuf;
use super::out::Out;
use crate::http::request::Request;
use crate::transport::Stream;
use std::time::Duration;

/// A backend exchange as its connection sees it.
pub trait Exchanging {
    /// The request (for the access log).
    fn request(&self) -> &Request;
    /// The response status, once the backend's head is known.
    fn status(&self) -> Option<u16>;
    /// Whether the client connection must close after this response.
    fn closes_client(&self) -> bool;
    /// Whether `gen` is the exchange's live backend timeout.
    fn owns_timer(&self, gen: u64) -> bool;
    /// Whether the client's input is still wanted (body, or tunnel bytes).
    fn wants_client_input(&self) -> bool;
    /// Whether the response head went to the client (a drain then lets the response end
    /// as its head said: LIFECYCLE rule 15).
    fn head_sent(&self) -> bool;
    /// Records readiness of the backend socket; `read_closed`: the event said the backend
    /// shut its side (EPOLLRDHUP), which no later event repeats.
    fn backend_ready(&mut self, readable: bool, writable: bool, read_closed: bool);
    /// The Content-Length body bytes not yet taken from the client (None for other bodies).
    fn body_left(&self) -> Option<u64>;
    /// Whether input may still arrive from the client for this exchange.
    fn body_pending(&self) -> bool;
    /// The backend-side timeout fired.
    fn timed_out(&mut self, env: &mut Env<'_>) -> Step;
    /// Moves bytes as far as possible between client, exchange and backend. `client` is the
    /// client's socket, written directly only by a proxy tunnel's splice once `out` is empty.
    fn drive(
        &mut self,
        input: &mut InBuf,
        out: &mut Out,
        client: &Stream,
        env: &mut Env<'_>,
    ) -> Step;
    /// On client disconnect or worker exit: let go of the backend.
    fn cancel(&mut self, env: &mut Env<'_>);
    /// Whether a client EOF before the response is complete ends the exchange (the proxy,
    /// as nginx without `proxy_ignore_client_abort`: the upstream connection closes).
    fn aborts_on_client_eof(&self) -> bool {
        false
    }
    /// Whether bytes pass both ways after a 101 (then only the exchange's timeouts apply).
    fn is_tunnel(&self) -> bool {
        false
    }
    /// The backend address that answered and its time to the response head (access log).
    fn upstream(&self, _env: &Env<'_>) -> Option<(String, Option<Duration>)> {
        None
    }
    /// Bytes the client sent through an upgrade tunnel (`$bytes_received`), 0 without one.
    fn bytes_received(&self) -> u64 {
        0
    }
    /// The extra params of the request (FastCGI and CGI).
    fn extra_params(&self) -> &[(String, String)] {
        &[]
    }
    /// The user an `auth` rule authenticated (its REMOTE_USER param), for the access log.
    fn remote_user(&self) -> Option<&str> {
        self.extra_params()
            .iter()
            .find(|(n, _)| n == "REMOTE_USER")
            .map(|(_, v)| v.as_str())
    }
}

impl Exchanging for Exchange {
    fn request(&self) -> &Request {
        Exchange::request(self)
    }
    fn head_sent(&self) -> bool {
        Exchange::phase(self) == super::fcgi::ExchangePhase::StreamingBody
    }
    fn status(&self) -> Option<u16> {
        Exchange::status(self)
    }
    fn closes_client(&self) -> bool {
        Exchange::closes_client(self)
    }
    fn owns_timer(&self, gen: u64) -> bool {
        Exchange::owns_timer(self, gen)
    }
    fn wants_client_input(&self) -> bool {
        Exchange::wants_client_input(self)
    }
    fn backend_ready(&mut self, readable: bool, writable: bool, _read_closed: bool) {
        Exchange::backend_ready(self, readable, writable)
    }
    fn body_left(&self) -> Option<u64> {
        Exchange::body_left(self)
    }
    fn body_pending(&self) -> bool {
        Exchange::body_pending(self)
    }
    fn timed_out(&mut self, env: &mut Env<'_>) -> Step {
        Exchange::timed_out(self, env)
    }
    fn drive(&mut self, input: &mut InBuf, out: &mut Out, _: &Stream, env: &mut Env<'_>) -> Step {
        Exchange::drive(self, input, out, env)
    }
    fn cancel(&mut self, env: &mut Env<'_>) {
        Exchange::cancel(self, env)
    }
    fn extra_params(&self) -> &[(String, String)] {
        Exchange::extra_params(self)
    }
}

impl Exchanging for CgiRun {
    fn request(&self) -> &Request {
        CgiRun::request(self)
    }
    fn head_sent(&self) -> bool {
        CgiRun::head_sent(self)
    }
    fn status(&self) -> Option<u16> {
        CgiRun::status(self)
    }
    fn closes_client(&self) -> bool {
        CgiRun::closes_client(self)
    }
    fn owns_timer(&self, gen: u64) -> bool {
        CgiRun::owns_timer(self, gen)
    }
    fn wants_client_input(&self) -> bool {
        CgiRun::wants_client_input(self)
    }
    fn backend_ready(&mut self, readable: bool, writable: bool, _read_closed: bool) {
        CgiRun::backend_ready(self, readable, writable)
    }
    fn body_left(&self) -> Option<u64> {
        CgiRun::body_left(self)
    }
    fn body_pending(&self) -> bool {
        CgiRun::body_pending(self)
    }
    fn timed_out(&mut self, env: &mut Env<'_>) -> Step {
        CgiRun::timed_out(self, env)
    }
    fn drive(&mut self, input: &mut InBuf, out: &mut Out, _: &Stream, env: &mut Env<'_>) -> Step {
        CgiRun::drive(self, input, out, env)
    }
    fn cancel(&mut self, env: &mut Env<'_>) {
        CgiRun::cancel(self, env)
    }
    fn extra_params(&self) -> &[(String, String)] {
        CgiRun::extra_params(self)
    }
}
