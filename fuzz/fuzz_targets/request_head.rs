//! Fuzz target `request_head`: the properties are in `luahttpd::fuzz_check::request_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::request_head(data));
