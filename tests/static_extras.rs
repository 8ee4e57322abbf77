//! Static-file extras: error pages with the original status, headers and expiry per path rule,
//! directory listings (escaping, sorting, JSON, dotfiles, nothing outside the root).

mod common;
mod fcgi_common;

use common::{raw, Response, Server, TempDir};

fn get(s: &Server, path: &str, extra: &str) -> Response {
    raw(
        &s.addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
}

#[test]
fn error_pages_keep_the_original_status() {
    let s = Server::start(
        r#"error_pages = { [404] = "/errors/404.html", [403] = "/errors/missing.html",
           [405] = "/errors/405.txt" }, dotfiles = "deny""#,
        &[
            ("errors/404.html", b"<h1>custom not found</h1>\n"),
            ("errors/405.txt", b"no such method here\n"),
            ("dir/x", b"x"),
            ("a.txt", b"a"),
        ],
    );
    let r = get(&s, "/nope.html", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "<h1>custom not found</h1>\n");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    // A denied dotfile is a 404 too, and gets the same page.
    let r = get(&s, "/.git/config", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "<h1>custom not found</h1>\n");
    // The page for 403 is missing: the built-in page, still 403.
    let r = get(&s, "/dir/", "");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("403"), "{}", r.text());
    // Other headers of the error (Allow) stay.
    let r = raw(
        &s.addr,
        b"DELETE /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.text(), "no such method here\n");
    assert!(r.header("allow").is_some());
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    // The error page itself is served normally when asked for.
    assert_eq!(get(&s, "/errors/404.html", "").status, 200);
    // HEAD of a missing file: the status and the page's length, no body.
    let mut c = s.connect();
    c.send(b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = c.response(true);
    assert_eq!(h.status, 404);
    assert_eq!(h.header("content-length"), Some("26"));
}

#[test]
fn headers_and_expires_per_prefix_and_suffix() {
    let s = Server::start(
        r#"headers = { ["/"] = { ["X-Frame-Options"] = "DENY" },
                       ["/static/"] = { ["X-Static"] = "yes", ["Link"] = { "<a>", "<b>" } } },
           expires = { [".css"] = "30d", ["/static/"] = "1h" }"#,
        &[
            ("static/app.css", b"a{}"),
            ("static/app.js", b"x"),
            ("index.html", b"home"),
        ],
    );
    let css = get(&s, "/static/app.css", "");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("cache-control"), Some("max-age=2592000"));
    assert!(css.header("expires").unwrap().ends_with(" GMT"));
    assert_eq!(css.header("x-static"), Some("yes"));
    assert_eq!(css.header("x-frame-options"), Some("DENY"));
    let links: Vec<_> = css
        .header_list
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("link"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(links, ["<a>", "<b>"]);
    let js = get(&s, "/static/app.js", "");
    assert_eq!(js.header("cache-control"), Some("max-age=3600"));
    let home = get(&s, "/", "");
    assert_eq!(home.header("cache-control"), None);
    assert_eq!(home.header("x-frame-options"), Some("DENY"));
    assert_eq!(home.header("x-static"), None);
    // Errors get neither.
    let miss = get(&s, "/static/nope.css", "");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("cache-control"), None);
    assert_eq!(miss.header("x-static"), None);
    // A 304 carries them (the cache refreshes its lifetime).
    let etag = css.header("etag").unwrap();
    let nm = get(&s, "/static/app.css", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(nm.status, 304);
    assert_eq!(nm.header("cache-control"), Some("max-age=2592000"));
}

#[test]
fn listing_is_opt_in() {
    let s = Server::start("", &[("pub/a.txt", b"a")]);
    assert_eq!(get(&s, "/pub/", "").status, 403);
}

