//! Fuzz target `request_differential`: the properties are in `luahttpd::fuzz_check::request_differential`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::request_differential(data));
