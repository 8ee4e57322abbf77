//! Fuzz target `conditional`: the properties are in `luahttpd::fuzz_check::conditional`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::conditional(data));
