//! `req:body` before FastCGI (issue 13): a body the route read still reaches the backend whole,
//! Content-Length or chunked, and the route can refuse on what it read.

mod common;
mod fcgi_common;

use fcgi_common::{config_text, sha256_hex, site_dir, Conn, Fcgi, Opts};

const ROUTE: &str = r#"
route(function(req)
  if req.path:find("%.php$") then
    local b = req:body()
    if b and b:find("forbidden") then return deny(403) end
  end
end)
"#;

fn start() -> Fcgi {
    let dir = site_dir();
    let mut config = config_text(dir.path(), &Opts::default());
    config.push_str(ROUTE);
    Fcgi::start_in(dir, &config)
}

fn sha_answer(body: &[u8]) -> String {
    format!("sha256={}\nlength={}\n", sha256_hex(body), body.len())
}

#[test]
fn a_body_read_by_the_route_still_reaches_the_backend() {
    let f = start();
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = Conn::connect(f.addr());
    c.send(
        format!(
            "POST /t.php?mode=sha256 HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), sha_answer(&body));

    // Chunked: read by the route, then spooled for the backend as usual.
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), sha_answer(b"hello world"));

    // The route refuses on the body's content: the backend never sees it.
    let before = f.backend_requests().len();
    let mut c = Conn::connect(f.addr());
    c.send(b"POST /t.php?mode=sha256 HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nforbidden");
    assert_eq!(c.response(false).status, 403);
    assert_eq!(f.backend_requests().len(), before);
}
