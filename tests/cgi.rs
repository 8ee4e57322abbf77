//! CGI against the real binary: /bin/sh scripts written by each test run as processes forked
//! by the worker. Environment and body in, a bad head, a script dying mid-body, one that
//! never ends, huge output, stderr, the concurrency limit.

mod common;

use common::{alive, find, raw, wait_for, Client, Server, TempDir, BASE};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A server with `cgi{}` over cgi-bin/ holding `scripts` (name, sh source).
fn server(cgi_extra: &str, scripts: &[(&str, &str)]) -> Server {
    let dir = TempDir::new("cgi");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    for (name, src) in scripts {
        dir.write(&format!("cgi-bin/{name}"), src.as_bytes());
    }
    let config = format!(
        "server {{ {BASE}, workers = 1 }}\n\
         cgi {{ prefix = \"/cgi-bin/\", root = \"cgi-bin\", \
         interpreters = {{ [\".sh\"] = \"/bin/sh\" }}, {cgi_extra} }}\n"
    );
    Server::start_config(dir, &config)
}

/// The body of a chunked response (sizes and the last chunk removed).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(b, b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..i]).expect("size"), 16)
            .expect("hex size");
        b = &b[i + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
    out
}

/// Reads until the server closes (or 10 s pass); everything received.
fn read_all(c: &mut std::net::TcpStream) -> Vec<u8> {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    all
}

const ENV: &str = "#!/bin/sh\n\
printf 'Content-Type: text/plain\\r\\nX-Script: env\\r\\n\\r\\n'\n\
/usr/bin/env | /usr/bin/sort\n\
echo '--body--'\n\
/bin/cat\n";

#[test]
fn environment_is_exactly_the_cgi_params_and_the_body_goes_in() {
    let s = server("", &[("env.sh", ENV)]);
    let r = raw(
        &s.addr,
        b"POST /cgi-bin/env.sh/extra/path?a=1&b=2 HTTP/1.1\r\nHost: Example.test\r\n\
          Content-Type: text/plain\r\nX-Custom: yes\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello=world",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-script"), Some("env"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let text = String::from_utf8_lossy(&dechunk(&r.body)).into_owned();
    for want in [
        "GATEWAY_INTERFACE=CGI/1.1",
        "REQUEST_METHOD=POST",
        "SCRIPT_NAME=/cgi-bin/env.sh",
        "PATH_INFO=/extra/path",
        "QUERY_STRING=a=1&b=2",
        "CONTENT_LENGTH=11",
        "CONTENT_TYPE=text/plain",
        "HTTP_X_CUSTOM=yes",
        "SERVER_PROTOCOL=HTTP/1.1",
        "REMOTE_ADDR=127.0.0.1",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want} in:\n{text}"
        );
    }
    let filename = text
        .lines()
        .find_map(|l| l.strip_prefix("SCRIPT_FILENAME="))
        .expect("SCRIPT_FILENAME");
    assert!(filename.ends_with("/cgi-bin/env.sh"), "{filename}");
    // Exactly the params: nothing of the server's own environment (PATH, HOME, …); sh adds
    // PWD itself.
    const KNOWN: &[&str] = &[
        "GATEWAY_INTERFACE",
        "SERVER_SOFTWARE",
        "SERVER_NAME",
        "SERVER_ADDR",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REQUEST_METHOD",
        "REQUEST_URI",
        "QUERY_STRING",
        "SCRIPT_NAME",
        "SCRIPT_FILENAME",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "DOCUMENT_ROOT",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "REDIRECT_STATUS",
        "REQUEST_SCHEME",
        "PWD",
    ];
    for l in text.split("--body--").next().unwrap_or("").lines() {
        let name = l.split('=').next().unwrap_or("");
        assert!(
            KNOWN.contains(&name) || name.starts_with("HTTP_"),
            "unexpected variable {l}"
        );
    }
    assert!(!text.lines().any(|l| l.starts_with("PATH=")), "{text}");
    assert!(text.ends_with("--body--\nhello=world"), "{text}");
}

