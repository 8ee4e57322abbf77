//! Where the worker runs the config's `respond_hook` (script::respond_hook): on a queued reply
//! (static files, in-memory replies, redirects, refusals, errors) and on a FastCGI response
//! head, just before the head is written.

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
        scheme: "http",
    });
    let _armed = arm(router);
    router.respond_hook(
        rr.as_ref(),
        reply.status,
        &mut reply.headers,
        &mut reply.overrides,
    );
}

/// Runs the hook on a backend's response head: the header lines to send, and the lines that
/// replace them (a route decision's). None when there is no hook: send them as they are.
pub(super) fn on_backend_head(
    router: Option<&mut Router>,
    req: &Request,
    remote: &(String, u16),
    server_addr: &(String, u16),
    status: u16,
    headers: &[u8],
    overrides: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    let router = router.filter(|r| r.has_respond_hook())?;
    let listener = format!("{}:{}", server_addr.0, server_addr.1);
    let rr = RouteRequest {
        req,
        remote_addr: &remote.0,
        remote_port: remote.1,
        listener: &listener,
        scheme: "http",
    };
    let (mut h, mut o) = (headers.to_vec(), overrides.to_vec());
    let _armed = arm(router);
    router.respond_hook(Some(&rr), status, &mut h, &mut o);
    Some((h, o))
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
