//! Fuzz target `response_head`: the properties are in `luahttpd::fuzz_check::response_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::response_head(data));
