//! What a connection needs of the handler producing a response from a backend: a FastCGI
//! exchange (`fcgi.rs`) or an HTTP proxy exchange (`proxy.rs`). The connection drives either
//! through this trait and never reaches into their fields.

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
    /// Records readiness of the backend socket.
    fn backend_ready(&mut self, readable: bool, writable: bool);
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
}

impl Exchanging for Exchange {
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
    fn drive(&mut self, input: &mut InBuf, out: &mut Out, _: &Stream, env: &mut Env<'_>) -> Step {
        Exchange::drive(self, input, out, env)
    }
    fn cancel(&mut self, env: &mut Env<'_>) {
        Exchange::cancel(self, env)
    }
}
