//! Access control: HTTP Basic authentication against htpasswd files (RFC 7617) and
//! allow/deny lists of client networks. Sans-IO; the worker applies the rules
//! (src/worker/auth_check.rs), the config parses them (src/config/auth.rs).

pub mod apr1;
pub mod basic;
pub mod cidr;
pub mod htpasswd;
