//! Fuzz target `request_body`: the properties are in `luahttpd::fuzz_check::request_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::request_body(data));
