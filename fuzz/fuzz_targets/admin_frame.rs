//! Fuzz target `admin_frame`: the properties are in `luahttpd::fuzz_check::admin_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::admin_frame(data));
