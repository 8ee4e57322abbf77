//! luahttpd: a lighttpd-style web server whose configuration is Lua.
//!
//! The binary (`src/main.rs`) is only the command line; everything else lives here so that it
//! can be unit-tested. ARCHITECTURE.md maps the modules.

pub mod access_line;
pub mod admin;
pub mod auth;
pub mod beneath;
pub mod cgi;
pub mod compress;
pub mod config;
pub mod fastcgi;
#[doc(hidden)]
pub mod fuzz_check;
pub mod http;
pub mod json_text;
pub mod log;
pub mod log_format;
pub mod log_handoff;
pub mod lua_raw;
#[cfg(test)]
mod lua_vm_tests;
pub mod proxy;
pub mod proxy_protocol;
pub mod real_ip;
pub mod reply;
pub mod script;
pub mod shared;
pub mod sockets;
pub mod sort_compact;
pub mod static_files;
pub mod status_page;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls/absent.rs"]
pub mod tls;
pub mod transport;
pub mod watcher;
pub mod worker;
