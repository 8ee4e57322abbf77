//! Where the worker runs the config's `respond_hook` (script::respond_hook): on a queued reply
//! (static files, in-memory replies, redirects, refusals, errors) and on a backend's response
//! head (FastCGI, CGI, proxy), just before the head is written. The hook's `req` names the
//! real client (`real_peer::client`) and the connection's scheme, as the route function's.

use crate::http::request::Request;
use crate::reply::Reply;
use crate::script::{RouteRequest, Router};

/// Runs the hook on a whole reply; `req` None for a head that could not be parsed.
pub(super) fn on_reply(
    router: Option<&mut Router>,
    req: Option<&Request>,
    ip: &str,
    port: u16,
    listener: &str,
    https: bool,
    reply: &mut Reply,
) {
    let Some(router) = router.filter(|r| r.has_respond_hook()) else {
        return;
    };
    let rr = req.map(|req| RouteRequest {
        req,
        remote_addr: ip,
        remote_port: port,
        listener,
        scheme: scheme(https),
    });
    let _armed = arm(router);
    router.respond_hook(
        rr.as_ref(),
        reply.status,
        &mut reply.headers,
        &mut reply.overrides,
    );
}

/// Who asked, as a backend exchange remembers it for the hook.
pub(super) struct BackendClient<'a> {
    /// The real client's address and port.
    pub remote: &'a (String, u16),
    /// The local address and port the request came in on.
    pub server_addr: &'a (String, u16),
    /// Whether the client connection is TLS.
    pub https: bool,
}

/// Runs the hook on a backend's response head: the header lines to send, and the lines that
/// replace them (a route decision's). None when there is no hook: send them as they are.
pub(super) fn on_backend_head(
    router: Option<&mut Router>,
    req: &Request,
    client: BackendClient<'_>,
    status: u16,
    headers: &[u8],
    overrides: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    let router = router.filter(|r| r.has_respond_hook())?;
    let listener = format!("{}:{}", client.server_addr.0, client.server_addr.1);
    let rr = RouteRequest {
        req,
        remote_addr: &client.remote.0,
        remote_port: client.remote.1,
        listener: &listener,
        scheme: scheme(client.https),
    };
    let (mut h, mut o) = (headers.to_vec(), overrides.to_vec());
    let _armed = arm(router);
    router.respond_hook(Some(&rr), status, &mut h, &mut o);
    Some((h, o))
}

/// `req.scheme` for a TLS or a plain connection.
fn scheme(https: bool) -> &'static str {
    if https {
        "https"
    } else {
        "http"
    }
}

/// The backstop around one hook call, as around a route call.
fn arm(router: &Router) -> impl Drop {
    super::backstop::arm(
        router
            .limits()
            .deadline
            .saturating_add(super::backstop::BOUND),
    )
}
