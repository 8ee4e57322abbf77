//! Replays the fuzz seed corpus and every crash kept from fuzzing through the same property
//! checks the libFuzzer targets run (`luahttpd::fuzz_check`), on the stable toolchain.
//!
//! Layout: `fuzz/corpus/<target>/*` and `fuzz/regressions/<target>/*`, one input per file.
//! A directory that names no target fails the test rather than being skipped silently.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use luahttpd::fuzz_check::{by_name, TARGETS};

fn fuzz_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
}

/// Runs every input under `fuzz/<kind>/<target>/`; returns the number of inputs per target and
/// the failures as "target/file: message".
fn replay(kind: &str) -> (Vec<(String, usize)>, Vec<String>) {
    let mut counts = Vec::new();
    let mut failures = Vec::new();
    let dir = fuzz_dir(kind);
    let Ok(entries) = fs::read_dir(&dir) else {
        return (counts, failures);
    };
    let mut targets: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    targets.sort();
    for target_dir in targets {
        let name = target_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !target_dir.is_dir() {
            continue;
        }
        let Some(check) = by_name(&name) else {
            failures.push(format!("{kind}/{name}: no such fuzz target"));
            continue;
        };
        let mut files: Vec<PathBuf> = fs::read_dir(&target_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", target_dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in &files {
            let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let file = file.file_name().unwrap_or_default().to_string_lossy();
                failures.push(format!("{kind}/{name}/{file}: {msg}"));
            }
        }
        counts.push((name, files.len()));
    }
    (counts, failures)
}

#[test]
fn seed_corpus_holds_every_property() {
    let (counts, failures) = replay("corpus");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every target has seeds, so a renamed or forgotten target is noticed.
    for (target, _) in TARGETS {
        let n = counts
            .iter()
            .find(|(name, _)| name == target)
            .map_or(0, |(_, n)| *n);
        assert!(n > 0, "fuzz/corpus/{target}/ has no seed");
    }
}

#[test]
fn kept_crashes_stay_fixed() {
    let (_, failures) = replay("regressions");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
