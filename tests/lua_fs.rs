//! `fs.read(path, max_bytes)`, the request-time read-only file helper (issue 13): from a
//! timer into a shared dict, and from a route; relative paths beneath the config's folder,
//! bounded size, regular files only.

mod common;

use std::time::Duration;

use common::*;

fn start() -> Server {
    let dir = TempDir::new("lua-fs");
    std::fs::create_dir_all(dir.path().join("www")).expect("mkdir www");
    dir.write("data/value.txt", b"one");
    dir.write("big.txt", &[b'x'; 200]);
    let config = r#"server { listen = "127.0.0.1:0", workers = 2, root = "www", error_log = "stderr" }
shared "st" { size = "64k" }
every(0.1, function()
  local v, err = fs.read("data/value.txt", 100)
  shared.st:set("v", v or ("nil " .. err))
end, { worker = "one" })
route(function(req)
  if req.path == "/timer" then return respond(200, shared.st:get("v") or "unset") end
  if req.path == "/api" then
    local ok, err = pcall(fs.read, 3)
    return respond(200, type(fs.write) .. " " .. tostring(ok) .. " " .. tostring(err))
  end
  local p = req:arg("p")
  if p then
    local v, err = fs.read(p, tonumber(req:arg("max") or "100"))
    return respond(200, v and ("ok " .. v) or ("nil " .. err))
  end
end)
"#;
    Server::start_config(dir, config)
}

fn text(s: &Server, path: &str) -> String {
    let r = s.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
}

#[test]
fn a_timer_reads_a_file_into_a_shared_dict() {
    let s = start();
    wait_for("the timer's first read", Duration::from_secs(3), || {
        text(&s, "/timer") == "one"
    });
    s.dir.write("data/value.txt", b"two");
    wait_for("the timer sees the change", Duration::from_secs(3), || {
        text(&s, "/timer") == "two"
    });
    std::fs::remove_file(s.dir.path().join("data/value.txt")).unwrap();
    wait_for("the timer sees it gone", Duration::from_secs(3), || {
        text(&s, "/timer").starts_with("nil data/value.txt: No such file")
    });
}

#[test]
fn fs_read_stays_beneath_the_config_folder_bounded_and_read_only() {
    let s = start();
    assert_eq!(text(&s, "/?p=data/value.txt"), "ok one");
    let abs = s.dir.path().join("data/value.txt");
    assert_eq!(text(&s, &format!("/?p={}", abs.display())), "ok one");
    // Climbing out of the config's folder is refused, even where the file exists.
    let up = text(&s, "/?p=../../../../../../etc/hostname");
    assert!(up.contains("outside the config's folder"), "{up}");
    std::os::unix::fs::symlink("/etc", s.dir.path().join("etc-link")).unwrap();
    let link = text(&s, "/?p=etc-link/hostname");
    assert!(link.contains("outside the config's folder"), "{link}");
    // Bounded: over max_bytes is nil, "too large"; the default is 64 KiB.
    assert_eq!(text(&s, "/?p=big.txt&max=199"), "nil too large");
    assert_eq!(text(&s, "/?p=big.txt&max=200").len(), 203);
    assert!(text(&s, "/?p=www").contains("not a regular file"));
    // Nothing to write with; a wrong argument is a Lua error.
    let api = text(&s, "/api");
    assert!(api.starts_with("nil false "), "{api}");
    assert!(api.contains("path must be a string"), "{api}");
}
