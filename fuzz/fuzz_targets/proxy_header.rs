//! Fuzz target `proxy_header`: the properties are in `luahttpd::fuzz_check::proxy_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::proxy_header(data));
