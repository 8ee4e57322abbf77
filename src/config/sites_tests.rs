//! Loading `cgi{}`, `site` blocks, `auth`/`access` and `basic_auth{}`: each problem with its
//! line, and the `-p` round trip.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("luahttpd-sites-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["www", "one", "cgi-bin"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        std::fs::write(d.join("users"), "a:$apr1$ab$S8K6Sgp3W8c9Jb6LxgywZ.\n").expect("write");
        Dir(d)
    }

    fn load(&self, name: &str, src: &str) -> Result<Loaded, ConfigErrors> {
        let p = self.0.join(name);
        std::fs::write(&p, src).expect("write");
        load_file(&p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn errors(r: Result<Loaded, ConfigErrors>) -> String {
    match r {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string(),
    }
}

const FULL: &str = r#"server {
  listen = "127.0.0.1:0",
  root = "www",
  default_site = "one.test",
  auth = { { prefix = "/admin/", realm = "Admin", users = "users" } },
  access = { { prefix = "/admin/", allow = { "127.0.0.0/8", "::1" }, deny = { "all" } } },
}
site "one.test" {
  root = "one",
  aliases = { "www.one.test", "*.one.test" },
  index = { "home.html" },
  headers = { ["X-Site"] = "one" },
  mime = { [".x"] = "text/x" },
  dotfiles = "deny",
  proxy = { ["/app/"] = "app", ["/"] = "app" },
}
upstream "app" { address = "127.0.0.1:9" }
cgi {
  prefix = "/scripts",
  root = "cgi-bin",
  interpreters = { [".SH"] = "/bin/sh" },
  timeout = 2.5,
  max_procs = 3,
}
"#;

#[test]
fn a_full_config_loads_and_prints_back_the_same() {
    let d = Dir::new();
    let loaded = d.load("site.lua", FULL).expect("loads");
    let c = &loaded.config;
    let cgi = c.cgi.as_ref().expect("cgi");
    assert_eq!(cgi.prefix, "/scripts/");
    assert_eq!(cgi.interpreters.get(".sh"), Some(&PathBuf::from("/bin/sh")));
    assert_eq!(cgi.max_procs, 3);
    assert_eq!(c.sites.len(), 1);
    assert_eq!(c.sites[0].aliases, ["www.one.test", "*.one.test"]);
    assert_eq!(c.default_site.as_deref(), Some("one.test"));
    assert_eq!(c.auth[0].users.len(), 1);
    assert!(c.access[0].admits("127.0.0.1") && !c.access[0].admits("10.0.0.1"));
    let printed = print(c);
    let again = d
        .load("printed.lua", &printed)
        .expect("printed config loads");
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&print(&again.config)), strip(&printed));
    assert!(printed.contains("cgi {"), "{printed}");
    assert!(printed.contains("site \"one.test\" {"), "{printed}");
    assert!(
        printed.contains("proxy = { [\"/\"] = \"app\", [\"/app/\"] = \"app\" }"),
        "{printed}"
    );
}

#[test]
fn a_site_s_proxy_rules_name_known_upstreams_at_their_lines() {
    let d = Dir::new();
    let e = errors(d.load(
        "site.lua",
        "server { root = \"www\" }\n\
         upstream \"app\" { address = \"127.0.0.1:9\" }\n\
         site \"ok.test\" {\n  root = \"one\",\n  proxy = {\n    [\"/a/\"] = \"app\",\n    [\"/b/\"] = \"ap\",\n    [\"c\"] = \"app\",\n    [\"/d/\"] = 1,\n  },\n}\n\
         site \"two.test\" { root = \"one\", proxy = \"app\" }\n",
    ));
    assert!(
        e.contains(
            "site.lua:8: site 'ok.test': proxy: prefix must be a URL path starting with '/', got 'c'"
        ),
        "{e}"
    );
    assert!(
        e.contains("site.lua:9: site 'ok.test': proxy./d/ must be a string"),
        "{e}"
    );
    assert!(
        e.contains("site.lua:12: site 'two.test': proxy must be a table"),
        "{e}"
    );
    // Names are checked once every block is read (an upstream may come after the site).
    let e = errors(d.load(
        "names.lua",
        "server { root = \"www\" }\n\
         site \"ok.test\" {\n  root = \"one\",\n  proxy = {\n    [\"/a/\"] = \"app\",\n    [\"/b/\"] = \"ap\",\n  },\n}\n\
         upstream \"app\" { address = \"127.0.0.1:9\" }\n",
    ));
    assert!(
        e.contains(
            "names.lua:6: site 'ok.test': proxy: unknown upstream 'ap' for '/b/'; did you mean 'app'?"
        ),
        "{e}"
    );
    assert!(!e.contains("'/a/'"), "{e}");
}

