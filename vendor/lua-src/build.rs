// luahttpd: the Lua sources are compiled by mlua-sys's build script through this crate, so
// cargo sees no change to them on its own; a change under lua-5.4.7 reruns this script,
// which rebuilds this crate and so reruns mlua-sys's build (LUAHTTPD.md).
fn main() {
    println!("cargo:rerun-if-changed=lua-5.4.7");
}
