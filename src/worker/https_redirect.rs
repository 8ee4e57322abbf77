//! `{ "*:80", redirect_to_https = true }`: every request on that listener is answered `301`
//! to the same host and target on https, as nginx's `return 301 https://$host$request_uri`.

use crate::config::{Config, ListenKind};
use crate::http::request::Request;
use crate::reply::Reply;

/// The port to redirect to: the first TLS listener's, as bound (so port 0 in tests works).
pub fn port(config: &Config, listener_names: &[String]) -> u16 {
    (0..config.listen.len())
        .find(|i| config.tls.kind(*i) == ListenKind::Tls)
        .and_then(|i| listener_names.get(i))
        .and_then(|name| name.parse::<std::net::SocketAddr>().ok())
        .map_or(443, |a| a.port())
}

/// The redirect for `req` (400 without a host to redirect to, as HTTP/1.0 without Host).
pub fn reply(req: &Request, port: u16) -> Reply {
    let Some(host) = &req.host else {
        return Reply::error(400);
    };
    let mut location = format!("https://{host}");
    if port != 443 {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&req.raw_path);
    if let Some(q) = &req.query {
        location.push('?');
        location.push_str(q);
    }
    let mut reply = Reply::error(301);
    reply.header("Location", &location);
    reply
}

#[cfg(test)]
mod tests {
    use super::reply;
    use crate::http::request::parse;

    #[test]
    fn redirects_keep_host_path_and_query_and_drop_the_port_443() {
        let req = parse(
            b"GET /a%20b?x=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n",
            8192,
        )
        .unwrap()
        .unwrap();
        let r = reply(&req, 443);
        assert_eq!(r.status, 301);
        let h = String::from_utf8_lossy(&r.headers).into_owned();
        assert!(
            h.contains("Location: https://example.com/a%20b?x=1\r\n"),
            "{h}"
        );
        let r = reply(&req, 8443);
        let h = String::from_utf8_lossy(&r.headers).into_owned();
        assert!(
            h.contains("Location: https://example.com:8443/a%20b?x=1\r\n"),
            "{h}"
        );
        let req10 = parse(b"GET / HTTP/1.0\r\n\r\n", 8192).unwrap().unwrap();
        assert_eq!(reply(&req10, 443).status, 400);
    }
}
