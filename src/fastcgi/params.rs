//! The CGI environment of a request (RFC 3875 §4.1, plus what PHP expects), encoded as FastCGI
//! PARAMS records.
//!
//! Two safety rules shape it: no `HTTP_PROXY` is ever sent (httpoxy: CGI libraries read it as
//! the outgoing proxy), and two different header names that map to the same `HTTP_*` variable
//! (`X-Foo` and `X_Foo`) are refused rather than letting one silently shadow the other, since a
//! front proxy may have checked the one the application does not see.

use thiserror::Error;

use super::record::{self, Pairs};
use crate::http::request::Request;

/// What [`build`] needs besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct ParamsInput<'a> {
    /// The parsed request.
    pub req: &'a Request,
    /// SCRIPT_NAME: the URL path of the script.
    pub script_name: &'a str,
    /// PATH_INFO: the URL path after the script, if any.
    pub path_info: Option<&'a str>,
    /// SCRIPT_FILENAME: the script's file system path.
    pub script_filename: &'a str,
    /// DOCUMENT_ROOT.
    pub document_root: &'a str,
    /// SERVER_NAME: the request's host, or the first listen address.
    pub server_name: &'a str,
    /// SERVER_ADDR: the local address the connection came in on.
    pub server_addr: &'a str,
    /// SERVER_PORT.
    pub server_port: u16,
    /// REMOTE_ADDR.
    pub remote_addr: &'a str,
    /// REMOTE_PORT.
    pub remote_port: u16,
    /// Whether the connection is TLS (HTTPS=on, REQUEST_SCHEME=https).
    pub https: bool,
    /// The decoded body length, or None when the request has no body.
    pub content_length: Option<u64>,
    /// SERVER_SOFTWARE.
    pub server_software: &'a str,
    /// Extra params from the configuration; they replace standard params of the same name.
    pub extra: &'a [(String, String)],
}

/// Why params could not be built. Both are answered with 400 (or 500 when it is the config's).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamsError {
    /// Two different header names map to the same `HTTP_*` param.
    #[error("header names {0} and {1} map to the same CGI variable")]
    Ambiguous(String, String),
    /// A CR, LF or NUL in a param name or value (they would break CGI environments).
    #[error("CR, LF or NUL in CGI variable {0}")]
    BadByte(String),
    /// A name or value too long for FastCGI.
    #[error("CGI variable too long")]
    TooLong,
}