#[test]
fn a_chunked_body_is_read_whole_and_given_with_its_length() {
    let s = server("", &[("env.sh", ENV)]);
    let r = raw(
        &s.addr,
        b"POST /cgi-bin/env.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&dechunk(&r.body)).into_owned();
    assert!(text.lines().any(|l| l == "CONTENT_LENGTH=11"), "{text}");
    assert!(text.ends_with("--body--\nhello world"), "{text}");
}

#[test]
fn a_bad_head_is_502_and_the_connection_serves_on() {
    let s = server(
        "",
        &[
            ("bad.sh", "echo 'this is no header line'\necho\necho body\n"),
            ("nohead.sh", "exit 0\n"),
            (
                "ok.sh",
                "printf 'Status: 201 Made\\nContent-Length: 4\\n\\nmade'\n",
            ),
        ],
    );
    let mut c = s.connect();
    c.send(b"GET /cgi-bin/bad.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response(false).status, 502);
    c.send(b"GET /cgi-bin/nohead.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response(false).status, 502);
    c.send(b"GET /cgi-bin/ok.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 201);
    assert_eq!(r.body, b"made");
    assert!(
        s.log_text().contains("bad response head"),
        "{}",
        s.log_text()
    );
}

#[test]
fn a_script_dying_mid_body_closes_the_client_connection() {
    let s = server(
        "",
        &[
            // Announces 100 bytes, sends 10, exits.
            (
                "short.sh",
                "printf 'Content-Length: 100\\n\\n0123456789'\nexit 0\n",
            ),
            // No length (chunked to the client), killed mid-body.
            (
                "killed.sh",
                "printf 'Content-Type: text/plain\\n\\npartial'\nkill -9 $$\n",
            ),
        ],
    );
    for (path, sent) in [("short.sh", &b"0123456789"[..]), ("killed.sh", b"partial")] {
        let mut c = std::net::TcpStream::connect(&s.addr).expect("connect");
        c.write_all(format!("GET /cgi-bin/{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("send");
        let all = read_all(&mut c);
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(find(&all, sent).is_some(), "{text}");
        // Closed without the end of the body: no last chunk.
        assert!(!text.ends_with("0\r\n\r\n"), "{text}");
    }
}

#[test]
fn a_script_that_never_ends_gets_504_and_is_killed() {
    let s = server(
        "timeout = 1",
        &[(
            "forever.sh",
            "echo $$ > \"$DOCUMENT_ROOT/../pid\"\nexec /bin/sleep 100\n",
        )],
    );
    let t = Instant::now();
    let r = s.get("/cgi-bin/forever.sh");
    assert_eq!(r.status, 504);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let pid: i32 = std::fs::read_to_string(s.dir.path().join("pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    wait_for(
        "the script to be killed and reaped",
        Duration::from_secs(3),
        || !alive(pid),
    );
    assert!(
        s.log_text().contains("cgi run timed out"),
        "{}",
        s.log_text()
    );
}

#[test]
fn huge_output_streams_whole() {
    let s = server(
        "",
        &[("big.sh", "printf 'Content-Type: application/octet-stream\\n\\n'\n/usr/bin/head -c 30000000 /dev/zero\n")],
    );
    let mut c = std::net::TcpStream::connect(&s.addr).expect("connect");
    c.write_all(b"GET /cgi-bin/big.sh HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("send");
    let all = read_all(&mut c);
    let head_end = find(&all, b"\r\n\r\n").expect("head") + 4;
    assert!(all.starts_with(b"HTTP/1.1 200"));
    // HTTP/1.0 without a length: close-delimited, every byte there.
    assert_eq!(all.len() - head_end, 30_000_000);
    // Chunked to a 1.1 client, ending with the last chunk.
    let mut c = Client::connect(&s.addr);
    c.send(b"GET /cgi-bin/big.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn stderr_goes_to_the_error_log() {
    let s = server(
        "",
        &[(
            "warn.sh",
            "echo 'something odd' >&2\nprintf 'Status: 200\\n\\nok'\n",
        )],
    );
    assert_eq!(s.get("/cgi-bin/warn.sh").status, 200);
    wait_for("the stderr line", Duration::from_secs(3), || {
        s.log_text()
            .contains("cgi /cgi-bin/warn.sh stderr: something odd")
    });
}

#[test]
fn missing_and_unrunnable_scripts() {
    let s = server("", &[("data.txt", "not a script\n")]);
    assert_eq!(s.get("/cgi-bin/nope.sh").status, 404);
    assert_eq!(s.get("/cgi-bin/").status, 404);
    // No interpreter for .txt and not executable.
    assert_eq!(s.get("/cgi-bin/data.txt").status, 403);
    // Outside the prefix: static files as usual.
    assert_eq!(s.get("/cgi-bin-not/x").status, 404);
}

#[test]
fn over_max_procs_is_503() {
    let s = server(
        "max_procs = 1",
        &[(
            "slow.sh",
            ": > \"$DOCUMENT_ROOT/../started\"\n/bin/sleep 2\nprintf 'Content-Length: 4\\n\\nslow'\n",
        )],
    );
    let mut first = s.connect();
    first.send(b"GET /cgi-bin/slow.sh HTTP/1.1\r\nHost: x\r\n\r\n");
    let started = s.dir.path().join("started");
    wait_for("the first script to run", Duration::from_secs(5), || {
        started.exists()
    });
    assert_eq!(s.get("/cgi-bin/slow.sh").status, 503);
    let r = first.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"slow");
}

#[test]
fn the_appliance_example_runs_its_scripts_behind_basic_auth() {
    let dir = TempDir::new("cgi-example");
    let ex = common::copy_appliance_files(&dir);
    let config = std::fs::read_to_string(format!("{ex}/appliance-cgi.lua")).expect("example");
    let s = Server::start_with(dir, &config, |cmd| {
        cmd.env("LISTEN", "127.0.0.1:0");
    });
    let r = s.get("/cgi-bin/status.sh");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Appliance\", charset=\"UTF-8\"")
    );
    // admin:admin
    let r = raw(
        &s.addr,
        b"POST /cgi-bin/status.sh?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(r.status, 200, "{}", s.log_text());
    let text = String::from_utf8_lossy(&dechunk(&r.body)).into_owned();
    assert!(text.contains("user:    admin\n"), "{text}");
    assert!(text.contains("method:  POST\n"), "{text}");
    assert!(text.contains("query:   x=1\n"), "{text}");
    assert!(text.contains("body:    hi\n"), "{text}");
    let lua = ["/usr/bin/lua5.4", "/usr/bin/lua5.3", "/usr/bin/lua"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    let r = raw(
        &s.addr,
        b"GET /cgi-bin/status.lua HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\nConnection: close\r\n\r\n",
    );
    if lua {
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&dechunk(&r.body)).contains("user:    admin"));
    } else {
        eprintln!("!!! no system Lua interpreter: status.lua is not run (403 expected)");
        assert_eq!(r.status, 403);
    }
}

#[test]
fn dotfiles_deny_keeps_hidden_scripts_from_running() {
    let dir = TempDir::new("cgi-dot");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    dir.write(
        "cgi-bin/.hidden.sh",
        b"printf 'Content-Length: 2\\n\\nno'\n",
    );
    dir.write("cgi-bin/ok.sh", b"printf 'Content-Length: 2\\n\\nok'\n");
    let config = format!(
        "server {{ {BASE}, workers = 1, dotfiles = \"deny\" }}\n\
         cgi {{ root = \"cgi-bin\", interpreters = {{ [\".sh\"] = \"/bin/sh\" }} }}\n"
    );
    let s = Server::start_config(dir, &config);
    assert_eq!(s.get("/cgi-bin/.hidden.sh").status, 404);
    let r = s.get("/cgi-bin/ok.sh");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
}

/// A server with `compress = true` and the scripts of `server`.
fn compressing_server(scripts: &[(&str, &str)]) -> Server {
    let dir = TempDir::new("cgi-gz");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    for (name, src) in scripts {
        dir.write(&format!("cgi-bin/{name}"), src.as_bytes());
    }
    let config = format!(
        "server {{ {BASE}, workers = 1, compress = true }}\n\
         cgi {{ root = \"cgi-bin\", interpreters = {{ [\".sh\"] = \"/bin/sh\" }} }}\n"
    );
    Server::start_config(dir, &config)
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

const TEXT: &str = "#!/bin/sh\n\
printf 'Content-Type: text/plain\\r\\nETag: \"t1\"\\r\\n\\r\\n'\n\
i=0\nwhile [ $i -lt 3000 ]; do echo \"line $i of the script's output\"; i=$((i+1)); done\n";

#[test]
fn output_is_compressed_as_fastcgi_output_is() {
    let s = compressing_server(&[
        ("text.sh", TEXT),
        (
            "png.sh",
            "printf 'Content-Type: image/png\\n\\n'\n/usr/bin/head -c 5000 /dev/zero\n",
        ),
        (
            "dies.sh",
            "printf 'Content-Type: text/plain\\n\\n'\n/usr/bin/head -c 20000 /dev/zero\nkill -9 $$\n",
        ),
    ]);
    let want: String = (0..3000)
        .map(|i| format!("line {i} of the script's output\n"))
        .collect();
    let r = raw(
        &s.addr,
        b"GET /cgi-bin/text.sh HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("etag"), Some("\"t1-gzip\""));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.body.ends_with(b"0\r\n\r\n"), "the last chunk is there");
    let coded = dechunk(&r.body);
    assert!(coded.len() < want.len() / 4, "{}", coded.len());
    assert_eq!(String::from_utf8(gunzip(&coded)).unwrap(), want);

    // zstd to HTTP/1.0: close-delimited.
    let mut c = std::net::TcpStream::connect(&s.addr).expect("connect");
    c.write_all(b"GET /cgi-bin/text.sh HTTP/1.0\r\nHost: x\r\nAccept-Encoding: zstd\r\n\r\n")
        .expect("send");
    let all = read_all(&mut c);
    let head_end = find(&all, b"\r\n\r\n").expect("head") + 4;
    let head = String::from_utf8_lossy(&all[..head_end]).to_lowercase();
    assert!(head.contains("content-encoding: zstd"), "{head}");
    assert_eq!(
        zstd::stream::decode_all(&all[head_end..]).unwrap(),
        want.as_bytes()
    );

    // Without Accept-Encoding, or of a type not listed: as the script wrote it.
    let r = raw(
        &s.addr,
        b"GET /cgi-bin/text.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(String::from_utf8(dechunk(&r.body)).unwrap(), want);
    let r = raw(
        &s.addr,
        b"GET /cgi-bin/png.sh HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(dechunk(&r.body).len(), 5000);

    // A script killed mid-body: no last chunk, so the truncation shows.
    let r = raw(
        &s.addr,
        b"GET /cgi-bin/dies.sh HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(
        !r.body.ends_with(b"0\r\n\r\n"),
        "a cut body must not look whole"
    );
}
