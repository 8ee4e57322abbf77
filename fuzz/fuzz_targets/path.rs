//! Fuzz target `path`: the properties are in `luahttpd::fuzz_check::path`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::path(data));
