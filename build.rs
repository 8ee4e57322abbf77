//! Link options for the `small` profile (README, "A smaller binary").
//!
//! Only for that profile and a Linux target; every other build (dev, test, `release`) links
//! exactly as before. Cargo has no stable per-profile linker flags and tells a build script
//! neither the profile's name nor its `panic` setting, so the profile is recognised by the
//! directory cargo builds it in (`target/[TRIPLE/]small/build/luahttpd-HASH/out`). Setting
//! `LUAHTTPD_PLAIN_LINK=1` turns both options off.
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

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LUAHTTPD_PLAIN_LINK");
    println!("cargo:rerun-if-env-changed=CARGO_PROFILE_SMALL_PANIC");
    let var = |k: &str| env::var(k).unwrap_or_default();
    if !var("LUAHTTPD_PLAIN_LINK").is_empty() {
        return;
    }
    let out = PathBuf::from(var("OUT_DIR"));
    // OUT_DIR is .../small/build/luahttpd-HASH/out.
    let profile_dir = out.ancestors().nth(3).and_then(|p| p.file_name());
    if profile_dir != Some("small".as_ref()) || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    if var("CARGO_CFG_TARGET_ENV") == "gnu" && var("HOST") == var("TARGET") && glibc_has_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
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