/// Appends the PARAMS records (ending with the empty one) for request `id` to `out`.
///
/// On error nothing is appended.
pub fn build(input: &ParamsInput, out: &mut Vec<u8>, id: u16) -> Result<(), ParamsError> {
    let list = collect(input)?;
    for (name, value) in &list {
        if name
            .iter()
            .chain(value)
            .any(|&b| matches!(b, b'\r' | b'\n' | 0))
        {
            return Err(ParamsError::BadByte(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
    }
    record::params(
        out,
        id,
        list.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
    )
    .map_err(|_| ParamsError::TooLong)
}

/// The params as (name, value) pairs, checked as [`build`] checks them: the environment of a
/// CGI process (src/cgi/) is exactly these.
pub fn pairs(input: &ParamsInput) -> Result<Pairs, ParamsError> {
    let list = collect(input)?;
    if let Some((name, _)) = list
        .iter()
        .find(|(n, v)| n.iter().chain(v).any(|&b| matches!(b, b'\r' | b'\n' | 0)))
    {
        return Err(ParamsError::BadByte(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    Ok(list)
}

/// One HTTP_* param being gathered: the header name that produced it and the joined value.
struct HttpVar<'r> {
    var: Vec<u8>,
    header: &'r [u8],
    value: Vec<u8>,
}

/// Every param as (name, value), standard ones first, extra ones replacing or appended.
fn collect(input: &ParamsInput) -> Result<Pairs, ParamsError> {
    let req = input.req;
    let mut list: Pairs = Vec::with_capacity(32);
    let mut set = |name: &str, value: &[u8]| list.push((name.as_bytes().to_vec(), value.to_vec()));

    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set("SERVER_SOFTWARE", input.server_software.as_bytes());
    set("SERVER_NAME", input.server_name.as_bytes());
    set("SERVER_ADDR", input.server_addr.as_bytes());
    set("SERVER_PORT", input.server_port.to_string().as_bytes());
    set("SERVER_PROTOCOL", req.version.as_str().as_bytes());
    set("REQUEST_METHOD", req.method.as_str().as_bytes());
    set("REQUEST_URI", request_uri(req).as_bytes());
    set(
        "QUERY_STRING",
        req.query.as_deref().unwrap_or("").as_bytes(),
    );
    set("SCRIPT_NAME", input.script_name.as_bytes());
    set("SCRIPT_FILENAME", input.script_filename.as_bytes());
    if let Some(pi) = input.path_info.filter(|p| !p.is_empty()) {
        set("PATH_INFO", pi.as_bytes());
        // Join without doubling the slash between a root ending in '/' and PATH_INFO.
        let root = input
            .document_root
            .strip_suffix('/')
            .unwrap_or(input.document_root);
        let sep = if pi.starts_with('/') { "" } else { "/" };
        set("PATH_TRANSLATED", format!("{root}{sep}{pi}").as_bytes());
    }
    set("DOCUMENT_ROOT", input.document_root.as_bytes());
    set("REMOTE_ADDR", input.remote_addr.as_bytes());
    set("REMOTE_PORT", input.remote_port.to_string().as_bytes());
    if let Some(ct) = req.header("content-type") {
        set("CONTENT_TYPE", ct);
    }
    if let Some(len) = input.content_length {
        set("CONTENT_LENGTH", len.to_string().as_bytes());
    }
    // PHP built with force-cgi-redirect refuses to run without it.
    set("REDIRECT_STATUS", b"200");
    set(
        "REQUEST_SCHEME",
        if input.https { b"https" } else { b"http" },
    );
    if input.https {
        set("HTTPS", b"on");
    }

    for v in http_vars(req)? {
        list.push((v.var, v.value));
    }

    for (name, value) in input.extra {
        let (name, value) = (name.as_bytes(), value.as_bytes());
        match list.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_vec(),
            None => list.push((name.to_vec(), value.to_vec())),
        }
    }
    Ok(list)
}

/// REQUEST_URI: the target as received. An absolute-form target is reduced to its path and
/// query, because applications (PHP routers) expect REQUEST_URI to start with '/'.
fn request_uri(req: &Request) -> String {
    if req.target.starts_with('/') || req.is_asterisk_form() {
        return req.target.to_string();
    }
    match &req.query {
        Some(q) => format!("{}?{}", req.raw_path, q),
        None => req.raw_path.to_string(),
    }
}

/// The HTTP_* params, in the order their headers first appear.
fn http_vars(req: &Request) -> Result<Vec<HttpVar<'_>>, ParamsError> {
    let mut vars: Vec<HttpVar<'_>> = Vec::new();
    for (name, value) in req.headers() {
        // Content-Type and Content-Length have their own variables; Proxy is httpoxy; the
        // body reaches the backend decoded, so the client's Transfer-Encoding would mislead.
        if name.eq_ignore_ascii_case(b"content-type")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"proxy")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            continue;
        }
        let mut var = b"HTTP_".to_vec();
        var.extend(name.iter().map(|&b| match b {
            b'-' => b'_',
            b => b.to_ascii_uppercase(),
        }));
        match vars.iter_mut().find(|v| v.var == var) {
            Some(v) if v.header.eq_ignore_ascii_case(name) => {
                let sep: &[u8] = if var == b"HTTP_COOKIE" { b"; " } else { b", " };
                v.value.extend_from_slice(sep);
                v.value.extend_from_slice(value);
            }
            Some(v) => {
                return Err(ParamsError::Ambiguous(
                    String::from_utf8_lossy(v.header).into_owned(),
                    String::from_utf8_lossy(name).into_owned(),
                ))
            }
            None => vars.push(HttpVar {
                var,
                header: name,
                value: value.to_vec(),
            }),
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record::{decode_params, Header, PARAMS};
    use std::collections::HashMap;

    fn req(head: &str) -> Request {
        crate::http::request::parse(head.as_bytes(), 8192)
            .unwrap()
            .unwrap()
    }

    fn input<'a>(r: &'a Request, extra: &'a [(String, String)]) -> ParamsInput<'a> {
        ParamsInput {
            req: r,
            script_name: "/x.php",
            path_info: Some("/a/b"),
            script_filename: "/srv/www/x.php",
            document_root: "/srv/www/",
            server_name: "h",
            server_addr: "127.0.0.1",
            server_port: 8080,
            remote_addr: "10.0.0.2",
            remote_port: 51234,
            https: false,
            content_length: None,
            server_software: "luahttpd/0.1",
            extra,
        }
    }

    /// Builds and decodes back into (ordered list, map).
    type Decoded = (Vec<(String, String)>, HashMap<String, String>);

    fn run(inp: &ParamsInput) -> Result<Decoded, ParamsError> {
        let mut out = Vec::new();
        build(inp, &mut out, 3)?;
        let mut content = Vec::new();
        let mut v = &out[..];
        let mut last_len = None;
        while !v.is_empty() {
            let h = Header::parse(v[..8].try_into().unwrap());
            assert_eq!((h.rtype, h.id), (PARAMS, 3));
            let c = h.content_len as usize;
            content.extend_from_slice(&v[8..8 + c]);
            v = &v[8 + c..];
            last_len = Some(c);
        }
        assert_eq!(last_len, Some(0));
        let list: Vec<(String, String)> = decode_params(&content)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        let map = list.iter().cloned().collect();
        Ok((list, map))
    }

    #[test]
    fn standard_params() {
        let r = req("GET /x.php/a/b?q=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nX-Multi: a\r\nx-multi: b\r\nCookie: a=1\r\nCookie: b=2\r\nAccept-Language: en\r\n\r\n");
        let (list, m) = run(&input(&r, &[])).unwrap();
        let want = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "luahttpd/0.1"),
            ("SERVER_NAME", "h"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "8080"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/x.php/a/b?q=1"),
            ("QUERY_STRING", "q=1"),
            ("SCRIPT_NAME", "/x.php"),
            ("SCRIPT_FILENAME", "/srv/www/x.php"),
            ("PATH_INFO", "/a/b"),
            ("PATH_TRANSLATED", "/srv/www/a/b"),
            ("DOCUMENT_ROOT", "/srv/www/"),
            ("REMOTE_ADDR", "10.0.0.2"),
            ("REMOTE_PORT", "51234"),
            ("REDIRECT_STATUS", "200"),
            ("REQUEST_SCHEME", "http"),
            ("HTTP_HOST", "h"),
            ("HTTP_USER_AGENT", "t"),
            ("HTTP_X_MULTI", "a, b"),
            ("HTTP_COOKIE", "a=1; b=2"),
            ("HTTP_ACCEPT_LANGUAGE", "en"),
        ];
        for (k, v) in want {
            assert_eq!(m.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(list.len(), want.len(), "{list:?}");
        for absent in ["HTTPS", "CONTENT_TYPE", "CONTENT_LENGTH"] {
            assert!(!m.contains_key(absent));
        }
    }

    #[test]
    fn body_https_no_path_info() {
        let r = req("POST /x.php HTTP/1.0\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
        let mut inp = input(&r, &[]);
        inp.https = true;
        inp.content_length = Some(5);
        inp.path_info = Some("");
        let (_, m) = run(&inp).unwrap();
        assert_eq!(m["CONTENT_TYPE"], "text/plain");
        assert_eq!(m["CONTENT_LENGTH"], "5");
        assert_eq!(m["HTTPS"], "on");
        assert_eq!(m["REQUEST_SCHEME"], "https");
        assert_eq!(m["SERVER_PROTOCOL"], "HTTP/1.0");
        assert_eq!(m["REQUEST_METHOD"], "POST");
        assert_eq!(m["QUERY_STRING"], "");
        assert!(!m.contains_key("HTTP_CONTENT_TYPE"));
        assert!(!m.contains_key("HTTP_CONTENT_LENGTH"));
        assert!(!m.contains_key("PATH_INFO"));
        assert!(!m.contains_key("PATH_TRANSLATED"));

        // Chunked body: the decoded length is what the caller passes.
        let r = req("POST /x.php HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut inp = input(&r, &[]);
        inp.content_length = Some(0);
        let (_, m) = run(&inp).unwrap();
        assert_eq!(m["CONTENT_LENGTH"], "0");
        // The body reaches the backend decoded: the framing header is not passed on.
        assert!(!m.contains_key("HTTP_TRANSFER_ENCODING"));
    }

    #[test]
    fn path_translated_join() {
        let r = req("GET /x.php HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut inp = input(&r, &[]);
        inp.document_root = "/srv/www";
        inp.path_info = Some("/p");
        assert_eq!(run(&inp).unwrap().1["PATH_TRANSLATED"], "/srv/www/p");
    }

    #[test]
    fn httpoxy() {
        let r = req("GET / HTTP/1.1\r\nHost: h\r\nProxy: http://evil/\r\nproxy: x\r\n\r\n");
        let (_, m) = run(&input(&r, &[])).unwrap();
        assert!(!m.contains_key("HTTP_PROXY"));
    }

    #[test]
    fn ambiguous_names() {
        let r = req("GET / HTTP/1.1\r\nHost: h\r\nX-Foo: 1\r\nX_Foo: 2\r\n\r\n");
        assert!(matches!(
            run(&input(&r, &[])),
            Err(ParamsError::Ambiguous(_, _))
        ));
        // Same name in different case is the same header: joined.
        let r = req("GET / HTTP/1.1\r\nHost: h\r\nX-Foo: 1\r\nx-FOO: 2\r\n\r\n");
        assert_eq!(run(&input(&r, &[])).unwrap().1["HTTP_X_FOO"], "1, 2");
    }

    #[test]
    fn bad_bytes() {
        let r = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut out = Vec::new();
        for (name, value) in [("A\nB", "v"), ("A", "v\r"), ("A", "v\0")] {
            let extra = [(name.to_string(), value.to_string())];
            assert!(matches!(
                build(&input(&r, &extra), &mut out, 1),
                Err(ParamsError::BadByte(_))
            ));
        }
        let mut inp = input(&r, &[]);
        inp.path_info = Some("/a\nb");
        assert!(matches!(
            build(&inp, &mut out, 1),
            Err(ParamsError::BadByte(_))
        ));
        inp.path_info = None;
        inp.script_filename = "/x\0.php";
        assert!(matches!(
            build(&inp, &mut out, 1),
            Err(ParamsError::BadByte(_))
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn extra_replaces_and_appends() {
        let r = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let extra = [
            ("SERVER_NAME".to_string(), "override".to_string()),
            ("APP_ENV".to_string(), "prod".to_string()),
        ];
        let (list, m) = run(&input(&r, &extra)).unwrap();
        assert_eq!(m["SERVER_NAME"], "override");
        assert_eq!(m["APP_ENV"], "prod");
        assert_eq!(list.iter().filter(|(n, _)| n == "SERVER_NAME").count(), 1);
    }

    #[test]
    fn absolute_form_request_uri() {
        let r = req("GET http://h/p?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(run(&input(&r, &[])).unwrap().1["REQUEST_URI"], "/p?x=1");
        let r = req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(run(&input(&r, &[])).unwrap().1["REQUEST_URI"], "*");
    }
}
