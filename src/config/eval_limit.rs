//! A wall-clock limit on evaluating a config file, for the watcher's reload: tests of
//! `config::load_file_within`.
//!
//! The watcher only evaluates a reloaded file that a forked checker has just evaluated within
//! its limit (src/watcher/config_check.rs); the limit is the second line of defence, for a file
//! changed in between. It is the route budget's hook (`script::limit_evaluation`), which looks
//! at the clock every thousand-odd instructions in every Lua thread, so one long C call (a
//! pattern match) is not interrupted: that is the checker's job.

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn a_looping_config_fails_at_the_limit_naming_its_file() {
        let dir = std::env::temp_dir().join(format!("luahttpd-evallimit-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("www")).unwrap();
        let file = dir.join("loop.lua");
        std::fs::write(
            &file,
            "server { listen = \"127.0.0.1:0\", root = \"www\" }\nwhile true do end\n",
        )
        .unwrap();
        let t = Instant::now();
        let err = match super::super::load_file_within(&file, Duration::from_millis(200)) {
            Ok(_) => panic!("a looping config loaded"),
            Err(e) => e.to_string(),
        };
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(err.contains("took longer than"), "{err}");
        assert!(err.contains("loop.lua"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_quick_config_loads_and_keeps_no_hook() {
        let dir = std::env::temp_dir().join(format!("luahttpd-evallimit2-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("www")).unwrap();
        let file = dir.join("ok.lua");
        std::fs::write(
            &file,
            "server { listen = \"127.0.0.1:0\", root = \"www\" }\nroute(function(req) end)\n",
        )
        .unwrap();
        let loaded = match super::super::load_file_within(&file, Duration::from_millis(200)) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        // Past the limit the state still runs Lua: the hook went with the evaluation.
        std::thread::sleep(Duration::from_millis(250));
        let n: i64 = loaded
            .lua
            .load("local n = 0 for i = 1, 100000 do n = n + 1 end return n")
            .eval()
            .unwrap();
        assert_eq!(n, 100000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