#[test]
fn listing_escapes_hostile_names_and_sorts() {
    let dir = TempDir::new("list");
    dir.write("www/pub/b.txt", b"bbbb");
    dir.write("www/pub/a.txt", b"a");
    dir.write(
        "www/pub/<script>alert(1)<\x2fscript>"
            .replace("<\x2f", "&")
            .as_str(),
        b"x",
    );
    dir.write("www/pub/\"onmouseover=alert(1) x.html", b"x");
    dir.write("www/pub/zdir/inner", b"i");
    dir.write("www/pub/.hidden", b"h");
    dir.write("www/secret.txt", b"s");
    std::os::unix::fs::symlink("../secret.txt", dir.path().join("www/pub/inside-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("www/pub/outside-link")).unwrap();
    let config = format!(
        "server {{ {}, dir_listing = {{ \"/pub/\" }} }}\n",
        common::BASE
    );
    let s = Server::start_config(dir, &config);
    let r = get(&s, "/pub/", "");
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&amp;script&gt;"),
        "{html}"
    );
    assert!(!html.contains("\"onmouseover"), "{html}");
    assert!(html.contains("&quot;onmouseover=alert(1) x.html"), "{html}");
    assert!(
        html.contains("href=\"%22onmouseover%3Dalert%281%29%20x.html\""),
        "{html}"
    );
    // Folders first, then names in order; sizes shown.
    let zdir = html.find("zdir/").unwrap();
    let a = html.find(">a.txt<").unwrap();
    let b = html.find(">b.txt<").unwrap();
    assert!(zdir < a && a < b, "{html}");
    assert!(html.contains("<td>4</td>"), "{html}");
    assert!(html.contains("GMT"), "{html}");
    // No dotfiles unless asked; a link inside the root is listed, one leading out is not.
    assert!(!html.contains(".hidden"), "{html}");
    assert!(html.contains("inside-link"), "{html}");
    assert!(!html.contains("outside-link"), "{html}");
    // JSON.
    let j = get(&s, "/pub/?format=json", "");
    assert_eq!(j.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&j.body).unwrap();
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "zdir");
    assert!(names.contains(&"<script>alert(1)&script>"), "{names:?}");
    assert!(!names.contains(&".hidden"));
    let b_entry = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "b.txt")
        .unwrap();
    assert_eq!(b_entry["size"], 4);
    assert_eq!(b_entry["type"], "file");
    // Outside the listed prefix: still forbidden.
    assert_eq!(get(&s, "/", "").status, 403);
    // Subfolders of the prefix are listed too.
    assert!(get(&s, "/pub/zdir/", "").text().contains("inner"));
}

#[test]
fn listing_shows_dotfiles_only_when_asked_and_allowed() {
    let files: &[(&str, &[u8])] = &[("d/.env", b"x"), ("d/v", b"v")];
    let s = Server::start("dir_listing = { dotfiles = true }", files);
    let html = get(&s, "/d/", "").text();
    assert!(html.contains(".env"), "{html}");
    drop(s);
    let s = Server::start(
        "dir_listing = { dotfiles = true }, dotfiles = \"deny\"",
        files,
    );
    let html = get(&s, "/d/", "").text();
    assert!(!html.contains(".env"), "{html}");
    assert!(html.contains(">v<"), "{html}");
    // dir_listing = true lists the root itself.
    drop(s);
    let s = Server::start("dir_listing = true", files);
    let html = get(&s, "/", "").text();
    assert!(html.contains("d/"), "{html}");
}

#[test]
fn error_pages_cover_backend_failures_too() {
    let dir = fcgi_common::site_dir();
    dir.write("www/errors/50x.html", b"<h1>we are on it</h1>\n");
    let config = fcgi_common::config_text(
        dir.path(),
        &fcgi_common::Opts {
            server_extra: "error_pages = { [502] = \"/errors/50x.html\" }",
            ..Default::default()
        },
    );
    let f = fcgi_common::Fcgi::start_in(dir, &config);
    let r = f.get("/t.php?mode=badstatus");
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "<h1>we are on it</h1>\n");
    // A backend's own error status and body are its own.
    let r = f.get("/t.php?mode=status&code=502");
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "status 502\n");
}

#[test]
fn error_pages_leave_a_route_s_own_body_alone() {
    let dir = TempDir::new("routeerr");
    dir.write("www/errors/404.html", b"custom 404\n");
    let config = format!(
        "server {{ {}, error_pages = {{ [404] = \"/errors/404.html\", [403] = \"/errors/404.html\" }} }}\n\
         route(function(req)\n\
           if req.path == \"/own\" then return respond(404, \"route's own\") end\n\
           if req.path == \"/deny\" then return deny(403) end\n\
         end)\n",
        common::BASE
    );
    let s = Server::start_config(dir, &config);
    let r = get(&s, "/own", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "route's own");
    let r = get(&s, "/deny", "");
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "custom 404\n");
    let r = get(&s, "/missing", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "custom 404\n");
}

#[test]
fn listings_are_compressed_like_files() {
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("pub/file-number-{i:03}.txt"), b"x".to_vec()))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let s = Server::start("dir_listing = true, compress = true", &refs);
    let plain = get(&s, "/pub/", "");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let g = get(&s, "/pub/", "Accept-Encoding: gzip\r\n");
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-encoding"), Some("gzip"));
    let mut html = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&g.body[..]), &mut html)
        .unwrap();
    assert_eq!(html.as_bytes(), plain.body.as_slice());
    assert!(html.contains("file-number-039.txt"));
}
