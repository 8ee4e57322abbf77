//! FastCGI with the real php-cgi, spawned by luahttpd. Skipped (loudly) where php-cgi is not
//! installed; CI installs it.

mod common;
mod fcgi_common;

use common::TempDir;
use fcgi_common::*;

const PHP_CGI: &str = "/usr/bin/php-cgi";

fn have_php() -> bool {
    if std::path::Path::new(PHP_CGI).exists() {
        return true;
    }
    eprintln!("SKIPPED: php-cgi not installed (CI installs it)");
    false
}

const ENV_PHP: &[u8] = br#"<?php
header('Content-Type: text/plain');
foreach (['SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'REQUEST_METHOD', 'REQUEST_URI',
          'SCRIPT_FILENAME', 'CONTENT_LENGTH'] as $k) {
    echo $k, '=', isset($_SERVER[$k]) ? $_SERVER[$k] : '(unset)', "\n";
}
ksort($_GET);
foreach ($_GET as $k => $v) {
    echo 'GET[', $k, ']=', $v, "\n";
}
"#;

const SHA_PHP: &[u8] = br#"<?php
header('Content-Type: text/plain');
$body = file_get_contents('php://input');
echo 'sha256=', hash('sha256', $body), "\n", 'length=', strlen($body), "\n";
"#;

const PID_PHP: &[u8] = br#"<?php
echo getmypid(), "\n";
"#;

/// A server with php-cgi spawned as backend "php" for `.php`, scripts in www.
fn start_php(procs: u32, env: &str) -> Fcgi {
    let dir = TempDir::new("php");
    dir.write("www/env.php", ENV_PHP);
    dir.write("www/sha.php", SHA_PHP);
    dir.write("www/pid.php", PID_PHP);
    let config = format!(
        "server {{ listen = \"127.0.0.1:0\", workers = 1, root = \"www\", error_log = \"stderr\" }}\n\
         fastcgi \"php\" {{ spawn = \"{PHP_CGI} -d post_max_size=64M -d memory_limit=256M\", \
         procs = {procs}, socket = \"unix:{}/php.sock\", extensions = {{ \".php\" }}, \
         env = {{ {env} }} }}\n",
        dir.path().display()
    );
    Fcgi::start_in(dir, &config)
}

fn sha_answer(body: &[u8]) -> String {
    format!("sha256={}\nlength={}\n", sha256_hex(body), body.len())
}

#[test]
fn php_sees_the_request() {
    if !have_php() {
        return;
    }
    let f = start_php(1, "PHP_FCGI_CHILDREN = 0");
    let r = f.get("/env.php/foo/bar?a=1&b=two%20words");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), f.server.log_text());
    let root = f.root.display();
    assert_eq!(
        r.text(),
        format!(
            "SCRIPT_NAME=/env.php\nPATH_INFO=/foo/bar\nQUERY_STRING=a=1&b=two%20words\n\
             REQUEST_METHOD=GET\nREQUEST_URI=/env.php/foo/bar?a=1&b=two%20words\n\
             SCRIPT_FILENAME={root}/env.php\nCONTENT_LENGTH=(unset)\n\
             GET[a]=1\nGET[b]=two words\n"
        )
    );
    assert_eq!(r.header("content-type"), Some("text/plain;charset=UTF-8"));
}

#[test]
fn php_hashes_a_10_mib_post() {
    if !have_php() {
        return;
    }
    let f = start_php(1, "PHP_FCGI_CHILDREN = 0");
    let body = body_bytes(10 << 20);
    let mut c = Conn::connect(f.addr());
    let head = format!(
        "POST /sha.php HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes());
    c.send(&body);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), sha_answer(&body));
}

#[test]
fn php_hashes_a_chunked_post() {
    if !have_php() {
        return;
    }
    let f = start_php(1, "PHP_FCGI_CHILDREN = 0");
    let body = body_bytes(10 << 20);
    let mut c = Conn::connect(f.addr());
    c.send(
        b"POST /sha.php HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    );
    c.send(&chunked(&body, &[8192, 1, 65536, 333, 1 << 20]));
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), sha_answer(&body));
}

#[test]
fn php_max_requests_respawn_loses_nothing() {
    if !have_php() {
        return;
    }
    let f = start_php(2, "PHP_FCGI_CHILDREN = 0, PHP_FCGI_MAX_REQUESTS = 5");
    let mut kept: Option<Conn> = None;
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..100 {
        let target = format!("/pid.php?i={i}");
        let r = if i % 2 == 0 {
            f.get(&target)
        } else {
            let c = kept.get_or_insert_with(|| Conn::connect(f.addr()));
            c.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
            c.response(false)
        };
        assert_eq!(
            r.status,
            200,
            "request {i}: {}\nserver log:\n{}",
            r.text(),
            f.server.log_text()
        );
        pids.insert(r.text());
    }
    assert!(pids.len() >= 20, "5 requests per php-cgi: {pids:?}");
}

#[test]
fn php_max_requests_respawn_loses_no_post() {
    if !have_php() {
        return;
    }
    // A POST cannot be retried once written: the server must not write it on a connection
    // whose php-cgi has served its last request (END_REQUEST, then exit).
    let f = start_php(2, "PHP_FCGI_CHILDREN = 0, PHP_FCGI_MAX_REQUESTS = 5");
    let mut c = Conn::connect(f.addr());
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..100 {
        c.send(
            format!("POST /pid.php?i={i} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        let r = c.response(false);
        assert_eq!(
            r.status,
            200,
            "POST {i}: {}\nserver log:\n{}",
            r.text(),
            f.server.log_text()
        );
        pids.insert(r.text());
    }
    assert!(pids.len() >= 20, "5 requests per php-cgi: {pids:?}");
}

#[test]
fn slow_uploaders_do_not_hold_the_php_processes() {
    if !have_php() {
        return;
    }
    let f = start_php(2, "PHP_FCGI_CHILDREN = 0");
    // Four uploads whose last byte is held back: with streaming they would hold both php-cgi
    // processes (and every other PHP request would wait for read_timeout, then get 504).
    let body = body_bytes(100 * 1024);
    let mut slow: Vec<Conn> = (0..4)
        .map(|_| {
            let mut c = Conn::connect(f.addr());
            let mut req = format!(
                "POST /sha.php HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(&body[..body.len() - 1]);
            c.send(&req);
            c
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let r = f.get("/pid.php");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), f.server.log_text());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
    for c in &mut slow {
        c.send(&body[body.len() - 1..]);
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), sha_answer(&body));
    }
}
