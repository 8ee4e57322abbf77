//! Basic auth and client-network rules against the real binary: each htpasswd hash kind
//! (made here with the same crates the server uses), wrong password against unknown user
//! timing, REMOTE_USER and the access log, allow/deny lists, and `-t` on a bad file.

mod common;
mod proxy_common;

use base64::Engine;
use common::{raw, wait_for, Server, TempDir, BASE};
use std::process::Command;
use std::time::{Duration, Instant};

fn basic(user: &str, pw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
}

/// The apr1 hash of `pw`: from `openssl passwd -apr1` when it is installed (an independent
/// implementation), else from the server's own.
fn apr1(pw: &str) -> String {
    match Command::new("openssl")
        .args(["passwd", "-apr1", "-salt", "s4ltS4lt", pw])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => {
            eprintln!("!!! openssl is not installed: apr1 hash made with luahttpd's own code");
            luahttpd::auth::apr1::hash(pw.as_bytes(), b"s4ltS4lt")
        }
    }
}

fn htpasswd() -> String {
    let bc = bcrypt::hash_with_salt("pw-bcrypt", 8, [3u8; 16])
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY);
    let six = sha_crypt::sha512_simple(
        "pw-sha512",
        &sha_crypt::Sha512Params::new(5000).expect("params"),
    )
    .expect("sha512");
    let five = sha_crypt::sha256_simple(
        "pw-sha256",
        &sha_crypt::Sha256Params::new(5000).expect("params"),
    )
    .expect("sha256");
    format!(
        "bob:{bc}\nsix:{six}\nfive:{five}\napr:{}\n",
        apr1("pw-apr1")
    )
}

const CGI_USER: &str = "printf 'Content-Length: %s\\n\\n%s' ${#REMOTE_USER} \"$REMOTE_USER\"\n";

fn server() -> Server {
    let dir = TempDir::new("auth");
    dir.write("htpasswd", htpasswd().as_bytes());
    dir.write("www/admin/index.html", b"secret page");
    dir.write("www/open.txt", b"open");
    dir.write("www/private/x.txt", b"x");
    dir.write("www/mine/x.txt", b"x");
    dir.write("www/closed/x.txt", b"x");
    dir.write("cgi-bin/user.sh", CGI_USER.as_bytes());
    let config = format!(
        "server {{ {BASE}, workers = 1, access_log = \"access.log\",\n\
           auth = {{\n\
             {{ prefix = \"/admin/\", realm = \"Admin area\", users = \"htpasswd\" }},\n\
             {{ prefix = \"/cgi-bin/\", realm = \"Scripts\", users = \"htpasswd\" }},\n\
           }},\n\
           access = {{\n\
             {{ prefix = \"/private/\", allow = {{ \"10.0.0.0/8\" }} }},\n\
             {{ prefix = \"/mine/\", allow = {{ \"127.0.0.0/8\", \"::1\" }}, deny = {{ \"all\" }} }},\n\
             {{ prefix = \"/closed/\", deny = {{ \"all\" }} }},\n\
           }},\n\
         }}\n\
         cgi {{ root = \"cgi-bin\", interpreters = {{ [\".sh\"] = \"/bin/sh\" }} }}\n"
    );
    Server::start_config(dir, &config)
}

