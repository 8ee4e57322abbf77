//! Link options for the `small` profile (README, "A smaller binary").
//!
//! Only for that profile and a Linux target; every other build (dev, test, `release`) links
//! exactly as before. Cargo has no stable per-profile linker flags and tells a build script
//! neither the profile's name nor its `panic` setting, so the profile is recognised by the
//! directory cargo builds it in (`target/[TRIPLE/]small/build/luahttpd-HASH/out`). Setting
//! `LUAHTTPD_PLAIN_LINK=1` turns all three options off.
//!
//! - `-z pack-relative-relocs` (DT_RELR): the ~6,400 relative relocations of the PIE shrink
//!   from 24 bytes each in `.rela.dyn` to a bitmap (−147 KB). The binary then needs glibc 2.36
//!   or later (version `GLIBC_ABI_DT_RELR`; built on such a machine it already needs 2.34), so
//!   this is only done for a glibc target built natively on glibc 2.36 or later.
//! - The unwind tables (`.eh_frame`, `.eh_frame_hdr`, `.gcc_except_table`) are discarded
//!   (−446 KB with default features). The `small` profile has `panic = "abort"`, so nothing
//!   unwinds (a panic prints its message and aborts; Lua's errors are `longjmp`); what is lost
//!   is the stack trace `RUST_BACKTRACE=1` would print after a panic message (it stops at the
//!   panic machinery's frames) and unwinding in a debugger or profiler.
//!   `CARGO_PROFILE_SMALL_PANIC=unwind` keeps them; a profile made to unwind any other way
//!   needs `LUAHTTPD_PLAIN_LINK=1`. `-C force-unwind-tables=no` does not remove them (the
//!   binary came out the same, byte for byte).
//! - `--symbol-ordering-file=link/symbol-order.txt` (only when the bundled LLD links): the
//!   functions a worker runs from its fork through its first requests, in that order, are laid
//!   out first and together, so an idle worker maps ~0.2-0.3 MB of code instead of ~1.8 MB
//!   (the kernel maps 64 KiB around each fault). `link/make-symbol-order.py` writes the file;
//!   names it has that a build lacks only cost locality.
//!
//! Every build also gets `LUAHTTPD_PROFILE`, the profile's name, for `luahttpd -V`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LUAHTTPD_PLAIN_LINK");
    println!("cargo:rerun-if-env-changed=CARGO_PROFILE_SMALL_PANIC");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let out = PathBuf::from(var("OUT_DIR"));
    // OUT_DIR is .../small/build/luahttpd-HASH/out ("debug" for dev and test builds).
    let profile_dir = out.ancestors().nth(3).and_then(|p| p.file_name());
    let profile = profile_dir.map_or("unknown".into(), |p| p.to_string_lossy());
    println!("cargo:rustc-env=LUAHTTPD_PROFILE={profile}"); // for `luahttpd -V`
    if !var("LUAHTTPD_PLAIN_LINK").is_empty() {
        return;
    }
    if profile_dir != Some("small".as_ref()) || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    if var("CARGO_CFG_TARGET_ENV") == "gnu" && var("HOST") == var("TARGET") && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    if links_with_bundled_lld(&var) {
        let order = PathBuf::from(var("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
        println!("cargo:rerun-if-changed={}", order.display());
        if order.exists() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            // Names the file has and this build lacks (another toolchain, other features)
            // cost only locality, not a warning per symbol.
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
    // The tables are what unwinding reads: kept when the profile is made to unwind (as far as
    // a build script can see it; `--config profile.small.panic=...` it cannot).
    if var("CARGO_PROFILE_SMALL_PANIC") == "unwind" {
        return;
    }
    // INSERT AFTER: the default layout stays, these sections are dropped from it.
    let script = out.join("no-unwind-tables.ld");
    std::fs::write(
        &script,
        "SECTIONS {\n  /DISCARD/ : { *(.eh_frame) *(.eh_frame_hdr) \
         *(.gcc_except_table .gcc_except_table.*) }\n}\nINSERT AFTER .text;\n",
    )
    .expect("write the linker script");
    println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}

/// Whether the final link is done by the LLD that rustc bundles (the default for
/// x86_64-unknown-linux-gnu since Rust 1.90) and not by a linker the build chose: GNU ld and
/// gold do not know `--symbol-ordering-file`.
fn links_with_bundled_lld(var: &dyn Fn(&str) -> String) -> bool {
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let chose_linker = flags.split('\u{1f}').any(|f| {
        f.contains("linker-features=-lld")
            || f.contains("linker=")
            || f.contains("linker-flavor")
            || f.contains("-fuse-ld=")
    });
    var("TARGET") == "x86_64-unknown-linux-gnu" && var("RUSTC_LINKER").is_empty() && !chose_linker
}

/// Whether this machine's glibc is 2.36 or later (`getconf GNU_LIBC_VERSION`: "glibc 2.36").
fn glibc_has_relr() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
