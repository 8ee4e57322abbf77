//! Admission of a request routed to a FastCGI backend, and the CGI facts of one admitted:
//! what is checked and gathered before an exchange starts.

use super::dispatch::FcgiExtra;
use super::fcgi::{Facts, RequestBody};
use super::peer::Peer;
use crate::config::{Config, Limits};
use crate::fastcgi::rules::Target;
use crate::http::request::{BodyFraming, Method, Request};
use crate::static_files::open::Lookup;
use crate::static_files::Site;
use std::io::Write;

/// Why a request is refused before it reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The script does not exist under the root (`check_local`): 404.
    NoScript,
    /// POST, PUT or PATCH without a body length: 411.
    LengthRequired,
    /// A Content-Length over `limits.body_bytes`: 413.
    TooLarge,
}

impl Refusal {
    /// The status that answers it.
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoScript => 404,
            Refusal::LengthRequired => 411,
            Refusal::TooLarge => 413,
        }
    }
}

/// Checks `req` for backend target `t`; the body as the exchange will read it.
pub fn admit(
    req: &Request,
    t: &Target,
    site: &Site,
    limits: &Limits,
) -> Result<RequestBody, Refusal> {
    if t.check_local && !matches!(site.root.lookup(&t.script_name, &[]), Lookup::File(..)) {
        return Err(Refusal::NoScript);
    }
    match req.body {
        BodyFraming::None => {
            let needs_length = matches!(req.method, Method::Post | Method::Put | Method::Patch)
                && req.header("content-length").is_none();
            if needs_length {
                return Err(Refusal::LengthRequired);
            }
            Ok(RequestBody::None)
        }
        BodyFraming::Length(n) if n > limits.body_bytes => Err(Refusal::TooLarge),
        BodyFraming::Length(n) => Ok(RequestBody::Length(n)),
        BodyFraming::Chunked => Ok(RequestBody::Chunked {
            limit: limits.body_bytes,
        }),
    }
}

/// The CGI facts of an admitted request: SCRIPT_* from the target (or the decision), the
/// addresses of both ends, and what a route decision adds.
pub fn facts(
    req: Request,
    t: Target,
    extra: FcgiExtra,
    config: &Config,
    server_addr: (String, u16),
    peer: &Peer,
) -> Facts {
    let script_filename = extra.script_filename.unwrap_or_else(|| {
        config
            .root
            .join(t.script_name.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned()
    });
    let mut extra_headers = Vec::new();
    for (name, value) in &extra.headers {
        let _ = write!(extra_headers, "{name}: {value}\r\n");
    }
    Facts {
        script_name: t.script_name,
        path_info: t.path_info,
        script_filename,
        document_root: config.root.to_string_lossy().into_owned(),
        server_addr,
        remote: (peer.ip.to_string(), peer.port),
        server_software: config.server_name.clone(),
        extra: extra.params,
        extra_headers,
        compress: super::fcgi_compress::offer(&req, config.static_opts.compress.as_ref()),
        https: false,
        site_headers: Vec::new(),
        req,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match crate::http::request::parse(text.as_bytes(), 8192) {
            Ok(Some(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_come_before_any_backend_in_order_404_411_413() {
        let root = std::env::temp_dir();
        let config = crate::config::load_source_for_tests(&format!(
            "server {{ listen = \"127.0.0.1:0\", root = \"{}\", error_log = \"stderr\", limits = {{ body_bytes = 10 }} }}",
            root.display()
        ));
        let site = Site::new(&config).unwrap();
        let target = |check_local| Target {
            backend: 0,
            script_name: "/no-such-script-here.php".into(),
            path_info: None,
            check_local,
        };
        let limits = &config.limits;
        let post = req("POST /x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            admit(&post, &target(true), &site, limits),
            Err(Refusal::NoScript)
        );
        assert_eq!(
            admit(&post, &target(false), &site, limits),
            Err(Refusal::LengthRequired)
        );
        let big = req("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n");
        assert_eq!(
            admit(&big, &target(false), &site, limits).map_err(Refusal::status),
            Err(413)
        );
        let chunked = req("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(
            admit(&chunked, &target(false), &site, limits),
            Ok(RequestBody::Chunked { limit: 10 })
        ));
        let get = req("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(matches!(
            admit(&get, &target(false), &site, limits),
            Ok(RequestBody::None)
        ));
    }
}