fn get_as(s: &Server, path: &str, auth: Option<&str>) -> common::Response {
    let field = auth.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
    raw(
        &s.addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{field}Connection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn each_hash_kind_lets_its_user_in_and_nobody_else() {
    let s = server();
    let r = get_as(&s, "/admin/", None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Admin area\", charset=\"UTF-8\"")
    );
    assert_eq!(get_as(&s, "/open.txt", None).status, 200);
    for (user, pw) in [
        ("bob", "pw-bcrypt"),
        ("six", "pw-sha512"),
        ("five", "pw-sha256"),
        ("apr", "pw-apr1"),
    ] {
        let r = get_as(&s, "/admin/", Some(&basic(user, pw)));
        assert_eq!(r.status, 200, "{user}");
        assert_eq!(r.body, b"secret page");
        // Twice: the second is answered from the worker's table of verified credentials.
        assert_eq!(get_as(&s, "/admin/", Some(&basic(user, pw))).status, 200);
        assert_eq!(
            get_as(&s, "/admin/", Some(&basic(user, "wrong"))).status,
            401,
            "{user}"
        );
    }
    // Another user's password, a malformed header, a non-Basic scheme.
    assert_eq!(
        get_as(&s, "/admin/", Some(&basic("bob", "pw-apr1"))).status,
        401
    );
    assert_eq!(get_as(&s, "/admin/", Some("!!!notbase64")).status, 401);
    let r = raw(
        &s.addr,
        b"GET /admin/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 401);
}

fn median_ms(s: &Server, user: &str, pw: &str) -> f64 {
    let mut times: Vec<f64> = (0..9)
        .map(|i| {
            let t = Instant::now();
            // A fresh wrong password each time: nothing is remembered for wrong ones anyway.
            let r = get_as(s, "/admin/", Some(&basic(user, &format!("{pw}{i}"))));
            assert_eq!(r.status, 401);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

#[test]
fn an_unknown_user_takes_as_long_as_a_wrong_password() {
    let s = server();
    // bcrypt cost 8 takes milliseconds; without the dummy check an unknown user would be
    // answered in a fraction of one.
    let wrong = median_ms(&s, "bob", "nope");
    let unknown = median_ms(&s, "nosuchuser", "nope");
    eprintln!("median wrong password {wrong:.2} ms, unknown user {unknown:.2} ms");
    assert!(
        wrong > 2.0,
        "bcrypt cost 8 should take milliseconds: {wrong:.2} ms"
    );
    let ratio = unknown / wrong;
    assert!(
        (0.5..2.0).contains(&ratio),
        "unknown user {unknown:.2} ms vs wrong password {wrong:.2} ms"
    );
}

#[test]
fn the_user_reaches_remote_user_and_the_access_log() {
    let s = server();
    assert_eq!(get_as(&s, "/cgi-bin/user.sh", None).status, 401);
    let r = get_as(&s, "/cgi-bin/user.sh", Some(&basic("six", "pw-sha512")));
    assert_eq!(r.status, 200, "{}", s.log_text());
    assert_eq!(r.body, b"six");
    let log = s.dir.path().join("access.log");
    wait_for("the user in the access log", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("127.0.0.1 - six [") && l.contains("/cgi-bin/user.sh"))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // A refused request carries no user.
    assert!(
        text.lines()
            .any(|l| l.starts_with("127.0.0.1 - - [") && l.contains(" 401 ")),
        "{text}"
    );
}

#[test]
fn client_networks_are_allowed_and_denied_per_prefix() {
    let s = server();
    // Only 10/8 allowed: loopback is refused.
    assert_eq!(get_as(&s, "/private/x.txt", None).status, 403);
    // Loopback allowed, everyone else denied.
    assert_eq!(get_as(&s, "/mine/x.txt", None).status, 200);
    assert_eq!(get_as(&s, "/closed/x.txt", None).status, 403);
    assert_eq!(get_as(&s, "/open.txt", None).status, 200);
}

#[test]
fn a_bad_htpasswd_line_fails_the_config_check_with_its_position() {
    let dir = TempDir::new("auth-t");
    dir.write("www/x", b"x");
    dir.write(
        "htpasswd",
        b"good:$apr1$ab$S8K6Sgp3W8c9Jb6LxgywZ.\nbad:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
    );
    let conf = dir.write(
        "site.lua",
        b"server {\n  root = \"www\",\n  auth = { { prefix = \"/\", realm = \"R\", users = \"htpasswd\" } },\n  access = { { prefix = \"/x\", allow = { \"10.0.0.0/33\" } } },\n}\n",
    );
    let out = Command::new(common::bin())
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run -t");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("htpasswd:2: user 'bad': unsupported hash kind {SHA}"),
        "{err}"
    );
    assert!(err.contains("site.lua:3:"), "{err}");
    assert!(err.contains("prefix length must be 0 to 32"), "{err}");
}

#[test]
fn basic_auth_from_the_route_function() {
    let dir = TempDir::new("auth-route");
    dir.write("htpasswd", htpasswd().as_bytes());
    dir.write(
        "other.htpasswd",
        format!("only:{}\n", apr1("pw-only")).as_bytes(),
    );
    dir.write("www/r/files/x.txt", b"protected file");
    dir.write("www/open.txt", b"open");
    let config = format!(
        "server {{ {BASE}, workers = 1, access_log = \"access.log\" }}\n\
         local admin = basic_auth {{ realm = \"Route realm\", users = \"htpasswd\" }}\n\
         local other = basic_auth {{ realm = \"Other\", users = \"other.htpasswd\" }}\n\
         local secret = admin(respond(200, \"route secret\"))\n\
         route(function(req)\n\
           if req.path == \"/r/secret\" then return secret end\n\
           if req.path:find(\"^/r/files/\") then return admin(static{{ headers = {{ [\"X-R\"] = \"1\" }} }}) end\n\
           if req.path == \"/r/both\" then return admin(other(respond(200, \"both\"))) end\n\
           if req.path == \"/r/default\" then return admin() end\n\
         end)\n"
    );
    let s = Server::start_config(dir, &config);
    let r = get_as(&s, "/r/secret", None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Route realm\", charset=\"UTF-8\"")
    );
    assert_eq!(
        get_as(&s, "/r/secret", Some(&basic("bob", "wrong"))).status,
        401
    );
    let r = get_as(&s, "/r/secret", Some(&basic("bob", "pw-bcrypt")));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"route secret"[..]));
    let r = get_as(&s, "/r/files/x.txt", Some(&basic("five", "pw-sha256")));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"protected file"[..]));
    assert_eq!(r.header("x-r"), Some("1"));
    assert_eq!(get_as(&s, "/r/files/x.txt", None).status, 401);
    // admin() alone: the default rules once the user is known.
    assert_eq!(
        get_as(&s, "/r/default", Some(&basic("apr", "pw-apr1"))).status,
        404
    );
    assert_eq!(get_as(&s, "/r/default", None).status, 401);
    // Nested helpers ask for both (here no user is in both files, so never 200).
    let r = get_as(&s, "/r/both", Some(&basic("bob", "pw-bcrypt")));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Other\", charset=\"UTF-8\"")
    );
    assert_eq!(get_as(&s, "/open.txt", None).status, 200);
    let log = s.dir.path().join("access.log");
    wait_for(
        "the route-auth user in the access log",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("127.0.0.1 - five [") && l.contains("/r/files/x.txt"))
        },
    );
}

