//! Fuzz target `fastcgi_record`: the properties are in `luahttpd::fuzz_check::fastcgi_record`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| luahttpd::fuzz_check::fastcgi_record(data));
