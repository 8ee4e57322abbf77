//! What a connection asks of the handler producing its response from another process: a
//! FastCGI exchange (fcgi.rs) or a CGI run (cgi.rs). The connection drives either through
//! this one interface, so its lifecycle (LIFECYCLE.md) holds for both.

use super::cgi::CgiRun;
use super::fcgi::{Env, Exchange, Step};
use super::inbuf::InBuf;
use super::out::Out;
use crate::http::request::Request;

/// A response produced by another process.
pub trait Upstream {
    /// The request (for the access log).
    fn request(&self) -> &Request;
    /// The response status, once the head is known.
    fn status(&self) -> Option<u16>;
    /// Whether the client connection must close after this response.
    fn closes_client(&self) -> bool;
    /// Whether `gen` is the handler's live timeout.
    fn owns_timer(&self, gen: u64) -> bool;
    /// Whether the client's body is still being read.
    fn wants_client_input(&self) -> bool;
    /// Records readiness of the handler's descriptors.
    fn backend_ready(&mut self, readable: bool, writable: bool);
    /// The Content-Length body bytes not yet taken from the client.
    fn body_left(&self) -> Option<u64>;
    /// Whether body bytes may still arrive from the client.
    fn body_pending(&self) -> bool;
    /// The handler's timeout fired.
    fn timed_out(&mut self, env: &mut Env<'_>) -> Step;
    /// Moves bytes as far as possible.
    fn drive(&mut self, input: &mut InBuf, out: &mut Out, env: &mut Env<'_>) -> Step;
    /// Lets go of the other process (client gone, failure, worker exit).
    fn cancel(&mut self, env: &mut Env<'_>);
    /// The extra params of the request.
    fn extra_params(&self) -> &[(String, String)];
    /// The user an `auth` rule authenticated (its REMOTE_USER param), for the access log.
    fn remote_user(&self) -> Option<&str> {
        self.extra_params()
            .iter()
            .find(|(n, _)| n == "REMOTE_USER")
            .map(|(_, v)| v.as_str())
    }
}

impl Upstream for Exchange {
    fn request(&self) -> &Request {
        Exchange::request(self)
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
    fn backend_ready(&mut self, readable: bool, writable: bool) {
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
    fn drive(&mut self, input: &mut InBuf, out: &mut Out, env: &mut Env<'_>) -> Step {
        Exchange::drive(self, input, out, env)
    }
    fn cancel(&mut self, env: &mut Env<'_>) {
        Exchange::cancel(self, env)
    }
    fn extra_params(&self) -> &[(String, String)] {
        Exchange::extra_params(self)
    }
}

impl Upstream for CgiRun {
    fn request(&self) -> &Request {
        CgiRun::request(self)
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
    fn backend_ready(&mut self, readable: bool, writable: bool) {
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
    fn drive(&mut self, input: &mut InBuf, out: &mut Out, env: &mut Env<'_>) -> Step {
        CgiRun::drive(self, input, out, env)
    }
    fn cancel(&mut self, env: &mut Env<'_>) {
        CgiRun::cancel(self, env)
    }
    fn extra_params(&self) -> &[(String, String)] {
        CgiRun::extra_params(self)
    }
}