#[test]
fn basic_auth_helper_mistakes_are_config_errors() {
    let dir = TempDir::new("auth-route-t");
    dir.write("www/x", b"x");
    let conf = dir.write(
        "site.lua",
        b"server { root = \"www\" }\nlocal a = basic_auth { realm = \"x\" }\nlocal b = basic_auth { realm = \"y\", users = \"nope.htpasswd\", extra = 1 }\n",
    );
    let out = Command::new(common::bin())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .expect("-t");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("site.lua:2: basic_auth: basic_auth{} needs users"),
        "{err}"
    );
    assert!(err.contains("site.lua:3: basic_auth: users file"), "{err}");
    assert!(err.contains("unknown key 'extra'"), "{err}");
}

/// Review item 6: a proxied request behind an `auth` rule logs its user as `$remote_user`,
/// as FastCGI and CGI requests do.
#[test]
fn a_proxied_request_logs_its_authenticated_user() {
    let up = proxy_common::Upstream::start("app");
    let dir = TempDir::new("auth-proxy");
    dir.write("htpasswd", htpasswd().as_bytes());
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    let config = format!(
        "server {{ {BASE}, workers = 1, access_log = \"access.log\",\n\
           auth = {{ {{ prefix = \"/name\", realm = \"Proxied\", users = \"htpasswd\" }} }},\n\
         }}\n\
         upstream \"app\" {{ address = \"{}\", prefix = \"/name\" }}\n",
        up.addr
    );
    let s = Server::start_config(dir, &config);
    assert_eq!(get_as(&s, "/name", None).status, 401);
    let r = get_as(&s, "/name", Some(&basic("five", "pw-sha256")));
    assert_eq!(r.status, 200, "{}", s.log_text());
    assert_eq!(r.body, b"app");
    let log = s.dir.path().join("access.log");
    wait_for(
        "the proxied user in the access log",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("127.0.0.1 - five [") && l.contains("GET /name "))
        },
    );
}