#[test]
fn cgi_mistakes_are_reported_at_their_lines() {
    let d = Dir::new();
    let e = errors(d.load(
        "site.lua",
        "server { root = \"www\" }\n\
         cgi {\n  root = \"nope\",\n  interpreters = { [\".sh\"] = \"/no/such/sh\", sh = \"/bin/sh\" },\n  prefix = \"x\",\n  speed = 1,\n}\n\
         cgi { root = \"cgi-bin\" }\n",
    ));
    assert!(e.contains("site.lua:3: cgi: root"), "{e}");
    assert!(
        e.contains("site.lua:4: cgi: interpreter /no/such/sh for .sh"),
        "{e}"
    );
    assert!(e.contains("interpreters key must be a suffix"), "{e}");
    assert!(
        e.contains("site.lua:5: cgi: prefix must be a URL path"),
        "{e}"
    );
    assert!(e.contains("site.lua:6: cgi: unknown key 'speed'"), "{e}");
    assert!(e.contains("site.lua:8: cgi{} given twice"), "{e}");
}

#[test]
fn site_and_auth_mistakes_are_reported() {
    let d = Dir::new();
    let e = errors(d.load(
        "site.lua",
        "server { root = \"www\", default_site = \"nowhere.test\",\n\
           access = { { prefix = \"/a/\" } },\n\
           auth = { { prefix = \"a\", realm = \"R\\\"\", users = \"users\" } } }\n\
         site \"bad host:80\" { root = \"one\" }\n\
         site \"ok.test\" { root = \"one\", fastcgi = { \"php\" }, headers = { [\"Bad Name\"] = \"x\" } }\n",
    ));
    assert!(e.contains("an access rule needs allow or deny"), "{e}");
    assert!(e.contains("auth prefix must be a URL path"), "{e}");
    assert!(e.contains("realm must be non-empty text"), "{e}");
    assert!(
        e.contains("site.lua:4: site 'bad host:80': 'bad host:80' is not a host name"),
        "{e}"
    );
    assert!(
        e.contains("site.lua:5: site 'ok.test': headers: 'Bad Name'"),
        "{e}"
    );
}

#[test]
fn sites_refer_to_known_backends_and_default_site() {
    let d = Dir::new();
    let e = errors(d.load(
        "site.lua",
        "server { root = \"www\", default_site = \"nowhere.test\" }\n\
         site \"ok.test\" { root = \"one\", fastcgi = { \"php\" } }\n",
    ));
    assert!(
        e.contains("site 'ok.test': fastcgi: unknown backend 'php'"),
        "{e}"
    );
    assert!(
        e.contains("default_site 'nowhere.test' is not a site"),
        "{e}"
    );
}

#[test]
fn chroot_refuses_cgi_and_sites() {
    let d = Dir::new();
    let jail = d.0.display().to_string();
    let e = errors(d.load(
        "site.lua",
        &format!(
            "server {{ root = \"/www\", chroot = \"{jail}\" }}\n\
             cgi {{ root = \"cgi-bin\" }}\n\
             site \"a.test\" {{ root = \"one\" }}\n"
        ),
    ));
    assert!(
        e.contains("site.lua:2: cgi{} cannot be used with chroot yet"),
        "{e}"
    );
    assert!(
        e.contains("site.lua:3: site 'a.test' cannot be used with chroot yet"),
        "{e}"
    );
}
